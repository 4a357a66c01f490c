//! The operator subcommands of the `capsign` binary: `check`, `keygen`, `inspect`, `probe`.
//! Each prints for a person and returns the process's exit status.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use capsign::app::App;
use capsign::grants::{Purpose, Sealer};
use capsign::settings::{self, CookieKeys, Settings};

/// `println!` that stops quietly when stdout is closed (`capsign check | head`), where
/// `println!` panics.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// `capsign check`: loads and checks every setting (reading the files they name, calling out
/// to nothing), prints each setting's effective value and where it came from, secrets
/// redacted; exit 2 on a bad configuration.
pub(crate) fn check(config: Option<&Path>) -> ExitCode {
    let settings = match Settings::from_process(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("capsign: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let demo = settings.is_demo();
    let warnings = settings.warnings();
    // What a setting described in words (or decided by PORT) took.
    let resolved: Vec<(&str, String)> = settings::TABLE
        .iter()
        .filter_map(|d| Some((d.name, settings.resolved(d.name)?)))
        .collect();
    let port = env("PORT");
    if let Err(e) = App::build(settings, capsign::native::server()) {
        eprintln!("capsign: configuration error: {e}");
        return ExitCode::from(2);
    }
    match settings::effective(&env, config) {
        Ok(all) => {
            let width = all.iter().map(|e| e.name.len()).max().unwrap_or(0);
            for e in all {
                let mut source = e.source;
                let mut value = e.value;
                if source == "default" {
                    if let Some((_, v)) = resolved.iter().find(|(n, _)| *n == e.name) {
                        value.clone_from(v);
                        if e.name == "CAPSIGN_LISTEN" && port.is_some() {
                            source = "PORT".to_owned();
                        }
                    }
                }
                let value = if value.is_empty() { "(unset)" } else { &value };
                out!("{:width$}  {value}  [{source}]", e.name);
            }
        }
        Err(e) => eprintln!("capsign: {e}"),
    }
    for w in &warnings {
        eprintln!("capsign: {w}");
    }
    eprintln!(
        "capsign: configuration OK{}",
        if demo { " (demo mode)" } else { "" }
    );
    ExitCode::SUCCESS
}

/// `capsign keygen [--current VALUE]`: a new cookie key, or the next rotation step of
/// `current`.
pub(crate) fn keygen(current: Option<&str>) -> ExitCode {
    let secret: [u8; 32] = rand::random();
    let Some(current) = current else {
        out!("{}", STANDARD.encode(secret));
        eprintln!(
            "capsign: a new CAPSIGN_COOKIE_KEY (32 random bytes); give every instance the same"
        );
        return ExitCode::SUCCESS;
    };
    match next_rotation_step(current, &secret) {
        Ok((next, what)) => {
            out!("{next}");
            eprintln!("capsign: {what}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("capsign: --current is not a CAPSIGN_COOKIE_KEY value: {e}");
            ExitCode::from(2)
        }
    }
}

/// `capsign inspect VALUE`: opens a grant cookie (or, with `header`, an `X-Capsign-Grants`
/// value) with the configured cookie key and prints whose it is, its key id, when it was
/// sealed and each grant with its approval age; or exactly why it does not open.
pub(crate) fn inspect(config: Option<&Path>, value: &str, header: bool) -> ExitCode {
    let settings = match Settings::from_process(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("capsign: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if settings
        .demo_defaults
        .iter()
        .any(|d| d.contains("CAPSIGN_COOKIE_KEY"))
    {
        eprintln!(
            "capsign: no cookie key configured (CAPSIGN_COOKIE_KEY): a value sealed by a \
             deployment opens only with its key; set the same CAPSIGN_COOKIE_KEY (and \
             --config) as the deployment"
        );
        return ExitCode::from(2);
    }
    let sealer = Sealer::from_settings(&settings.cookie);
    let Some(value) = sealed_value(value, sealer.cookie_name()) else {
        eprintln!(
            "capsign: no {} cookie in that line (CAPSIGN_COOKIE_NAME names it)",
            sealer.cookie_name()
        );
        return ExitCode::FAILURE;
    };
    let purpose = if header {
        Purpose::Header
    } else {
        Purpose::Cookie
    };
    let (holder, opened) = match sealer.inspect(purpose, &value) {
        Ok(x) => x,
        Err(e) => {
            out!("does not open: {e}");
            return ExitCode::FAILURE;
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let age = |t: u64| match now.checked_sub(t) {
        Some(s) => humantime::format_duration(Duration::from_secs(s)).to_string() + " ago",
        None => "in the future".to_owned(),
    };
    let max_age = settings.cookie.max_age_s;
    let state = if opened.issued_at > now + capsign::flow::COOKIE_FUTURE_SKEW_S {
        "issued in the future: not accepted".to_owned()
    } else if now.saturating_sub(opened.issued_at) > max_age {
        "expired (older than CAPSIGN_GRANT_MAX_AGE): not accepted".to_owned()
    } else {
        "valid for its clientId".to_owned()
    };
    out!("clientId: {holder}");
    out!("key id:   {}", opened.key_id);
    out!("sealed:   {} ({})", opened.issued_at, age(opened.issued_at));
    out!("state:    {state}");
    out!("grants:   {}", opened.grants.len());
    for (resource, grant) in opened.grants.iter() {
        let ops: Vec<&str> = grant.ops.names().collect();
        out!(
            "  {resource}  [{}]  approved {}",
            ops.join(","),
            age(grant.approved_at)
        );
    }
    ExitCode::SUCCESS
}

/// The sealed value in what `inspect` was given: a whole `Set-Cookie:` or `Cookie:` line (the
/// grant cookie among others, found by its name), `name=value` (attributes after it are
/// ignored), or the value alone. `None`: a header line without that cookie.
fn sealed_value(given: &str, name: &str) -> Option<String> {
    let given = given.trim();
    let (line, rest) = match given.split_once(':') {
        Some((k, rest)) if k.trim().eq_ignore_ascii_case("set-cookie") => {
            let c = cookie::Cookie::parse(rest.trim()).ok()?;
            return (c.name() == name).then(|| c.value().to_owned());
        }
        Some((k, rest)) if k.trim().eq_ignore_ascii_case("cookie") => (true, rest.trim()),
        _ => (false, given),
    };
    let found = cookie::Cookie::split_parse(rest)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned());
    if found.is_some() || line {
        return found;
    }
    // A lone value (base64url holds no '='), or another name's: up to the first ';'.
    Some(rest.split(';').next().unwrap_or_default().trim().to_owned())
}

/// `capsign probe URL`: `GET URL` over plain HTTP; exit 0 on a 2xx answer within `timeout`,
/// 1 otherwise. For health checks in an image with no shell or curl.
pub(crate) fn probe(url: &str, timeout: Duration) -> ExitCode {
    let url = &local_url(url, &|k| std::env::var(k).ok());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("capsign: probe: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The timer is created inside the runtime.
    match runtime.block_on(async { tokio::time::timeout(timeout, get(url)).await }) {
        Ok(Ok(status)) if status.is_success() => {
            out!("{status}");
            ExitCode::SUCCESS
        }
        Ok(Ok(status)) => {
            out!("{status}");
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("capsign: probe {url}: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("capsign: probe {url}: no answer within {timeout:?}");
            ExitCode::FAILURE
        }
    }
}

/// A probe's URL: as given, or for a path (`/healthz`) the local server's own address, from
/// the same settings the server reads: the port of `CAPSIGN_LISTEN`, else `PORT`, else 3000
/// (an image's health check then follows the port the platform gives).
pub(crate) fn local_url(url: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    if !url.starts_with('/') {
        return url.to_owned();
    }
    let port = env("CAPSIGN_LISTEN")
        .and_then(|l| l.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port())
        .or_else(|| env("PORT").and_then(|p| p.trim().parse().ok()))
        .unwrap_or(3000);
    format!("http://127.0.0.1:{port}{url}")
}

/// One `GET` over HTTP/1.1; the answer's status.
async fn get(url: &str) -> Result<http::StatusCode, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// URLs are probed (a local health check)".into());
    }
    let host = uri.host().ok_or("the URL has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = http::Request::get(path)
        .header(
            http::header::HOST,
            uri.authority().map_or(host, |a| a.as_str()),
        )
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.status())
}

/// The next step of the three-step rotation (`docs/security.md`) of `current` (a
/// `CAPSIGN_COOKIE_KEY` value), with `new_secret` as the new key where one is added, and
/// what the step does:
///
/// 1. one key `A` (or a newest key that already signs, alone): add the new key, verifying
///    only (`1:A,2:NEW`);
/// 2. the newest key verifies but does not sign yet: make it sign (`2:NEW,1:A`);
/// 3. the newest key signs and older ones verify: drop them (`2:NEW`), once
///    `CAPSIGN_GRANT_MAX_AGE` has passed since step 2 reached every instance.
///
/// # Errors
///
/// `current` is not a valid key value, or has no id left for a new key.
fn next_rotation_step(current: &str, new_secret: &[u8]) -> Result<(String, &'static str), String> {
    let keys = CookieKeys::parse(current)?;
    let b64 = |secret: &[u8]| STANDARD.encode(secret);
    let list = |keys: &[(u8, &[u8])]| {
        keys.iter()
            .map(|(id, secret)| format!("{id}:{}", b64(secret)))
            .collect::<Vec<_>>()
            .join(",")
    };
    let all: Vec<(u8, &[u8])> = keys.all().collect();
    let (signing_id, _) = keys.signing();
    let newest = all.iter().map(|(id, _)| *id).max().unwrap_or(signing_id);
    if all.len() == 1 {
        let id = newest
            .checked_add(1)
            .ok_or("key id 255 is taken; start again from a single key with id 1")?;
        let mut next = all.clone();
        next.push((id, new_secret));
        return Ok((
            list(&next),
            "step 1 of 3: the current key keeps signing, the new key verifies. Deploy it \
             to every instance, then run keygen again with it.",
        ));
    }
    if signing_id != newest {
        let mut next: Vec<(u8, &[u8])> = all
            .iter()
            .copied()
            .filter(|(id, _)| *id == newest)
            .collect();
        next.extend(all.iter().copied().filter(|(id, _)| *id != newest));
        return Ok((
            list(&next),
            "step 2 of 3: the new key signs, the old ones still verify. Deploy it to every \
             instance; after CAPSIGN_GRANT_MAX_AGE, run keygen again with it.",
        ));
    }
    let next: Vec<(u8, &[u8])> = all
        .iter()
        .copied()
        .filter(|(id, _)| *id == newest)
        .collect();
    Ok((
        list(&next),
        "step 3 of 3: only the new key is left. Deploy it once CAPSIGN_GRANT_MAX_AGE has passed \
         since step 2 reached every instance (no cookie sealed with an old key is still valid).",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_probes_the_local_server_on_the_port_it_listens_on() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(
            local_url("/healthz", &env(&[("PORT", "9090")])),
            "http://127.0.0.1:9090/healthz"
        );
        assert_eq!(
            local_url(
                "/readyz",
                &env(&[("PORT", "9090"), ("CAPSIGN_LISTEN", "[::]:8443")])
            ),
            "http://127.0.0.1:8443/readyz"
        );
        assert_eq!(
            local_url("/healthz", &env(&[])),
            "http://127.0.0.1:3000/healthz"
        );
        assert_eq!(
            local_url("http://10.0.0.1:80/x", &env(&[("PORT", "1")])),
            "http://10.0.0.1:80/x"
        );
    }

    #[test]
    fn key_rotation_goes_through_the_three_steps() {
        let old = [1u8; 32];
        let new = [2u8; 32];
        let b64 = |k: &[u8]| STANDARD.encode(k);
        let (one, _) = next_rotation_step(&b64(&old), &new).unwrap();
        assert_eq!(one, format!("1:{},2:{}", b64(&old), b64(&new)));
        let (two, _) = next_rotation_step(&one, &[3u8; 32]).unwrap();
        assert_eq!(two, format!("2:{},1:{}", b64(&new), b64(&old)));
        let (three, _) = next_rotation_step(&two, &[3u8; 32]).unwrap();
        assert_eq!(three, format!("2:{}", b64(&new)));
        let (again, _) = next_rotation_step(&three, &[4u8; 32]).unwrap();
        assert_eq!(again, format!("2:{},3:{}", b64(&new), b64(&[4u8; 32])));
        for step in [&one, &two, &three, &again] {
            assert!(CookieKeys::parse(step).is_ok(), "{step}");
        }
        assert!(next_rotation_step("nope", &new).is_err());
    }
}
