//! The metrics: one [`prometheus_client`] registry per app, and the handles each module
//! records into.
//!
//! Labels take only bounded values (a route, a status, an Ably error code, a credential format,
//! a decider, a cookie result, a key id, an error kind, the version): never a clientId, a
//! channel name or anything else a client chooses. [`Metrics::encode`] writes the Prometheus
//! text exposition (OpenMetrics 1.0), served on `CAPSIGN_METRICS_LISTEN` by the server. This
//! module imports nothing of capsign's.

use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[cfg(not(target_arch = "wasm32"))]
mod process;

/// `route` and `status`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatus {
    /// The route (`auth`, `healthz`, `login`, …, or `other`).
    pub route: &'static str,
    /// The HTTP status.
    pub status: u16,
}

/// One label of a bounded set of names.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FormatLabel {
    format: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Decision {
    decider: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Code {
    code: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CookieResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyId {
    key_id: u8,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Version {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// Which connection limit shed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedReason {
    /// `CAPSIGN_MAX_CONNECTIONS`.
    MaxConnections,
    /// `CAPSIGN_MAX_CONNECTIONS_PER_PEER`.
    PerPeer,
}

impl ShedReason {
    fn label(self) -> &'static str {
        match self {
            ShedReason::MaxConnections => "max_connections",
            ShedReason::PerPeer => "per_peer",
        }
    }
}

/// Who decided a requested grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decider {
    /// The grant cookie already held it.
    Cookie,
    /// The rules file.
    Rules,
    /// The policy webhook.
    Webhook,
}

/// What became of a presented grant cookie or grants header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieResult {
    /// None was presented.
    Absent,
    /// It opened.
    Opened,
    /// Older than the maximum age, or issued in the future.
    Expired,
    /// Sealed for another clientId.
    OtherUser,
    /// Sealed with a key id this instance does not hold (a rotation not finished, or another
    /// deployment).
    UnknownKey,
    /// Anything else: not ours, changed, truncated, over a limit.
    Tampered,
}

impl CookieResult {
    fn label(self) -> &'static str {
        match self {
            CookieResult::Absent => "absent",
            CookieResult::Opened => "opened",
            CookieResult::Expired => "expired",
            CookieResult::OtherUser => "other_user",
            CookieResult::UnknownKey => "unknown_key",
            CookieResult::Tampered => "tampered",
        }
    }
}

/// The credential formats (`format` label).
pub const FORMATS: [&str; 4] = ["jwt", "tokenRequest", "token", "embedded"];

const COOKIE_RESULTS: [CookieResult; 6] = [
    CookieResult::Absent,
    CookieResult::Opened,
    CookieResult::Expired,
    CookieResult::OtherUser,
    CookieResult::UnknownKey,
    CookieResult::Tampered,
];

/// The `kind` of a failed policy webhook call (`WebhookError::kind`).
pub const WEBHOOK_ERROR_KINDS: [&str; 5] =
    ["timeout", "network", "too_large", "status", "malformed"];

/// The `kind` of a failed Ably call (`AblyError::kind`).
pub const ABLY_ERROR_KINDS: [&str; 5] = ["timeout", "network", "too_large", "refused", "malformed"];

/// The two text formats of the exposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// OpenMetrics 1.0 (`application/openmetrics-text; version=1.0.0`), which Prometheus asks
    /// for.
    OpenMetrics,
    /// The Prometheus text format 0.0.4 (`text/plain; version=0.0.4`), for a scraper that asks
    /// for nothing else.
    Text,
}

impl Exposition {
    /// The format an `Accept` header asks for: OpenMetrics when it names it, else text.
    pub fn negotiate(accept: Option<&str>) -> Exposition {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Exposition::OpenMetrics,
            _ => Exposition::Text,
        }
    }

    /// The `Content-Type` of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Exposition::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// How many label sets of one family [`Hot`] keeps handles for.
const HOT_SLOTS: usize = 16;

/// A family with the handles of its first label sets kept in slots written once: a request's
/// update compares its labels with each slot's (a few `&'static str` and number comparisons)
/// instead of hashing them under the family's read lock. The handles share the family's
/// metrics (a `prometheus-client` counter or histogram clone is the same metric), so the
/// exposition is unchanged. Label sets past the slots go to the family as before.
#[derive(Clone)]
struct Hot<S, M, C = fn() -> M> {
    family: Family<S, M, C>,
    slots: Arc<[OnceLock<(S, M)>; HOT_SLOTS]>,
}

impl<S, M, C> Hot<S, M, C>
where
    S: Clone + Hash + Eq,
    M: Clone,
    C: MetricConstructor<M>,
{
    fn new(family: Family<S, M, C>) -> Hot<S, M, C> {
        Hot {
            family,
            slots: Arc::new(std::array::from_fn(|_| OnceLock::new())),
        }
    }

    /// Runs `update` on the metric of `labels`.
    fn with(&self, labels: S, update: impl FnOnce(&M)) {
        for slot in self.slots.iter() {
            let (held, metric) = match slot.get() {
                Some(entry) => entry,
                None => slot.get_or_init(|| {
                    let metric = self.family.get_or_create(&labels).clone();
                    (labels.clone(), metric)
                }),
            };
            if *held == labels {
                return update(metric);
            }
        }
        update(&self.family.get_or_create(&labels));
    }
}

/// A request in flight; counted down when dropped.
#[derive(Debug)]
pub struct InFlight(Option<Gauge>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(gauge) = &self.0 {
            gauge.dec();
        }
    }
}

/// Every metric capsign exports. Cloning shares the same metrics (each is an `Arc` inside).
#[derive(Clone)]
pub struct Metrics {
    requests: Hot<RouteStatus, Counter>,
    request_duration: Hot<Route, Histogram>,
    in_flight: Gauge,
    credentials: Hot<FormatLabel, Counter>,
    decisions: Hot<Decision, Counter>,
    refusals: Hot<Code, Counter>,
    cookies: Hot<CookieResultLabel, Counter>,
    cookie_keys: Hot<KeyId, Counter>,
    cookie_bytes: Histogram,
    credential_bytes: Hot<FormatLabel, Histogram>,
    webhook_duration: Histogram,
    webhook_errors: Family<Kind, Counter>,
    ably_duration: Histogram,
    ably_errors: Family<Kind, Counter>,
    jwks_refreshes: Family<CookieResultLabel, Counter>,
    revocation_reads: Family<CookieResultLabel, Counter>,
    revocation_entries: Gauge,
    revocation_age: Gauge,
    revocation_stale: Gauge,
    grants_revoked: Counter,
    connections_shed: Family<Reason, Counter>,
    connections_open: Gauge,
    clock_offset: Gauge<f64, AtomicU64>,
    ready: Gauge,
    registry: std::sync::Arc<Registry>,
    families: std::sync::Arc<Vec<String>>,
    /// Whether anything is recorded: off when nothing serves the metrics, so a deployment
    /// without `CAPSIGN_METRICS_LISTEN` pays nothing for them.
    enabled: bool,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

fn latency_histogram() -> Histogram {
    // 0.1 ms to about 6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

fn size_histogram() -> Histogram {
    // 64 bytes to 16 KiB.
    Histogram::new(exponential_buckets(64.0, 2.0, 9))
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered (each app instance has its own, so
    /// several in one process stay apart).
    pub fn new() -> Metrics {
        let mut root = Registry::default();
        #[cfg(not(target_arch = "wasm32"))]
        root.register_collector(Box::new(process::ProcessCollector));
        #[cfg(not(target_arch = "wasm32"))]
        let mut families: Vec<String> = process::PROCESS_FAMILIES
            .iter()
            .map(|f| f.to_string())
            .collect();
        #[cfg(target_arch = "wasm32")]
        let mut families: Vec<String> = Vec::new();
        let registry = root.sub_registry_with_prefix("capsign");
        let mut named = |name: &str, unit: Option<&str>| {
            families.push(match unit {
                Some(unit) => format!("capsign_{name}_{unit}"),
                None => format!("capsign_{name}"),
            });
        };
        let requests = Family::<RouteStatus, Counter>::default();
        named("http_requests", None);
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        let request_duration =
            Family::<Route, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        named("http_request_duration", Some("seconds"));
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request, by route",
            Unit::Seconds,
            request_duration.clone(),
        );
        let in_flight = Gauge::default();
        named("http_requests_in_flight", None);
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being answered",
            in_flight.clone(),
        );
        let credentials = Family::<FormatLabel, Counter>::default();
        named("credentials_issued", None);
        registry.register(
            "credentials_issued",
            "Credentials issued, by format (jwt, tokenRequest, token)",
            credentials.clone(),
        );
        let decisions = Family::<Decision, Counter>::default();
        named("grant_decisions", None);
        registry.register(
            "grant_decisions",
            "Requested grants, by decider (cookie: already held; rules; webhook) and outcome",
            decisions.clone(),
        );
        let refusals = Family::<Code, Counter>::default();
        named("refusals", None);
        registry.register(
            "refusals",
            "Requests refused, by Ably error code",
            refusals.clone(),
        );
        let cookies = Family::<CookieResultLabel, Counter>::default();
        named("grant_cookies", None);
        registry.register(
            "grant_cookies",
            "Grant cookies and grants headers presented, by result",
            cookies.clone(),
        );
        let cookie_keys = Family::<KeyId, Counter>::default();
        named("grant_cookie_keys", None);
        registry.register(
            "grant_cookie_keys",
            "Grant cookies opened, by the id of the key that opened them",
            cookie_keys.clone(),
        );
        let cookie_bytes = size_histogram();
        named("grant_cookie_size", Some("bytes"));
        registry.register_with_unit(
            "grant_cookie_size",
            "Size of the sealed grant cookie value",
            Unit::Bytes,
            cookie_bytes.clone(),
        );
        let credential_bytes =
            Family::<FormatLabel, Histogram>::new_with_constructor(size_histogram as fn() -> _);
        named("credential_size", Some("bytes"));
        registry.register_with_unit(
            "credential_size",
            "Size of the credential, by format",
            Unit::Bytes,
            credential_bytes.clone(),
        );
        let webhook_duration = latency_histogram();
        named("webhook_duration", Some("seconds"));
        registry.register_with_unit(
            "webhook_duration",
            "Time the policy webhook took to answer",
            Unit::Seconds,
            webhook_duration.clone(),
        );
        let webhook_errors = Family::<Kind, Counter>::default();
        named("webhook_errors", None);
        registry.register(
            "webhook_errors",
            "Policy webhook calls without a usable answer, by kind",
            webhook_errors.clone(),
        );
        let ably_duration = latency_histogram();
        named("ably_duration", Some("seconds"));
        registry.register_with_unit(
            "ably_duration",
            "Time Ably's REST API took to answer",
            Unit::Seconds,
            ably_duration.clone(),
        );
        let ably_errors = Family::<Kind, Counter>::default();
        named("ably_errors", None);
        registry.register(
            "ably_errors",
            "Ably REST calls that failed, by kind",
            ably_errors.clone(),
        );
        let jwks_refreshes = Family::<CookieResultLabel, Counter>::default();
        named("jwks_refreshes", None);
        registry.register(
            "jwks_refreshes",
            "Fetches of the JWKS URL, by result (ok, error)",
            jwks_refreshes.clone(),
        );
        let revocation_reads = Family::<CookieResultLabel, Counter>::default();
        named("revocation_list_reads", None);
        registry.register(
            "revocation_list_reads",
            "Reads of the revocation list (CAPSIGN_REVOCATIONS), by result (ok: a new list, \
             unchanged, error: the last list kept)",
            revocation_reads.clone(),
        );
        let revocation_entries = Gauge::default();
        named("revocation_list_entries", None);
        registry.register(
            "revocation_list_entries",
            "Entries of the revocation list in force (those younger than CAPSIGN_GRANT_MAX_AGE)",
            revocation_entries.clone(),
        );
        let revocation_age = Gauge::default();
        named("revocation_list_age", Some("seconds"));
        registry.register_with_unit(
            "revocation_list_age",
            "Seconds since the revocation list was last read successfully (-1: never)",
            Unit::Seconds,
            revocation_age.clone(),
        );
        let revocation_stale = Gauge::default();
        named("revocation_list_stale", None);
        registry.register(
            "revocation_list_stale",
            "1 when the revocation list is older than CAPSIGN_REVOCATIONS_MAX_STALE: every held \
             grant is re-checked by the policy",
            revocation_stale.clone(),
        );
        let grants_revoked = Counter::default();
        named("grants_revoked", None);
        registry.register(
            "grants_revoked",
            "Held grants dropped by the revocation list as a cookie or header opened",
            grants_revoked.clone(),
        );
        let connections_shed = Family::<Reason, Counter>::default();
        named("connections_shed", None);
        registry.register(
            "connections_shed",
            "Connections answered 503 and closed, by the limit reached (max_connections: \
             CAPSIGN_MAX_CONNECTIONS; per_peer: CAPSIGN_MAX_CONNECTIONS_PER_PEER)",
            connections_shed.clone(),
        );
        for reason in [ShedReason::MaxConnections, ShedReason::PerPeer] {
            drop(connections_shed.get_or_create(&Reason {
                reason: reason.label(),
            }));
        }
        let connections_open = Gauge::default();
        named("connections_open", None);
        registry.register(
            "connections_open",
            "Client connections open now (of CAPSIGN_MAX_CONNECTIONS)",
            connections_open.clone(),
        );
        let clock_offset = Gauge::<f64, AtomicU64>::default();
        named("clock_offset", Some("seconds"));
        registry.register_with_unit(
            "clock_offset",
            "Correction applied to the system clock from Ably's /time (CAPSIGN_ABLY_TIME)",
            Unit::Seconds,
            clock_offset.clone(),
        );
        let ready = Gauge::default();
        named("ready", None);
        registry.register(
            "ready",
            "1 when the instance takes traffic (/readyz answers 200), 0 when starting or draining",
            ready.clone(),
        );
        let build_info = Family::<Version, Gauge>::default();
        named("build_info", None);
        registry.register("build_info", "capsign's version", build_info.clone());
        build_info
            .get_or_create(&Version {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        // Every counter with a known set of label values starts at 0 for each, so a rate or
        // an alert over it has a series from the first scrape (not only after the first
        // event).
        for format in FORMATS {
            drop(credentials.get_or_create(&FormatLabel { format }));
        }
        for decider in ["cookie", "rules", "webhook"] {
            for outcome in ["allowed", "denied"] {
                drop(decisions.get_or_create(&Decision { decider, outcome }));
            }
        }
        for result in COOKIE_RESULTS {
            drop(cookies.get_or_create(&CookieResultLabel {
                result: result.label(),
            }));
        }
        for kind in WEBHOOK_ERROR_KINDS {
            drop(webhook_errors.get_or_create(&Kind { kind }));
        }
        for kind in ABLY_ERROR_KINDS {
            drop(ably_errors.get_or_create(&Kind { kind }));
        }
        for result in ["ok", "error"] {
            drop(jwks_refreshes.get_or_create(&CookieResultLabel { result }));
        }
        for result in ["ok", "unchanged", "error"] {
            drop(revocation_reads.get_or_create(&CookieResultLabel { result }));
        }
        Metrics {
            requests: Hot::new(requests),
            request_duration: Hot::new(request_duration),
            in_flight,
            credentials: Hot::new(credentials),
            decisions: Hot::new(decisions),
            refusals: Hot::new(refusals),
            cookies: Hot::new(cookies),
            cookie_keys: Hot::new(cookie_keys),
            cookie_bytes,
            credential_bytes: Hot::new(credential_bytes),
            webhook_duration,
            webhook_errors,
            ably_duration,
            ably_errors,
            jwks_refreshes,
            revocation_reads,
            revocation_entries,
            revocation_age,
            revocation_stale,
            grants_revoked,
            connections_shed,
            connections_open,
            clock_offset,
            ready,
            registry: std::sync::Arc::new(root),
            families: std::sync::Arc::new(families),
            enabled: true,
        }
    }

    /// A registry that records nothing (every recording method returns at once); its
    /// exposition shows the build info and the process metrics alone.
    pub fn disabled() -> Metrics {
        Metrics {
            enabled: false,
            ..Metrics::new()
        }
    }

    /// The name of every metric family (as `# TYPE` names it: a counter's samples add
    /// `_total`, a histogram's `_bucket`, `_sum` and `_count`).
    pub fn families(&self) -> &[String] {
        &self.families
    }

    /// The exposition of every metric in OpenMetrics 1.0 text.
    pub fn encode(&self) -> String {
        self.encode_as(Exposition::OpenMetrics)
    }

    /// The exposition of every metric in `format`.
    pub fn encode_as(&self, format: Exposition) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a `String` cannot fail.
        let _ = match format {
            Exposition::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
            Exposition::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
        };
        out
    }

    /// Counts every refusal code in `codes` at 0, so each has a series from the first
    /// scrape (the error table knows them; the server calls this before serving metrics).
    pub fn known_refusals(&self, codes: &[u32]) {
        for &code in codes {
            self.refusals.with(Code { code }, |_| {});
        }
    }

    /// Whether anything is recorded ([`Metrics::disabled`] records nothing).
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// A request starts: in flight until the guard is dropped (also when the request is
    /// dropped half-way, as when its client disconnects).
    pub fn in_flight(&self) -> InFlight {
        if self.enabled {
            self.in_flight.inc();
            return InFlight(Some(self.in_flight.clone()));
        }
        InFlight(None)
    }

    /// A request on `route` was answered with `status` after `took`; `refusal` is the Ably
    /// error code of a refusal.
    pub fn request_done(
        &self,
        route: &'static str,
        status: u16,
        took: Duration,
        refusal: Option<u32>,
    ) {
        if !self.enabled {
            return;
        }
        self.requests.with(RouteStatus { route, status }, |c| {
            c.inc();
        });
        self.request_duration
            .with(Route { route }, |h| h.observe(took.as_secs_f64()));
        if let Some(code) = refusal {
            self.refusals.with(Code { code }, |c| {
                c.inc();
            });
        }
    }

    /// A credential of `format` (`jwt`, `tokenRequest`, `token`) of `bytes` was issued.
    pub fn credential(&self, format: &'static str, bytes: usize) {
        if !self.enabled {
            return;
        }
        self.credentials.with(FormatLabel { format }, |c| {
            c.inc();
        });
        self.credential_bytes
            .with(FormatLabel { format }, |h| h.observe(bytes as f64));
    }

    /// `n` requested grants were decided by `decider`, `allowed` or not.
    pub fn decisions(&self, decider: Decider, allowed: bool, n: usize) {
        if !self.enabled {
            return;
        }
        if n == 0 {
            return;
        }
        let decider = match decider {
            Decider::Cookie => "cookie",
            Decider::Rules => "rules",
            Decider::Webhook => "webhook",
        };
        let outcome = if allowed { "allowed" } else { "denied" };
        self.decisions.with(Decision { decider, outcome }, |c| {
            c.inc_by(n as u64);
        });
    }

    /// A presented grant cookie (or header) came out as `result`; `key_id` when it opened.
    pub fn cookie(&self, result: CookieResult, key_id: Option<u8>) {
        if !self.enabled {
            return;
        }
        let result = result.label();
        self.cookies.with(CookieResultLabel { result }, |c| {
            c.inc();
        });
        if let Some(key_id) = key_id {
            self.cookie_keys.with(KeyId { key_id }, |c| {
                c.inc();
            });
        }
    }

    /// A connection was shed at a connection limit.
    pub fn connection_shed(&self, reason: ShedReason) {
        if self.enabled {
            self.connections_shed
                .get_or_create(&Reason {
                    reason: reason.label(),
                })
                .inc();
        }
    }

    /// A client connection was accepted (`1`) or ended (`-1`).
    pub fn connections_open_by(&self, delta: i64) {
        if self.enabled {
            self.connections_open.inc_by(delta);
        }
    }

    /// A grant cookie of `bytes` was sealed.
    pub fn cookie_sealed(&self, bytes: usize) {
        if !self.enabled {
            return;
        }
        self.cookie_bytes.observe(bytes as f64);
    }

    /// A webhook call took `took`; `error` names the kind of failure, if it failed.
    pub fn webhook_call(&self, took: Duration, error: Option<&'static str>) {
        if !self.enabled {
            return;
        }
        self.webhook_duration.observe(took.as_secs_f64());
        if let Some(kind) = error {
            self.webhook_errors.get_or_create(&Kind { kind }).inc();
        }
    }

    /// An Ably REST call took `took`; `error` names the kind of failure, if it failed.
    pub fn ably_call(&self, took: Duration, error: Option<&'static str>) {
        if !self.enabled {
            return;
        }
        self.ably_duration.observe(took.as_secs_f64());
        if let Some(kind) = error {
            self.ably_errors.get_or_create(&Kind { kind }).inc();
        }
    }

    /// A fetch of the JWKS URL ended, `ok` or not.
    pub fn jwks_refresh(&self, ok: bool) {
        if !self.enabled {
            return;
        }
        let result = if ok { "ok" } else { "error" };
        self.jwks_refreshes
            .get_or_create(&CookieResultLabel { result })
            .inc();
    }

    /// A read of the revocation list ended: `ok` (a new list), `unchanged` or `error`.
    pub fn revocation_read(&self, result: &'static str) {
        if !self.enabled {
            return;
        }
        self.revocation_reads
            .get_or_create(&CookieResultLabel { result })
            .inc();
    }

    /// The revocation list in force has `n` entries.
    pub fn revocation_entries(&self, n: usize) {
        if !self.enabled {
            return;
        }
        self.revocation_entries
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The revocation list's age (`None`: never read, shown as -1) and staleness (set when
    /// the metrics are read).
    pub fn revocation_age(&self, age_s: Option<u64>, stale: bool) {
        self.revocation_age
            .set(age_s.map_or(-1, |a| i64::try_from(a).unwrap_or(i64::MAX)));
        self.revocation_stale.set(i64::from(stale));
    }

    /// `n` held grants were dropped by the revocation list.
    pub fn grants_revoked(&self, n: usize) {
        if !self.enabled || n == 0 {
            return;
        }
        self.grants_revoked
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// Whether the instance takes traffic (set when the metrics are read).
    pub fn ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// The clock correction applied at start-up.
    pub fn clock_offset(&self, offset_ms: i64) {
        if !self.enabled {
            return;
        }
        #[allow(clippy::cast_precision_loss, reason = "an offset of minutes at most")]
        self.clock_offset.set(offset_ms as f64 / 1000.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_handles_count_into_the_family_past_their_slots_and_across_threads() {
        let m = Metrics::new();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for code in 0..(2 * HOT_SLOTS as u32) {
                        for _ in 0..=code % 3 {
                            m.request_done("auth", 400, Duration::ZERO, Some(40_000 + code));
                        }
                    }
                });
            }
        });
        let text = m.encode();
        for code in 0..(2 * HOT_SLOTS as u32) {
            let want = format!(
                "capsign_refusals_total{{code=\"{}\"}} {}\n",
                40_000 + code,
                4 * (code % 3 + 1)
            );
            assert!(text.contains(&want), "{want} in\n{text}");
        }
        let total: u32 = (0..(2 * HOT_SLOTS as u32)).map(|c| 4 * (c % 3 + 1)).sum();
        assert!(text.contains(&format!(
            "capsign_http_requests_total{{route=\"auth\",status=\"400\"}} {total}\n"
        )));
    }

    #[test]
    fn exposition_names_every_family_once_with_bounded_labels() {
        let m = Metrics::new();
        let first = m.in_flight();
        m.request_done("auth", 200, Duration::from_millis(2), None);
        drop(first);
        let second = m.in_flight();
        assert!(m.encode().contains("capsign_http_requests_in_flight 1"));
        m.request_done("auth", 403, Duration::from_millis(1), Some(40160));
        drop(second);
        m.credential("jwt", 700);
        m.decisions(Decider::Rules, true, 2);
        m.cookie(CookieResult::Opened, Some(2));
        let text = m.encode();
        for line in [
            "capsign_http_requests_total{route=\"auth\",status=\"200\"} 1",
            "capsign_http_requests_total{route=\"auth\",status=\"403\"} 1",
            "capsign_http_requests_in_flight 0",
            "capsign_refusals_total{code=\"40160\"} 1",
            "capsign_credentials_issued_total{format=\"jwt\"} 1",
            "capsign_grant_decisions_total{decider=\"rules\",outcome=\"allowed\"} 2",
            "capsign_grant_cookies_total{result=\"opened\"} 1",
            "capsign_grant_cookie_keys_total{key_id=\"2\"} 1",
            "capsign_build_info{version=\"",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        // Two registries stay apart.
        assert!(!Metrics::new().encode().contains("route=\"auth\""));
    }
}
