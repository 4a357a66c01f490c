//! Logging for every runtime: `tracing` events as text or one JSON object a line
//! (`CAPSIGN_LOG_FORMAT`), filtered by `RUST_LOG`; and the access line of each request,
//! formatted by a layer of its own. Where the lines go is a [`LineSink`]: stderr in batches
//! for the `capsign` and `capsign-lambda` binaries ([`init`]), the console in a Worker
//! ([`init_with`]).
//!
//! Why the access line has its own layer: `tracing-subscriber`'s formatters cost about 4 µs an
//! event here (a fifth of capsign's throughput with an access line per request, measured with
//! `bench/run --observe`). The access event has a fixed, small set of fields, so
//! `AccessLayer` writes them directly, in the same shape as the JSON formatter
//! (`timestamp`, `level`, `message`, the fields, `target`) or as a text line.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

use crate::json;
use crate::settings::LogFormat;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, filter};

/// The target of the access events (see `capsign::http`).
const ACCESS_TARGET: &str = "capsign::access";

/// Whether lines are JSON (for [`say`]).
static JSON_LOGS: AtomicBool = AtomicBool::new(false);

#[cfg(not(target_arch = "wasm32"))]
mod stderr;
#[cfg(not(target_arch = "wasm32"))]
pub use stderr::{Flushed, init};

/// Where the lines go, for [`say`] to keep its lines in order with the others.
static LOG_SINK: OnceLock<Out> = OnceLock::new();

/// Where log lines go.
pub trait LineSink: Send + Sync + 'static {
    /// Takes one whole line (without its `\n`); at once when `now` is set (an operator's
    /// line), else whenever the sink writes.
    fn line(&self, line: &str, now: bool);

    /// Writes what waits. The default has nothing waiting.
    fn flush(&self) {}
}

/// The sink shared by the layers and [`say`].
#[derive(Clone)]
struct Out(Arc<dyn LineSink>);

impl std::io::Write for &Out {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter writes each event whole, its `\n` last.
        let text = String::from_utf8_lossy(buf);
        self.0.line(text.strip_suffix('\n').unwrap_or(&text), false);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Out {
    type Writer = &'a Out;

    fn make_writer(&'a self) -> &'a Out {
        self
    }
}

/// The wall clock (`web-time`: the system clock, or `Date.now()` under WebAssembly) as a
/// standard `SystemTime`, for the formatters.
fn wall_clock() -> SystemTime {
    let since = web_time::SystemTime::now()
        .duration_since(web_time::UNIX_EPOCH)
        .unwrap_or_default();
    SystemTime::UNIX_EPOCH + since
}

/// The events' timestamps, RFC 3339 with microseconds, from [`wall_clock`].
struct WallClock;

impl FormatTime for WallClock {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        write!(w, "{}", humantime::format_rfc3339_micros(wall_clock()))
    }
}

/// Sets up logging into `sink` (a runtime without stderr: a Worker's console).
pub fn init_with(format: LogFormat, emf: bool, sink: Arc<dyn LineSink>) {
    let json = format == LogFormat::Json;
    JSON_LOGS.store(json, Ordering::Relaxed);
    let out = Out(sink);
    let _ = LOG_SINK.set(out.clone());
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let not_access = filter::filter_fn(|m| m.target() != ACCESS_TARGET);
    // Colours only for a person at a terminal: a log file, a pipe or a collector gets
    // plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let events = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_timer(WallClock)
        .with_writer(out.clone());
    let events = if json {
        events
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .with_filter(not_access)
            .boxed()
    } else {
        events.with_filter(not_access).boxed()
    };
    let access = AccessLayer {
        out,
        json,
        emf: json && emf,
    };
    let _ = tracing_subscriber::registry()
        .with(env)
        .with(events)
        .with(access)
        .try_init();
}

/// Writes what waits in the log buffer now (`capsign-lambda` does after each invocation:
/// the instance may be frozen until the next one; `capsign` before exiting from a task).
pub fn flush() {
    if let Some(out) = LOG_SINK.get() {
        out.0.flush();
    }
}

/// A line for the operator: `capsign: …` on stderr as text, or in JSON mode a JSON object
/// shaped like the log events (so every line of a JSON run parses). Written at once, after
/// whatever log lines were waiting, and never filtered out by `RUST_LOG`: scripts wait for
/// "listening on".
pub fn say(message: &str) {
    let line = if JSON_LOGS.load(Ordering::Relaxed) {
        serde_json::json!({
            "timestamp": timestamp(),
            "level": "INFO",
            "message": message,
            "target": "capsign",
        })
        .to_string()
    } else {
        format!("capsign: {message}")
    };
    match LOG_SINK.get() {
        Some(out) => out.0.line(&line, true),
        None => eprintln!("{line}"),
    }
}

fn timestamp() -> String {
    humantime::format_rfc3339_micros(wall_clock()).to_string()
}

/// The CloudWatch namespace of the embedded metrics.
const EMF_NAMESPACE: &str = "capsign";

/// Writes the access events (target `capsign::access`) as lines of their own.
///
/// With `emf` (on Lambda, with JSON logs) each access line is also a CloudWatch
/// embedded-metric-format document: an `_aws` member declares, under the namespace `capsign`
/// and the dimension `route`, the metrics `duration_ms` (every request), `held`, `new` and
/// `denied` (grant counts; present when a credential was issued, so their sample count is
/// the credentials issued) and `refusals` (1 on a refused request; the line's `code` says
/// why). CloudWatch turns the line into metrics with no agent and no API call.
struct AccessLayer {
    out: Out,
    json: bool,
    emf: bool,
}

impl<S: Subscriber> Layer<S> for AccessLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != ACCESS_TARGET {
            return;
        }
        let mut line = String::with_capacity(320);
        let level = event.metadata().level().as_str();
        if self.json {
            line.push_str("{\"timestamp\":\"");
            push_timestamp(&mut line, wall_clock());
            line.push_str("\",\"level\":\"");
            line.push_str(level);
            line.push('"');
        } else {
            push_timestamp(&mut line, wall_clock());
            line.push_str("  ");
            line.push_str(level);
            line.push(' ');
            line.push_str(ACCESS_TARGET);
            line.push(':');
        }
        let mut fields = Fields {
            line: &mut line,
            json: self.json,
            issued: false,
            refused: false,
        };
        event.record(&mut fields);
        let (issued, refused) = (fields.issued, fields.refused);
        if self.emf {
            emf_metadata(&mut line, issued, refused);
        }
        if self.json {
            line.push_str(",\"target\":\"");
            line.push_str(ACCESS_TARGET);
            line.push_str("\"}");
        }
        self.out.0.line(&line, false);
    }
}

/// Appends `time` as RFC 3339 with microseconds (`2026-12-03T13:20:01.123456Z`), as
/// `humantime` writes it, without `fmt`: the date and time to the second are formatted once a
/// second (per thread) and the microseconds appended by hand. An access line is written per
/// request; this keeps the timestamp off its cost.
fn push_timestamp(line: &mut String, time: SystemTime) {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, micros) = (since.as_secs(), since.subsec_micros());
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            let text = humantime::format_rfc3339_seconds(whole).to_string();
            // "…T13:20:01Z": kept without the zone, which follows the fraction.
            cached.1 = text.trim_end_matches('Z').to_owned();
            cached.0 = secs;
        }
        line.push_str(&cached.1);
    });
    line.push('.');
    push_padded(line, u64::from(micros), 6);
    line.push('Z');
}

/// Appends `n` in decimal, zero-padded to `width` digits.
fn push_padded(line: &mut String, n: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n);
    for _ in digits.len()..width {
        line.push('0');
    }
    line.push_str(digits);
}

/// Appends the `_aws` member that makes an access line an embedded-metric-format document.
fn emf_metadata(line: &mut String, issued: bool, refused: bool) {
    let millis = wall_clock()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    if refused {
        line.push_str(",\"refusals\":1");
    }
    let _ = write!(
        line,
        ",\"_aws\":{{\"Timestamp\":{millis},\"CloudWatchMetrics\":[{{\"Namespace\":\
         \"{EMF_NAMESPACE}\",\"Dimensions\":[[\"route\"]],\"Metrics\":[\
         {{\"Name\":\"duration_ms\",\"Unit\":\"Milliseconds\"}}"
    );
    if issued {
        for name in ["held", "new", "denied"] {
            let _ = write!(line, ",{{\"Name\":\"{name}\",\"Unit\":\"Count\"}}");
        }
    }
    if refused {
        line.push_str(",{\"Name\":\"refusals\",\"Unit\":\"Count\"}");
    }
    line.push_str("]}]}");
}

/// Appends an event's fields to a line: `,"name":value` (JSON) or ` name=value` (text),
/// noting whether the request issued a credential (`format`) or was refused (`code`).
struct Fields<'a> {
    line: &'a mut String,
    json: bool,
    issued: bool,
    refused: bool,
}

impl Fields<'_> {
    /// A value written as it displays (numbers, booleans).
    fn raw(&mut self, field: &Field, value: &dyn std::fmt::Display) {
        self.name(field);
        let _ = write!(self.line, "{value}");
    }

    /// A string field: quoted and escaped for JSON, as it is for text.
    fn text(&mut self, field: &Field, value: &dyn std::fmt::Display) {
        self.name(field);
        if self.json {
            self.line.push('"');
            let _ = write!(json::Escaping(self.line), "{value}");
            self.line.push('"');
        } else {
            let _ = write!(self.line, "{value}");
        }
    }

    /// The field's name and separator: `,"name":` (JSON) or ` name=` (text), noting whether
    /// the request issued a credential (`format`) or was refused (`code`).
    fn name(&mut self, field: &Field) {
        let name = field.name();
        match name {
            "format" => self.issued = true,
            "code" => self.refused = true,
            _ => {}
        }
        if self.json {
            self.line.push_str(",\"");
            self.line.push_str(name);
            self.line.push_str("\":");
        } else {
            self.line.push(' ');
            self.line.push_str(name);
            self.line.push('=');
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        // Without `fmt`: the common value needs no escaping and is copied whole. In text, a
        // value with a space, a quote, a `=` or a control character (a user agent) is quoted
        // and escaped, so the line still splits into fields.
        self.name(field);
        let plain = |b: u8| b > b' ' && b != b'"' && b != b'\\' && b != b'=';
        if !self.json && !value.is_empty() && value.bytes().all(plain) {
            self.line.push_str(value);
        } else if value.bytes().all(|b| b >= b' ' && b != b'"' && b != b'\\') {
            self.line.push('"');
            self.line.push_str(value);
            self.line.push('"');
        } else {
            self.line.push('"');
            json::push_escaped(self.line, value);
            self.line.push('"');
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.name(field);
        self.line.push_str(itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.name(field);
        self.line.push_str(itoa::Buffer::new().format(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // Three decimals (durations in ms to the µs), by integer arithmetic.
        if !(0.0..1e15).contains(&value) {
            self.raw(field, &format_args!("{value:.3}"));
            return;
        }
        self.name(field);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let thousandths = (value * 1000.0).round() as u64;
        self.line
            .push_str(itoa::Buffer::new().format(thousandths / 1000));
        self.line.push('.');
        push_padded(self.line, thousandths % 1000, 3);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field, &value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.text(field, &format_args!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_humantime() {
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_304_001);
        for micros in [0, 7, 123_456, 999_999, 1_000_123, 86_400_000_001] {
            let t = base + Duration::from_micros(micros);
            let mut line = String::new();
            push_timestamp(&mut line, t);
            assert_eq!(line, humantime::format_rfc3339_micros(t).to_string());
        }
    }

    #[test]
    fn access_fields_match_fmt() {
        let mut line = String::new();
        for v in [0.0, 0.0004, 0.0005, 1.25, 12.3456, 999.9999] {
            line.clear();
            let mut f = Fields {
                line: &mut line,
                json: true,
                issued: false,
                refused: false,
            };
            tracing::field::Visit::record_f64(&mut f, &FIELD, v);
            assert_eq!(line, format!(",\"duration_ms\":{v:.3}"), "{v}");
        }
    }

    static FIELD: std::sync::LazyLock<Field> = std::sync::LazyLock::new(|| {
        struct Cs;
        impl tracing::Callsite for Cs {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &tracing::Metadata<'_> {
                &META
            }
        }
        static CS: Cs = Cs;
        static META: tracing::Metadata<'static> = tracing::Metadata::new(
            "test",
            "capsign::access",
            tracing::Level::INFO,
            None,
            None,
            None,
            tracing::field::FieldSet::new(&["duration_ms"], tracing::callsite::Identifier(&CS)),
            tracing::metadata::Kind::EVENT,
        );
        META.fields().field("duration_ms").unwrap()
    });
}
