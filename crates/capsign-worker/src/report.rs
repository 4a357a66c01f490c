//! The Worker's logs: JSON lines on the console, and its metrics as a log line of their own.
//!
//! A Worker has no scrape endpoint, so each isolate writes its counters, gauges and histogram
//! counts and sums into its log every [`REPORT_EVERY_MS`] (checked as a request ends): one
//! JSON line with `"message":"metrics"` and a `metrics` object from series (as Prometheus
//! names them, labels included) to values. They count from the isolate's start; Workers Logs
//! or a log pipeline sums them across isolates.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use capsign_core::logging::LineSink;
use serde_json::{Map, Value};

/// How often an isolate writes its metrics line, at most.
pub const REPORT_EVERY_MS: u64 = 60_000;

/// Log lines to the console (`console.log`: Workers Logs, `wrangler tail`, workerd's output).
#[derive(Debug, Clone, Copy)]
pub struct Console;

impl LineSink for Console {
    fn line(&self, line: &str, _now: bool) {
        #[cfg(target_arch = "wasm32")]
        worker::console_log!("{line}");
        #[cfg(not(target_arch = "wasm32"))]
        eprintln!("{line}");
    }
}

/// The sink to give `capsign_core::logging::init_with`.
pub fn console() -> Arc<dyn LineSink> {
    Arc::new(Console)
}

/// When the last metrics line was written (ms since the epoch; 0: never).
#[derive(Debug, Default)]
pub struct Reporter {
    last_ms: AtomicU64,
}

impl Reporter {
    /// The metrics line, when one is due at `now_ms` (the first request of an isolate starts
    /// the interval).
    pub fn due(&self, now_ms: u64, exposition: impl FnOnce() -> String) -> Option<String> {
        let last = self.last_ms.load(Ordering::Relaxed);
        if last == 0 {
            self.last_ms.store(now_ms, Ordering::Relaxed);
            return None;
        }
        if now_ms.saturating_sub(last) < REPORT_EVERY_MS {
            return None;
        }
        self.last_ms.store(now_ms, Ordering::Relaxed);
        Some(metrics_line(&exposition(), now_ms))
    }
}

/// One JSON log line holding the counters, gauges and histogram counts and sums of a
/// Prometheus text exposition (buckets left out: a line per minute stays small).
pub fn metrics_line(exposition: &str, now_ms: u64) -> String {
    let mut series = Map::new();
    let mut histograms: Vec<&str> = Vec::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" histogram") {
                histograms.push(name);
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let family = name.split('{').next().unwrap_or(name);
        if family.ends_with("_bucket") && histograms.iter().any(|h| family.starts_with(h)) {
            continue;
        }
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        series.insert(name.to_owned(), Value::from(value));
    }
    let mut line = Map::new();
    line.insert("timestamp_ms".into(), Value::from(now_ms));
    line.insert("level".into(), Value::from("INFO"));
    line.insert("message".into(), Value::from("metrics"));
    line.insert("metrics".into(), Value::Object(series));
    line.insert("target".into(), Value::from("capsign::metrics"));
    Value::Object(line).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histogram_totals_are_kept_and_buckets_left_out() {
        let text = "# TYPE capsign_requests counter\n\
                    capsign_requests_total{route=\"auth\",status=\"200\"} 3\n\
                    # TYPE capsign_request_duration_seconds histogram\n\
                    capsign_request_duration_seconds_bucket{le=\"0.001\"} 2\n\
                    capsign_request_duration_seconds_sum 0.004\n\
                    capsign_request_duration_seconds_count 3\n\
                    # EOF\n";
        let line: Value = serde_json::from_str(&metrics_line(text, 5)).expect("JSON");
        let metrics = line["metrics"].as_object().expect("object");
        assert_eq!(
            metrics["capsign_requests_total{route=\"auth\",status=\"200\"}"],
            3.0
        );
        assert_eq!(metrics["capsign_request_duration_seconds_count"], 3.0);
        assert!(!metrics.keys().any(|k| k.contains("_bucket")));
        assert_eq!(line["message"], "metrics");
    }

    #[test]
    fn a_line_is_due_once_an_interval() {
        let r = Reporter::default();
        assert!(
            r.due(1_000, String::new).is_none(),
            "the first request starts the interval"
        );
        assert!(r.due(1_000 + REPORT_EVERY_MS - 1, String::new).is_none());
        assert!(r.due(1_000 + REPORT_EVERY_MS, String::new).is_some());
        assert!(r.due(1_000 + REPORT_EVERY_MS + 1, String::new).is_none());
    }
}
