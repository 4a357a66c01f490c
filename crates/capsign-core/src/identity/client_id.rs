//! [`ClientId`]: an Ably clientId capsign will put in a credential, checked once when made.

use std::fmt;

/// The longest clientId capsign accepts, in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 256;

/// A clientId capsign accepts: non-empty, at most [`MAX_CLIENT_ID_LEN`] bytes, no control
/// characters, and not `*` (Ably's wildcard clientId, which would let the holder act as
/// anyone). The only way to make one is [`ClientId::new`] (or `TryFrom<String>`), so a value
/// of this type has been checked, wherever it came from (a session claim, a trusted header, a
/// demo login, a request's `clientId`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClientId(String);

/// Why a clientId is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadClientId(&'static str);

impl ClientId {
    /// A checked copy of `id`.
    ///
    /// # Errors
    ///
    /// What is wrong with it.
    pub fn new(id: &str) -> Result<ClientId, BadClientId> {
        check(id)?;
        Ok(ClientId(id.to_owned()))
    }

    /// The clientId's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ClientId {
    type Error = BadClientId;

    /// Checks `id` without copying it.
    fn try_from(id: String) -> Result<ClientId, BadClientId> {
        check(&id)?;
        Ok(ClientId(id))
    }
}

fn check(id: &str) -> Result<(), BadClientId> {
    if id.is_empty() {
        Err(BadClientId("empty"))
    } else if id.len() > MAX_CLIENT_ID_LEN {
        Err(BadClientId("longer than 256 bytes"))
    } else if id == "*" {
        Err(BadClientId("\"*\" is Ably's wildcard, not an identity"))
    } else if id.chars().any(char::is_control) {
        Err(BadClientId("contains a control character"))
    } else {
        Ok(())
    }
}

impl std::ops::Deref for ClientId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ClientId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for ClientId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ClientId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl serde::Serialize for ClientId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_acceptable_client_ids_are_made() {
        for good in [
            "alice",
            "user:42",
            "ü",
            &"a".repeat(MAX_CLIENT_ID_LEN),
            "**",
        ] {
            assert_eq!(ClientId::new(good).unwrap().as_str(), good);
            assert_eq!(ClientId::try_from(good.to_owned()).unwrap(), *good);
        }
        for bad in [
            "",
            "*",
            "a\nb",
            "tab\there",
            "\u{7f}",
            &"a".repeat(MAX_CLIENT_ID_LEN + 1),
        ] {
            assert!(ClientId::new(bad).is_err(), "{bad:?}");
            assert!(ClientId::try_from(bad.to_owned()).is_err(), "{bad:?}");
        }
    }
}
