//! In-process fakes on 127.0.0.1:0: a policy webhook, a JWKS server, and Ably's REST API.
//! Each records what it was sent and can change behaviour mid-run (pulling the plug).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// What a fake answers: status, content type, body, after a delay.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub delay: Duration,
    /// Headers besides `Content-Type: application/json`.
    pub headers: Vec<(&'static str, String)>,
}

impl Answer {
    pub fn json(status: u16, v: &Value) -> Answer {
        Answer {
            status,
            body: v.to_string().into_bytes(),
            delay: Duration::ZERO,
            headers: Vec::new(),
        }
    }

    /// The same answer with one more header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Answer {
        self.headers.push((name, value.into()));
        self
    }
}

/// A request the fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

type Handler = dyn Fn(&Seen) -> Answer + Send + Sync;

/// A tiny HTTP server whose answers come from a handler that tests can swap.
pub struct Fake {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    handler: Arc<Mutex<Arc<Handler>>>,
    task: tokio::task::JoinHandle<()>,
    plug: tokio::sync::watch::Sender<bool>,
}

impl Fake {
    pub async fn start(handler: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Mutex<Arc<Handler>>> = Arc::new(Mutex::new(Arc::new(handler)));
        let (seen2, handler2) = (Arc::clone(&seen), Arc::clone(&handler));
        let (plug, unplugged) = tokio::sync::watch::channel(false);
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (seen, handler) = (Arc::clone(&seen2), Arc::clone(&handler2));
                let mut unplugged = unplugged.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (seen, handler) = (Arc::clone(&seen), Arc::clone(&handler));
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let s = Seen {
                                method: parts.method.to_string(),
                                path: parts.uri.to_string(),
                                headers: parts.headers,
                                body,
                            };
                            let h = Arc::clone(&handler.lock().unwrap());
                            let answer = h(&s);
                            seen.lock().unwrap().push(s);
                            tokio::time::sleep(answer.delay).await;
                            let mut resp = Response::new(Full::new(Bytes::from(answer.body)));
                            *resp.status_mut() = StatusCode::from_u16(answer.status).unwrap();
                            resp.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static("application/json"),
                            );
                            for (name, value) in &answer.headers {
                                resp.headers_mut()
                                    .insert(*name, http::HeaderValue::from_str(value).unwrap());
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let conn =
                        http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    // Unplugging drops open connections too, as a dead service would.
                    tokio::select! {
                        _ = conn => {}
                        _ = unplugged.wait_for(|u| *u) => {}
                    }
                });
            }
        });
        Fake {
            addr,
            seen,
            connections,
            handler,
            task,
            plug,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Swaps the behaviour, for the next requests.
    pub fn answer(&self, handler: impl Fn(&Seen) -> Answer + Send + Sync + 'static) {
        *self.handler.lock().unwrap() = Arc::new(handler);
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Stops listening: later calls get "connection refused".
    pub fn unplug(self) {
        self.task.abort();
        let _ = self.plug.send(true);
    }
}

/// A webhook granting every asked resource whose name does not start with `secret`.
pub fn grant_all_but_secret(seen: &Seen) -> Answer {
    let req = seen.json();
    let granted: serde_json::Map<String, Value> = req["requested"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(r, _)| !r.starts_with("secret"))
        .map(|(r, ops)| (r.clone(), ops.clone()))
        .collect();
    Answer::json(200, &json!({ "granted": granted }))
}

/// What both fake Ablys share: the operations and the TokenRequest cases each must answer
/// alike (`tests/data/fake_ably.json`, also read by `tests/e2e/fake_ably.py`).
pub fn shared() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fake_ably.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The TokenRequest MAC Ably expects (`docs/ably-protocol.md` §1.2): HMAC-SHA256 under the
/// key's secret over the six fields, each followed by a line feed (absent: empty), base64.
pub fn token_request_mac(secret: &str, tr: &serde_json::Map<String, Value>) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    base64::engine::general_purpose::STANDARD
        .encode(token_request_hmac(secret, tr).finalize().into_bytes())
}

/// The TokenRequest fields the MAC covers, in order (all but `mac`).
pub const SIGNED_FIELDS: [&str; 6] = [
    "keyName",
    "ttl",
    "capability",
    "clientId",
    "timestamp",
    "nonce",
];

/// [`token_request_mac`] before it is finalized, to verify a MAC in constant time.
fn token_request_hmac(
    secret: &str,
    tr: &serde_json::Map<String, Value>,
) -> hmac::Hmac<sha2::Sha256> {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    for k in SIGNED_FIELDS {
        match tr.get(k) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => mac.update(s.as_bytes()),
            Some(v) => mac.update(v.to_string().as_bytes()),
        }
        mac.update(b"\n");
    }
    mac
}

/// An error as Ably answers it: status, code, message.
type AblyError = (u16, u32, String);

fn ably_error(status: u16, code: u32, message: impl Into<String>) -> AblyError {
    (status, code, message.into())
}

/// Ably's capability grammar (a non-empty object of non-empty operation lists, `*` alone),
/// with the shared table's operations.
fn check_capability(text: &str, operations: &[String]) -> Result<(), AblyError> {
    let bad = |m: &str| ably_error(400, 40000, m);
    let cap: Value = serde_json::from_str(text).map_err(|_| bad("capability is not JSON"))?;
    let cap = cap
        .as_object()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| bad("capability must be a non-empty object"))?;
    for (resource, ops) in cap {
        let ops = ops
            .as_array()
            .filter(|o| !o.is_empty() && !resource.is_empty())
            .ok_or_else(|| bad("invalid capability entry"))?;
        for op in ops {
            let op = op
                .as_str()
                .ok_or_else(|| bad("operation is not a string"))?;
            if op == "*" && ops.len() > 1 {
                return Err(bad("'*' must be the only operation"));
            }
            if op != "*" && !operations.iter().any(|o| o == op) {
                return Err(bad("unknown operation"));
            }
        }
    }
    Ok(())
}

/// `POST /keys/{url_key}/requestToken` as Ably checks it, in the Python fake's order: the
/// seven fields only, keyName, MAC (constant time), nonce length, timestamp window, ttl,
/// capability, replay. Returns the TokenRequest.
fn check_token_request(
    url_key: &str,
    body: &[u8],
    now: i64,
    operations: &[String],
    nonces: &Mutex<std::collections::HashSet<String>>,
) -> Result<serde_json::Map<String, Value>, AblyError> {
    use base64::Engine as _;
    use hmac::Mac as _;
    let tr: Value =
        serde_json::from_slice(body).map_err(|_| ably_error(400, 40000, "body is not JSON"))?;
    let Value::Object(tr) = tr else {
        return Err(ably_error(400, 40000, "TokenRequest must be an object"));
    };
    if tr
        .keys()
        .any(|k| k != "mac" && !SIGNED_FIELDS.contains(&k.as_str()))
    {
        return Err(ably_error(400, 40000, "unexpected TokenRequest fields"));
    }
    let key_name = crate::harness::ABLY_KEY.split(':').next().unwrap();
    if tr.get("keyName").and_then(Value::as_str) != Some(url_key) {
        return Err(ably_error(400, 40000, "keyName does not match the URL"));
    }
    if url_key != key_name {
        return Err(ably_error(401, 40400, "No application found with id"));
    }
    let given = tr.get("mac").and_then(Value::as_str).unwrap_or_default();
    let given = base64::engine::general_purpose::STANDARD
        .decode(given)
        .unwrap_or_default();
    let mac = token_request_hmac(crate::harness::ABLY_SECRET, &tr);
    if mac.verify_slice(&given).is_err() {
        return Err(ably_error(401, 40101, "Invalid mac"));
    }
    let nonce = tr.get("nonce").and_then(Value::as_str).unwrap_or_default();
    if nonce.chars().count() < 16 {
        return Err(ably_error(
            400,
            40000,
            "nonce must be at least 16 characters",
        ));
    }
    let ts = tr.get("timestamp").and_then(Value::as_i64);
    if ts.is_none_or(|ts| (ts - now).abs() > 120_000) {
        return Err(ably_error(401, 40104, "Timestamp not current"));
    }
    match tr.get("ttl") {
        None | Some(Value::Null) => {}
        Some(ttl) if ttl.as_i64().is_some_and(|t| t > 0 && t <= 86_400_000) => {}
        Some(_) => return Err(ably_error(400, 40003, "invalid ttl")),
    }
    match tr.get("capability") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => check_capability(text, operations)?,
        Some(_) => return Err(ably_error(400, 40000, "capability must be a string")),
    }
    if !nonces.lock().unwrap().insert(nonce.to_owned()) {
        return Err(ably_error(401, 40105, "Nonce value replayed"));
    }
    Ok(tr)
}

/// Ably's REST API, as far as capsign uses it: `POST /keys/{keyName}/requestToken` checking
/// the TokenRequest as Ably does (`check_token_request`, the same answers as the Python
/// fake's for the shared table), and `GET /time` answering `time_offset_ms` away from the
/// local clock.
pub async fn fake_ably(time_offset_ms: i64) -> Fake {
    let nonces = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let operations: Vec<String> = serde_json::from_value(shared()["operations"].clone()).unwrap();
    Fake::start(move |seen| {
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap()
            + time_offset_ms;
        if seen.path == "/time" {
            return Answer::json(200, &json!([now]));
        }
        let error = |(status, code, message): AblyError| {
            Answer::json(
                status,
                &json!({"error": {"code": code, "statusCode": status, "message": message}}),
            )
        };
        let url_key = seen
            .path
            .strip_prefix("/keys/")
            .and_then(|p| p.strip_suffix("/requestToken"))
            .map(|k| k.replace("%2E", ".").replace("%2e", "."));
        let (Some(url_key), "POST") = (url_key, seen.method.as_str()) else {
            return error(ably_error(404, 40400, "no such endpoint"));
        };
        match check_token_request(&url_key, &seen.body, now, &operations, &nonces) {
            Err(e) => error(e),
            Ok(tr) => {
                let ttl = tr.get("ttl").and_then(Value::as_i64).unwrap_or(3_600_000);
                let nonce = tr["nonce"].as_str().unwrap_or_default();
                Answer::json(
                    200,
                    &json!({
                        "token": format!("{}.fake-{nonce}", url_key.split('.').next().unwrap_or_default()),
                        "keyName": url_key,
                        "issued": now,
                        "expires": now + ttl,
                        "capability": tr.get("capability").cloned().unwrap_or_else(|| json!("{\"*\":[\"*\"]}")),
                        "clientId": tr.get("clientId"),
                    }),
                )
            }
        }
    })
    .await
}

/// The Rust fake answers the shared TokenRequest table as the Python fake does
/// (`tests/e2e/test_fake_ably.py` runs the same cases against that one).
#[tokio::test]
async fn the_fake_answers_the_shared_token_request_cases() {
    let ably = fake_ably(0).await;
    let key_name = crate::harness::ABLY_KEY.split(':').next().unwrap();
    let table = shared();
    let cases = table["token_requests"].as_array().unwrap();
    assert!(cases.len() >= 20, "the shared table has its cases");
    for (n, case) in cases.iter().enumerate() {
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap();
        let mut tr = json!({
            "keyName": key_name, "ttl": 60000, "capability": "{\"chat:*\":[\"publish\"]}",
            "clientId": "alice",
            "timestamp": now + case["timestamp_offset_ms"].as_i64().unwrap_or(0),
            "nonce": format!("{n:04}{now:012}"),
        });
        let fields = tr.as_object_mut().unwrap();
        for (k, v) in case["set"].as_object().into_iter().flatten() {
            if v.is_null() {
                fields.remove(k);
            } else {
                fields.insert(k.clone(), v.clone());
            }
        }
        match case.get("mac") {
            Some(Value::Null) => {}
            Some(mac) => {
                fields.insert("mac".into(), mac.clone());
            }
            None => {
                let mac = token_request_mac(crate::harness::ABLY_SECRET, fields);
                fields.insert("mac".into(), json!(mac));
            }
        }
        let url_key = case["url_key"].as_str().unwrap_or(key_name);
        let post = || {
            http::Request::post(format!("/keys/{url_key}/requestToken"))
                .header("host", "127.0.0.1")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(tr.to_string())))
                .unwrap()
        };
        let mut reply = crate::harness::send(ably.addr, post()).await;
        if case["replay"].as_bool() == Some(true) {
            reply = crate::harness::send(ably.addr, post()).await;
        }
        let name = case["name"].as_str().unwrap();
        assert_eq!(
            reply.status,
            case["status"].as_u64().unwrap() as u16,
            "{name}: {}",
            reply.body
        );
        if let Some(code) = case["code"].as_u64() {
            let body: Value = serde_json::from_str(&reply.body).unwrap();
            assert_eq!(body["error"]["code"], code, "{name}: {}", reply.body);
        }
    }
}
