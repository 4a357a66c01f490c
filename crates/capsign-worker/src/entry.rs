//! The Worker's `fetch` handler (WebAssembly only).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use capsign_core::app::App;
use capsign_core::logging::{self, LineSink as _};
use capsign_core::metrics::Metrics;
use http_body_util::{BodyExt as _, Full};
use wasm_bindgen::JsCast as _;
use worker::{Context, Env, HttpRequest, event};

use crate::config::Bindings;
use crate::platform::WorkerPlatform;
use crate::report::{Console, Reporter, console};

/// The isolate's app, built by its first request (`None`: its settings are wrong, and the
/// log said why).
static BUILT: OnceLock<Option<App>> = OnceLock::new();

/// The isolate's metrics line.
static REPORTER: OnceLock<Reporter> = OnceLock::new();

type Answer = http::Response<Full<Bytes>>;

#[event(fetch)]
async fn fetch(req: HttpRequest, env: Env, _ctx: Context) -> worker::Result<Answer> {
    let app = match app(&env).await {
        Ok(app) => app,
        Err(answer) => return Ok(answer),
    };
    let (parts, body) = req.into_parts();
    let body = read_body(body, app.http_settings().max_body).await;
    let answer =
        capsign_core::http::handle(app, http::Request::from_parts(parts, Full::new(body))).await;
    let reporter = REPORTER.get_or_init(Reporter::default);
    if let Some(line) = reporter.due(app.clock.now_ms(), || {
        app.observe();
        app.metrics.encode()
    }) {
        Console.line(&line, true);
    }
    Ok(answer)
}

/// The isolate's app: built (and prepared: a JWKS fetched, the clock corrected) by the first
/// request; a configuration error is logged once and answered with a 500 from then on; a
/// failed preparation answers 503 and is tried again by the next request.
async fn app(env: &Env) -> Result<&'static App, Answer> {
    if BUILT.get().is_none() {
        let built = build(env).inspect_err(|why| Console.line(why, true)).ok();
        let _ = BUILT.set(built);
    }
    let Some(Some(app)) = BUILT.get() else {
        return Err(capsign_core::http::not_configured());
    };
    if app.readiness() != capsign_core::app::Readiness::Ready {
        match app.prepare().await {
            Ok(notes) => notes.iter().for_each(|n| logging::say(n)),
            Err(e) => {
                tracing::error!("{e}");
                return Err(capsign_core::http::not_ready(&e.to_string()));
            }
        }
    }
    Ok(app)
}

/// Reads the settings from the Worker's bindings and builds the app on the Worker's platform.
fn build(env: &Env) -> Result<App, String> {
    let bindings = Bindings(string_bindings(env));
    let settings = bindings
        .settings()
        .map_err(|e| format!("capsign-worker: {e}"))?;
    logging::init_with(settings.log_format, false, console());
    let files = bindings
        .files()
        .map_err(|e| format!("capsign-worker: {e}"))?;
    let platform = Arc::new(WorkerPlatform { files });
    let app = App::build_with(settings, platform, Metrics::new())
        .map_err(|e| format!("capsign-worker: {}: {e}", e.setting()))?;
    for warning in app.settings.warnings() {
        logging::say(&format!("warning: {warning}"));
    }
    Ok(app)
}

/// The bindings that hold strings: variables, secrets and text.
fn string_bindings(env: &Env) -> HashMap<String, String> {
    let object: &js_sys::Object = env.unchecked_ref();
    js_sys::Object::entries(object)
        .iter()
        .filter_map(|pair| {
            let pair: js_sys::Array = pair.dyn_into().ok()?;
            Some((pair.get(0).as_string()?, pair.get(1).as_string()?))
        })
        .collect()
}

/// The request body, at most `max + 1` bytes read (one more than allowed is enough for the
/// handler to answer `413`); a body that fails mid-way is what arrived.
async fn read_body(mut body: worker::Body, max: usize) -> Bytes {
    let mut read = BytesMut::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            let room = (max + 1).saturating_sub(read.len());
            read.extend_from_slice(data.get(..room.min(data.len())).unwrap_or_default());
            if read.len() > max {
                break;
            }
        }
    }
    read.freeze()
}
