//! The settings' value types: [`Secret`], the keyword enums, and the values with rules of
//! their own (the Ably key, the cookie key ring, a JWKS location, the TTL bounds).

use super::*;

/// A secret value: `Debug` shows `<redacted>`, and only [`Secret::expose`] reads it. It has
/// no `PartialEq` on purpose: comparing secrets with `==` is not constant-time; a MAC is
/// compared by its `verify` (nor do the settings types holding one compare).
#[derive(Clone)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret.
    pub fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    /// The secret itself, for the module that keys something with it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Declares a setting's enum of keywords and its parser: `Name { Variant = "keyword", … }`.
macro_rules! keywords {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $kw:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Parses one of the keywords.
            ///
            /// # Errors
            ///
            /// Another word; the message lists the keywords.
            pub fn parse(s: &str) -> Result<$name, String> {
                match s {
                    $($kw => Ok($name::$variant),)*
                    _ => Err(format!("expected one of: {}", [$($kw),*].join(", "))),
                }
            }
        }
    };
}

keywords! {
    /// `CAPSIGN_EMBEDDED_INNER`.
    EmbeddedInner {
        /// An Ably JWT minted here.
        Jwt = "jwt",
        /// A native Ably token: capsign's TokenRequest exchanged with Ably.
        Token = "token",
    }
}

keywords! {
    /// Which credential `/auth` mints when the request does not say.
    Format {
        /// `jwt`: an Ably JWT.
        Jwt = "jwt",
        /// `tokenRequest`: a signed TokenRequest.
        TokenRequest = "tokenRequest",
        /// `token`: capsign asks Ably for the token and returns its TokenDetails.
        Token = "token",
        /// `auto`: a JWT unless it would be over 8 KB, then a TokenRequest.
        Auto = "auto",
        /// `embedded`: the app's own JWT with the Ably credential in its `x-ably-token`
        /// header.
        Embedded = "embedded",
    }
}

keywords! {
    /// What happens to a request that asks for something the policy denies.
    DenyMode {
        /// Leave the denied grants out, name them in `X-Capsign-Denied`, answer 200.
        Omit = "omit",
        /// Answer the whole request with 403/40160.
        Reject = "reject",
    }
}

keywords! {
    /// What happens when a merge would make the cookie too large.
    Overflow {
        /// Refuse the request with 400/40000: the client keeps what it held.
        Reject = "reject",
        /// Drop the grants approved longest ago, name them in `X-Capsign-Evicted`.
        Evict = "evict",
    }
}

keywords! {
    /// What the webhook is asked about patterns (resources holding a `*`) that no rule covers.
    PatternPolicy {
        /// Asked like channel names.
        Ask = "ask",
        /// Denied by capsign; never sent to the webhook.
        Deny = "deny",
    }
}

keywords! {
    /// The grant cookie's `SameSite` attribute.
    SameSite {
        /// `Lax`: sent on top-level navigations and same-site requests.
        Lax = "lax",
        /// `Strict`: same-site requests only.
        Strict = "strict",
        /// `None`: sent cross-site too (capsign on another site than the app's pages).
        None = "none",
    }
}

impl SameSite {
    /// The attribute's value as written in `Set-Cookie`.
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::None => "None",
            SameSite::Strict => "Strict",
        }
    }
}

keywords! {
    /// `CAPSIGN_LOG_FORMAT`.
    LogFormat {
        /// Human-readable lines.
        Text = "text",
        /// One JSON object a line.
        Json = "json",
    }
}

keywords! {
    /// `CAPSIGN_IDENTITY`.
    IdentityMode {
        /// The app's session JWT.
        Jwt = "jwt",
        /// A header from trusted proxies.
        Header = "header",
        /// A user name at `/login`; loopback only.
        Demo = "demo",
    }
}

/// An Ably API key, `appId.keyId:secret`, with its shape checked.
#[derive(Debug, Clone)]
pub struct AblyApiKey {
    /// `appId.keyId`, the public part.
    pub name: String,
    /// The secret: signs JWTs and TokenRequests as its UTF-8 bytes.
    pub secret: Secret<String>,
}

impl AblyApiKey {
    /// Parses `appId.keyId:secret`.
    ///
    /// # Errors
    ///
    /// A part is missing or empty, or holds a space or a control character.
    pub fn parse(key: &str) -> Result<AblyApiKey, String> {
        let shape = || "expected the form appId.keyId:secret, as shown in the Ably dashboard";
        let (name, secret) = key.split_once(':').ok_or_else(shape)?;
        let (app, id) = name.split_once('.').ok_or_else(shape)?;
        let bad = |s: &str| s.is_empty() || s.chars().any(|c| c.is_control() || c == ' ');
        if bad(app) || bad(id) || bad(secret) || id.contains('.') {
            return Err(shape().into());
        }
        Ok(AblyApiKey {
            name: name.to_owned(),
            secret: Secret::new(secret.to_owned()),
        })
    }
}

/// The grant-cookie key ring: one key signs, every key verifies. The signing key is not
/// optional, and ids are distinct and non-zero: a ring that could seal without a MAC cannot be
/// built.
#[derive(Debug, Clone)]
pub struct CookieKeys {
    signing: (u8, Secret<Vec<u8>>),
    others: Vec<(u8, Secret<Vec<u8>>)>,
}

impl CookieKeys {
    /// Parses `CAPSIGN_COOKIE_KEY`: one base64 secret (key id 1), or a comma-separated list of
    /// `id:base64`, where the first key signs and every key verifies.
    ///
    /// # Errors
    ///
    /// Not base64, shorter than [`MIN_COOKIE_KEY_LEN`] bytes, a bad or repeated id.
    pub fn parse(s: &str) -> Result<CookieKeys, String> {
        let mut keys = Vec::new();
        for (i, part) in s.split(',').map(str::trim).enumerate() {
            let (id, b64) = match part.split_once(':') {
                Some((id, b64)) => (
                    id.parse::<u8>()
                        .ok()
                        .filter(|id| *id > 0)
                        .ok_or_else(|| format!("key id {id:?} is not a number from 1 to 255"))?,
                    b64,
                ),
                None if i == 0 && !s.contains(',') => (1, part),
                None => return Err("in a list, write each key as id:base64".into()),
            };
            let secret = STANDARD
                .decode(b64)
                .or_else(|_| URL_SAFE_NO_PAD.decode(b64))
                .map_err(|_| format!("key {id} is not base64"))?;
            if secret.len() < MIN_COOKIE_KEY_LEN {
                return Err(format!(
                    "key {id} is {} bytes; use at least {MIN_COOKIE_KEY_LEN} random bytes \
                     (openssl rand -base64 32)",
                    secret.len()
                ));
            }
            if keys.iter().any(|(k, _)| *k == id) {
                return Err(format!("two keys share the id {id}"));
            }
            keys.push((id, Secret::new(secret)));
        }
        let mut keys = keys.into_iter();
        let signing = keys.next().ok_or("no key")?;
        Ok(CookieKeys {
            signing,
            others: keys.collect(),
        })
    }

    /// A fresh random key (id 1): demo mode only, since cookies sealed with it die with the
    /// process.
    pub(super) fn random() -> CookieKeys {
        let secret: [u8; 32] = rand::random();
        CookieKeys {
            signing: (1, Secret::new(secret.to_vec())),
            others: Vec::new(),
        }
    }

    /// The key that seals: its id and secret.
    pub fn signing(&self) -> (u8, &[u8]) {
        (self.signing.0, self.signing.1.expose())
    }

    /// Every key, the signing one first.
    pub fn all(&self) -> impl Iterator<Item = (u8, &[u8])> {
        std::iter::once(&self.signing)
            .chain(&self.others)
            .map(|(id, s)| (*id, s.expose().as_slice()))
    }
}

/// Where a document a setting names is (a JWKS, the revocation list): a file path, or an
/// `http(s)` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A file.
    File(PathBuf),
    /// A URL, fetched at start-up and refreshed.
    Url(Uri),
}

impl Location {
    pub(super) fn parse(s: &str) -> Result<Location, String> {
        if s.starts_with("http://") || s.starts_with("https://") {
            parse::url(s).map(Location::Url)
        } else {
            Ok(Location::File(PathBuf::from(s)))
        }
    }
}

/// Credential lifetime bounds, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlBounds {
    /// When the client asks for none.
    pub default_ms: u64,
    /// Shorter requests are raised to this.
    pub min_ms: u64,
    /// Longer requests are lowered to this (never above Ably's limit).
    pub max_ms: u64,
}

/// A runtime whose instances are frozen between requests and come and go by the hundred (see
/// [`Settings::for_serverless`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serverless {
    /// AWS Lambda (`capsign-lambda`).
    Lambda,
    /// A Cloudflare Worker (`capsign-worker`).
    Worker,
}
