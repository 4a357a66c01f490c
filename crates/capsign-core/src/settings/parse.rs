//! The parsers of plain values. Each returns what is wrong and how to fix it.

use super::*;

pub(super) fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| "expected an address such as 127.0.0.1:3000 or [::]:8080".into())
}

pub(super) fn text(s: &str) -> Result<String, String> {
    Ok(s.to_owned())
}

pub(super) fn path(s: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(s))
}

pub(super) fn shared_secret(s: &str) -> Result<Secret<String>, String> {
    if s.chars().count() < MIN_SHARED_SECRET_LEN {
        return Err(format!(
            "use at least {MIN_SHARED_SECRET_LEN} characters (openssl rand -base64 32)"
        ));
    }
    Ok(Secret::new(s.to_owned()))
}

pub(super) fn cookie_name(s: &str) -> Result<String, String> {
    let ok = s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!#$%&'*+^`|~".contains(&b));
    ok.then(|| s.to_owned())
        .ok_or_else(|| "use at most 64 letters, digits and -_.".into())
}

pub(super) fn header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.as_bytes()).map_err(|_| "not a header name".into())
}

pub(super) fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{e}; write a duration such as 90s, 10m or 1h"))
}

/// A duration of at most ten minutes (zero allowed).
pub(super) fn up_to_ten_minutes(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d > Duration::from_secs(600) {
        return Err("expected a duration of at most 10m".into());
    }
    Ok(d)
}

/// A duration above 0 and at most a minute.
pub(super) fn up_to_a_minute(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d.is_zero() || d > Duration::from_secs(60) {
        return Err("expected a duration above 0 and at most 60s".into());
    }
    Ok(d)
}

pub(super) fn boolean(s: &str) -> Result<bool, String> {
    match s {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// A count of grants: at least 1, at most [`MAX_RESOURCES`](crate::capability::MAX_RESOURCES)
/// (what one capability may name; a sealed set holds about 350 at most anyway).
pub(super) fn grant_count(s: &str) -> Result<usize, String> {
    let max = crate::capability::MAX_RESOURCES;
    let n = positive(s)?;
    if n > max {
        return Err(format!("at most {max}"));
    }
    Ok(n)
}

/// A body size in bytes: at least 1, at most 1 MiB (a capability of the most resources
/// fits in far less).
pub(super) fn body_size(s: &str) -> Result<usize, String> {
    const MAX: usize = 1 << 20;
    let n = positive(s)?;
    if n > MAX {
        return Err(format!("at most {MAX} (1 MiB)"));
    }
    Ok(n)
}

pub(super) fn positive(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| "expected a positive whole number".into())
}

/// An absolute `http` or `https` URL with a host, for outbound calls.
pub(super) fn url(s: &str) -> Result<Uri, String> {
    let uri: Uri = s.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("expected an http:// or https:// URL".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(uri)
}

pub(super) fn capability(s: &str) -> Result<CapabilitySet, String> {
    CapabilitySet::from_json(s).map_err(|e| e.to_string())
}

pub(super) fn algorithms(s: &str) -> Result<Vec<Algorithm>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse::<Algorithm>()
                .ok()
                .filter(|alg| ASYMMETRIC.contains(alg))
                .ok_or_else(|| {
                    format!("{a:?}: expected RS256/384/512, PS256/384/512, ES256/384 or EdDSA")
                })
        })
        .collect()
}

pub(super) fn networks(s: &str) -> Result<Vec<ipnet::IpNet>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("{p:?} is not an IP address or CIDR block"))
        })
        .collect()
}

pub(super) fn hosts(s: &str) -> Result<Vec<String>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| {
            let ok = !h.contains(['/', '@', '*', ' ']) && h.parse::<http::uri::Authority>().is_ok();
            ok.then(|| h.to_ascii_lowercase())
                .ok_or_else(|| format!("{h:?} is not a host or host:port"))
        })
        .collect()
}

pub(super) fn cors_origins(s: &str) -> Result<Vec<String>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(cors_origin)
        .collect()
}

/// One exact origin: `http(s)://host[:port]`, nothing after, never `null` or `*` (which
/// would hand signed credentials to any page).
fn cors_origin(o: &str) -> Result<String, String> {
    let bad = |why: &str| Err(format!("{o:?} is not an origin: {why}"));
    let Some((scheme, authority)) = o.split_once("://") else {
        return bad("expected scheme://host[:port], such as https://app.example.com");
    };
    if scheme != "https" && scheme != "http" {
        return bad("the scheme must be https or http");
    }
    if authority.is_empty()
        || authority.contains(['/', '?', '#', '@', '*', ' '])
        || authority.parse::<http::uri::Authority>().is_err()
    {
        return bad("expected a host and optional port, with no path, wildcard or user");
    }
    Ok(o.to_ascii_lowercase())
}
