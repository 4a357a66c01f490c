//! The real `capsign-lambda` binary, driven by a fake Lambda Runtime API on 127.0.0.1:0 with
//! events of each kind it serves (samples in `tests/data/lambda/`, written from AWS's
//! documented shapes). What is checked is what the client receives after the front door
//! (Function URL, API Gateway, ALB) has turned the function's answer back into HTTP: a
//! base64 body decoded, the `cookies` array turned into `Set-Cookie` headers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc};

use crate::binary::Running;
use crate::harness::{Reply, session};

/// The real `capsign-lambda` (crates/capsign-lambda, another package of the workspace), built
/// once for these tests by cargo itself, in this build's profile and target directory.
fn bin() -> &'static std::path::Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        escargot::CargoBuild::new()
            .package("capsign-lambda")
            .bin("capsign-lambda")
            .current_release()
            .manifest_path(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
            .run()
            .expect("cargo builds capsign-lambda")
            .path()
            .to_path_buf()
    })
}
const PREFIX: &str = "/2018-06-01/runtime";

/// What the function posted to the Runtime API.
#[derive(Debug)]
enum Posted {
    Response { id: String, body: Value },
    Error { id: String, body: Value },
    InitError { error_type: String, body: Value },
}

/// A Lambda Runtime API: hands out the events queued by [`FakeRuntime::invoke`] on
/// `GET …/invocation/next` (holding the call until there is one, as Lambda does) and collects
/// what the function posts back.
struct FakeRuntime {
    addr: std::net::SocketAddr,
    events: mpsc::UnboundedSender<(String, Value)>,
    sent: u64,
    posted: mpsc::UnboundedReceiver<Posted>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeRuntime {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeRuntime {
    async fn start() -> FakeRuntime {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (events, queue) = mpsc::unbounded_channel::<(String, Value)>();
        let (post, posted) = mpsc::unbounded_channel();
        let queue = Arc::new(Mutex::new(queue));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (queue, post) = (Arc::clone(&queue), post.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (queue, post) = (Arc::clone(&queue), post.clone());
                        async move { Ok::<_, Infallible>(runtime_api(req, &queue, &post).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeRuntime {
            addr,
            events,
            sent: 0,
            posted,
            task,
        }
    }

    /// Queues `event` under a new request id; returns the id.
    fn queue(&mut self, event: Value) -> String {
        self.sent += 1;
        let id = format!("req-{}", self.sent);
        self.events.send((id.clone(), event)).unwrap();
        id
    }

    /// Queues `event` and waits for the function's answer to it.
    async fn invoke(&mut self, event: Value) -> Value {
        let sent = self.queue(event);
        match self.next_posted().await {
            Posted::Response { id, body } if id == sent => body,
            other => panic!("expected the response to {sent}, got {other:?}"),
        }
    }

    async fn next_posted(&mut self) -> Posted {
        tokio::time::timeout(Duration::from_secs(20), self.posted.recv())
            .await
            .expect("the function did not post in time")
            .expect("the fake runtime stopped")
    }
}

async fn runtime_api(
    req: Request<hyper::body::Incoming>,
    queue: &Mutex<mpsc::UnboundedReceiver<(String, Value)>>,
    post: &mpsc::UnboundedSender<Posted>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let error_type = req
        .headers()
        .get("lambda-runtime-function-error-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let parsed = || serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let accepted = || {
        let mut r = Response::new(Full::new(Bytes::from_static(b"{\"status\":\"OK\"}")));
        *r.status_mut() = http::StatusCode::ACCEPTED;
        r
    };
    let rest = path.strip_prefix(PREFIX).unwrap_or_default();
    if rest == "/invocation/next" {
        let Some((id, event)) = queue.lock().await.recv().await else {
            return Response::builder()
                .status(500)
                .body(Full::new(Bytes::new()))
                .unwrap();
        };
        let deadline = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            + 30_000;
        return Response::builder()
            .header("lambda-runtime-aws-request-id", id)
            .header("lambda-runtime-deadline-ms", deadline.to_string())
            .header(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:capsign",
            )
            .header(
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000",
            )
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(event.to_string())))
            .unwrap();
    }
    if rest == "/init/error" {
        post.send(Posted::InitError {
            error_type: error_type.unwrap_or_default(),
            body: parsed(),
        })
        .unwrap();
        return accepted();
    }
    if let Some(tail) = rest.strip_prefix("/invocation/") {
        if let Some(id) = tail.strip_suffix("/response") {
            post.send(Posted::Response {
                id: id.to_owned(),
                body: parsed(),
            })
            .unwrap();
            return accepted();
        }
        if let Some(id) = tail.strip_suffix("/error") {
            post.send(Posted::Error {
                id: id.to_owned(),
                body: parsed(),
            })
            .unwrap();
            return accepted();
        }
    }
    Response::builder()
        .status(404)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// `capsign-lambda` as Lambda starts it: the Runtime API's address and the function's
/// environment, plus capsign's settings (nothing of the host's).
fn lambda(runtime: &FakeRuntime, settings: &HashMap<String, String>) -> Running {
    let mut c = Command::new(bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("CAPSIGN_") || k.starts_with("AWS_") || k == "ABLY_API_KEY" {
            c.env_remove(k);
        }
    }
    c.envs(settings)
        .env("AWS_LAMBDA_RUNTIME_API", runtime.addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "capsign")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    Running(c.spawn().unwrap())
}

/// The kinds of event, by their sample file.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    HttpApiV2,
    FunctionUrl,
    RestApiV1,
    Alb,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::HttpApiV2,
        Kind::FunctionUrl,
        Kind::RestApiV1,
        Kind::Alb,
    ];

    fn sample(self) -> Value {
        let file = match self {
            Kind::HttpApiV2 => "http-api-v2.json",
            Kind::FunctionUrl => "function-url.json",
            Kind::RestApiV1 => "rest-api-v1.json",
            Kind::Alb => "alb.json",
        };
        let path = format!("{}/tests/data/lambda/{file}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }
}

/// One client request, as a front door of `kind` puts it into an event.
struct Call<'a> {
    method: &'a str,
    path: &'a str,
    /// Decoded query parameters.
    query: &'a [(&'a str, &'a str)],
    headers: &'a [(&'a str, &'a str)],
    /// `name=value` pairs the client's cookie jar sends.
    cookies: &'a [String],
    body: Option<&'a str>,
}

fn event(kind: Kind, call: &Call<'_>) -> Value {
    let mut e = kind.sample();
    let encoded: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(call.query.iter())
        .finish();
    let mut headers = serde_json::Map::new();
    let host = e["headers"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    headers.insert(host.0, host.1);
    for (k, v) in call.headers {
        headers.insert((*k).to_owned(), json!(v));
    }
    match kind {
        Kind::HttpApiV2 | Kind::FunctionUrl => {
            e["rawPath"] = json!(call.path);
            e["rawQueryString"] = json!(encoded);
            e["requestContext"]["http"]["method"] = json!(call.method);
            e["requestContext"]["http"]["path"] = json!(call.path);
            // Payload 2.0 moves cookies out of the headers into an array.
            e["cookies"] = json!(call.cookies);
        }
        Kind::RestApiV1 | Kind::Alb => {
            e["path"] = json!(call.path);
            e["httpMethod"] = json!(call.method);
            if !call.cookies.is_empty() {
                headers.insert("cookie".into(), json!(call.cookies.join("; ")));
            }
            // API Gateway decodes query parameters; an ALB passes them as the client sent them.
            let query: serde_json::Map<String, Value> = call
                .query
                .iter()
                .map(|(k, v)| {
                    let v = if kind == Kind::Alb {
                        form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                    } else {
                        (*v).to_owned()
                    };
                    ((*k).to_owned(), json!(v))
                })
                .collect();
            e["queryStringParameters"] = json!(query);
            if kind == Kind::RestApiV1 {
                e["requestContext"]["httpMethod"] = json!(call.method);
                e["requestContext"]["path"] = json!(format!("/prod{}", call.path));
                let multi: serde_json::Map<String, Value> =
                    query.iter().map(|(k, v)| (k.clone(), json!([v]))).collect();
                e["multiValueQueryStringParameters"] = json!(multi);
                let multi: serde_json::Map<String, Value> = headers
                    .iter()
                    .map(|(k, v)| (k.clone(), json!([v])))
                    .collect();
                e["multiValueHeaders"] = json!(multi);
            }
        }
    }
    e["headers"] = Value::Object(headers);
    // The Function URL sample carries its body base64-encoded, as Lambda does for a body
    // it does not know as text; the others as text.
    match (call.body, kind) {
        (Some(b), Kind::FunctionUrl) => {
            e["body"] = json!(STANDARD.encode(b));
            e["isBase64Encoded"] = json!(true);
        }
        (Some(b), _) => {
            e["body"] = json!(b);
            e["isBase64Encoded"] = json!(false);
        }
        (None, _) => {
            e["body"] = Value::Null;
            e["isBase64Encoded"] = json!(false);
        }
    }
    e
}

/// A bare `GET path` event of `kind`.
fn get_event(kind: Kind, path: &str) -> Value {
    event(
        kind,
        &Call {
            method: "GET",
            path,
            query: &[],
            headers: &[],
            cookies: &[],
            body: None,
        },
    )
}

/// What the client receives from the front door for the function's `answer`.
fn received(kind: Kind, answer: &Value) -> Reply {
    let mut headers = HeaderMap::new();
    let mut add = |k: &str, v: &str| {
        headers.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    };
    match kind {
        // API Gateway and Function URLs merge `headers` and `multiValueHeaders`, and turn each
        // `cookies` entry into a `Set-Cookie`.
        Kind::HttpApiV2 | Kind::FunctionUrl | Kind::RestApiV1 => {
            for (k, v) in answer["headers"].as_object().into_iter().flatten() {
                add(k, v.as_str().unwrap());
            }
            for (k, vs) in answer["multiValueHeaders"]
                .as_object()
                .into_iter()
                .flatten()
            {
                for v in vs.as_array().unwrap() {
                    add(k, v.as_str().unwrap());
                }
            }
            for c in answer["cookies"].as_array().into_iter().flatten() {
                add("set-cookie", c.as_str().unwrap());
            }
        }
        // A target group without multi-value headers reads `headers` only.
        Kind::Alb => {
            for (k, v) in answer["headers"].as_object().into_iter().flatten() {
                add(k, v.as_str().unwrap());
            }
        }
    }
    let body = answer["body"].as_str().unwrap_or_default();
    let body = if answer["isBase64Encoded"] == json!(true) {
        String::from_utf8(STANDARD.decode(body).unwrap()).unwrap()
    } else {
        body.to_owned()
    };
    Reply {
        status: u16::try_from(answer["statusCode"].as_u64().unwrap()).unwrap(),
        headers,
        body,
    }
}

fn grant_cookie_pair(reply: &Reply) -> String {
    format!(
        "__Host-capsign={}",
        reply.grant_cookie().expect("a grant cookie")
    )
}

/// For each kind of event: a first grant, a second one with the cookie the first set (so the
/// cookie survives both directions), an error envelope, the request id echoed.
#[tokio::test]
async fn every_event_kind_keeps_grants_and_answers_as_the_server_does() {
    let mut runtime = FakeRuntime::start().await;
    let _function = lambda(&runtime, &capsign::testing::env(&[]));
    let bearer = format!("Bearer {}", session("alice", Value::Null));
    for kind in Kind::ALL {
        let first = if kind == Kind::FunctionUrl {
            // ably-python's POST with JSON `authParams`.
            let body = json!({"capability": "{\"chat:a\":[\"subscribe\"]}"}).to_string();
            event(
                kind,
                &Call {
                    method: "POST",
                    path: "/auth",
                    query: &[],
                    headers: &[
                        ("authorization", &bearer),
                        ("content-type", "application/json"),
                        ("x-request-id", "lambda-test-1"),
                    ],
                    cookies: &[],
                    body: Some(&body),
                },
            )
        } else {
            event(
                kind,
                &Call {
                    method: "GET",
                    path: "/auth",
                    query: &[("capability", "{\"chat:a\":[\"subscribe\"]}")],
                    headers: &[
                        ("authorization", &bearer),
                        ("x-request-id", "lambda-test-1"),
                    ],
                    cookies: &[],
                    body: None,
                },
            )
        };
        let answer = runtime.invoke(first).await;
        // A JWT body goes out as text: a REST API without binary media types would otherwise
        // hand the client base64.
        assert_eq!(
            answer["isBase64Encoded"],
            json!(false),
            "{kind:?}: {answer}"
        );
        let r = received(kind, &answer);
        assert_eq!(r.status, 200, "{kind:?}: {answer}");
        assert_eq!(
            r.header("content-type"),
            Some("application/jwt"),
            "{kind:?}"
        );
        assert_eq!(r.header("x-request-id"), Some("lambda-test-1"), "{kind:?}");
        assert_eq!(
            r.header("cache-control"),
            Some("no-store, private"),
            "{kind:?}"
        );
        assert_eq!(r.capability(), r#"{"chat:a":["subscribe"]}"#, "{kind:?}");
        let cookie = grant_cookie_pair(&r);

        // The cookie comes back (in the `cookies` array or the `Cookie` header); the new grant
        // adds to it.
        let second = event(
            kind,
            &Call {
                method: "GET",
                path: "/auth",
                query: &[("capability", "{\"doc:b\":[\"publish\"]}")],
                headers: &[("authorization", &bearer)],
                cookies: &[cookie, "other=1".to_owned()],
                body: None,
            },
        );
        let r = received(kind, &runtime.invoke(second).await);
        assert_eq!(
            r.capability(),
            r#"{"chat:a":["subscribe"],"doc:b":["publish"]}"#,
            "{kind:?}"
        );
        assert!(r.header("x-request-id").is_some_and(|id| !id.is_empty()));
        grant_cookie_pair(&r);

        // No session: Ably's error envelope, as JSON text.
        let refused = event(
            kind,
            &Call {
                method: "GET",
                path: "/auth",
                query: &[],
                headers: &[],
                cookies: &[],
                body: None,
            },
        );
        let answer = runtime.invoke(refused).await;
        assert_eq!(answer["isBase64Encoded"], json!(false), "{kind:?}");
        let r = received(kind, &answer);
        assert_eq!(r.status, 401, "{kind:?}: {}", r.body);
        assert_eq!(r.error_code(), 40101, "{kind:?}");

        // Liveness answers too; readiness says the instance is ready.
        let health = event(
            kind,
            &Call {
                method: "GET",
                path: "/readyz",
                query: &[],
                headers: &[],
                cookies: &[],
                body: None,
            },
        );
        assert_eq!(received(kind, &runtime.invoke(health).await).status, 200);
    }
}

/// An event of no kind capsign serves is an invocation error (from `lambda_http`), and the
/// function goes on to the next event.
#[tokio::test]
async fn an_unknown_event_is_an_invocation_error_and_the_next_is_served() {
    let mut runtime = FakeRuntime::start().await;
    let _function = lambda(&runtime, &capsign::testing::env(&[]));
    let sent = runtime.queue(json!({"Records": [{"eventSource": "aws:sqs"}]}));
    match runtime.next_posted().await {
        Posted::Error { id, body } => {
            assert_eq!(id, sent);
            assert!(body["errorMessage"].is_string(), "{body}");
        }
        other => panic!("expected an invocation error, got {other:?}"),
    }
    let e = get_event(Kind::Alb, "/healthz");
    assert_eq!(received(Kind::Alb, &runtime.invoke(e).await).status, 200);
}

/// Issue 27 (4): a malformed HTTP event was a panic inside `lambda_http` (an invalid base64
/// body) or a deserialize error (no `requestContext`, `cookies` not an array, a header with
/// CR/LF): an invocation error, which the front door turns into a bare 502. Each is now a 400
/// (a 431 for headers over the server's 16 KiB) in Ably's envelope and the event's own shape,
/// and the function serves the next event.
#[tokio::test]
async fn malformed_http_events_are_answered_400_in_their_shape() {
    let mut runtime = FakeRuntime::start().await;
    let _function = lambda(&runtime, &capsign::testing::env(&[]));
    let health = |kind: Kind| get_event(kind, "/healthz");
    let mut cases: Vec<(Kind, Value, u16, &str)> = Vec::new();
    let mut e = health(Kind::HttpApiV2);
    e["body"] = json!("%%% not base64 %%%");
    e["isBase64Encoded"] = json!(true);
    cases.push((Kind::HttpApiV2, e, 400, "not base64"));
    let mut e = health(Kind::RestApiV1);
    e.as_object_mut().unwrap().remove("requestContext");
    cases.push((Kind::RestApiV1, e, 400, "requestContext"));
    let mut e = health(Kind::FunctionUrl);
    e["cookies"] = json!({"a": "b"});
    cases.push((Kind::FunctionUrl, e, 400, "cookies"));
    let mut e = health(Kind::Alb);
    e["headers"]["x-split"] = json!("a\r\nset-cookie: injected=1");
    cases.push((Kind::Alb, e, 400, "character"));
    let mut e = health(Kind::HttpApiV2);
    e["headers"]["x-big"] = json!("a".repeat(200 * 1024));
    cases.push((Kind::HttpApiV2, e, 431, "16 KiB"));
    for (kind, e, status, names) in cases {
        let answer = runtime.invoke(e).await;
        let r = received(kind, &answer);
        assert_eq!(
            (r.status, r.error_code()),
            (status, 40000),
            "{kind:?}: {answer}"
        );
        assert!(r.body.contains(names), "{kind:?}: {}", r.body);
        assert_eq!(r.header("x-ably-errorcode"), Some("40000"));
        assert!(
            !r.body.contains("injected"),
            "nothing of the event is echoed"
        );
        if kind == Kind::Alb {
            assert_eq!(answer["statusDescription"], "400 Bad Request");
        }
        // The instance is still there.
        assert_eq!(
            received(kind, &runtime.invoke(health(kind)).await).status,
            200
        );
    }
}

/// Issue 28 (3): secrets from AWS Secrets Manager and Parameter Store through the Parameters
/// and Secrets extension (a stand-in of its HTTP interface on 127.0.0.1: the session token
/// required, `SecretString` and `Parameter.Value` answered): the function starts with them and
/// signs with the key it was given; a secret the extension cannot find is an init error naming
/// the variable.
#[tokio::test]
async fn secrets_come_from_the_parameters_and_secrets_extension() {
    use crate::fakes::{Answer, Fake};
    let extension = Fake::start(|seen| {
        if seen
            .headers
            .get("x-aws-parameters-secrets-token")
            .map(|v| v.as_bytes())
            != Some(b"session-token-1")
        {
            return Answer::json(401, &json!({"message": "no token"}));
        }
        match seen.path.as_str() {
            "/systemsmanager/parameters/get?name=%2Fcapsign%2Fably&withDecryption=true" => {
                Answer::json(
                    200,
                    &json!({"Parameter": {"Name": "/capsign/ably",
                    "Value": capsign::testing::ABLY_KEY}}),
                )
            }
            "/secretsmanager/get?secretId=capsign" => Answer::json(
                200,
                &json!({"Name": "capsign",
                "SecretString": json!({"cookie-key": capsign::testing::COOKIE_KEY}).to_string()}),
            ),
            _ => Answer::json(400, &json!({"message": "ResourceNotFoundException"})),
        }
    })
    .await;
    let mut settings = capsign::testing::env(&[]);
    settings.remove("ABLY_API_KEY");
    settings.remove("CAPSIGN_COOKIE_KEY");
    settings.insert("ABLY_API_KEY_AWS".into(), "ssm:/capsign/ably".into());
    settings.insert(
        "CAPSIGN_COOKIE_KEY_AWS".into(),
        "secretsmanager:capsign#cookie-key".into(),
    );
    settings.insert("AWS_SESSION_TOKEN".into(), "session-token-1".into());
    settings.insert(
        "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT".into(),
        extension.addr.port().to_string(),
    );
    let mut runtime = FakeRuntime::start().await;
    let _function = lambda(&runtime, &settings);
    let bearer = format!("Bearer {}", session("alice", Value::Null));
    let e = event(
        Kind::HttpApiV2,
        &Call {
            method: "GET",
            path: "/auth",
            query: &[("capability", "{\"chat:a\":[\"subscribe\"]}")],
            headers: &[("authorization", &bearer)],
            cookies: &[],
            body: None,
        },
    );
    let r = received(Kind::HttpApiV2, &runtime.invoke(e).await);
    assert_eq!(r.status, 200, "{}", r.body);
    let claims = crate::harness::verify_ably_jwt(&r.body);
    assert_eq!(claims["x-ably-clientId"], "alice");
    assert_eq!(
        extension.seen().len(),
        2,
        "each secret fetched once, at start"
    );

    settings.insert(
        "CAPSIGN_COOKIE_KEY_AWS".into(),
        "secretsmanager:missing".into(),
    );
    let mut runtime = FakeRuntime::start().await;
    let mut function = lambda(&runtime, &settings);
    match runtime.next_posted().await {
        Posted::InitError { body, .. } => {
            let message = body["errorMessage"].as_str().unwrap();
            assert!(
                message.contains("CAPSIGN_COOKIE_KEY_AWS (secretsmanager:missing)")
                    && message.contains("ResourceNotFoundException"),
                "{message}"
            );
        }
        other => panic!("expected an init error, got {other:?}"),
    }
    let status = tokio::task::spawn_blocking(move || function.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(2));
}

/// API Gateway puts a named stage before the path (`/prod/healthz`); the routes are found
/// anyway (the REST API sample above has the stage `prod` too).
#[tokio::test]
async fn a_named_stage_before_the_path_is_not_part_of_the_route() {
    let mut runtime = FakeRuntime::start().await;
    let _function = lambda(&runtime, &capsign::testing::env(&[]));
    let mut e = get_event(Kind::HttpApiV2, "/prod/healthz");
    e["requestContext"]["stage"] = json!("prod");
    let r = received(Kind::HttpApiV2, &runtime.invoke(e).await);
    assert_eq!(r.status, 200, "{}", r.body);
}

/// JSON logs on Lambda (`AWS_LAMBDA_LOG_FORMAT=JSON`): every line parses, and each access
/// line is a CloudWatch embedded-metric-format document.
#[tokio::test]
async fn access_lines_are_embedded_metrics() {
    let mut runtime = FakeRuntime::start().await;
    let mut settings = capsign::testing::env(&[]);
    settings.insert("AWS_LAMBDA_LOG_FORMAT".into(), "JSON".into());
    let mut function = lambda(&runtime, &settings);
    let bearer = format!("Bearer {}", session("alice", Value::Null));
    for headers in [vec![("authorization", bearer.as_str())], vec![]] {
        let e = event(
            Kind::FunctionUrl,
            &Call {
                method: "GET",
                path: "/auth",
                query: &[("capability", "{\"chat:a\":[\"subscribe\"]}")],
                headers: &headers,
                cookies: &[],
                body: None,
            },
        );
        runtime.invoke(e).await;
    }
    // Logs are written after each invocation; stop the function and read them all.
    let _ = function.kill();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut function.stderr.take().unwrap(), &mut stderr).unwrap();
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "capsign::access")
        .collect();
    assert_eq!(access.len(), 2, "{stderr}");
    for line in &access {
        let emf = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(emf["Namespace"], "capsign");
        assert_eq!(emf["Dimensions"], json!([["route"]]));
        // Every declared metric is a number on the line.
        for m in emf["Metrics"].as_array().unwrap() {
            let name = m["Name"].as_str().unwrap();
            assert!(line[name].is_number(), "{name} in {line}");
        }
        assert!(line["_aws"]["Timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    }
    let names = |l: &Value| -> Vec<String> {
        l["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(access[0]), ["duration_ms", "held", "new", "denied"]);
    assert_eq!(access[0]["new"], 1);
    assert_eq!(names(access[1]), ["duration_ms", "refusals"]);
    assert_eq!(access[1]["code"], 40101);
    assert!(
        !stderr.contains(&bearer[7..]),
        "the session token is in the log"
    );
}

/// Start-up errors go to the Runtime API's init-error endpoint, and the process exits.
#[tokio::test]
async fn start_up_errors_are_reported_as_init_errors() {
    // Issue 28 (3): a runtime address the client cannot read panicked inside it; it is now
    // a clear error and exit 2 before anything else.
    for bad in ["/no/host", "ftp://127.0.0.1:9001", "a b"] {
        let out = Command::new(bin())
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", bad)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(
            err.contains("AWS_LAMBDA_RUNTIME_API") && !err.contains("panicked"),
            "{bad}: {err}"
        );
    }
    let cases: [(&str, HashMap<String, String>, &str); 3] = [
        ("nothing set", HashMap::new(), "demo mode"),
        (
            "header identity",
            capsign::testing::env(&[
                ("CAPSIGN_IDENTITY", "header"),
                ("CAPSIGN_TRUSTED_PROXIES", "10.0.0.0/8"),
            ]),
            "header identity cannot work on Lambda",
        ),
        (
            "a bad cookie key",
            capsign::testing::env(&[("CAPSIGN_COOKIE_KEY", "short")]),
            "CAPSIGN_COOKIE_KEY",
        ),
    ];
    for (what, settings, expected) in cases {
        let mut runtime = FakeRuntime::start().await;
        let mut function = lambda(&runtime, &settings);
        match runtime.next_posted().await {
            Posted::InitError { error_type, body } => {
                assert_eq!(error_type, "Runtime.InitError", "{what}");
                let message = body["errorMessage"].as_str().unwrap();
                assert!(message.contains(expected), "{what}: {message}");
                assert_eq!(body["errorType"], "capsign.ConfigurationError");
            }
            other => panic!("{what}: expected an init error, got {other:?}"),
        }
        let status = tokio::task::spawn_blocking(move || function.wait().unwrap())
            .await
            .unwrap();
        assert_eq!(status.code(), Some(2), "{what}");
    }
}
