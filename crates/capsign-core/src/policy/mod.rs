//! The app's policy: which new grants a client may have.
//!
//! Two deciders, in a fixed order: the [`Rules`] file decides every grant some rule matches,
//! and the [`Webhook`] (the app's own endpoint) decides the rest, in one call per request.
//! With no webhook the rules decide everything (what no rule matches is denied). The policy
//! sees only what the flow sends it: the grants a client asks for that its verified cookie does
//! not already cover (plus grants due for a re-check), never the whole held set, and never an
//! unverified cookie.

pub(crate) mod rules;
pub(crate) mod webhook;

use std::path::PathBuf;
use web_time::Instant;

use crate::capability::CapabilitySet;
use crate::client::HttpClient;
use crate::identity::Identity;
use crate::metrics::{Decider, Metrics};
use crate::settings::{PatternPolicy, PolicySettings, RulesSource};

pub use rules::{ClaimTemplate, Rules, RulesError};
pub use webhook::{Webhook, WebhookError};

/// The rules used in demo mode: `examples/rules.toml`, built in.
pub const DEMO_RULES: &str = include_str!("../../../../examples/rules.toml");

/// Why the policy settings could not be put to use at start-up.
#[derive(Debug, thiserror::Error)]
pub enum PolicyBuildError {
    /// The rules file could not be read, or is not UTF-8.
    #[error("CAPSIGN_RULES: cannot read {}: {problem}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        problem: String,
    },
    /// The rules file is not valid.
    #[error("CAPSIGN_RULES: {}: {source}", path.display())]
    Rules {
        /// The file (`examples/rules.toml` for the built-in rules).
        path: PathBuf,
        /// What is wrong in it.
        source: RulesError,
    },
}

/// The rules, then the webhook.
#[derive(Debug)]
pub struct Policy {
    rules: Rules,
    webhook: Option<Webhook>,
    patterns: PatternPolicy,
    metrics: Metrics,
}

impl Policy {
    /// The policy of `settings`: reads and compiles the rules file.
    ///
    /// # Errors
    ///
    /// The rules file cannot be read or is not valid.
    pub fn build(
        settings: &PolicySettings,
        client: &HttpClient,
        metrics: &Metrics,
    ) -> Result<Policy, PolicyBuildError> {
        let rules = match &settings.rules {
            None => Rules::default(),
            Some(RulesSource::Demo) => {
                Rules::from_toml(DEMO_RULES).map_err(|source| PolicyBuildError::Rules {
                    path: PathBuf::from("examples/rules.toml"),
                    source,
                })?
            }
            Some(RulesSource::File(path)) => {
                let read = |problem: String| PolicyBuildError::Read {
                    path: path.clone(),
                    problem,
                };
                let bytes = client.read_file(path).map_err(|e| read(e.to_string()))?;
                let text = String::from_utf8(bytes).map_err(|_| read("not UTF-8".into()))?;
                Rules::from_toml(&text).map_err(|source| PolicyBuildError::Rules {
                    path: path.clone(),
                    source,
                })?
            }
        };
        Ok(Policy {
            rules,
            webhook: settings
                .webhook
                .as_ref()
                .map(|w| Webhook::new(w, client.clone())),
            patterns: settings
                .webhook
                .as_ref()
                .map_or(PatternPolicy::Ask, |w| w.patterns),
            metrics: metrics.clone(),
        })
    }

    /// A policy of rules alone.
    pub fn from_rules(rules: Rules) -> Policy {
        Policy {
            rules,
            webhook: None,
            patterns: PatternPolicy::Ask,
            metrics: Metrics::disabled(),
        }
    }

    /// Whether deciding reads session claims: a rule's `{claims.NAME}` template, or the
    /// webhook (which is sent them).
    pub fn reads_claims(&self) -> bool {
        self.webhook.is_some() || self.rules.reads_claims()
    }

    /// The grants given to every fresh set (the rules marked `default`).
    pub fn defaults(&self, who: &Identity) -> CapabilitySet {
        self.rules.defaults(who)
    }

    /// The user claims of the rules for a minted `capability` (see [`rules`]).
    pub fn claims(&self, who: &Identity, capability: &CapabilitySet) -> Vec<(String, String)> {
        self.rules.claims(who, capability)
    }

    /// Decides `ask` (non-empty) at `now` (Unix seconds): by the rules alone, or, with a
    /// webhook, by the rules for what they match and by the webhook, in one call, for the
    /// rest (without the patterns, with `CAPSIGN_POLICY_PATTERNS=deny`). Returns the granted
    /// part, a subset of `ask`.
    ///
    /// # Errors
    ///
    /// The webhook was needed and gave no usable answer.
    pub async fn decide(
        &self,
        who: &Identity,
        ask: &CapabilitySet,
        now: u64,
        request_id: &str,
    ) -> Result<CapabilitySet, WebhookError> {
        let Some(hook) = &self.webhook else {
            let granted = self.rules.decide(who, ask);
            self.count(Decider::Rules, ask, &granted);
            return Ok(granted);
        };
        let (by_rules, mut rest) = self.rules.split(who, ask);
        let mut granted = if by_rules.is_empty() {
            CapabilitySet::new()
        } else {
            let granted = self.rules.decide(who, &by_rules);
            self.count(Decider::Rules, &by_rules, &granted);
            granted
        };
        if self.patterns == PatternPolicy::Deny {
            // Denied here: left out of what is granted, never sent.
            let is_pattern = crate::capability::Resource::is_pattern;
            let patterns: CapabilitySet = rest
                .iter()
                .filter(|(r, _)| is_pattern(r))
                .map(|(r, ops)| (r.clone(), ops))
                .collect();
            self.count(Decider::Rules, &patterns, &CapabilitySet::new());
            rest = rest
                .iter()
                .filter(|(r, _)| !is_pattern(r))
                .map(|(r, ops)| (r.clone(), ops))
                .collect();
        }
        if !rest.is_empty() {
            let started = Instant::now();
            // Boxed: the webhook call's future is large, and a request the rules decide
            // alone should not carry (and move) its room.
            let answer = Box::pin(hook.decide(who, &rest, now, request_id)).await;
            self.metrics.webhook_call(
                started.elapsed(),
                answer.as_ref().err().map(WebhookError::kind),
            );
            let by_hook = answer?;
            self.count(Decider::Webhook, &rest, &by_hook);
            granted = granted.union(&by_hook);
        }
        Ok(granted)
    }

    /// Counts the decisions of `decider` on `asked`: a resource is allowed when every
    /// operation asked was granted.
    fn count(&self, decider: Decider, asked: &CapabilitySet, granted: &CapabilitySet) {
        let allowed = asked
            .iter()
            .filter(|(r, ops)| ops.is_subset(granted.ops_for(r.as_str()).unwrap_or_default()))
            .count();
        self.metrics.decisions(decider, true, allowed);
        self.metrics
            .decisions(decider, false, asked.len() - allowed);
    }

    /// The rules alone (benchmarks time their evaluation without the webhook's path).
    pub fn rules(&self) -> &Rules {
        &self.rules
    }
}
