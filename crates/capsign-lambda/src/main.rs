//! `capsign-lambda`: capsign on AWS Lambda, behind a Function URL, API Gateway (HTTP API v2
//! or REST v1) or an Application Load Balancer. The same [`capsign::http::handle`] as the
//! server answers each event, through `lambda_http`; everything is configured by the
//! environment, as for the server (the transport settings, such as `CAPSIGN_LISTEN`, do not
//! apply).
//!
//! The lifecycle differs from a server's in three ways, each handled here:
//!
//! - An instance is frozen between invocations, so nothing may rely on a spawned task: a JWKS
//!   fetched from a URL is refreshed in the request that finds it due
//!   ([`Settings::for_serverless`](capsign::settings::Settings::for_serverless)), and the log buffer is written after every invocation.
//! - Instances come and go by the hundred: demo mode (a random cookie key per cold start) and
//!   `header` identity (an event has no peer address to trust) are refused at start.
//! - A start-up error (a bad setting, an unreachable JWKS) is reported to the Runtime API's
//!   init-error endpoint, so the Lambda console and the invoking client see it, and the
//!   process exits.

mod aws_secrets;
mod event;

use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::Arc;

use capsign::app::App;
use capsign::logging::{self, say};
use capsign::settings::{Serverless, Settings};
use http::header::{CONTENT_TYPE, HeaderValue};
use http_body_util::BodyExt as _;
use lambda_http::lambda_runtime::{self, LambdaEvent};
use lambda_http::request::{LambdaRequest, RequestContext};
use lambda_http::{Body, Request, RequestExt as _, Response};
use serde_json::Value;

/// Tells `lambda_http` to pass a body as text (`isBase64Encoded: false`) whatever its type.
const TEXT_BODY: &str = "x-lambda-http-content-encoding";

fn main() -> ExitCode {
    // One invocation at a time per instance: a single-threaded runtime is all it needs.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("capsign-lambda: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run())
}

/// Checks `AWS_LAMBDA_RUNTIME_API` (`host:port`, as Lambda sets it) before the runtime client,
/// which panics on a value it cannot read; an error here cannot be reported to the Runtime
/// API, so it goes to stderr (CloudWatch) and the process exits 2.
fn runtime_api_address() -> Result<(), String> {
    const VAR: &str = "AWS_LAMBDA_RUNTIME_API";
    let value = std::env::var(VAR).map_err(|_| {
        format!("{VAR} is not set: capsign-lambda runs inside AWS Lambda or its emulator (cargo lambda watch)")
    })?;
    let uri: http::Uri = value
        .parse()
        .map_err(|e| format!("{VAR} {value:?} is not host:port ({e})"))?;
    match (uri.scheme_str(), uri.authority()) {
        (None | Some("http"), Some(_)) => Ok(()),
        _ => Err(format!(
            "{VAR} {value:?} is not host:port (or http://host:port)"
        )),
    }
}

async fn run() -> ExitCode {
    if let Err(e) = runtime_api_address() {
        eprintln!("capsign-lambda: {e}");
        return ExitCode::from(2);
    }
    // Secrets given as AWS references (`NAME_AWS`) are fetched first, through the Parameters
    // and Secrets extension; the settings are then checked with them in place.
    let env = |k: &str| std::env::var(k).ok();
    let references = match capsign::settings::aws_secret_references(&env) {
        Ok(r) => r,
        Err(e) => return init_failed("configuration error", &e.to_string()).await,
    };
    let resolved = match aws_secrets::resolve(references).await {
        Ok(r) => r,
        Err(e) => return init_failed("configuration error", &e).await,
    };
    let settings = Settings::from_process_with(None, &resolved)
        .and_then(|s| s.for_serverless(Serverless::Lambda));
    let settings = match settings {
        Ok(s) => s,
        Err(e) => return init_failed("configuration error", &e.to_string()).await,
    };
    let _flushed = logging::init(settings.log_format, true);
    say(&format!(
        "capsign-lambda {} starting ({} identity)",
        env!("CARGO_PKG_VERSION"),
        settings.identity.mode()
    ));
    settings.warnings().iter().for_each(|w| say(w));
    let app = match App::build(settings, capsign::native::frozen_between_requests()) {
        Ok(app) => app,
        Err(e) => return init_failed("configuration error", &e.to_string()).await,
    };
    match app.prepare().await {
        Ok(notes) => notes.iter().for_each(|n| say(n)),
        Err(e) => return init_failed("start-up failed", &e.to_string()).await,
    }
    say("ready for invocations");
    logging::flush();
    let app = Arc::new(app);
    let service = lambda_http::service_fn(move |req: Request| {
        let app = Arc::clone(&app);
        async move {
            let response = answer(&app, req).await;
            logging::flush();
            Ok::<_, Infallible>(response)
        }
    });
    // The events are read as JSON and checked (`event::check`) before `lambda_http`'s
    // adapter turns them into requests.
    let adapter = lambda_http::Adapter::from(service);
    let events = lambda_runtime::service_fn(move |event: LambdaEvent<Value>| {
        let mut adapter = adapter.clone();
        async move {
            let answered = invocation(&mut adapter, event).await;
            logging::flush();
            answered
        }
    });
    match lambda_runtime::run(events).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(&format!("the Lambda runtime stopped: {e}"));
            logging::flush();
            ExitCode::FAILURE
        }
    }
}

/// The answer to one invocation: capsign's, through `lambda_http`, or the refusal of an HTTP
/// event that `lambda_http` could not read safely.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Answer<R> {
    Capsign(R),
    Refused(Value),
}

/// One invocation: the event checked, then read by `lambda_http` and answered by capsign. An
/// event that is not an HTTP request is an invocation error, as `lambda_http` makes it.
async fn invocation<S, R>(
    adapter: &mut S,
    event: LambdaEvent<Value>,
) -> Result<Answer<R>, lambda_http::Error>
where
    S: lambda_http::Service<LambdaEvent<LambdaRequest>, Response = R, Error = Infallible>,
{
    let LambdaEvent { payload, context } = event;
    let kind = event::kind(&payload);
    if let Err(refused) = event::check(&payload) {
        return refuse(refused.kind, refused.status, &refused.message).await;
    }
    let request: LambdaRequest = match serde_json::from_value(payload) {
        Ok(request) => request,
        // The error's text can quote the event; only where it is goes out.
        Err(e) => {
            let at = format!(
                "{:?} at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            );
            return match kind {
                Some(kind) => {
                    let message = format!("the event is not a valid HTTP request ({at})");
                    refuse(kind, http::StatusCode::BAD_REQUEST, &message).await
                }
                None => Err(format!(
                    "not an event capsign serves (API Gateway, a Function URL or an ALB): {at}"
                )
                .into()),
            };
        }
    };
    // `lambda_http` builds the request with `expect`s; what the checks above missed is a 400
    // rather than a lost instance.
    let call = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        adapter.call(LambdaEvent {
            payload: request,
            context,
        })
    }));
    match call {
        Ok(answer) => match answer.await {
            Ok(answer) => Ok(Answer::Capsign(answer)),
            Err(never) => match never {},
        },
        Err(_) => {
            let message = "the event could not be read as an HTTP request";
            refuse(
                kind.unwrap_or(event::Kind::V2),
                http::StatusCode::BAD_REQUEST,
                message,
            )
            .await
        }
    }
}

/// The answer to an HTTP event refused before capsign saw it, with a WARN line (the front
/// door never writes such an event: it was invoked by hand, or by a wrong integration).
async fn refuse<R>(
    kind: event::Kind,
    status: http::StatusCode,
    message: &str,
) -> Result<Answer<R>, lambda_http::Error> {
    tracing::warn!(status = status.as_u16(), "Lambda event refused: {message}");
    let response = capsign::http::refused_by_transport(status, message);
    Ok(Answer::Refused(event::answer(kind, response).await))
}

/// The client's address as API Gateway saw it (an ALB event has none), for the access line.
fn source_ip(req: &Request) -> Option<std::net::IpAddr> {
    let ip = match req.request_context_ref()? {
        RequestContext::ApiGatewayV2(c) => c.http.source_ip.as_deref(),
        RequestContext::ApiGatewayV1(c) => c.identity.source_ip.as_deref(),
        _ => None,
    };
    ip?.parse().ok()
}

/// One event: the path without its API Gateway stage, then [`capsign::http::handle`], then
/// the body as `lambda_http` should pass it on.
async fn answer(app: &App, req: Request) -> Response<Body> {
    let req = without_stage(req);
    let peer = source_ip(&req);
    let response = capsign::http::handle_from(app, req, peer).await;
    let (mut parts, body) = response.into_parts();
    // `lambda_http` base64-encodes every body whose type it does not know as text, and API
    // Gateway REST APIs pass such a body on still encoded unless `application/jwt` is among
    // their binary media types. Every capsign body is text (JSON, a JWT, HTML), so it goes
    // out as text: the client receives the bytes capsign wrote, whatever sits in front.
    parts
        .headers
        .insert(TEXT_BODY, HeaderValue::from_static("text"));
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    let body = match String::from_utf8(bytes.to_vec()) {
        Ok(text) if text.is_empty() => Body::Empty,
        Ok(text) => Body::Text(text),
        Err(e) => {
            // Not reached (capsign writes UTF-8); binary then, which every front door decodes
            // but a REST API without binary media types.
            parts.headers.remove(TEXT_BODY);
            if !parts.headers.contains_key(CONTENT_TYPE) {
                parts.headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
            }
            Body::Binary(e.into_bytes())
        }
    };
    Response::from_parts(parts, body)
}

/// API Gateway puts a named stage before the path (`/prod/auth`); capsign's routes are the
/// paths after it.
fn without_stage(mut req: Request) -> Request {
    let stage = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(c)) => c.stage.clone(),
        Some(RequestContext::ApiGatewayV1(c)) => c.stage.clone(),
        _ => None,
    };
    let Some(stage) = stage.filter(|s| s != "$default") else {
        return req;
    };
    let path = req.uri().path();
    let Some(rest) = path
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(stage.as_str()))
        .filter(|r| r.is_empty() || r.starts_with('/'))
    else {
        return req;
    };
    let rest = if rest.is_empty() { "/" } else { rest };
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// Says why the start failed, reports it to the Runtime API's init-error endpoint (Lambda
/// then fails the invocation with this message and starts a new instance for the next),
/// and exits.
async fn init_failed(what: &str, error: &str) -> ExitCode {
    let message = format!("{what}: {error}");
    say(&message);
    logging::flush();
    if let Err(e) = report_init_error(&message).await {
        say(&format!(
            "could not report the error to the Runtime API: {e}"
        ));
        logging::flush();
    }
    ExitCode::from(2)
}

async fn report_init_error(message: &str) -> Result<(), lambda_http::Error> {
    let client = lambda_runtime_api_client::Client::builder().build()?;
    let body = serde_json::json!({
        "errorMessage": message,
        "errorType": "capsign.ConfigurationError",
    })
    .to_string();
    let request = lambda_runtime_api_client::build_request()
        .method(http::Method::POST)
        .uri("/2018-06-01/runtime/init/error")
        .header("lambda-runtime-function-error-type", "Runtime.InitError")
        .header(CONTENT_TYPE, "application/json")
        .body(lambda_runtime_api_client::body::Body::from(body))?;
    let response = client.call(request).await?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("the Runtime API answered {}", response.status()).into())
    }
}
