//! Reading the table into [`Settings`]: each setting parsed, then the checks across settings
//! (demo or production, keys, identity, policy, TTL bounds).

use super::*;

impl Settings {
    /// What is allowed but unwise, for the operator to read at start-up (and in `check`):
    /// an outbound URL on plain `http` to a host off loopback, whose answers decide grants
    /// (the webhook), identities (a JWKS) or carry credentials (Ably), and which anyone on the
    /// path could then read or forge.
    pub fn warnings(&self) -> Vec<String> {
        let unhealthy = self.http.unhealthy.iter().map(|why| {
            format!("WARNING: {why}; /healthz and /readyz answer 503 so no health check passes")
        });
        let mut urls: Vec<(&str, &Uri, &str)> = Vec::new();
        if let Some(webhook) = &self.policy.webhook {
            urls.push((
                "CAPSIGN_POLICY_URL",
                &webhook.url,
                "its answers decide grants",
            ));
        }
        if let IdentitySettings::Jwt {
            key:
                SessionKeySource::Jwks {
                    location: Location::Url(url),
                    ..
                },
            ..
        } = &self.identity
        {
            urls.push(("CAPSIGN_SESSION_JWKS", url, "its keys decide who a user is"));
        }
        urls.push((
            "CAPSIGN_ABLY_REST_URL",
            &self.ably.rest_url,
            "it carries signed TokenRequests and Ably tokens",
        ));
        urls.into_iter()
            .filter(|(_, url, _)| url.scheme_str() == Some("http") && !is_loopback_host(url))
            .map(|(name, url, why)| {
                format!(
                    "WARNING: {name} is plain http to {}: {why}, and anyone on the path can read \
                     or change them; use https",
                    url.host().unwrap_or_default()
                )
            })
            .chain(unhealthy)
            .collect()
    }

    /// [`Settings::load`] from this process's environment, after
    /// [`refuse_unknown_variables`] on its variable names.
    ///
    /// # Errors
    ///
    /// An unknown `CAPSIGN_*` variable, or what [`Settings::load`] refuses.
    pub fn from_process(file: Option<&Path>) -> Result<Settings, SettingsError> {
        let env = |k: &str| std::env::var(k).ok();
        if let Some((name, var, _)) = aws_secret_references(&env)?.first() {
            return Err(SettingsError::new(
                var,
                format!(
                    "read by capsign-lambda only (through the AWS Parameters and Secrets \
                     extension); here give {name} or {name}{FILE_SUFFIX}"
                ),
            ));
        }
        Settings::from_process_with(file, &[])
    }

    /// [`Settings::from_process`], with `resolved` values (secrets fetched by the caller,
    /// name and value) taking the place of the environment's.
    ///
    /// # Errors
    ///
    /// As [`Settings::from_process`].
    pub fn from_process_with(
        file: Option<&Path>,
        resolved: &[(&str, String)],
    ) -> Result<Settings, SettingsError> {
        refuse_unknown_variables(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()))?;
        Settings::load(
            &|k| {
                resolved
                    .iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| v.clone())
                    .or_else(|| std::env::var(k).ok())
            },
            file,
        )
    }

    /// Adapts the settings to a runtime whose instances come and go by the hundred and are
    /// frozen between requests (AWS Lambda, a Cloudflare Worker): no spawned task may be relied
    /// on (the runtime's platform runs a due JWKS refresh in the request that finds it due).
    /// Refuses what cannot work there.
    ///
    /// # Errors
    ///
    /// Demo mode (its cookie key is random per instance, so every instance would refuse every
    /// other instance's cookies and each cold start would lose every client's grants) and
    /// `header` identity (such a runtime hands capsign no peer address that a trusted proxy
    /// could be checked against).
    pub fn for_serverless(self, runtime: Serverless) -> Result<Settings, SettingsError> {
        let (binary, place, request) = match runtime {
            Serverless::Lambda => ("capsign-lambda", "Lambda", "an event"),
            Serverless::Worker => ("capsign-worker", "a Worker", "a Worker's request"),
        };
        if let Some(first) = self.demo_defaults.first() {
            return Err(SettingsError::new(
                "CAPSIGN_IDENTITY",
                format!(
                    "{binary} does not run in demo mode (it would use a demo value for \
                     {first}; a random cookie key per cold start loses every client's grants): \
                     set ABLY_API_KEY, CAPSIGN_COOKIE_KEY, CAPSIGN_IDENTITY=jwt with its key, and \
                     CAPSIGN_RULES or CAPSIGN_POLICY_URL"
                ),
            ));
        }
        match &self.identity {
            IdentitySettings::Header { .. } => Err(SettingsError::new(
                "CAPSIGN_IDENTITY",
                format!(
                    "header identity cannot work on {place}: {request} carries no peer address \
                     to check CAPSIGN_TRUSTED_PROXIES against; use CAPSIGN_IDENTITY=jwt"
                ),
            )),
            IdentitySettings::Demo => Err(SettingsError::new(
                "CAPSIGN_IDENTITY",
                format!("demo identity cannot work on {place}; use CAPSIGN_IDENTITY=jwt"),
            )),
            IdentitySettings::Jwt { .. } => Ok(self),
        }
    }

    /// Reads and checks every setting from `env` (a lookup such as `std::env::var`) and the
    /// optional TOML `file`. Reads the file and nothing else.
    ///
    /// # Errors
    ///
    /// The first setting that is missing or invalid, by name.
    pub fn load(
        env: &dyn Fn(&str) -> Option<String>,
        file: Option<&Path>,
    ) -> Result<Settings, SettingsError> {
        let file = file.map(read_file).transpose()?;
        let files = secret_files(env)?;
        let env = &|k: &str| {
            files
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.clone())
                .or_else(|| env(k))
        };
        let src = Source { env, file };
        let mut given = Given::read(&src)?;
        // A container platform's PORT (Cloud Run, Fly.io, Knative), when CAPSIGN_LISTEN is
        // unset: on all interfaces, except in demo mode (loopback only).
        let port =
            match (src.get("CAPSIGN_LISTEN"), env("PORT")) {
                (None, Some(p)) => Some(p.trim().parse::<u16>().map_err(|_| {
                    SettingsError::new("PORT", format!("{p:?} is not a port number"))
                })?),
                _ => None,
            };
        if let Some(port) = port {
            given.listen = SocketAddr::from(([127, 0, 0, 1], port));
        }
        // On AWS Lambda with JSON logs configured for the function, log JSON by default.
        if matches!(given.log_format, Derived::Default(_))
            && env("AWS_LAMBDA_LOG_FORMAT").as_deref() == Some("JSON")
        {
            given.log_format = Derived::Default(LogFormat::Json);
        }
        // Anything set beyond where to listen makes this a production configuration, which
        // demo values never complete.
        let configured: Vec<&'static str> = TABLE
            .iter()
            .map(|d| d.name)
            .filter(|n| !TRANSPORT.contains(n) && *n != "CAPSIGN_IDENTITY")
            .filter(|n| src.get(n).is_some())
            .collect();
        let mut settings = Settings::from_given(given, &configured)?;
        match port {
            Some(port) if !settings.is_demo() => {
                settings.listen = SocketAddr::from(([0, 0, 0, 0], port));
            }
            Some(port) => {
                settings.http.unhealthy = Some(format!(
                    "demo mode listens on 127.0.0.1:{port} only (PORT is a container \
                     platform's): nothing outside this host or container can reach it; give \
                     capsign production settings (docs/configuration.md)"
                ));
            }
            None => {}
        }
        Ok(settings)
    }

    /// The revocation settings: a list URL on plain http only on loopback (its entries decide
    /// what is revoked); a refresh at least 1 s and shorter than the staleness limit.
    fn revocation(g: &Given) -> Result<RevocationSettings, SettingsError> {
        if let Some(Location::Url(url)) = &g.revocations {
            if url.scheme_str() == Some("http") && !is_loopback_host(url) {
                return Err(SettingsError::new(
                    "CAPSIGN_REVOCATIONS",
                    format!(
                        "plain http to {}: anyone on the path could drop revocations from the \
                         list; use https (plain http is allowed on loopback only)",
                        url.host().unwrap_or_default()
                    ),
                ));
            }
        }
        if g.revocations_refresh < Duration::from_secs(1) {
            return Err(SettingsError::new(
                "CAPSIGN_REVOCATIONS_REFRESH",
                "must be at least 1s",
            ));
        }
        if g.revocations_max_stale < g.revocations_refresh {
            return Err(SettingsError::new(
                "CAPSIGN_REVOCATIONS_MAX_STALE",
                "must be at least CAPSIGN_REVOCATIONS_REFRESH (a list is stale only after \
                 refreshes failed)",
            ));
        }
        Ok(RevocationSettings {
            list: g.revocations.clone(),
            refresh: g.revocations_refresh,
            max_stale: g.revocations_max_stale,
            key: g.revocation_key.clone(),
        })
    }

    /// The checks that span several settings, and the demo fallbacks (demo mode only:
    /// `configured` names the settings given besides the listen address and the mode).
    fn from_given(g: Given, configured: &[&str]) -> Result<Settings, SettingsError> {
        let mut demo_defaults = Vec::new();
        if g.max_new_grants > g.max_grants {
            return Err(SettingsError::new(
                "CAPSIGN_MAX_NEW_GRANTS",
                format!(
                    "{} is more than CAPSIGN_MAX_GRANTS ({}), which bounds every request",
                    g.max_new_grants, g.max_grants
                ),
            ));
        }
        if let (Some(embedded), Some(session)) = (&g.embedded_secret, &g.session_secret) {
            // A start-up check of the operator's own two values (no attacker times it).
            if embedded.expose() == session.expose() {
                return Err(SettingsError::new(
                    "CAPSIGN_EMBEDDED_SECRET",
                    "equals CAPSIGN_SESSION_SECRET: every embedded credential capsign signs would \
                     then also be a valid app session; give it a secret of its own",
                ));
            }
        }
        let ttl = Settings::ttl(&g)?;
        let secs = |d: Duration| d.as_secs();
        let (regrant_after_s, grant_max_age_s) = (secs(g.regrant_after), secs(g.grant_max_age));
        if regrant_after_s == 0 || regrant_after_s > grant_max_age_s {
            return Err(SettingsError::new(
                "CAPSIGN_REGRANT_AFTER",
                "must be at least 1s and at most CAPSIGN_GRANT_MAX_AGE",
            ));
        }
        let revocation = Settings::revocation(&g)?;
        let identity = Settings::identity(&g, configured)?;
        let demo = matches!(identity, IdentitySettings::Demo);
        if demo {
            if !g.listen.ip().is_loopback() {
                return Err(SettingsError::new(
                    "CAPSIGN_IDENTITY",
                    format!(
                        "demo identity accepts any user name, so capsign refuses it on {}; set \
                         CAPSIGN_SESSION_SECRET, CAPSIGN_SESSION_PUBLIC_KEY or \
                         CAPSIGN_SESSION_JWKS, or listen on 127.0.0.1",
                        g.listen
                    ),
                ));
            }
            demo_defaults.push("identity (demo: any user name at /login)");
        }
        let webhook = g.policy_url.map(|url| WebhookSettings {
            url,
            secret: g.policy_secret,
            timeout: g.policy_timeout,
            max_response: g.policy_max_response,
            patterns: g.policy_patterns,
        });
        let rules = Settings::rules(g.rules, webhook.is_some(), demo, &mut demo_defaults)?;
        let (key, keys) = Settings::keys(g.ably_api_key, g.cookie_key, demo, &mut demo_defaults)?;
        let embedded = g.embedded_secret.map(|secret| EmbeddedSettings {
            secret,
            inner: g.embedded_inner,
            claims: g.embedded_claims.unwrap_or_default(),
        });
        if embedded.is_none() && g.format == Format::Embedded {
            return Err(SettingsError::new(
                "CAPSIGN_FORMAT",
                "embedded needs CAPSIGN_EMBEDDED_SECRET (the app's secret for the outer JWT)",
            ));
        }
        Ok(Settings {
            listen: g.listen,
            log_format: match g.log_format {
                Derived::Given(f) | Derived::Default(f) => f,
            },
            ably: AblySettings {
                key,
                key_capability: g.key_capability,
                rest_url: g.ably_rest_url,
                timeout: g.ably_timeout,
                correct_clock: g.ably_time,
                embedded,
            },
            cookie: CookieSettings {
                keys,
                name: g.cookie_name,
                same_site: g.cookie_samesite,
                max_age_s: grant_max_age_s,
                max_grants: g.max_grants,
            },
            identity,
            policy: PolicySettings { rules, webhook },
            flow: FlowSettings {
                format: g.format,
                deny: g.deny,
                overflow: g.cookie_overflow,
                ttl,
                regrant_after_s,
                grant_max_age_s,
                max_new_grants: g.max_new_grants,
                outlive_session: g.outlive_session,
            },
            revocation,
            http: HttpSettings {
                cors_origins: g.cors_origins.unwrap_or_default(),
                allowed_hosts: g.allowed_hosts.unwrap_or_default(),
                max_body: g.max_body,
                body_timeout: g.body_timeout,
                trusted_proxies: g.trusted_proxies.clone().unwrap_or_default(),
                unhealthy: None,
            },
            server: ServerSettings {
                metrics_listen: g.metrics_listen,
                header_timeout: g.header_timeout,
                write_timeout: g.write_timeout,
                // Long enough for common health checks to see /readyz fail (HAProxy's
                // `inter 2s fall 3`: 6 s) and for endpoint removal to propagate; nothing
                // routes to a demo on loopback.
                shutdown_delay: match g.shutdown_delay {
                    Derived::Given(d) => d,
                    Derived::Default(_) if demo => Duration::ZERO,
                    Derived::Default(d) => d,
                },
                shutdown_grace: g.shutdown_grace,
                startup_timeout: g.startup_timeout,
                max_connections: g.max_connections,
                max_connections_per_peer: g
                    .max_connections_per_peer
                    .unwrap_or(g.max_connections.div_ceil(2))
                    .min(g.max_connections),
                trusted_proxies: g.trusted_proxies.clone().unwrap_or_default(),
            },
            demo_defaults,
        })
    }

    /// The Ably key and the cookie keys. Demo values fill them in demo mode only; a
    /// production configuration without them is refused, naming every one missing.
    fn keys(
        ably: Option<AblyApiKey>,
        cookie: Option<CookieKeys>,
        demo: bool,
        demo_defaults: &mut Vec<&'static str>,
    ) -> Result<(AblyApiKey, CookieKeys), SettingsError> {
        match (ably, cookie) {
            (Some(key), Some(keys)) => Ok((key, keys)),
            (ably, cookie) if demo => {
                let key = match ably {
                    Some(k) => k,
                    None => {
                        demo_defaults
                            .push("ABLY_API_KEY (demo key; Ably will refuse its credentials)");
                        AblyApiKey::parse(DEMO_ABLY_KEY)
                            .map_err(|e| SettingsError::new("ABLY_API_KEY", e))?
                    }
                };
                let keys = cookie.unwrap_or_else(|| {
                    demo_defaults.push("CAPSIGN_COOKIE_KEY (random; cookies die with the process)");
                    CookieKeys::random()
                });
                Ok((key, keys))
            }
            (ably, cookie) => {
                let missing: Vec<&str> = [
                    ably.is_none()
                        .then_some("ABLY_API_KEY (appId.keyId:secret)"),
                    cookie.is_none().then_some(
                        "CAPSIGN_COOKIE_KEY (openssl rand -base64 32; the same on every instance)",
                    ),
                ]
                .into_iter()
                .flatten()
                .collect();
                let setting = if ably.is_none() {
                    "ABLY_API_KEY"
                } else {
                    "CAPSIGN_COOKIE_KEY"
                };
                Err(SettingsError::new(
                    setting,
                    format!(
                        "not set; a production configuration needs {} (demo values are used only \
                         in demo mode)",
                        missing.join(" and ")
                    ),
                ))
            }
        }
    }

    /// Where the rules come from: a file, the built-in demo rules, or none when a webhook
    /// decides everything.
    fn rules(
        path: Option<PathBuf>,
        webhook: bool,
        demo: bool,
        demo_defaults: &mut Vec<&'static str>,
    ) -> Result<Option<RulesSource>, SettingsError> {
        match path {
            Some(path) => Ok(Some(RulesSource::File(path))),
            None if webhook => Ok(None),
            None if demo => {
                demo_defaults.push("CAPSIGN_RULES (examples/rules.toml, built in)");
                Ok(Some(RulesSource::Demo))
            }
            None => Err(SettingsError::new(
                "CAPSIGN_RULES",
                "not set; capsign needs a rules file or a policy webhook (CAPSIGN_POLICY_URL) \
                 to decide grants (see examples/rules.toml)",
            )),
        }
    }

    /// The identity mode and what it needs. Demo only when asked for, or when nothing is
    /// configured (`configured` is empty).
    fn identity(g: &Given, configured: &[&str]) -> Result<IdentitySettings, SettingsError> {
        let (secret, public, jwks) = (&g.session_secret, &g.session_public_key, &g.session_jwks);
        let sources = [secret.is_some(), public.is_some(), jwks.is_some()];
        let mode = match g.identity {
            Some(mode) => mode,
            None if sources.contains(&true) => IdentityMode::Jwt,
            None if configured.is_empty() => IdentityMode::Demo,
            None => {
                return Err(SettingsError::new(
                    "CAPSIGN_SESSION_SECRET",
                    format!(
                        "no identity source, while {} set: this is no demo, so set \
                         CAPSIGN_SESSION_SECRET, CAPSIGN_SESSION_PUBLIC_KEY or \
                         CAPSIGN_SESSION_JWKS (or CAPSIGN_IDENTITY=header with \
                         CAPSIGN_TRUSTED_PROXIES; CAPSIGN_IDENTITY=demo only to try capsign on \
                         loopback)",
                        configured.join(", ") + if configured.len() == 1 { " is" } else { " are" }
                    ),
                ));
            }
        };
        match mode {
            IdentityMode::Demo => Ok(IdentitySettings::Demo),
            IdentityMode::Header => Ok(IdentitySettings::Header {
                header: g.identity_header.clone(),
                trusted: g
                    .trusted_proxies
                    .clone()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        SettingsError::new(
                            "CAPSIGN_TRUSTED_PROXIES",
                            "header identity needs the addresses of the proxies that set the \
                             header (IPs or CIDR blocks, comma-separated)",
                        )
                    })?,
            }),
            IdentityMode::Jwt => {
                if sources.iter().filter(|s| **s).count() > 1 {
                    return Err(SettingsError::new(
                        "CAPSIGN_SESSION_SECRET",
                        "set one of CAPSIGN_SESSION_SECRET, CAPSIGN_SESSION_PUBLIC_KEY and \
                         CAPSIGN_SESSION_JWKS",
                    ));
                }
                let key = match (secret, public, jwks) {
                    (Some(s), _, _) => SessionKeySource::Secret(s.clone()),
                    (_, Some(p), _) => SessionKeySource::PublicKey(p.clone()),
                    (_, _, Some(location)) => SessionKeySource::Jwks {
                        location: location.clone(),
                        algorithms: g
                            .session_algorithms
                            .clone()
                            .unwrap_or_else(|| ASYMMETRIC.to_vec()),
                        refresh: g.session_jwks_refresh,
                        min_refresh: g.session_jwks_min_refresh,
                    },
                    _ => {
                        return Err(SettingsError::new(
                            "CAPSIGN_IDENTITY",
                            "jwt identity needs CAPSIGN_SESSION_SECRET, \
                             CAPSIGN_SESSION_PUBLIC_KEY or CAPSIGN_SESSION_JWKS",
                        ));
                    }
                };
                Ok(IdentitySettings::Jwt {
                    key,
                    session: SessionSettings {
                        cookie: g.session_cookie.clone(),
                        client_id_claim: g.client_id_claim.clone(),
                        issuer: g.session_issuer.clone(),
                        audience: g.session_audience.clone(),
                    },
                })
            }
        }
    }

    /// The credential lifetime bounds: `1s <= min <= default <= max <= Ably's limit`.
    fn ttl(g: &Given) -> Result<TtlBounds, SettingsError> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let ably_max = if g.revocable_tokens {
            ABLY_REVOCABLE_MAX_TTL_MS
        } else {
            ABLY_MAX_TTL_MS
        };
        let max_ms = match g.ttl_max {
            Derived::Given(d) if ms(d) > ably_max => {
                return Err(SettingsError::new(
                    "CAPSIGN_TTL_MAX",
                    format!(
                        "above Ably's limit of {} h for this key",
                        ably_max / 3_600_000
                    ),
                ));
            }
            Derived::Given(d) => ms(d),
            Derived::Default(d) => ms(d).min(ably_max),
        };
        let min_ms = ms(g.ttl_min);
        let default_ms = match g.ttl {
            Derived::Given(d) => ms(d),
            Derived::Default(d) => ms(d).min(max_ms),
        };
        if !(1000 <= min_ms && min_ms <= default_ms && default_ms <= max_ms) {
            return Err(SettingsError::new(
                "CAPSIGN_TTL",
                format!(
                    "need 1s <= CAPSIGN_TTL_MIN ({min_ms} ms) <= CAPSIGN_TTL ({default_ms} ms) \
                     <= CAPSIGN_TTL_MAX ({max_ms} ms)"
                ),
            ));
        }
        Ok(TtlBounds {
            default_ms,
            min_ms,
            max_ms,
        })
    }

    /// Whether this is the demo identity.
    pub fn is_demo(&self) -> bool {
        matches!(self.identity, IdentitySettings::Demo)
    }

    /// The value a setting took where the table describes its default in words (`["…"]`) or
    /// another variable decides it (`PORT`), as `capsign check` shows it.
    pub fn resolved(&self, name: &str) -> Option<String> {
        let ms = |ms: u64| humantime::format_duration(Duration::from_millis(ms)).to_string();
        Some(match name {
            "CAPSIGN_LISTEN" => self.listen.to_string(),
            "CAPSIGN_IDENTITY" => self.identity.mode().into(),
            "CAPSIGN_LOG_FORMAT" => match self.log_format {
                LogFormat::Text => "text".into(),
                LogFormat::Json => "json".into(),
            },
            "CAPSIGN_TTL" => ms(self.flow.ttl.default_ms),
            "CAPSIGN_TTL_MAX" => ms(self.flow.ttl.max_ms),
            "CAPSIGN_MAX_CONNECTIONS_PER_PEER" => self.server.max_connections_per_peer.to_string(),
            "CAPSIGN_SHUTDOWN_DELAY" => {
                humantime::format_duration(self.server.shutdown_delay).to_string()
            }
            _ => return None,
        })
    }
}
