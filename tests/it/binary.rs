//! The real `capsign` binary, as a user starts it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

use crate::harness::{send, verify_ably_jwt};

const BIN: &str = env!("CARGO_BIN_EXE_capsign");

/// Clears every capsign setting from the child's environment, so the host's cannot leak in.
fn command() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("CAPSIGN_") || k == "ABLY_API_KEY" {
            c.env_remove(k);
        }
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Starts the binary and waits for its "listening on" line; returns the child, the address
/// and everything it printed before.
/// A started binary, killed (and reaped) when dropped: a test that fails half-way leaves no
/// process behind.
pub(crate) struct Running(pub(crate) Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Already gone when the test stopped it itself; then both calls fail harmlessly.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(mut c: Command) -> (Running, std::net::SocketAddr, String) {
    let mut child = Running(c.spawn().unwrap());
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            seen.push_str(&line);
            seen.push('\n');
            if let Some(addr) = line.strip_prefix("capsign: listening on http://") {
                let _ = tx.send((addr.parse().unwrap(), seen.clone()));
            }
        }
    });
    let (addr, seen) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("capsign did not start listening");
    (child, addr, seen)
}

#[tokio::test]
async fn demo_mode_from_nothing() {
    let mut c = command();
    c.env("CAPSIGN_LISTEN", "127.0.0.1:0");
    let (mut child, addr, banner) = start(c);
    assert!(banner.contains("DEMO MODE"), "{banner}");
    // Issue 28 (5): the first line says what runs and how it drains.
    let first = banner.lines().next().unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        first.starts_with(&format!(
            "capsign: capsign {version} starting: demo mode (demo identity)"
        )) && first.contains("served 0s more"),
        "{first}"
    );

    let page = send(
        addr,
        http::Request::get("/")
            .header("host", "x")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("<form method=\"post\" action=\"/login\">")
    );

    let login = send(
        addr,
        http::Request::post("/login")
            .header("host", "x")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from("user=alice")))
            .unwrap(),
    )
    .await;
    assert_eq!(login.status, 303);
    let session = login
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();

    // Default grants on a fresh set, then one more channel.
    let r = send(
        addr,
        http::Request::get("/auth?capability=%7B%22chat%3Alobby%22%3A%5B%22publish%22%5D%7D")
            .header("host", "x")
            .header("cookie", &session)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The demo key is not the test key, so decode without verifying.
    use base64::Engine as _;
    let payload = r.body.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["x-ably-clientId"], "alice");
    assert_eq!(
        claims["x-ably-capability"],
        r#"{"announcements":["history","subscribe"],"chat:lobby":["publish"],"private:alice:*":["*"]}"#
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn production_settings_from_the_environment() {
    let rules = crate::harness::temp_file("rules.toml", capsign::testing::RULES);
    let mut c = command();
    c.env("CAPSIGN_LISTEN", "127.0.0.1:0")
        .env("ABLY_API_KEY", crate::harness::ABLY_KEY)
        .env("CAPSIGN_COOKIE_KEY", crate::harness::COOKIE_KEY)
        .env("CAPSIGN_SESSION_SECRET", crate::harness::SESSION_SECRET)
        .env("CAPSIGN_RULES", &rules);
    let (mut child, addr, banner) = start(c);
    assert!(!banner.contains("DEMO"), "{banner}");
    let first = banner.lines().next().unwrap();
    assert!(
        first.contains("starting: production mode (jwt identity)")
            && first.contains("served 10s more")
            && first.contains("then get 10s to finish"),
        "{first}"
    );
    assert!(!banner.contains("FAKESECRET"));
    let token = crate::harness::session("erin", serde_json::Value::Null);
    let r = send(
        addr,
        http::Request::get("/auth?capability=%7B%22chat%3Aa%22%3A%5B%22subscribe%22%5D%7D")
            .header("host", "x")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    let claims = verify_ably_jwt(&r.body);
    assert_eq!(claims["x-ably-clientId"], "erin");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn bad_configuration_exits_2_naming_the_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("CAPSIGN_COOKIE_KEY", "dG9vIHNob3J0")],
            "CAPSIGN_COOKIE_KEY",
        ),
        (&[("ABLY_API_KEY", "not-a-key")], "ABLY_API_KEY"),
        (&[("CAPSIGN_LISTEN", "0.0.0.0:0")], "CAPSIGN_IDENTITY"),
        (&[("CAPSIGN_TTL", "forever")], "CAPSIGN_TTL"),
        // A misspelt setting is refused, not left at its default (issue 27).
        (&[("CAPSIGN_DNY", "reject")], "did you mean CAPSIGN_DENY?"),
    ];
    for (vars, name) in cases {
        let mut c = command();
        for (k, v) in *vars {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{vars:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(name), "{vars:?}: {err}");
        if matches!(*name, "CAPSIGN_COOKIE_KEY" | "ABLY_API_KEY") {
            assert!(!err.contains(vars[0].1), "secret echoed: {err}");
        }
    }
}

/// Issue 27 (9): `--help` names the variables read besides the settings, and output into a
/// pipe closed early (`capsign check | head -1`) ends quietly, not with a panic.
#[test]
fn help_names_port_and_rust_log_and_a_closed_stdout_is_no_panic() {
    let out = command()
        .arg("--help")
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("PORT") && help.contains("RUST_LOG"), "{help}");
    let mut c = command();
    c.arg("check").stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

#[test]
fn check_flag_validates_and_exits() {
    let out = command().arg("--check").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let out = command()
        .args(["--config", "/nonexistent/capsign.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Issue 16 (1): `--check` used to say "configuration OK" for production settings that demo
/// values completed (no identity source, no Ably key, no cookie key); now each is exit 2,
/// naming what to set.
#[test]
fn check_refuses_production_settings_completed_by_demo_values() {
    let rules = crate::harness::temp_file("rules.toml", capsign::testing::RULES);
    let rules = rules.to_str().unwrap();
    let ably = ("ABLY_API_KEY", crate::harness::ABLY_KEY);
    let cookie = ("CAPSIGN_COOKIE_KEY", crate::harness::COOKIE_KEY);
    let session = ("CAPSIGN_SESSION_SECRET", crate::harness::SESSION_SECRET);
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[ably, cookie, ("CAPSIGN_RULES", rules)],
            "CAPSIGN_SESSION_SECRET",
        ),
        (
            &[
                ably,
                cookie,
                ("CAPSIGN_RULES", rules),
                ("CAPSIGN_SESSION_SECRET", ""),
            ],
            "CAPSIGN_SESSION_SECRET",
        ),
        (&[session, cookie, ("CAPSIGN_RULES", rules)], "ABLY_API_KEY"),
        (
            &[
                session,
                ably,
                ("CAPSIGN_RULES", rules),
                ("CAPSIGN_LISTEN", "0.0.0.0:0"),
            ],
            "CAPSIGN_COOKIE_KEY",
        ),
    ];
    for (vars, name) in cases {
        let mut c = command();
        c.arg("--check");
        for (k, v) in *vars {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{vars:?}: {err}");
        assert!(err.contains(name), "{vars:?}: {err}");
        assert!(!err.contains("configuration OK"), "{err}");
    }
}

/// Issue 28 (5): a JWKS that cannot be fetched at start was exit 2 at once, a crash loop where
/// an instance that retries would recover. It now listens, not ready (`/readyz` 503, `/healthz`
/// 200), retries with backoff and becomes ready when the JWKS answers; past
/// `CAPSIGN_STARTUP_TIMEOUT` it gives up with exit 2.
#[tokio::test]
async fn a_jwks_down_at_start_leaves_the_instance_unready_and_retrying() {
    use crate::fakes::{Answer, Fake};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let jwks: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/keys/jwks.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&calls);
    // Down for the first two fetches, then up.
    let idp = Fake::start(move |_| {
        if counted.fetch_add(1, Ordering::SeqCst) < 2 {
            Answer::json(503, &serde_json::json!({}))
        } else {
            Answer::json(200, &jwks)
        }
    })
    .await;
    let rules = crate::harness::temp_file("rules.toml", capsign::testing::RULES);
    let log = crate::harness::temp_file("capsign.log", "");
    let mut c = command();
    c.env("CAPSIGN_LISTEN", "127.0.0.1:0")
        .env("ABLY_API_KEY", crate::harness::ABLY_KEY)
        .env("CAPSIGN_COOKIE_KEY", crate::harness::COOKIE_KEY)
        .env("CAPSIGN_SESSION_JWKS", idp.url("/jwks.json"))
        .env("CAPSIGN_RULES", &rules);
    let (_child, addr) = start_logging_to(c, &log).await;
    let get = |path: &'static str| get_from(addr, path);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("(not ready yet)"), "{text}");
    assert!(text.contains("CAPSIGN_STARTUP_TIMEOUT"), "{text}");
    assert_eq!(get("/readyz").await.status, 503);
    assert_eq!(get("/healthz").await.status, 200, "alive while not ready");
    let mut ready = 0;
    for _ in 0..100 {
        ready = get("/readyz").await.status;
        if ready == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, 200, "ready once the JWKS answered");
    assert!(calls.load(Ordering::SeqCst) >= 3);

    // Never up: it gives up at the timeout, with exit 2.
    let mut c = command();
    c.env("CAPSIGN_LISTEN", "127.0.0.1:0")
        .env("ABLY_API_KEY", crate::harness::ABLY_KEY)
        .env("CAPSIGN_COOKIE_KEY", crate::harness::COOKIE_KEY)
        .env("CAPSIGN_SESSION_JWKS", "http://127.0.0.1:1/jwks.json")
        .env("CAPSIGN_STARTUP_TIMEOUT", "2s")
        .env("CAPSIGN_RULES", &rules);
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("giving up after 2s (CAPSIGN_STARTUP_TIMEOUT)"),
        "{err}"
    );
}

/// `GET path` on `addr`, with a `Host` and nothing else.
async fn get_from(addr: std::net::SocketAddr, path: &str) -> crate::harness::Reply {
    send(
        addr,
        http::Request::get(path)
            .header("host", "x")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
}

/// A production configuration on `c`: the harness's Ably key, cookie key and session
/// secret, and the rules file `rules`, listening on a free loopback port.
fn production<'c>(c: &'c mut Command, rules: &std::path::Path) -> &'c mut Command {
    c.env("CAPSIGN_LISTEN", "127.0.0.1:0")
        .env("ABLY_API_KEY", crate::harness::ABLY_KEY)
        .env("CAPSIGN_COOKIE_KEY", crate::harness::COOKIE_KEY)
        .env("CAPSIGN_SESSION_SECRET", crate::harness::SESSION_SECRET)
        .env("CAPSIGN_RULES", rules)
}

/// Starts `c` with its stderr written to the file `log` and waits for its "listening on"
/// line (text or JSON); the child and the address.
async fn start_logging_to(
    mut c: Command,
    log: &std::path::Path,
) -> (Running, std::net::SocketAddr) {
    c.stderr(std::fs::File::create(log).unwrap());
    let child = Running(c.spawn().unwrap());
    for _ in 0..200 {
        let text = std::fs::read_to_string(log).unwrap();
        if let Some(a) = text.lines().find_map(|l| {
            let at = l.find("listening on http://")? + "listening on http://".len();
            l.get(at..)?.split(['"', ' ']).next()
        }) {
            return (child, a.parse().unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("capsign did not start");
}

/// Runs the real binary in `log_format` at `RUST_LOG=debug` through logins, grants, a webhook
/// call, a TokenRequest, a tampered cookie and a bad session (one request carrying the
/// `X-Request-Id` `support-case-4711`); returns everything it printed and every value that
/// must not appear in it.
async fn a_logged_run(log_format: &str) -> (String, Vec<(&'static str, String)>) {
    use crate::fakes::{Fake, grant_all_but_secret};
    const POLICY_SECRET: &str = "policy-secret-for-the-log-test-0123456789";
    let hook = Fake::start(grant_all_but_secret).await;
    let rules = crate::harness::temp_file("rules.toml", capsign::testing::RULES);
    let log = crate::harness::temp_file("capsign.log", "");
    let mut c = command();
    production(&mut c, &rules)
        .env("CAPSIGN_POLICY_URL", hook.url("/decide"))
        .env("CAPSIGN_POLICY_SECRET", POLICY_SECRET)
        .env("CAPSIGN_LOG_FORMAT", log_format)
        .env("RUST_LOG", "debug");
    let (mut child, addr) = start_logging_to(c, &log).await;
    let session = crate::harness::session("erin", serde_json::json!({"team": "red"}));
    let get = |path: &str, cookie: Option<&str>, grants: Option<&str>, bearer: &str| {
        let mut b = http::Request::get(path)
            .header("host", addr.to_string())
            .header("authorization", format!("Bearer {bearer}"));
        if let Some(c) = cookie {
            b = b.header("cookie", format!("__Host-capsign={c}"));
        }
        if let Some(g) = grants {
            b = b.header("x-capsign-grants", g);
        }
        b.body(Full::new(Bytes::new())).unwrap()
    };
    let a = send(
        addr,
        get(
            "/auth?capability=%7B%22chat%3Aa%22%3A%5B%22subscribe%22%5D%7D",
            None,
            None,
            &session,
        ),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.header("x-request-id").map(str::len),
        Some(32),
        "a generated id"
    );
    let cookie = a.grant_cookie().unwrap();
    let grants = a.header("x-capsign-grants").unwrap().to_owned();
    let b = send(
        addr,
        get(
            "/auth?format=tokenRequest&capability=%7B%22billing%3A1%22%3A%5B%22subscribe%22%5D%7D",
            Some(&cookie),
            Some(&grants),
            &session,
        ),
    )
    .await;
    assert_eq!(b.status, 200, "{}", b.body);
    let seen = hook.seen();
    assert_eq!(seen.len(), 1, "the webhook was called");
    // Issue 27 (7): with the request's id, so the webhook's logs and capsign's meet.
    assert_eq!(
        seen[0]
            .headers
            .get("x-request-id")
            .map(|v| v.to_str().unwrap()),
        b.header("x-request-id")
    );
    let tr: serde_json::Value = serde_json::from_str(&b.body).unwrap();
    // The last character changed (to one it is not), so the value no longer opens.
    let other = |v: &str| if v.ends_with('A') { 'B' } else { 'A' };
    let tampered = format!("{}{}", &cookie[..cookie.len() - 1], other(&cookie));
    let c = send(addr, get("/auth", Some(&tampered), None, &session)).await;
    assert_eq!(c.status, 403, "{}", c.body);
    let bad_session = format!("{}{}", &session[..session.len() - 1], other(&session));
    let mut d = get("/auth", Some(&cookie), None, &bad_session);
    d.headers_mut()
        .insert("x-request-id", "support-case-4711".parse().unwrap());
    d.headers_mut().insert(
        "user-agent",
        "Mozilla/5.0 (X11; \"case\" 4711)".parse().unwrap(),
    );
    let d = send(addr, d).await;
    assert_eq!(d.status, 401, "{}", d.body);
    assert_eq!(
        d.header("x-request-id"),
        Some("support-case-4711"),
        "echoed, errors too"
    );
    // A resource the webhook refuses: named at debug, counted on the access line.
    let e = send(
        addr,
        get(
            "/auth?capability=%7B%22secret%3Ax%22%3A%5B%22subscribe%22%5D%7D",
            Some(&cookie),
            None,
            &session,
        ),
    )
    .await;
    assert_eq!(e.header("x-capsign-denied"), Some("secret:x"), "{}", e.body);
    // A graceful stop (SIGTERM), so the log writer flushes what it holds; a second one ends
    // the default 10 s drain at once (issue 28 (1)), and with nothing in flight the exit is
    // clean.
    let stopping = std::time::Instant::now();
    let term = || {
        let term = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
    };
    term();
    // The second signal once the first has begun the drain (its line is written at once).
    let mut draining = false;
    for _ in 0..250 {
        draining = std::fs::read_to_string(&log)
            .unwrap()
            .contains("shutting down");
        if draining {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(draining, "the first signal began the drain");
    term();
    assert!(
        child.wait().unwrap().success(),
        "a clean exit on SIGTERM: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "the second signal ended the drain"
    );

    let text = std::fs::read_to_string(&log).unwrap();
    let signature = |jwt: &str| jwt.rsplit('.').next().unwrap().to_owned();
    let secrets = vec![
        ("Ably key secret", crate::harness::ABLY_SECRET.into()),
        ("cookie key", crate::harness::COOKIE_KEY.into()),
        ("session secret", crate::harness::SESSION_SECRET.into()),
        ("policy secret", POLICY_SECRET.into()),
        ("session JWT", session.clone()),
        ("session JWT signature", signature(&session)),
        ("bad session JWT", bad_session.clone()),
        ("grant cookie", cookie.clone()),
        ("tampered cookie", tampered.clone()),
        ("grants header", grants.clone()),
        ("Ably JWT", a.body.clone()),
        ("Ably JWT signature", signature(&a.body)),
        ("TokenRequest MAC", tr["mac"].as_str().unwrap().into()),
        ("TokenRequest nonce", tr["nonce"].as_str().unwrap().into()),
    ];
    (text, secrets)
}

/// Issue 16: docs/operate.md promises that no secret, session token, cookie value or credential
/// appears in the logs, and no test looked. This one searches everything the real binary
/// printed at `RUST_LOG=debug`.
#[tokio::test]
async fn debug_logs_hold_no_secret_token_cookie_or_credential() {
    let (text, secrets) = a_logged_run("text").await;
    assert!(text.contains("DEBUG"), "the run logged at debug: {text}");
    // Issue 27 (7): who was refused what, at debug.
    let refused = text
        .lines()
        .find(|l| l.contains("refused") && l.contains("secret:x"))
        .unwrap_or_else(|| panic!("no debug line naming the refused resource: {text}"));
    assert!(refused.contains("erin"), "{refused}");
    // Issue 27 (7): the debug "granted" line is written for every request that is granted
    // (a `tracing::enabled!` check before it left the thread's per-layer filter state
    // dirty, so the next event was dropped), and every line written while answering a
    // request carries its id.
    let access: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("capsign::access"))
        .collect();
    let granted_requests = access.iter().filter(|l| l.contains(" status=200 ")).count();
    let granted_lines = text.lines().filter(|l| l.contains(": granted ")).count();
    assert_eq!((granted_requests, granted_lines), (3, 3), "{text}");
    for line in text
        .lines()
        .filter(|l| l.contains(" DEBUG ") && l.contains("capsign::"))
    {
        if line.contains("connection ended") {
            continue;
        }
        assert!(
            line.contains("request{request_id="),
            "a request's line without its id: {line}"
        );
    }
    // The access line names the peer and quotes the user agent.
    let case = access
        .iter()
        .find(|l| l.contains("request_id=support-case-4711"))
        .unwrap();
    assert!(
        case.contains(" peer=127.0.0.1 ")
            && case.ends_with(r#" user_agent="Mozilla/5.0 (X11; \"case\" 4711)""#),
        "{case}"
    );
    // Issue 27 (7): a log going to a file (not a terminal) holds no ANSI colour escapes.
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escapes in a log file: {text:?}"
    );
    for (what, secret) in secrets {
        assert!(!text.contains(&secret), "{what} appears in the debug log");
    }
}

/// Issue 18: in JSON mode every line the binary prints is a JSON object; each request has one
/// access event at `info` with its request id (the client's when valid), route, status, Ably
/// code, duration and grant counts; and no line holds a secret.
#[tokio::test]
async fn json_logs_parse_line_by_line_with_one_access_event_per_request() {
    let (text, secrets) = a_logged_run("json").await;
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "capsign::access")
        .collect();
    assert_eq!(access.len(), 5, "one access event per request: {access:?}");
    for event in &access {
        assert_eq!(event["level"], "INFO");
        assert_eq!(event["route"], "auth");
        assert!(event["duration_ms"].as_f64().is_some(), "{event}");
    }
    assert_eq!(access[0]["status"], 200);
    assert_eq!(access[0]["format"], "jwt");
    assert_eq!(
        (access[0]["held"].clone(), access[0]["new"].clone()),
        (0.into(), 1.into())
    );
    assert_eq!(access[1]["format"], "tokenRequest");
    assert_eq!(
        (access[1]["held"].clone(), access[1]["new"].clone()),
        (1.into(), 1.into())
    );
    assert_eq!(
        (access[2]["status"].clone(), access[2]["code"].clone()),
        (403.into(), 40160.into())
    );
    assert_eq!(access[3]["request_id"], "support-case-4711");
    assert_eq!(access[3]["peer"], "127.0.0.1");
    assert_eq!(access[3]["user_agent"], "Mozilla/5.0 (X11; \"case\" 4711)");
    // Every other line written while answering carries the request's id.
    let ids: Vec<&str> = access
        .iter()
        .map(|a| a["request_id"].as_str().unwrap())
        .collect();
    let in_requests: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| {
            !["capsign::access", "capsign", "capsign::server"]
                .contains(&l["target"].as_str().unwrap())
        })
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| !m.starts_with("connection ended"))
        })
        .collect();
    assert!(in_requests.len() >= 5, "{in_requests:?}");
    for line in in_requests {
        let id = line["span"]["request_id"].as_str().unwrap_or_default();
        assert!(ids.contains(&id), "a request's line without its id: {line}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l["span"]["request_id"] == "support-case-4711" && l["level"] == "DEBUG"),
        "the refusal's debug line carries the client's id"
    );
    assert_eq!(
        (access[3]["status"].clone(), access[3]["code"].clone()),
        (401.into(), 40101.into())
    );
    assert_eq!(access[4]["denied"], 1, "{}", access[4]);
    assert!(lines.iter().any(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("listening on"))
    }));
    for (what, secret) in secrets {
        assert!(!text.contains(&secret), "{what} appears in the JSON log");
    }
}

/// Issue 18: the operator CLI, used as an operator would: `check` prints the effective
/// settings with secrets redacted; `inspect` opens a cookie taken from a real session (and
/// says why a changed one does not open); `keygen` gives keys the settings accept and walks a
/// rotation; `probe` answers a health check.
#[tokio::test]
async fn the_operator_cli_on_a_real_session() {
    let rules = crate::harness::temp_file("rules.toml", capsign::testing::RULES);
    let production = |c: &mut Command| {
        production(c, &rules);
    };
    let run = |args: &[&str]| {
        let mut c = command();
        production(&mut c);
        c.args(args).stdout(Stdio::piped());
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, out, err) = run(&["check"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("ABLY_API_KEY") && out.contains("<redacted>"),
        "{out}"
    );
    assert!(
        !out.contains("FAKESECRET") && !out.contains(crate::harness::COOKIE_KEY),
        "{out}"
    );
    assert!(
        out.contains("CAPSIGN_GRANT_MAX_AGE") && out.contains("[default]"),
        "{out}"
    );
    // Issue 27 (9): effective values, not the table's descriptions of defaults.
    let line = |out: &str, name: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(line(&out, "CAPSIGN_IDENTITY"), "jwt [default]", "{out}");
    assert_eq!(line(&out, "CAPSIGN_TTL"), "1h [default]", "{out}");
    let mut c = command();
    production(&mut c);
    let out = c
        .args(["check"])
        .env_remove("CAPSIGN_LISTEN")
        .env("PORT", "8080")
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert_eq!(line(&out, "CAPSIGN_LISTEN"), "0.0.0.0:8080 [PORT]", "{out}");

    let mut c = command();
    production(&mut c);
    c.env("CAPSIGN_LISTEN", "127.0.0.1:0");
    let (mut child, addr, _) = start(c);
    let token = crate::harness::session("erin", serde_json::Value::Null);
    let r = send(
        addr,
        http::Request::get("/auth?capability=%7B%22chat%3Aa%22%3A%5B%22subscribe%22%5D%7D")
            .header("host", "x")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    let set_cookie = r.header("set-cookie").unwrap().to_owned();
    let (code, out, err) = run(&["inspect", &set_cookie]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("clientId: erin"), "{out}");
    assert!(out.contains("key id:   1"), "{out}");
    assert!(out.contains("chat:a  [subscribe]  approved"), "{out}");
    assert!(out.contains("valid for its clientId"), "{out}");
    let header = r.header("x-capsign-grants").unwrap().to_owned();
    let (code, out, _) = run(&["inspect", "--header", &header]);
    assert_eq!(code, Some(0), "{out}");
    let cookie = r.grant_cookie().unwrap();
    // Issue 27 (9): what its help promises: whole header lines, the cookie among others.
    for line in [
        format!("Set-Cookie: {set_cookie}"),
        format!("Cookie: theme=dark; __Host-capsign={cookie}; lang=en"),
        format!("__Host-capsign={cookie}; Path=/; Secure"),
    ] {
        let (code, out, err) = run(&["inspect", &line]);
        assert_eq!(code, Some(0), "{line}: {out}{err}");
        assert!(out.contains("clientId: erin"), "{line}: {out}");
    }
    let (code, _, err) = run(&["inspect", "Cookie: theme=dark; lang=en"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("no __Host-capsign cookie in that line"),
        "{err}"
    );
    // Without a cookie key, it says so (not "the MAC does not verify").
    let out = command().args(["inspect", &cookie]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no cookie key configured"), "{err}");
    let changed = format!(
        "{}{}",
        if cookie.starts_with('B') { "C" } else { "B" },
        &cookie[1..]
    );
    let (code, out, _) = run(&["inspect", &changed]);
    assert_eq!(code, Some(1));
    assert!(out.starts_with("does not open:"), "{out}");

    let health = format!("http://{addr}/healthz");
    assert_eq!(run(&["probe", &health]).0, Some(0));
    assert_eq!(run(&["probe", &format!("http://{addr}/nope")]).0, Some(1));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        run(&["probe", "--timeout", "1s", &health]).0,
        Some(1),
        "nothing listens"
    );

    let (code, key, _) = run(&["keygen"]);
    assert_eq!(code, Some(0));
    let key = key.trim();
    assert!(capsign::settings::CookieKeys::parse(key).is_ok(), "{key}");
    let (_, step1, err) = run(&["keygen", "--current", key]);
    assert!(err.contains("step 1 of 3"), "{err}");
    let (_, step2, err) = run(&["keygen", "--current", step1.trim()]);
    assert!(err.contains("step 2 of 3"), "{err}");
    let (_, step3, err) = run(&["keygen", "--current", step2.trim()]);
    assert!(err.contains("step 3 of 3"), "{err}");
    assert!(step3.trim().starts_with("2:"), "{step3}");
}

/// Issue 13 (readiness and drain): `/readyz` is 200 when serving; on SIGTERM it turns 503 at
/// once while requests are still served for `CAPSIGN_SHUTDOWN_DELAY`; `/healthz` stays 200;
/// then the process exits 0.
#[tokio::test]
async fn sigterm_drains_then_exits_cleanly() {
    let mut c = command();
    c.env("CAPSIGN_LISTEN", "127.0.0.1:0")
        .env("CAPSIGN_SHUTDOWN_DELAY", "1500ms");
    let (mut child, addr, _) = start(c);
    let get = |path: &'static str| get_from(addr, path);
    assert_eq!(get("/readyz").await.status, 200);
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let mut ready = get("/readyz").await;
    for _ in 0..100 {
        if ready.status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        ready = get("/readyz").await;
    }
    assert_eq!(
        (ready.status, ready.error_code()),
        (503, 50300),
        "{}",
        ready.body
    );
    assert_eq!(get("/healthz").await.status, 200, "liveness is unaffected");
    assert_eq!(get("/").await.status, 200, "still serving during the delay");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
}

/// Issue 28 (1): the drain defaults cover common health checks (10 s in production, nothing in
/// demo mode); when the grace runs out with a request still in flight, the exit is non-zero
/// and says how many connections were cut.
#[tokio::test]
async fn a_drain_that_cuts_a_request_exits_non_zero() {
    let production_settings =
        capsign::settings::Settings::load(&|k| capsign::testing::env(&[]).get(k).cloned(), None)
            .unwrap();
    assert_eq!(
        production_settings.server.shutdown_delay,
        Duration::from_secs(10)
    );
    let demo = capsign::settings::Settings::load(&|_| None, None).unwrap();
    assert_eq!(demo.server.shutdown_delay, Duration::ZERO);

    let log = crate::harness::temp_file("capsign.log", "");
    let mut c = command();
    c.env("CAPSIGN_LISTEN", "127.0.0.1:0")
        .env("CAPSIGN_SHUTDOWN_DELAY", "0s")
        .env("CAPSIGN_SHUTDOWN_GRACE", "500ms")
        .env("CAPSIGN_METRICS_LISTEN", "127.0.0.1:0");
    let (mut child, addr) = start_logging_to(c, &log).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let metrics: std::net::SocketAddr = text
        .lines()
        .find_map(|l| {
            let at = l.find("metrics on http://")? + "metrics on http://".len();
            l.get(at..)?.split(['/', '"', ' ']).next()?.parse().ok()
        })
        .expect("the metrics address in the log");
    // A request whose body never comes: in flight until the body timeout (10 s).
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut slow,
        b"POST /login HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\n\
          content-length: 100\r\n\r\nuser=",
    )
    .await
    .unwrap();
    // Until the server has it in hand (waiting for its body), as its metrics say.
    let mut in_flight = false;
    for _ in 0..250 {
        let m = get_from(metrics, "/metrics").await.body;
        in_flight = m.lines().any(|l| {
            l.strip_prefix("capsign_http_requests_in_flight ")
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n >= 1)
        });
        if in_flight {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(in_flight, "the slow request never reached the handler");
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "a drain that cut a request is a failure"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("exiting with 1 connection(s) cut before their answer"),
        "{text}"
    );
    drop(slow);
}

/// Issue 13 (containers): `PORT` is honoured when `CAPSIGN_LISTEN` is unset: on all
/// interfaces in production, on loopback in demo mode.
#[test]
fn port_is_honoured_when_listen_is_unset() {
    use capsign::settings::Settings;
    let mut env = capsign::testing::env(&[("PORT", "8089")]);
    env.remove("CAPSIGN_LISTEN");
    let s = Settings::load(&|k| env.get(k).cloned(), None).unwrap();
    assert_eq!(s.listen.to_string(), "0.0.0.0:8089");
    let demo = Settings::load(&|k| (k == "PORT").then(|| "8089".to_owned()), None).unwrap();
    assert_eq!(demo.listen.to_string(), "127.0.0.1:8089");
    let mut both = capsign::testing::env(&[("PORT", "8089")]);
    both.insert("CAPSIGN_LISTEN".into(), "127.0.0.1:7000".into());
    let s = Settings::load(&|k| both.get(k).cloned(), None).unwrap();
    assert_eq!(
        s.listen.to_string(),
        "127.0.0.1:7000",
        "CAPSIGN_LISTEN wins"
    );
    let e = Settings::load(&|k| (k == "PORT").then(|| "http".to_owned()), None).unwrap_err();
    assert_eq!(e.setting, "PORT");
}

/// Issue 28 (5): demo mode started by a platform's `PORT` listens on loopback only, which
/// nothing outside the container reaches; a health check inside it (`capsign probe /healthz`)
/// used to pass. It now fails, with a WARNING saying why, while the demo itself still answers.
#[tokio::test]
async fn demo_mode_behind_port_refuses_to_look_healthy() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut c = command();
    c.env("PORT", port.to_string());
    let (_child, addr, banner) = start(c);
    assert_eq!(addr.to_string(), format!("127.0.0.1:{port}"));
    assert!(
        banner.contains("WARNING: demo mode listens on 127.0.0.1") && banner.contains("503"),
        "{banner}"
    );
    let get = |path: &'static str| get_from(addr, path);
    assert_eq!(get("/healthz").await.status, 503);
    assert_eq!(get("/readyz").await.status, 503);
    assert_eq!(get("/").await.status, 200, "the demo page still answers");
    let probe = Command::new(BIN)
        .args(["probe", "/healthz"])
        .env("PORT", port.to_string())
        .output()
        .unwrap();
    assert_eq!(
        probe.status.code(),
        Some(1),
        "the image's health check fails"
    );
}

/// Ably refusing capsign's own TokenRequest (here: the server's Ably key is wrong) is the
/// operator's problem: the client gets a 502, and the log a WARN line naming Ably's answer.
#[tokio::test]
async fn ably_refusing_capsigns_key_is_a_warn_line_and_a_502() {
    use crate::fakes::{Answer, Fake};
    let ably = Fake::start(|_| {
        Answer::json(
            401,
            &serde_json::json!({"error": {"code": 40101, "statusCode": 401, "message": "Invalid mac"}}),
        )
    })
    .await;
    let rules = crate::harness::temp_file("rules.toml", capsign::testing::RULES);
    let log = crate::harness::temp_file("capsign.log", "");
    let mut c = command();
    production(&mut c, &rules)
        .env("CAPSIGN_ABLY_REST_URL", ably.url(""))
        .env("RUST_LOG", "warn");
    let (_child, addr) = start_logging_to(c, &log).await;
    let read = || std::fs::read_to_string(&log).unwrap();
    let session = crate::harness::session("erin", serde_json::Value::Null);
    let r = send(
        addr,
        http::Request::get(
            "/auth?format=token&capability=%7B%22chat%3Aa%22%3A%5B%22subscribe%22%5D%7D",
        )
        .header("host", addr.to_string())
        .header("x-request-id", "ably-case-42")
        .header("authorization", format!("Bearer {session}"))
        .body(Full::new(Bytes::new()))
        .unwrap(),
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.body);
    let mut warned = String::new();
    for _ in 0..100 {
        warned = read();
        if warned.contains("Ably refused capsign's token request (40101: Invalid mac)") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = warned
        .lines()
        .find(|l| l.contains("Ably refused capsign's token request"))
        .unwrap_or_else(|| panic!("no WARN line: {warned}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("(40101: Invalid mac)"), "{line}");
    // Issue 27 (7): at RUST_LOG=warn too, the WARN line carries the request id, and Ably was
    // sent it.
    assert!(
        line.contains(r#"request{request_id="ably-case-42"}"#),
        "{line}"
    );
    let asked = ably.seen();
    assert_eq!(
        asked[0]
            .headers
            .get("x-request-id")
            .map(|v| v.to_str().unwrap()),
        Some("ably-case-42")
    );
}

/// Issue 27 (7): "why was this user's request refused?" read from the logs of a webhook
/// failure: the client's 503 carries its request id, the webhook was sent it, and the WARN
/// line naming the failure carries it too.
#[tokio::test]
async fn a_webhook_failure_is_found_in_the_log_by_its_request_id() {
    use crate::fakes::{Answer, Fake};
    let hook = Fake::start(|_| Answer::json(500, &serde_json::json!({"oops": true}))).await;
    let rules = crate::harness::temp_file("rules.toml", capsign::testing::RULES);
    let log = crate::harness::temp_file("capsign.log", "");
    let mut c = command();
    production(&mut c, &rules)
        .env("CAPSIGN_POLICY_URL", hook.url("/decide"))
        .env("CAPSIGN_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn");
    let (_child, addr) = start_logging_to(c, &log).await;
    let session = crate::harness::session("erin", serde_json::Value::Null);
    let r = send(
        addr,
        http::Request::get("/auth?capability=%7B%22billing%3A7%22%3A%5B%22subscribe%22%5D%7D")
            .header("host", addr.to_string())
            .header("x-request-id", "case-hook-9")
            .header("authorization", format!("Bearer {session}"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!((r.status, r.error_code()), (503, 50300), "{}", r.body);
    assert_eq!(r.header("x-request-id"), Some("case-hook-9"));
    assert_eq!(
        hook.seen()[0]
            .headers
            .get("x-request-id")
            .map(|v| v.to_str().unwrap()),
        Some("case-hook-9")
    );
    let mut found = None;
    for _ in 0..100 {
        let text = std::fs::read_to_string(&log).unwrap();
        found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["span"]["request_id"] == "case-hook-9");
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = found.expect("no log line with the request id");
    assert_eq!(line["level"], "WARN", "{line}");
    assert!(
        line["message"]
            .as_str()
            .unwrap()
            .contains("policy webhook answered 500"),
        "{line}"
    );
}

/// Issue 27 (5): `capsign check` and the start-up name a plain-http webhook off loopback.
#[test]
fn check_warns_about_a_plain_http_webhook_off_loopback() {
    let rules = crate::harness::temp_file("rules.toml", capsign::testing::RULES);
    let mut c = command();
    production(&mut c, &rules)
        .arg("check")
        .env("CAPSIGN_POLICY_URL", "http://policy.internal:8080/decide")
        .env(
            "CAPSIGN_POLICY_SECRET",
            "policy-secret-for-the-warning-test-0123456789",
        );
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("WARNING: CAPSIGN_POLICY_URL is plain http to policy.internal"),
        "{err}"
    );
}
