//! HTTP ⇄ flow: routing, parameters (`params`), body limits, and the only place statuses
//! are chosen (`error`).
//!
//! [`handle`] takes an `http::Request` and returns an `http::Response`, whatever carried them
//! (the hyper server of the `capsign` crate, a test, a Lambda or Worker adapter). Every error a
//! client can cause becomes a 4xx with Ably's error envelope: `Content-Type:
//! application/json` exactly, and the `X-Ably-ErrorCode` / `X-Ably-ErrorMessage` headers,
//! which is how ably-js reads the code when it ignores the body.

mod error;
mod params;
mod request_id;

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, COOKIE, HOST, HeaderName, HeaderValue, LOCATION,
    ORIGIN, SET_COOKIE, USER_AGENT, VARY,
};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use smallvec::SmallVec;
use std::net::{IpAddr, SocketAddr};
use tracing::Instrument as _;

use crate::app::{App, Readiness};
use crate::capability::Resource;
use crate::flow::{AuthParams, Credential, Presented};
use crate::identity::{ClientId, DemoIdentity, Presenting};
use crate::settings::HttpSettings;
use error::Reject;
pub use error::{not_configured, not_found, not_ready, overloaded_http1};
pub use params::BodyTimedOut;
use params::{RawParams, read_body};

/// Every Ably error code capsign refuses a request with (its error table's).
pub const REFUSAL_CODES: &[u32] = &error::code::ALL;

/// Response header: the sealed grants, for clients without a cookie jar.
pub const X_CAPSIGN_GRANTS: HeaderName = HeaderName::from_static("x-capsign-grants");
/// Response header: resources asked for and granted nothing (percent-encoded,
/// comma-separated).
pub const X_CAPSIGN_DENIED: HeaderName = HeaderName::from_static("x-capsign-denied");
/// Response header: resources asked for and granted fewer operations than asked (the
/// credential holds what was granted; same encoding as `X-Capsign-Denied`).
pub const X_CAPSIGN_PARTIAL: HeaderName = HeaderName::from_static("x-capsign-partial");
/// Request and response header: the request id.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Response header: resources evicted to keep the cookie within budget.
pub const X_CAPSIGN_EVICTED: HeaderName = HeaderName::from_static("x-capsign-evicted");
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The response headers a listed cross-origin page may read.
const EXPOSED_HEADERS: &str = "X-Ably-ErrorCode, X-Ably-ErrorMessage, X-Capsign-Grants, \
     X-Capsign-Denied, X-Capsign-Partial, X-Capsign-Evicted, X-Request-Id";
/// The request headers a listed cross-origin page may send (ably-js `authHeaders`, and the
/// sealed grants of a client without a cookie jar).
const ALLOWED_REQUEST_HEADERS: &str = "Authorization, Content-Type, X-Capsign-Grants, X-Request-Id";

/// Characters escaped in `X-Capsign-Denied` (`-Partial`, `-Evicted`) entries, so the list splits on `,` unambiguously.
const LIST_ESCAPE: &AsciiSet = &CONTROLS.add(b' ').add(b',').add(b'%').add(b'"');

const DEMO_PAGE: &str = include_str!("../demo.html");

type Body = Full<Bytes>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Answers one request that came with no peer address (a test, a benchmark).
pub async fn handle<B>(app: &App, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    handle_from(app, req, None).await
}

/// Answers one request from `peer`, the address the transport got it from (`header` identity
/// believes its proxy header only from trusted peers; the access line names it).
///
/// Every log line written while answering carries the request id: the lines are written
/// inside a `request` span holding it (`request{request_id="…"}:` in text, `"span":{…}` in
/// JSON), and the access line has it as a field. The span is at `error` level so that a
/// `RUST_LOG` of `warn` or `error` keeps it on the lines it lets through. (The span costs about
/// 3,000 instructions of an acquire's 160,000, callgrind counting `bench/run`'s request: a
/// thread-local id added by a custom formatter cost less, but was a second implementation of
/// a span's context.)
pub async fn handle_from<B>(app: &App, req: Request<B>, peer: Option<IpAddr>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let started = web_time::Instant::now();
    let _in_flight = app.metrics.in_flight();
    let (parts, body) = req.into_parts();
    let request_id = request_id::choose(&parts.headers);
    // Visible ASCII by construction.
    let id = request_id.to_str().unwrap_or_default();
    let span = tracing::error_span!("request", request_id = id);
    let method = &parts.method;
    let path = parts.uri.path();
    // An allow-listed Origin gets CORS headers on every answer, errors included, so ably-js
    // can read the error code of a cross-origin failure.
    let cors = header_str(&parts.headers, &ORIGIN)
        .filter(|o| {
            app.http_settings()
                .cors_origins
                .iter()
                .any(|a| a.eq_ignore_ascii_case(o))
        })
        .and_then(|o| HeaderValue::from_str(o).ok());
    let changes_cookie = matches!(
        (method, path),
        (&Method::GET | &Method::POST, "/auth") | (&Method::POST, "/login" | "/logout")
    );
    let answer = async {
        let result = check_host(app, &parts.headers, path);
        let result = result.and_then(|()| {
            if changes_cookie {
                refuse_cross_site(&parts.headers, cors.is_some())
            } else {
                Ok(())
            }
        });
        let result = result.and_then(|()| route(app, method, path, cors.is_some()));
        match result {
            Ok(Route::Auth) => auth(app, &parts, body, peer, id)
                .await
                .map(|(resp, access)| (resp, Some(access))),
            Ok(Route::Login) => login(app, &parts, body).await.map(|r| (r, None)),
            Ok(Route::Done(resp)) => Ok((resp, None)),
            Err(e) => Err(e),
        }
    };
    let result = answer.instrument(span.clone()).await;
    let _in_span = span.enter();
    let mut refusal = None;
    let (mut response, info) = result.unwrap_or_else(|reject| {
        let (_, code, response) = reject.into_logged_response();
        refusal = Some(code);
        (response, None)
    });
    if let Some(origin) = cors {
        let h = response.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        h.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
    }
    let status = response.status();
    let route = route_label(method, path);
    let took = started.elapsed();
    app.metrics
        .request_done(route, status.as_u16(), took, refusal);
    let client_ip = peer
        .and_then(|p| forwarded_client(&parts.headers, p, &app.http_settings().trusted_proxies));
    // Every value a `&str`, a number or an address, so the access layer writes the line
    // without `fmt` (the message too: a field, not format arguments).
    tracing::info!(
        target: "capsign::access",
        message = "request",
        request_id = id,
        method = method.as_str(),
        route,
        status = status.as_u16(),
        code = refusal,
        duration_ms = took.as_secs_f64() * 1000.0,
        format = info.as_ref().map(|i| i.format),
        held = info.as_ref().map(|i| i.held),
        new = info.as_ref().map(|i| i.new),
        denied = info.as_ref().map(|i| i.denied),
        peer = peer.map(tracing::field::display),
        client_ip = client_ip.map(tracing::field::display),
        user_agent = header_str(&parts.headers, &USER_AGENT).map(|ua| clip(ua, MAX_LOGGED_AGENT)),
    );
    drop(_in_span);
    response.headers_mut().insert(X_REQUEST_ID, request_id);
    response
}

/// A request refused by its transport before it reached [`handle`] (a Lambda event that is not
/// a valid HTTP request, say): `status` (a 4xx) with Ably's error envelope, code 40000.
pub fn refused_by_transport(status: StatusCode, message: &str) -> Response<Body> {
    Reject::Transport {
        status,
        message: message.to_owned(),
    }
    .into_response()
    .2
}

/// The longest `User-Agent` the access line holds (the rest is cut).
const MAX_LOGGED_AGENT: usize = 256;

/// `s` cut to at most `max` bytes, at a character boundary.
fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.split_at(end).0
}

/// The client's address behind trusted proxies (`CAPSIGN_TRUSTED_PROXIES`), for the access
/// line: when the peer is one of them, the right-most `X-Forwarded-For` address that is not
/// (each proxy appends the address it got the request from, so the entries left of the first
/// untrusted one are the client's to write). `None` when the peer is not trusted, the header
/// is absent, or an entry is not an address.
fn forwarded_client(headers: &HeaderMap, peer: IpAddr, trusted: &[ipnet::IpNet]) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return None;
    }
    let mut entries: SmallVec<[&str; 8]> = SmallVec::new();
    for value in headers.get_all(&X_FORWARDED_FOR) {
        entries.extend(value.to_str().ok()?.split(',').map(str::trim));
    }
    let mut last = None;
    for entry in entries.iter().rev() {
        let ip = entry
            .parse::<IpAddr>()
            .or_else(|_| entry.parse::<SocketAddr>().map(|a| a.ip()))
            .ok()?;
        last = Some(ip);
        if !is_trusted(&ip) {
            return last;
        }
    }
    // Every entry a trusted proxy: the left-most is as near the client as the header goes.
    last
}

/// What the access log says of a successful `/auth`, returned by its handler with the
/// response.
#[derive(Debug, Clone, Copy)]
struct AccessInfo {
    format: &'static str,
    held: usize,
    new: usize,
    denied: usize,
}

/// The `route` label of a request: one of a fixed few, never the path a client chose.
fn route_label(method: &Method, path: &str) -> &'static str {
    match (method, path) {
        (&Method::OPTIONS, "/auth") => "preflight",
        (_, "/auth") => "auth",
        (_, "/healthz") => "healthz",
        (_, "/readyz") => "readyz",
        (_, "/login") => "login",
        (_, "/logout") => "logout",
        (_, "/") => "demo_page",
        _ => "other",
    }
}

/// Where a request goes, once method and path are known.
enum Route {
    Auth,
    Login,
    Done(Response<Body>),
}

fn route(app: &App, method: &Method, path: &str, cors: bool) -> Result<Route, Reject> {
    let demo = app.identity.demo().is_some();
    Ok(match (method, path) {
        (&Method::GET | &Method::POST, "/auth") => Route::Auth,
        (&Method::OPTIONS, "/auth") => Route::Done(preflight(cors)?),
        (&Method::GET, "/healthz" | "/readyz") if app.http_settings().unhealthy.is_some() => {
            let why = app.http_settings().unhealthy.as_deref().unwrap_or_default();
            return Err(Reject::NotReady(why.to_owned()));
        }
        (&Method::GET, "/healthz") => Route::Done(text(StatusCode::OK, "text/plain", "ok\n")),
        (&Method::GET, "/readyz") => match app.readiness() {
            Readiness::Ready => Route::Done(text(StatusCode::OK, "text/plain", "ready\n")),
            Readiness::Starting => return Err(Reject::NotReady("starting".into())),
            Readiness::Draining => return Err(Reject::NotReady("shutting down".into())),
        },
        (&Method::GET, "/") if demo => {
            Route::Done(text(StatusCode::OK, "text/html; charset=utf-8", DEMO_PAGE))
        }
        (&Method::POST, "/login") if demo => Route::Login,
        (&Method::POST, "/logout") if demo => {
            Route::Done(redirect_home(&DemoIdentity::logout_cookie()))
        }
        (_, "/auth" | "/healthz" | "/readyz") => {
            return Err(Reject::MethodNotAllowed {
                method: method.clone(),
                path: path.to_owned(),
            });
        }
        _ => return Err(Reject::NotFound(path.to_owned())),
    })
}

/// Refuses a cookie-changing request that a page of another site made the browser send
/// (OWASP's Fetch Metadata check, with `Origin` as the fallback for browsers without it).
/// Such a request would still get its `Set-Cookie` applied even though the page cannot read
/// the answer: grants pushed into the victim's cookie, or the cookie bloated until the
/// browser drops it. Requests without either header (server-side clients) pass.
fn refuse_cross_site(headers: &HeaderMap, allow_listed: bool) -> Result<(), Reject> {
    if allow_listed {
        return Ok(());
    }
    let refuse = |what: String| Err(Reject::CrossSite(what));
    // A header that is present but not visible ASCII is foreign, never absent.
    let present = |name: &HeaderName| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("(not ASCII)"))
    };
    match present(&SEC_FETCH_SITE) {
        Some("same-origin" | "none") => return Ok(()),
        Some(site) => return refuse(format!("Sec-Fetch-Site: {site}")),
        None => {}
    }
    match present(&ORIGIN) {
        None => Ok(()),
        Some(origin) => {
            let authority = origin.split_once("://").map(|(_, a)| a);
            let host = header_str(headers, &HOST);
            match (authority, host) {
                (Some(a), Some(h)) if a.eq_ignore_ascii_case(h) => Ok(()),
                _ => refuse(format!("Origin: {origin}")),
            }
        }
    }
}

/// With `CAPSIGN_ALLOWED_HOSTS`, refuses a request whose `Host` is not listed (DNS
/// rebinding: a page of another site whose name now resolves to capsign's address). The
/// liveness check is exempt: load balancers call it by address.
fn check_host(app: &App, headers: &HeaderMap, path: &str) -> Result<(), Reject> {
    let allowed = &app.http_settings().allowed_hosts;
    if allowed.is_empty() || path == "/healthz" || path == "/readyz" {
        return Ok(());
    }
    let host = header_str(headers, &HOST).unwrap_or_default();
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(host)) {
        Ok(())
    } else {
        Err(Reject::MisdirectedHost(host.to_owned()))
    }
}

/// The answer to a CORS preflight of `/auth`: allowed for listed origins only.
fn preflight(allow_listed: bool) -> Result<Response<Body>, Reject> {
    if !allow_listed {
        return Err(Reject::OriginNotListed);
    }
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST"),
    );
    h.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_REQUEST_HEADERS),
    );
    h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    no_store(h);
    Ok(resp)
}

async fn auth<B>(
    app: &App,
    parts: &http::request::Parts,
    body: B,
    peer: Option<IpAddr>,
    request_id: &str,
) -> Result<(Response<Body>, AccessInfo), Reject>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let params = read_params(parts, body, app.http_settings()).await?;

    let jar = request_cookies(&parts.headers);
    let lookup = |name: &str| jar.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let presenting = Presenting {
        bearer: bearer(&parts.headers),
        cookie: &lookup,
        headers: &parts.headers,
        peer,
    };
    // One reading of the clock for the whole request: the session's expiry is checked, and
    // the credential and cookie are dated, at the same instant.
    let now_ms = app.clock.now_ms();
    let who = app.identity.identify(&presenting, now_ms).await?;

    let sealer = &app.flow.sealer;
    let cookies: SmallVec<[&str; 4]> = jar
        .iter()
        .filter(|(n, _)| *n == sealer.cookie_name())
        .map(|(_, v)| *v)
        .collect();
    let presented = Presented {
        cookies: &cookies,
        header: header_str(&parts.headers, &X_CAPSIGN_GRANTS),
    };
    let outcome = app
        .flow
        .authorize(&who, presented, params, now_ms, request_id)
        .await?;
    tracing::debug!(client_id = %who.client_id, capability = %outcome.capability, "granted");
    if !(outcome.denied.is_empty() && outcome.partial.is_empty()) {
        // Who was refused what, for "why was user X refused channel Y" (the access line
        // counts them at info).
        tracing::debug!(
            client_id = %who.client_id,
            denied = %resource_list(&outcome.denied),
            partial = %resource_list(&outcome.partial),
            "refused"
        );
    }

    let (content_type, format, body) = match outcome.credential {
        Credential::Jwt(jwt) => ("application/jwt", "jwt", Bytes::from(jwt)),
        Credential::TokenRequest(json) => ("application/json", "tokenRequest", Bytes::from(json)),
        Credential::Token(details) => ("application/json", "token", details),
        Credential::Embedded(jwt) => ("application/jwt", "embedded", Bytes::from(jwt)),
    };
    let mut resp = Response::new(Full::new(body));
    let access = AccessInfo {
        format,
        held: outcome.held,
        new: outcome.new,
        denied: outcome.denied.len() + outcome.partial.len(),
    };
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    no_store(h);
    if let Some(cookie) = outcome.cookie {
        insert_owned(h, SET_COOKIE, cookie.into_header());
    }
    if let Some(grants) = outcome.header_grants {
        insert_owned(h, X_CAPSIGN_GRANTS, grants);
    }
    if !outcome.denied.is_empty() {
        insert(h, X_CAPSIGN_DENIED, &resource_list(&outcome.denied));
    }
    if !outcome.partial.is_empty() {
        insert(h, X_CAPSIGN_PARTIAL, &resource_list(&outcome.partial));
    }
    if !outcome.evicted.is_empty() {
        insert(h, X_CAPSIGN_EVICTED, &resource_list(&outcome.evicted));
    }
    Ok((resp, access))
}

/// The `/auth` parameters of the query and, for `POST`, of the form or JSON body (whose
/// parameters win).
async fn read_params<B>(
    parts: &http::request::Parts,
    body: B,
    limits: &HttpSettings,
) -> Result<AuthParams, Reject>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut params = RawParams::default();
    if let Some(q) = parts.uri.query() {
        params.read_form(q.as_bytes())?;
    }
    if parts.method == Method::POST {
        // Boxed: a GET (what ably-js sends) carries no room for reading a body.
        let body = Box::pin(read_body(&parts.headers, body, limits.max_body)).await?;
        if !body.is_empty() {
            let mut from_body = RawParams::default();
            match media_type(&parts.headers).as_deref() {
                Some("application/x-www-form-urlencoded") => from_body.read_form(&body)?,
                Some("application/json") => from_body.read_json(&body)?,
                other => {
                    return Err(Reject::UnsupportedMediaType(other.map(str::to_owned)));
                }
            }
            params.override_with(from_body);
        }
    }
    params.parse()
}

/// The media type of the request body, lower case, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let mt = v.split(';').next()?.trim().to_ascii_lowercase();
    Some(mt)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = header_str(headers, &AUTHORIZATION)?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Every cookie of every `Cookie` header, as (name, value). Malformed pairs are skipped.
fn request_cookies(headers: &HeaderMap) -> SmallVec<[(&str, &str); 8]> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie_pairs)
        .collect()
}

/// The (name, value) pairs of one `Cookie` header, as the `cookie` crate reads them
/// (`Cookie::split_parse`, raw name and value: a piece without `=` or with an empty name is
/// skipped). Measured against a hand-written splitter (`bench/icount.py`): 0.5% more
/// instructions a request and no more allocations, so the crate's.
fn cookie_pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    ::cookie::Cookie::split_parse(header).filter_map(|c| {
        let c = c.ok()?;
        Some((c.name_raw()?, c.value_raw()?))
    })
}

fn resource_list(resources: &[Resource]) -> String {
    resources
        .iter()
        .map(|r| utf8_percent_encode(r.as_str(), LIST_ESCAPE).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(v) => {
            headers.insert(name, v);
        }
        // Everything capsign puts in headers is ASCII it built itself; log if that ever breaks.
        Err(_) => tracing::error!(header = %name, "header value not representable; left out"),
    }
}

/// [`insert`] for a value capsign built, without copying it.
fn insert_owned(headers: &mut HeaderMap, name: HeaderName, value: String) {
    match HeaderValue::from_maybe_shared(Bytes::from(value)) {
        Ok(v) => {
            headers.insert(name, v);
        }
        Err(_) => tracing::error!(header = %name, "header value not representable; left out"),
    }
}

pub(crate) fn no_store(h: &mut HeaderMap) {
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store, private"));
    h.insert(
        VARY,
        HeaderValue::from_static("Cookie, Authorization, Origin"),
    );
}

fn text(status: StatusCode, content_type: &'static str, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    no_store(resp.headers_mut());
    resp
}

/// `POST /login` in demo mode: any valid user name gets a demo session cookie.
async fn login<B>(
    app: &App,
    parts: &http::request::Parts,
    body: B,
) -> Result<Response<Body>, Reject>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let Some(demo) = app.identity.demo() else {
        return Err(Reject::NotFound("/login".into()));
    };
    let body = Box::pin(read_body(&parts.headers, body, 1024)).await?;
    let user = params::form_pairs(&body)
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default(); // no `user` field: an empty name, refused as one just below
    let user = ClientId::try_from(user).map_err(|why| Reject::InvalidClientId {
        what: "user name",
        why,
    })?;
    Ok(redirect_home(&demo.login_cookie(&user)))
}

fn redirect_home(set_cookie: &str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SEE_OTHER;
    let h = resp.headers_mut();
    h.insert(LOCATION, HeaderValue::from_static("/"));
    no_store(h);
    insert(h, SET_COOKIE, set_cookie);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarded_client_is_the_right_most_untrusted_address_from_a_trusted_peer() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let from = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(X_FORWARDED_FOR, v.parse().unwrap());
            }
            h
        };
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        // A client-written entry left of the real one is ignored.
        let h = from(&["6.6.6.6, 203.0.113.7, 10.0.0.9"]);
        assert_eq!(forwarded_client(&h, proxy, &trusted), ip("203.0.113.7"));
        // Several headers are one list, in order; a port is dropped; IPv6 too.
        let h = from(&["198.51.100.1", "203.0.113.7:4711"]);
        assert_eq!(forwarded_client(&h, proxy, &trusted), ip("203.0.113.7"));
        let h = from(&["2001:db8::1"]);
        assert_eq!(forwarded_client(&h, proxy, &trusted), ip("2001:db8::1"));
        // Only from a trusted peer; nothing that is not an address.
        let untrusted: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(forwarded_client(&h, untrusted, &trusted), None);
        assert_eq!(forwarded_client(&from(&["unknown"]), proxy, &trusted), None);
        assert_eq!(forwarded_client(&HeaderMap::new(), proxy, &trusted), None);
        assert_eq!(forwarded_client(&h, proxy, &[]), None);
        // All trusted: the left-most.
        let h = from(&["10.9.9.9, 10.0.0.1"]);
        assert_eq!(forwarded_client(&h, proxy, &trusted), ip("10.9.9.9"));
    }

    #[test]
    fn clip_cuts_at_a_character_boundary() {
        assert_eq!(clip("abc", 2), "ab");
        assert_eq!(clip("abc", 9), "abc");
        assert_eq!(clip("a\u{e9}b", 2), "a");
    }

    #[test]
    fn resource_list_escapes_separators() {
        let rs = [
            Resource::new("a,b").unwrap(),
            Resource::new("c%d é").unwrap(),
        ];
        assert_eq!(resource_list(&rs), "a%2Cb,c%25d%20%C3%A9");
    }

    /// What the grant cookie lookup sees of a `Cookie` header: the crate's reading, with
    /// names and values trimmed and nameless or `=`-less pieces skipped.
    #[test]
    fn cookie_pairs_of_odd_headers() {
        let pairs = |h| cookie_pairs(h).collect::<Vec<_>>();
        assert_eq!(pairs("a=1; b=2"), [("a", "1"), ("b", "2")]);
        assert_eq!(
            pairs("  a = 1 ;;b=;=c; d ; e==f ;"),
            [("a", "1"), ("b", ""), ("e", "=f")]
        );
        assert_eq!(pairs(""), []);
        assert_eq!(pairs(" \t ; x=\t1\t"), [("x", "1")]);
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer abc"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }
}
