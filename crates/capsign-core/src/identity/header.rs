//! The `header` identity mode: a clientId set by a trusted front proxy.

use serde_json::Map;

use super::{ClientId, Identity, IdentityError, Presenting};

/// Takes the clientId from a header that a trusted front proxy sets (oauth2-proxy's
/// `X-Forwarded-User`, say), and only on requests whose peer is one of those proxies: anyone
/// else could set the header themselves.
#[derive(Debug)]
pub struct HeaderIdentity {
    header: http::HeaderName,
    trusted: Vec<ipnet::IpNet>,
}

impl HeaderIdentity {
    /// Identity from `header`, believed only from peers within `trusted`.
    pub fn new(header: http::HeaderName, trusted: Vec<ipnet::IpNet>) -> HeaderIdentity {
        HeaderIdentity { header, trusted }
    }

    pub(super) fn identify(&self, p: &Presenting<'_>) -> Result<Identity, IdentityError> {
        let trusted = p
            .peer
            .is_some_and(|ip| self.trusted.iter().any(|net| net.contains(&ip)));
        if !trusted {
            return Err(IdentityError::UntrustedPeer(self.header.to_string()));
        }
        let mut values = p.headers.get_all(&self.header).iter();
        let value = values.next().ok_or_else(|| {
            IdentityError::Missing(format!("no {} header from the proxy", self.header))
        })?;
        if values.next().is_some() {
            return Err(IdentityError::Invalid(format!(
                "more than one {} header",
                self.header
            )));
        }
        let user = value
            .to_str()
            .map_err(|_| IdentityError::Invalid(format!("{} is not visible ASCII", self.header)))?;
        Ok(Identity::new(ClientId::new(user)?, Map::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_identity_only_from_trusted_peers() {
        let h = HeaderIdentity::new(
            http::HeaderName::from_static("x-forwarded-user"),
            vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        );
        let mut headers = http::HeaderMap::new();
        headers.insert("x-forwarded-user", "dave".parse().unwrap());
        let at = |peer: Option<&str>, headers: &http::HeaderMap| {
            let no_cookie = |_: &str| None;
            h.identify(&Presenting {
                bearer: None,
                cookie: &no_cookie,
                headers,
                peer: peer.map(|p| p.parse().unwrap()),
            })
        };
        assert_eq!(at(Some("10.1.2.3"), &headers).unwrap().client_id, "dave");
        assert_eq!(at(Some("::1"), &headers).unwrap().client_id, "dave");
        assert!(matches!(
            at(Some("192.168.0.1"), &headers),
            Err(IdentityError::UntrustedPeer(_))
        ));
        assert!(matches!(
            at(None, &headers),
            Err(IdentityError::UntrustedPeer(_))
        ));
        assert!(matches!(
            at(Some("10.0.0.1"), &http::HeaderMap::new()),
            Err(IdentityError::Missing(_))
        ));
        headers.append("x-forwarded-user", "eve".parse().unwrap());
        assert!(matches!(
            at(Some("10.0.0.1"), &headers),
            Err(IdentityError::Invalid(_))
        ));
        let mut star = http::HeaderMap::new();
        star.insert("x-forwarded-user", "*".parse().unwrap());
        assert!(matches!(
            at(Some("10.0.0.1"), &star),
            Err(IdentityError::BadClientId(_))
        ));
    }
}
