//! The app: the services built from [`Settings`], the clock, and the start-up I/O.
//!
//! [`App::build`] asks each module to build its own service from its own settings (identity,
//! policy, grant cookie, Ably), reads the files they name, and mints one self-test credential;
//! it makes no network call. [`App::prepare`] then does the start-up network I/O, once, before
//! serving: the first fetch of a JWKS URL, and the clock correction from Ably's `/time` when
//! `CAPSIGN_ABLY_TIME` is on. Request handlers get a `&App`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use web_time::{SystemTime, UNIX_EPOCH};

use crate::ably::{Ably, AblyError};
use crate::capability::CapabilitySet;
use crate::client::{HttpClient, Platform};
use crate::flow::Flow;
use crate::grants::Sealer;
use crate::identity::{IdentityBuildError, IdentityService, JwksError};
use crate::metrics::Metrics;
use crate::policy::{Policy, PolicyBuildError};
use crate::revocation::{RevocationError, Revocations};
use crate::settings::{HttpSettings, ServerSettings, Settings};

/// The time source: the system clock plus an offset that tests and the clock correction from
/// Ably's `/time` can set.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    /// Milliseconds since the Unix epoch. A system clock before the epoch reads as the epoch:
    /// [`App::build`] refuses to start on one, so that is only a clock set back past 1970
    /// while serving, and time 0 expires every session and grant (capsign refuses, it never
    /// grants more).
    pub fn now_ms(&self) -> u64 {
        let sys = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        sys.saturating_add_signed(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves the clock by `delta_ms` (tests; clock correction).
    pub fn advance(&self, delta_ms: i64) {
        self.offset_ms.fetch_add(delta_ms, Ordering::Relaxed);
    }
}

/// Why the app could not be built or prepared. Each names the setting to look at.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The identity settings (a key file, a JWKS file).
    #[error(transparent)]
    Identity(#[from] IdentityBuildError),
    /// The policy settings (the rules file).
    #[error(transparent)]
    Policy(#[from] PolicyBuildError),
    /// The JWKS URL could not be fetched at start-up, or holds no usable key.
    #[error("CAPSIGN_SESSION_JWKS: {0}")]
    Jwks(#[from] JwksError),
    /// The revocation list could not be read (a file at build, a URL at start-up).
    #[error("CAPSIGN_REVOCATIONS: {0}")]
    Revocations(#[from] RevocationError),
    /// Minting a credential failed at start-up: a broken crypto backend.
    #[error("self-test: {0}")]
    SelfTest(&'static str),
}

impl AppError {
    /// The setting to fix (or `self-test`).
    pub fn setting(&self) -> &'static str {
        match self {
            AppError::Identity(e) => e.setting(),
            AppError::Policy(_) => "CAPSIGN_RULES",
            AppError::Jwks(_) => "CAPSIGN_SESSION_JWKS",
            AppError::Revocations(_) => "CAPSIGN_REVOCATIONS",
            AppError::SelfTest(_) => "self-test",
        }
    }
}

/// Everything a request handler needs.
#[derive(Debug)]
pub struct App {
    /// The settings the app was built from.
    pub settings: Settings,
    /// Who is asking.
    pub identity: IdentityService,
    /// The auth flow and its services.
    pub flow: Flow,
    /// The time source.
    pub clock: Clock,
    /// This app's metrics (its own registry).
    pub metrics: Metrics,
    /// [`App::prepare`] succeeded (or [`App::set_ready`] was called).
    ready: AtomicBool,
    /// [`App::begin_drain`] was called: draining outranks ready.
    draining: AtomicBool,
}

/// What `/readyz` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The start-up work (JWKS fetch, clock correction) is not done yet.
    Starting,
    /// Serving.
    Ready,
    /// Shutting down: still serving, but load balancers should send no new traffic.
    Draining,
}

impl App {
    /// Builds every service from `settings`; reads the files they name, calls out to nothing.
    ///
    /// # Errors
    ///
    /// A file that cannot be read or is not valid, or a failed self-test.
    pub fn build(settings: Settings, platform: Arc<dyn Platform>) -> Result<App, AppError> {
        // Recorded only when something serves them.
        let metrics = if settings.server.metrics_listen.is_some() {
            Metrics::new()
        } else {
            Metrics::disabled()
        };
        App::build_with(settings, platform, metrics)
    }

    /// [`App::build`], recording into `metrics` whatever the settings say (a runtime without
    /// a metrics listener that reports them another way: a Worker logs them).
    ///
    /// # Errors
    ///
    /// As [`App::build`].
    pub fn build_with(
        settings: Settings,
        platform: Arc<dyn Platform>,
        metrics: Metrics,
    ) -> Result<App, AppError> {
        let client = HttpClient::new(platform);
        let policy = Policy::build(&settings.policy, &client, &metrics)?;
        let revocation_key = settings.revocation.key.clone();
        let keep_claims = policy.reads_claims()
            || settings.ably.embedded.is_some()
            || revocation_key
                .as_ref()
                .is_some_and(crate::policy::ClaimTemplate::reads_claims);
        let identity = IdentityService::build(
            &settings.identity,
            &settings.cookie.keys,
            &client,
            &metrics,
            keep_claims,
        )?;
        let clock = Clock::default();
        let revocations = Revocations::build(
            &settings.revocation,
            settings.flow.grant_max_age_s,
            client.clone(),
            metrics.clone(),
            clock.now_ms(),
        )?;
        let flow = Flow::new(
            Sealer::from_settings(&settings.cookie),
            policy,
            Ably::new(&settings.ably, client),
            settings.flow.clone(),
        )
        .with_metrics(metrics.clone())
        .with_revocation(revocations, revocation_key);
        let app = App {
            settings,
            identity,
            flow,
            clock,
            metrics,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        };
        app.self_test()?;
        Ok(app)
    }

    /// What `/readyz` answers now.
    pub fn readiness(&self) -> Readiness {
        if self.draining.load(Ordering::Acquire) {
            Readiness::Draining
        } else if self.ready.load(Ordering::Acquire) {
            Readiness::Ready
        } else {
            Readiness::Starting
        }
    }

    /// Ready to serve: [`App::prepare`] succeeded (it sets this itself).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Shutting down: `/readyz` answers 503 from now on, while requests are still served.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// The request limits and cross-origin callers.
    pub fn http_settings(&self) -> &HttpSettings {
        &self.settings.http
    }

    /// The transport limits.
    pub fn server_settings(&self) -> &ServerSettings {
        &self.settings.server
    }

    /// The start-up network I/O, once, before serving. Returns notes for the operator (a
    /// failed clock correction is one: capsign then runs on the system clock).
    ///
    /// # Errors
    ///
    /// The JWKS URL could not be fetched or holds no usable key: no session could verify.
    pub async fn prepare(&self) -> Result<Vec<String>, AppError> {
        let mut notes = Vec::new();
        if self.settings.ably.correct_clock {
            match self.correct_clock().await {
                Ok(offset) => {
                    self.metrics.clock_offset(offset);
                    notes.push(format!("clock corrected by {offset} ms from Ably's /time"))
                }
                Err(e) => notes.push(format!(
                    "warning: no clock correction ({e}); using the system clock"
                )),
            }
        }
        if let Some(n) = self.identity.prepare(self.clock.now_ms()).await? {
            notes.push(format!("{n} session keys fetched from the JWKS URL"));
        }
        if let Some(revocations) = &self.flow.revocations {
            let n = revocations.prepare(self.clock.now_ms()).await?;
            notes.push(format!("revocation list read: {n} entries in force"));
        }
        self.set_ready();
        Ok(notes)
    }

    async fn correct_clock(&self) -> Result<i64, AblyError> {
        let before = self.clock.now_ms();
        let ably = self.flow.ably.rest.time().await?;
        let after = self.clock.now_ms();
        // Ably's reading is taken somewhere during the round trip: compare with its middle.
        let local = before / 2 + after / 2;
        let offset = i64::try_from(ably)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(local).unwrap_or(i64::MAX));
        self.clock.advance(offset);
        Ok(offset)
    }

    /// Sets the gauges read at scrape time: readiness, and the revocation list's age.
    pub fn observe(&self) {
        self.metrics.ready(self.readiness() == Readiness::Ready);
        if let Some(revocations) = &self.flow.revocations {
            let now = self.clock.now_ms();
            self.metrics
                .revocation_age(revocations.age_s(now), revocations.is_stale(now));
        }
    }

    /// Mints and checks one JWT, so a broken crypto backend stops the start, not a request.
    fn self_test(&self) -> Result<(), AppError> {
        let all = CapabilitySet::from_json(r#"{"*":["subscribe"]}"#)
            .map_err(|_| AppError::SelfTest("the capability parser refused {\"*\":[...]}"))?;
        let jwt = self.flow.ably.key.jwt(&all, Some("self-test"), 1, 2);
        if jwt.split('.').count() != 3 {
            return Err(AppError::SelfTest("the minted JWT is malformed"));
        }
        if SystemTime::now().duration_since(UNIX_EPOCH).is_err() {
            return Err(AppError::SelfTest(
                "the system clock is before 1970: set it (sessions and grants are timed by it)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::StatusCode;

    use crate::ably::AblyError;
    use crate::client::ClientError;
    use crate::metrics::{ABLY_ERROR_KINDS, WEBHOOK_ERROR_KINDS};
    use crate::policy::WebhookError;

    /// Every kind of outbound failure is a label value the metrics count at 0 from the start.
    #[test]
    fn every_outbound_error_kind_is_a_known_label() {
        let calls = [
            ClientError::Timeout(Duration::ZERO),
            ClientError::Network(String::new()),
            ClientError::TooLarge(0),
        ];
        let hook = calls.iter().cloned().map(WebhookError::Call).chain([
            WebhookError::Status(StatusCode::BAD_GATEWAY),
            WebhookError::Malformed(String::new()),
        ]);
        for e in hook {
            assert!(WEBHOOK_ERROR_KINDS.contains(&e.kind()), "{e}");
        }
        let ably = calls.into_iter().map(AblyError::Unreachable).chain([
            AblyError::Refused {
                status: StatusCode::UNAUTHORIZED,
                code: 40101,
                message: String::new(),
            },
            AblyError::Malformed(String::new()),
        ]);
        for e in ably {
            assert!(ABLY_ERROR_KINDS.contains(&e.kind()), "{e}");
        }
    }
}
