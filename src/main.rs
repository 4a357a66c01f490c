//! The `capsign` binary: settings from the environment (and `--config`), the app, the server.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use capsign::app::App;
use capsign::settings::Settings;
use clap::{CommandFactory as _, FromArgMatches as _, Parser};
use tracing_subscriber::EnvFilter;

/// A stateless capability signer for Ably. Configure it with environment variables (listed
/// below and in the README); with none set it runs a demo on 127.0.0.1:3000.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// A TOML file with settings (the environment wins over it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let matches = Args::command()
        .after_help(capsign::settings::help())
        .get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let settings = match Settings::load(&|k| std::env::var(k).ok(), args.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("capsign: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let demo_defaults = settings.demo_defaults.clone();
    let listen = settings.listen;
    let app = match App::build(settings) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("capsign: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        eprintln!("capsign: configuration OK");
        return ExitCode::SUCCESS;
    }
    if !demo_defaults.is_empty() {
        eprintln!("capsign: DEMO MODE, not for production. Using built-in values for:");
        for d in &demo_defaults {
            eprintln!("capsign:   - {d}");
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("capsign: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(app, listen))
}

async fn serve(app: App, listen: std::net::SocketAddr) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("capsign: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The start-up I/O (JWKS fetch, clock correction) before saying "listening": a process
    // that prints it is ready to answer.
    let app = Arc::new(app);
    match app.prepare().await {
        Ok(notes) => notes.iter().for_each(|n| eprintln!("capsign: {n}")),
        Err(e) => {
            eprintln!("capsign: start-up failed: {e}");
            return ExitCode::from(2);
        }
    }
    if let Some(addr) = app.server_settings().metrics_listen {
        let metrics = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("capsign: cannot listen for metrics on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Ok(addr) = metrics.local_addr() {
            eprintln!("capsign: metrics on http://{addr}/metrics");
        }
        let app = Arc::clone(&app);
        tokio::spawn(capsign::server::run_metrics(
            metrics,
            app,
            std::future::pending(),
        ));
    }
    match listener.local_addr() {
        Ok(addr) => eprintln!("capsign: listening on http://{addr}"),
        Err(e) => eprintln!("capsign: listening (address unknown: {e})"),
    }
    match capsign::server::run(listener, app, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("capsign: server error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    eprintln!("capsign: shutting down");
}
