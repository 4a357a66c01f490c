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
}

impl Answer {
    pub fn json(status: u16, v: &Value) -> Answer {
        Answer {
            status,
            body: v.to_string().into_bytes(),
            delay: Duration::ZERO,
        }
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

/// Ably's REST API, as far as capsign uses it: `POST /keys/{keyName}/requestToken` checking
/// the TokenRequest as Ably does (MAC, fields, timestamp window, nonce replay), and
/// `GET /time` answering `time_offset_ms` away from the local clock.
pub async fn fake_ably(time_offset_ms: i64) -> Fake {
    let nonces = Arc::new(Mutex::new(std::collections::HashSet::new()));
    Fake::start(move |seen| {
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap();
        if seen.path == "/time" {
            return Answer::json(200, &json!([now + time_offset_ms]));
        }
        let error = |status: u16, code: u32, message: &str| {
            Answer::json(
                status,
                &json!({"error": {"code": code, "statusCode": status, "message": message}}),
            )
        };
        if seen.method != "POST" || !seen.path.ends_with("/requestToken") {
            return error(404, 40400, "no such endpoint");
        }
        let text = String::from_utf8(seen.body.to_vec()).unwrap();
        let Ok(tr) = std::panic::catch_unwind(|| crate::harness::verify_token_request(&text))
        else {
            return error(401, 40101, "Invalid mac");
        };
        let key_name = tr["keyName"].as_str().unwrap();
        if !seen.path.contains(&key_name.replace('.', "%2E")) && !seen.path.contains(key_name) {
            return error(400, 40000, "keyName does not match the URL");
        }
        let ts = tr["timestamp"].as_i64().unwrap();
        if (ts - (now + time_offset_ms)).abs() > 120_000 {
            return error(401, 40104, "Timestamp not current");
        }
        if !nonces
            .lock()
            .unwrap()
            .insert(tr["nonce"].as_str().unwrap().to_owned())
        {
            return error(401, 40105, "Nonce value replayed");
        }
        let ttl = tr["ttl"].as_i64().unwrap_or(3_600_000);
        Answer::json(
            200,
            &json!({
                "token": format!("{}.fake-{}", key_name.split('.').next().unwrap(), tr["nonce"].as_str().unwrap()),
                "keyName": key_name,
                "issued": now + time_offset_ms,
                "expires": now + time_offset_ms + ttl,
                "capability": tr["capability"],
                "clientId": tr["clientId"],
            }),
        )
    })
    .await
}
