//! The `capsign` binary: settings from the environment (and `--config`), the app, the server;
//! or one of the operator subcommands of [`cli`].

mod cli;
mod revoke;

use capsign::logging::{self, say};

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use capsign::app::App;
use capsign::settings::Settings;
use clap::{CommandFactory as _, FromArgMatches as _, Parser};

/// A stateless capability signer for Ably. Configure it with environment variables (listed
/// below and in the README); with none set it runs a demo on 127.0.0.1:3000.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// A TOML file with settings (the environment wins over it).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Check the configuration and exit (as `capsign check`).
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Serve (what `capsign` alone does).
    Serve,
    /// Check the configuration, print every setting's effective value and its source
    /// (secrets redacted), and exit: 0 when it is good, 2 naming what is wrong.
    #[command(
        after_help = "Examples:\n  capsign check\n  capsign check --config /etc/capsign.toml"
    )]
    Check,
    /// Print a new CAPSIGN_COOKIE_KEY, or with --current the next step of a key rotation.
    #[command(after_help = "Examples:\n  capsign keygen\n  \
        capsign keygen --current \"$CAPSIGN_COOKIE_KEY\"   # step 1, 2 or 3 of the rotation")]
    Keygen {
        /// The CAPSIGN_COOKIE_KEY value in use.
        #[arg(long, value_name = "KEY")]
        current: Option<String>,
    },
    /// Open a grant cookie (or an X-Capsign-Grants value) with the configured cookie key and
    /// show whose it is, its key id, when it was sealed and each grant with its approval age;
    /// or exactly why it does not open.
    #[command(after_help = "Examples:\n  capsign inspect 'AQEAgOLP…'\n  \
        capsign inspect '__Host-capsign=AQEA…; Path=/'\n  capsign inspect --header 'AgEA…'")]
    Inspect {
        /// The value, `name=value`, or a whole Cookie / Set-Cookie line.
        value: String,
        /// It is an X-Capsign-Grants value, not a cookie.
        #[arg(long)]
        header: bool,
    },
    /// Revoke tokens at Ably (revokeTokens, with the configured key) and add the matching
    /// entry to capsign's revocation list (CAPSIGN_REVOCATIONS when it is a file; printed for
    /// the app to publish otherwise), so no instance hands the grants back from a cookie.
    #[command(after_help = "Examples:\n  capsign revoke --client-id alice\n  \
        capsign revoke --client-id alice --resource 'doc:*'\n  \
        capsign revoke --revocation-key org:acme --allow-reauth-margin")]
    Revoke {
        /// Revoke this clientId's tokens and grants (repeatable).
        #[arg(long = "client-id", value_name = "ID")]
        client_id: Vec<String>,
        /// Revoke the tokens and grants of every user whose x-ably-revocation-key claim
        /// (CAPSIGN_REVOCATION_KEY) is this (repeatable).
        #[arg(long = "revocation-key", value_name = "KEY")]
        revocation_key: Vec<String>,
        /// Only these resources in capsign's list (repeatable; patterns allowed): the client
        /// keeps the rest. Ably revokes the whole token; the client's next one lacks only
        /// these.
        #[arg(long, value_name = "RESOURCE")]
        resource: Vec<String>,
        /// Ably enforces the revocation 30 s later and asks connected clients to
        /// re-authenticate first, so they switch without a disconnection.
        #[arg(long)]
        allow_reauth_margin: bool,
        /// Write the list entry without asking Ably (a key without revocable tokens: the
        /// credentials already issued live until they expire, none is renewed).
        #[arg(long)]
        list_only: bool,
        /// Revoke at Ably right after writing the list file, without waiting
        /// CAPSIGN_REVOCATIONS_REFRESH for every instance to read it first.
        #[arg(long)]
        no_wait: bool,
    },
    /// GET a URL; exit 0 on a 2xx answer in time, 1 otherwise (a health check for an image
    /// with no shell). A path alone (`/healthz`) probes the local server: the port of
    /// CAPSIGN_LISTEN, else PORT, else 3000.
    #[command(after_help = "Examples:\n  capsign probe /healthz\n  \
        capsign probe http://127.0.0.1:8080/healthz\n  \
        capsign probe --timeout 1s http://127.0.0.1:8080/readyz")]
    Probe {
        /// The URL (http://).
        url: String,
        /// How long to wait for the answer.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

fn main() -> ExitCode {
    let matches = Args::command()
        .after_help(capsign::settings::help())
        .get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let config = args.config.as_deref();
    match args.command {
        Some(Command::Check) => return cli::check(config),
        Some(Command::Keygen { current }) => return cli::keygen(current.as_deref()),
        Some(Command::Inspect { value, header }) => return cli::inspect(config, &value, header),
        Some(Command::Probe { url, timeout }) => return cli::probe(&url, timeout),
        Some(Command::Revoke {
            client_id,
            revocation_key,
            resource,
            allow_reauth_margin,
            list_only,
            no_wait,
        }) => {
            return revoke::run(
                config,
                &revoke::Revoke {
                    client_ids: client_id,
                    revocation_keys: revocation_key,
                    resources: resource,
                    allow_reauth_margin,
                    list_only,
                    no_wait,
                },
            );
        }
        Some(Command::Serve) | None => {}
    }
    let settings = match Settings::from_process(args.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("capsign: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let _flushed = logging::init(settings.log_format, false);
    // The first line says what runs: the version, the mode and how it will drain.
    let server = settings.server.clone();
    let duration = |d: std::time::Duration| humantime::format_duration(d).to_string();
    if !args.check {
        say(&format!(
            "capsign {} starting: {} mode ({} identity); on SIGTERM /readyz turns 503, requests are \
         served {} more (CAPSIGN_SHUTDOWN_DELAY), then get {} to finish (CAPSIGN_SHUTDOWN_GRACE)",
            env!("CARGO_PKG_VERSION"),
            if settings.is_demo() {
                "demo"
            } else {
                "production"
            },
            settings.identity.mode(),
            duration(server.shutdown_delay),
            duration(server.shutdown_grace),
        ));
    }
    settings.warnings().iter().for_each(|w| say(w));
    let demo_defaults = settings.demo_defaults.clone();
    let listen = settings.listen;
    let app = match App::build(settings, capsign::native::server()) {
        Ok(app) => app,
        Err(e) => {
            say(&format!("configuration error: {e}"));
            return ExitCode::from(2);
        }
    };
    if args.check {
        say("configuration OK");
        return ExitCode::SUCCESS;
    }
    if !demo_defaults.is_empty() {
        say("DEMO MODE, not for production. Using built-in values for:");
        for d in &demo_defaults {
            say(&format!("  - {d}"));
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            say(&format!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(app, listen))
}

async fn serve(app: App, listen: std::net::SocketAddr) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            say(&format!("cannot listen on {listen}: {e}"));
            return ExitCode::FAILURE;
        }
    };
    // The start-up I/O (JWKS fetch, clock correction) before saying "listening": a process
    // that prints it is ready to answer, unless the line says it is not (the fetch failed and
    // is retried; /readyz answers 503 until it succeeds).
    let app = Arc::new(app);
    let started = std::time::Instant::now();
    let not_ready = match app.prepare().await {
        Ok(notes) => {
            notes.iter().for_each(|n| say(n));
            None
        }
        Err(e) => {
            let within = humantime::format_duration(app.server_settings().startup_timeout);
            say(&format!(
                "start-up: {e}; not ready (/readyz answers 503) while it is retried, for up to \
                 {within} (CAPSIGN_STARTUP_TIMEOUT)"
            ));
            Some(e)
        }
    };
    if let Some(addr) = app.server_settings().metrics_listen {
        let metrics = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                say(&format!("cannot listen for metrics on {addr}: {e}"));
                return ExitCode::FAILURE;
            }
        };
        if let Ok(addr) = metrics.local_addr() {
            say(&format!("metrics on http://{addr}/metrics"));
        }
        let app = Arc::clone(&app);
        tokio::spawn(capsign::server::run_metrics(
            metrics,
            app,
            std::future::pending(),
        ));
    }
    let readiness = if not_ready.is_some() {
        " (not ready yet)"
    } else {
        ""
    };
    match listener.local_addr() {
        Ok(addr) => say(&format!("listening on http://{addr}{readiness}")),
        Err(e) => say(&format!("listening (address unknown: {e}){readiness}")),
    }
    if not_ready.is_some() {
        tokio::spawn(retry_start_up(Arc::clone(&app), started));
    }
    // SIGTERM (or Ctrl-C): /readyz turns 503 at once; requests are still served for the
    // delay (until load balancers have seen it), then in-flight ones get the grace, then exit
    // 0, or 1 when the grace ran out with connections open. A second signal ends it at once.
    let signals = signals();
    let draining = Arc::clone(&app);
    let mut first = signals.clone();
    let drain = async move {
        let _ = first.wait_for(|n| *n >= 1).await;
        say("shutting down");
        draining.begin_drain();
        let delay = draining.server_settings().shutdown_delay;
        if !delay.is_zero() {
            say(&format!(
                "draining: /readyz answers 503; serving {delay:?} more (CAPSIGN_SHUTDOWN_DELAY; \
                 a second signal stops at once)"
            ));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = first.wait_for(|n| *n >= 2) => {}
            }
        }
    };
    let mut second = signals;
    let abort = async move {
        let _ = second.wait_for(|n| *n >= 2).await;
    };
    match capsign::server::run_until(listener, app, drain, abort).await {
        Ok(drained) if drained.cut == 0 => ExitCode::SUCCESS,
        Ok(drained) => {
            say(&format!(
                "exiting with {} connection(s) cut before their answer",
                drained.cut
            ));
            ExitCode::FAILURE
        }
        Err(e) => {
            say(&format!("server error: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// Retries the start-up I/O with backoff (1 s, doubling to 30 s) until it succeeds (the app is
/// then ready) or `CAPSIGN_STARTUP_TIMEOUT` has passed since the start: then the process exits
/// 2, so an orchestrator restarts it or reports it, rather than keep an instance that can never
/// be ready.
async fn retry_start_up(app: Arc<App>, started: std::time::Instant) {
    let limit = app.server_settings().startup_timeout;
    let mut wait = std::time::Duration::from_secs(1);
    loop {
        tokio::time::sleep(wait).await;
        match app.prepare().await {
            Ok(notes) => {
                notes.iter().for_each(|n| say(n));
                say("ready");
                return;
            }
            Err(e) if started.elapsed() + wait >= limit => {
                say(&format!(
                    "start-up failed: {e}; giving up after {} (CAPSIGN_STARTUP_TIMEOUT)",
                    humantime::format_duration(limit)
                ));
                logging::flush();
                std::process::exit(2);
            }
            Err(e) => {
                wait = (wait * 2).min(std::time::Duration::from_secs(30));
                tracing::warn!("start-up: {e}; retrying in {wait:?}");
            }
        }
    }
}

/// The number of shutdown signals (SIGTERM, SIGINT) received so far, counted by a task of
/// its own.
fn signals() -> tokio::sync::watch::Receiver<u32> {
    let (count, counted) = tokio::sync::watch::channel(0u32);
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return std::future::pending::<()>().await;
            };
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                count.send_modify(|n| *n += 1);
            }
        }
        #[cfg(not(unix))]
        loop {
            if tokio::signal::ctrl_c().await.is_err() {
                return std::future::pending::<()>().await;
            }
            count.send_modify(|n| *n += 1);
        }
    });
    counted
}
