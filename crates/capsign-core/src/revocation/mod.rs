//! Revocation that takes effect now: the revocation list every instance reads
//! (`CAPSIGN_REVOCATIONS`), applied when a client's sealed grants open.
//!
//! capsign keeps no per-client state, so it cannot forget one cookie. Instead, every instance
//! reads the same list (a file, or a URL refreshed with `If-None-Match` every
//! `CAPSIGN_REVOCATIONS_REFRESH`); when a grant cookie or header of a listed clientId (or of
//! a user whose `x-ably-revocation-key` is listed) opens, the grants approved before the
//! entry's time (only the listed resources, when it names some) leave the held set, and the
//! policy is asked about them again. The check is one hash lookup of the clientId.
//!
//! A failed refresh keeps the last list. After `CAPSIGN_REVOCATIONS_MAX_STALE` without a
//! successful read, the list may be missing revocations, so every held grant is re-checked
//! by the policy on every request until a read succeeds again. An instance is not ready until
//! its first read succeeded (a file that cannot be read or parsed stops the start).

mod list;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use sha2::Digest as _;

use crate::client::{ClientError, HttpClient, USER_AGENT};
use crate::grants::GrantSet;
use crate::metrics::Metrics;
use crate::settings::{Location, RevocationSettings};

pub use list::{
    Entry, EntryDoc, ListDoc, ListError, MAX_ENTRIES, MAX_LIST_BYTES, MAX_RESOURCES, RevocationList,
};

/// Time a list URL has to answer.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the list could not be read. The previous list stays in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    /// The file could not be read.
    #[error("{path}: {problem}")]
    File {
        /// The file.
        path: String,
        /// Why.
        problem: String,
    },
    /// The URL could not be fetched.
    #[error("{url}: {source}")]
    Fetch {
        /// The URL.
        url: String,
        /// Why.
        source: ClientError,
    },
    /// The URL answered another status than 200 or 304.
    #[error("{url} answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// Its status.
        status: StatusCode,
    },
    /// The document is not a usable list.
    #[error("{at}: {source}")]
    List {
        /// The file or URL.
        at: String,
        /// What is wrong with it.
        source: ListError,
    },
}

/// What a read of the list did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refreshed {
    /// A new list is in force, with this many entries.
    Loaded(usize),
    /// The document had not changed (`304`, or the same file contents).
    Unchanged,
}

/// What the list says about one request's held grants.
#[derive(Debug, Default)]
pub struct Applied {
    /// The grants revoked (removed from the held set): the policy is asked about them again,
    /// and they never come back without its approval.
    pub revoked: GrantSet,
    /// The list is older than its staleness limit: every held grant is due for a re-check.
    pub stale: bool,
    /// The earliest `iat` (Unix seconds) a credential minted now may carry: after a
    /// revocation at Ably, a credential "issued" (back-dated) before it would be refused too.
    pub issued_not_before_s: u64,
}

/// A list URL as logs show it: without its query, which may hold a credential (an object
/// store's pre-signed URL).
fn shown(url: &Uri) -> String {
    let path = url.path();
    match (url.scheme_str(), url.authority(), url.query()) {
        (Some(scheme), Some(authority), query) => format!(
            "{scheme}://{authority}{path}{}",
            if query.is_some() { "?…" } else { "" }
        ),
        _ => path.to_owned(),
    }
}

/// Where the list comes from.
enum Source {
    File(PathBuf),
    Url(Uri),
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::File(path) => path.display().to_string(),
            Source::Url(url) => shown(url),
        }
    }
}

/// The list in force and its refresh bookkeeping, shared with background refreshes.
pub struct Revocations {
    source: Source,
    list: RwLock<Arc<RevocationList>>,
    /// The ETag of the URL's document, or the digest of the file's contents, last read.
    validator: Mutex<Option<String>>,
    /// When a read last succeeded (ms since the epoch; 0: never).
    loaded_at_ms: AtomicU64,
    /// When a read was last tried.
    tried_at_ms: AtomicU64,
    refreshing: AtomicBool,
    refresh_ms: u64,
    max_stale_ms: u64,
    max_age_ms: u64,
    client: HttpClient,
    metrics: Metrics,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("source", &self.source.describe())
            .field("entries", &self.current().len())
            .field("loaded_at_ms", &self.loaded_at_ms.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Revocations {
    /// The list the settings name, if any: a file is read and parsed now (at start-up); a
    /// URL is fetched by [`Revocations::prepare`].
    ///
    /// # Errors
    ///
    /// The file cannot be read or is not a usable list.
    pub fn build(
        settings: &RevocationSettings,
        grant_max_age_s: u64,
        client: HttpClient,
        metrics: Metrics,
        now_ms: u64,
    ) -> Result<Option<Revocations>, RevocationError> {
        let Some(location) = &settings.list else {
            return Ok(None);
        };
        let source = match location {
            Location::File(path) => Source::File(path.clone()),
            Location::Url(url) => Source::Url(url.clone()),
        };
        let revocations = Revocations {
            source,
            list: RwLock::new(Arc::new(RevocationList::default())),
            validator: Mutex::new(None),
            loaded_at_ms: AtomicU64::new(0),
            tried_at_ms: AtomicU64::new(0),
            refreshing: AtomicBool::new(false),
            refresh_ms: millis(settings.refresh),
            max_stale_ms: millis(settings.max_stale),
            max_age_ms: grant_max_age_s.saturating_mul(1000),
            client,
            metrics,
        };
        if matches!(revocations.source, Source::File(_)) {
            let read = revocations.read_file(now_ms);
            revocations.record(now_ms, read)?;
        }
        Ok(Some(revocations))
    }

    /// The list in force.
    pub fn current(&self) -> Arc<RevocationList> {
        match self.list.read() {
            Ok(l) => Arc::clone(&l),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// When a read last succeeded (ms since the epoch), if ever.
    pub fn loaded_at_ms(&self) -> Option<u64> {
        Some(self.loaded_at_ms.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    /// Whether the list is past its staleness limit at `now_ms` (or was never read).
    pub fn is_stale(&self, now_ms: u64) -> bool {
        self.loaded_at_ms()
            .is_none_or(|at| now_ms.saturating_sub(at) > self.max_stale_ms)
    }

    /// The start-up read of a URL (a file was read when built).
    ///
    /// # Errors
    ///
    /// See [`RevocationError`]: the instance is not ready until a read succeeds.
    pub async fn prepare(&self, now_ms: u64) -> Result<usize, RevocationError> {
        if self.loaded_at_ms().is_none() {
            self.refresh(now_ms).await?;
        }
        Ok(self.current().len())
    }

    /// Reads the list now; a failure keeps the list in force.
    ///
    /// # Errors
    ///
    /// See [`RevocationError`].
    pub async fn refresh(&self, now_ms: u64) -> Result<Refreshed, RevocationError> {
        let result = match &self.source {
            Source::File(_) => self.read_file(now_ms),
            Source::Url(url) => self.fetch(url, now_ms).await,
        };
        self.record(now_ms, result)
    }

    /// Notes a read tried at `now_ms` and counts its result.
    fn record(
        &self,
        now_ms: u64,
        result: Result<Refreshed, RevocationError>,
    ) -> Result<Refreshed, RevocationError> {
        self.tried_at_ms.store(now_ms, Ordering::Relaxed);
        self.metrics.revocation_read(match &result {
            Ok(Refreshed::Loaded(_)) => "ok",
            Ok(Refreshed::Unchanged) => "unchanged",
            Err(_) => "error",
        });
        result
    }

    fn read_file(&self, now_ms: u64) -> Result<Refreshed, RevocationError> {
        let Source::File(path) = &self.source else {
            return Ok(Refreshed::Unchanged);
        };
        let bytes = self
            .client
            .read_file(path)
            .map_err(|e| RevocationError::File {
                path: path.display().to_string(),
                problem: e.to_string(),
            })?;
        let digest = hex::encode(sha2::Sha256::digest(&bytes));
        self.install(&bytes, Some(digest), now_ms)
    }

    async fn fetch(&self, url: &Uri, now_ms: u64) -> Result<Refreshed, RevocationError> {
        let validator = self.validator();
        let request = || {
            let mut req = Request::builder()
                .method(Method::GET)
                .uri(url.clone())
                .header(header::ACCEPT, "application/json")
                .header(header::USER_AGENT, USER_AGENT);
            if let Some(etag) = &validator {
                req = req.header(header::IF_NONE_MATCH, etag);
            }
            req.body(Bytes::new())
                .map_err(|e| ClientError::Network(e.to_string()))
        };
        let fetch_error = |source| RevocationError::Fetch {
            url: shown(url),
            source,
        };
        // A GET is safe to send twice: once more at once when the connection failed (a
        // pooled keep-alive connection the server had just closed), not after a timeout.
        let mut attempts = 0;
        let resp = loop {
            attempts += 1;
            let req = request().map_err(fetch_error)?;
            match self.client.send(req, FETCH_TIMEOUT, MAX_LIST_BYTES).await {
                Err(ClientError::Network(_)) if attempts < 2 => {}
                sent => break sent.map_err(fetch_error)?,
            }
        };
        match resp.status {
            StatusCode::NOT_MODIFIED if self.loaded_at_ms().is_some() => {
                self.loaded_at_ms.store(now_ms, Ordering::Relaxed);
                Ok(Refreshed::Unchanged)
            }
            StatusCode::OK => {
                let etag = resp
                    .headers
                    .get(header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                self.install(&resp.body, etag, now_ms)
            }
            status => Err(RevocationError::Status {
                url: shown(url),
                status,
            }),
        }
    }

    fn validator(&self) -> Option<String> {
        match self.validator.lock() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Parses `bytes` and puts the list in force, unless its validator is the one in force.
    fn install(
        &self,
        bytes: &[u8],
        validator: Option<String>,
        now_ms: u64,
    ) -> Result<Refreshed, RevocationError> {
        if validator.is_some() && validator == self.validator() && self.loaded_at_ms().is_some() {
            self.loaded_at_ms.store(now_ms, Ordering::Relaxed);
            return Ok(Refreshed::Unchanged);
        }
        let list = RevocationList::parse(bytes, now_ms, self.max_age_ms).map_err(|source| {
            RevocationError::List {
                at: self.source.describe(),
                source,
            }
        })?;
        let n = list.len();
        match self.list.write() {
            Ok(mut l) => *l = Arc::new(list),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(list),
        }
        match self.validator.lock() {
            Ok(mut v) => *v = validator,
            Err(poisoned) => *poisoned.into_inner() = validator,
        }
        self.loaded_at_ms.store(now_ms, Ordering::Relaxed);
        self.metrics.revocation_entries(n);
        Ok(Refreshed::Loaded(n))
    }

    /// Called on each request: when the last read is older than the refresh interval, reads
    /// again in a spawned task (the request goes on with the list in force), or, on a
    /// runtime frozen between requests, in this request, bounded by the fetch's timeout.
    pub async fn refresh_when_due(self: &Arc<Self>, now_ms: u64) {
        let last = self.tried_at_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) < self.refresh_ms {
            return;
        }
        self.client
            .in_background_or_here(|| {
                let state = Arc::clone(self);
                Box::pin(async move { state.refresh_if_due(now_ms).await })
            })
            .await;
    }

    /// Reads the list if a read is due at `now_ms` and none is running (a failure is logged
    /// and keeps the list in force).
    pub async fn refresh_if_due(&self, now_ms: u64) {
        let last = self.tried_at_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= self.refresh_ms {
            self.refresh_unless_running(now_ms).await;
        }
    }

    /// Reads the list now unless a read is running (a failure is logged and keeps the list in
    /// force): a server's timer, every refresh interval.
    pub async fn refresh_unless_running(&self, now_ms: u64) {
        let Some(_guard) = crate::client::RefreshGuard::take(&self.refreshing) else {
            return;
        };
        // Requests that arrive while this read runs do not start another.
        self.tried_at_ms.store(now_ms, Ordering::Relaxed);
        // Boxed: the fetch's future is large, and every request's future would otherwise
        // carry room for it.
        if let Err(e) = Box::pin(self.refresh(now_ms)).await {
            tracing::warn!(
                "revocation list: {e}; keeping the list read {} s ago",
                self.loaded_at_ms()
                    .map_or(0, |at| now_ms.saturating_sub(at) / 1000)
            );
        }
    }

    /// Applies the list to the grants a client holds, at `now_ms`: removes what it revokes.
    /// `key` renders the user's revocation key, asked only when an entry names one.
    pub fn apply(
        &self,
        client_id: &str,
        key: impl FnOnce() -> Option<String>,
        held: &mut GrantSet,
        now_ms: u64,
    ) -> Applied {
        let mut applied = Applied {
            stale: self.is_stale(now_ms),
            ..Applied::default()
        };
        let list = self.current();
        if list.is_empty() {
            return applied;
        }
        let key = if list.has_keys() { key() } else { None };
        for entry in list.matching(client_id, key.as_deref()) {
            // Approval times are whole seconds: a grant approved in the entry's second may
            // predate it, so it is revoked (and asked again) too.
            let cutoff_s = entry.before_ms / 1000;
            let revoked = held.take_where(cutoff_s, |r| entry.reaches(r));
            applied.revoked.merge(revoked);
            applied.issued_not_before_s = applied
                .issued_not_before_s
                .max(entry.before_ms.div_ceil(1000));
        }
        self.metrics.grants_revoked(applied.revoked.len());
        applied
    }

    /// The list's age in seconds at `now_ms` (since the last successful read), if read.
    pub fn age_s(&self, now_ms: u64) -> Option<u64> {
        self.loaded_at_ms()
            .map(|at| now_ms.saturating_sub(at) / 1000)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_list_url_is_shown_without_its_query() {
        let url = "https://lists.s3.example.com/r.json?X-Amz-Signature=secret"
            .parse()
            .unwrap();
        assert_eq!(super::shown(&url), "https://lists.s3.example.com/r.json?…");
        let plain = "http://127.0.0.1:8080/r.json".parse().unwrap();
        assert_eq!(super::shown(&plain), "http://127.0.0.1:8080/r.json");
    }
}
