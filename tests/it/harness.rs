//! A capsign app inside the test process, called without a socket (`Server::start`: requests
//! go straight to `capsign::http::handle_from`, as from a loopback peer) or served on
//! 127.0.0.1:0 by the real server (`Server::listen`: for tests of the transport itself), and a
//! tiny HTTP client for both.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use capsign::app::App;
use capsign::settings::Settings;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

pub use capsign::testing::{ABLY_KEY, ABLY_SECRET, COOKIE_KEY, SESSION_SECRET, temp_file};

/// The settings of a production-like deployment (jwt identity), plus `extra`.
pub fn settings(extra: &[(&str, &str)]) -> HashMap<String, String> {
    capsign::testing::env(extra)
}

/// Why a configuration was refused: by the settings or when the app was built.
#[derive(Debug)]
pub struct LoadError {
    /// The setting to fix.
    pub setting: String,
    message: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The app of an environment map, as the binary builds it (settings, then services).
pub fn load(map: &HashMap<String, String>) -> Result<App, LoadError> {
    let settings = Settings::load(&|k| map.get(k).cloned(), None).map_err(|e| LoadError {
        setting: e.setting.clone(),
        message: e.to_string(),
    })?;
    App::build(settings, capsign::native::server()).map_err(|e| LoadError {
        setting: e.setting().to_owned(),
        message: e.to_string(),
    })
}

pub struct Server {
    /// Where the server listens; for an app called without a socket, the address requests
    /// name as their host (nothing listens there).
    pub addr: SocketAddr,
    /// Whether requests go over a socket to `capsign::server::run`.
    listening: bool,
    pub app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<capsign::server::Drained>>>,
}

impl Server {
    /// The app of these settings, called without a socket.
    pub async fn start(extra: &[(&str, &str)]) -> Server {
        Server::start_with(settings(extra)).await
    }

    /// The app of this environment, called without a socket.
    pub async fn start_with(map: HashMap<String, String>) -> Server {
        Server::from_app(Arc::new(load(&map).unwrap())).await
    }

    /// `app`, prepared, called without a socket.
    pub async fn from_app(app: Arc<App>) -> Server {
        app.prepare().await.unwrap();
        Server {
            addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
            listening: false,
            app,
            stop: None,
            task: None,
        }
    }

    /// The app of these settings served by the real server on 127.0.0.1:0.
    pub async fn listen(extra: &[(&str, &str)]) -> Server {
        Server::listen_with(settings(extra)).await
    }

    /// The app of this environment served by the real server on 127.0.0.1:0.
    pub async fn listen_with(map: HashMap<String, String>) -> Server {
        let app = Arc::new(load(&map).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        app.prepare().await.unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(capsign::server::run(listener, Arc::clone(&app), async {
            let _ = rx.await;
        }));
        Server {
            addr,
            listening: true,
            app,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _drained = task.await.unwrap().unwrap();
        }
    }

    /// A request builder for `path` on this server.
    pub fn get(&self, path: &str) -> http::request::Builder {
        Request::get(format!("http://{}{path}", self.addr)).header("host", self.addr.to_string())
    }

    pub fn post(&self, path: &str) -> http::request::Builder {
        Request::post(format!("http://{}{path}", self.addr)).header("host", self.addr.to_string())
    }

    /// Sends `req`: over a fresh connection when listening, else to the handler directly.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        if self.listening {
            return send(self.addr, req).await;
        }
        let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
        let resp = capsign::http::handle_from(&self.app, req, Some(loopback)).await;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    /// `/auth` for `who` asking `capability`, with no grant cookie: a client's first request.
    pub async fn first_auth(&self, who: &str, capability: Option<&str>) -> Reply {
        self.send(auth_request(self, who, capability, None)).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A response with its body read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The grant cookie's value from `Set-Cookie`.
    pub fn grant_cookie(&self) -> Option<String> {
        self.headers.get_all("set-cookie").iter().find_map(|v| {
            let c = cookie::Cookie::parse(v.to_str().unwrap().to_owned()).unwrap();
            (c.name() == "__Host-capsign").then(|| c.value().to_owned())
        })
    }

    /// The Ably error code of an error reply, checked against the headers.
    pub fn error_code(&self) -> u64 {
        assert_eq!(self.header("content-type"), Some("application/json"));
        let v: Value = serde_json::from_str(&self.body).unwrap();
        let code = v["error"]["code"].as_u64().unwrap();
        assert_eq!(
            v["error"]["statusCode"].as_u64(),
            Some(u64::from(self.status))
        );
        assert_eq!(
            self.header("x-ably-errorcode"),
            Some(code.to_string().as_str())
        );
        assert!(self.header("x-ably-errormessage").is_some());
        assert!(
            v["error"]["href"]
                .as_str()
                .unwrap()
                .ends_with(&code.to_string())
        );
        code
    }

    /// The capability of the minted credential, JWT or TokenRequest, as canonical JSON,
    /// after checking the credential's signature independently of capsign's code.
    pub fn capability(&self) -> String {
        assert_eq!(self.status, 200, "{}", self.body);
        match self.header("content-type") {
            Some("application/jwt") => {
                let claims = verify_ably_jwt(&self.body);
                claims["x-ably-capability"].as_str().unwrap().to_owned()
            }
            Some("application/json") => {
                let tr = verify_token_request(&self.body);
                tr["capability"].as_str().unwrap().to_owned()
            }
            other => panic!("unexpected content type {other:?}"),
        }
    }
}

/// Verifies an Ably JWT with plain HMAC over its first two parts (not capsign's code path) and
/// returns its claims.
pub fn verify_ably_jwt(jwt: &str) -> Value {
    use hmac::{Hmac, Mac};
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "HS256");
    assert_eq!(header["kid"], "xVLyHw.mDYnFA");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(ABLY_SECRET.as_bytes()).unwrap();
    mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
    mac.verify_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap())
        .expect("JWT signature");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert!(iat < exp && exp - iat <= 86_400, "iat {iat} exp {exp}");
    assert!(iat < 10_000_000_000, "iat must be in seconds");
    claims
}

/// Verifies a TokenRequest's MAC the way Ably does and returns it.
pub fn verify_token_request(json: &str) -> Value {
    let tr: Value = serde_json::from_str(json).unwrap();
    let fields = tr.as_object().unwrap();
    for k in fields.keys() {
        assert!(
            k == "mac" || crate::fakes::SIGNED_FIELDS.contains(&k.as_str()),
            "unexpected field {k}"
        );
    }
    assert!(fields["nonce"].as_str().unwrap().len() >= 16);
    assert_eq!(
        crate::fakes::token_request_mac(ABLY_SECRET, fields),
        fields["mac"].as_str().unwrap(),
        "TokenRequest MAC"
    );
    tr
}

/// Sends one request on a fresh connection, and returns once the connection is closed (so a
/// test that stops the server next has nothing open).
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let resp: Response<hyper::body::Incoming> = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    drop(sender);
    let _ = conn.await;
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// An HS256 app-session JWT for `sub`, valid for a week (tests move the server's clock),
/// with extra claims.
pub fn session(sub: &str, extra: Value) -> String {
    capsign::testing::session_jwt(sub, capsign::testing::now_s() + 7 * 86_400, &extra)
}

/// `/auth`, with `?capability=…` (percent-encoded) when one is given.
pub fn auth_path(capability: Option<&str>) -> String {
    match capability {
        Some(c) => format!(
            "/auth?capability={}",
            percent_encoding::utf8_percent_encode(c, percent_encoding::NON_ALPHANUMERIC)
        ),
        None => "/auth".to_owned(),
    }
}

/// `/auth?capability=…` with the session of `who` and an optional grant cookie.
pub fn auth_request(
    server: &Server,
    who: &str,
    capability: Option<&str>,
    cookie: Option<&str>,
) -> Request<Full<Bytes>> {
    let session = session(who, Value::Null);
    bearer_request(server, &session, &auth_path(capability), cookie)
}

/// GET `path` with the session JWT `session` and an optional grant cookie.
pub fn bearer_request(
    server: &Server,
    session: &str,
    path: &str,
    cookie: Option<&str>,
) -> Request<Full<Bytes>> {
    let mut b = server
        .get(path)
        .header("authorization", format!("Bearer {session}"));
    if let Some(c) = cookie {
        b = b.header("cookie", format!("__Host-capsign={c}"));
    }
    b.body(Full::new(Bytes::new())).unwrap()
}
