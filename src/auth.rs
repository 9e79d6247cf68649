//! Admission security: who may open a call on a route.
//!
//! The platform authenticates its WebSocket upgrade in one of two ways (docs/protocol.md §1):
//! `{"type":"vonage"}` sends `Authorization: Bearer <JWT>`, an HS256 token signed with the
//! account's signature secret ([`Admission::Jwt`]); `{"type":"custom","value":"..."}` sends the
//! value verbatim ([`Admission::Token`]). [`Admission::check`] judges the raw header value of one
//! upgrade; it does no I/O and takes the time as an argument.
//!
//! Secrets never reach a log line: [`Secret`] prints as `Secret(redacted)`, and a [`Denied`]'s
//! message never quotes the token or the secret. [`PlatformJwt`] mints the platform's tokens
//! for the emulator (`callpipe call --jwt-secret`).

pub mod jwt;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use subtle::ConstantTimeEq as _;

pub use jwt::{JwtError, Validation};

/// Bounds on a route's `leeway_s` (inclusive).
const MAX_LEEWAY_S: i64 = 3600;
/// Bounds on a route's `max_age_s` (inclusive, from 1).
const MAX_AGE_S: i64 = 86_400;

/// Why a secret could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// `env:` names no valid variable.
    #[error("env:{0}: not a valid environment variable name")]
    BadName(String),
    /// The variable is set but empty.
    #[error("environment variable {0} is empty")]
    EmptyVariable(String),
    /// The variable is not set.
    #[error("environment variable {0} is not set")]
    Unset(String),
    /// The value is empty.
    #[error("the secret is empty")]
    Empty,
}

/// Why a route's `auth` table was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthConfigError {
    /// `type` is missing.
    #[error("auth: `type` is required (\"jwt\" or \"token\")")]
    MissingType,
    /// `type` is not a string.
    #[error("auth: `type` must be a string, \"jwt\" or \"token\"")]
    TypeNotString,
    /// `type` names no known kind.
    #[error("auth: unknown type {0:?} (expected \"jwt\" or \"token\")")]
    UnknownType(String),
    /// A key the type does not take.
    #[error("auth: unknown key `{key}` for type \"{kind}\" (expected {expected})")]
    UnknownKey {
        /// The key.
        key: String,
        /// The type.
        kind: String,
        /// The keys it takes.
        expected: String,
    },
    /// A required key is missing.
    #[error("auth: `{0}` is required")]
    Missing(&'static str),
    /// A key that must be a string is not.
    #[error("auth.{0}: expected a string")]
    NotAString(&'static str),
    /// The secret or token cannot be read.
    #[error("auth.{key}: {source}")]
    Secret {
        /// `secret` or `token`.
        key: &'static str,
        /// Why.
        #[source]
        source: SecretError,
    },
    /// `application_id` is empty or not a string.
    #[error("auth.application_id: expected a non-empty string")]
    ApplicationId,
    /// A number of seconds out of its range.
    #[error("auth.{key}: expected whole seconds from {min} to {max}")]
    Seconds {
        /// The key.
        key: &'static str,
        /// The least allowed.
        min: i64,
        /// The most allowed.
        max: i64,
    },
}

/// Secret bytes: an HMAC key or a static token. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct Secret(Box<[u8]>);

impl Secret {
    /// `env:NAME` reads the environment variable NAME (which must be set and not empty);
    /// anything else is the secret itself. An empty value is an error.
    pub fn parse(value: &str) -> Result<Secret, SecretError> {
        if let Some(name) = value.strip_prefix("env:") {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(SecretError::BadName(name.to_owned()));
            }
            return match std::env::var_os(name) {
                Some(v) if !v.is_empty() => Ok(Secret(v.into_encoded_bytes().into_boxed_slice())),
                Some(_) => Err(SecretError::EmptyVariable(name.to_owned())),
                None => Err(SecretError::Unset(name.to_owned())),
            };
        }
        Secret::from_bytes(value.as_bytes()).ok_or(SecretError::Empty)
    }

    /// These bytes as a secret; `None` if empty.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Option<Secret> {
        let bytes = bytes.into();
        (!bytes.is_empty()).then(|| Secret(bytes.into_boxed_slice()))
    }

    /// The secret's bytes, for signing or comparing. Never log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        constant_time_eq(&self.0, &other.0)
    }
}

impl Eq for Secret {}

/// Compares two byte strings in time that depends only on their lengths (a length difference
/// returns at once: it leaks only the length).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// How a route admits an upgrade.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Admission {
    /// Anyone may connect (the default).
    #[default]
    Open,
    /// `Authorization: Bearer <JWT>`, HS256 with this secret (the platform's `{"type":"vonage"}`).
    Jwt {
        /// The account's signature secret.
        secret: Secret,
        /// Leeway, maximum age and application id.
        validation: Validation,
    },
    /// A static token, sent bare or as `Bearer <token>` (the platform's `{"type":"custom"}`).
    Token(Secret),
}

/// Why an upgrade was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// A metric label: `missing`, `scheme`, `bad_token`, or a [`JwtError::reason`].
    pub reason: &'static str,
    /// One short line, safe for a 401 body and a log line: it never quotes the token or secret.
    pub message: String,
}

impl Denied {
    fn new(reason: &'static str, message: &str) -> Denied {
        Denied { reason, message: message.to_owned() }
    }
}

impl Admission {
    /// Judges the raw `Authorization` header value of an upgrade request at time `now`.
    pub fn check(&self, authorization: Option<&str>, now: SystemTime) -> Result<(), Denied> {
        if matches!(self, Admission::Open) {
            return Ok(());
        }
        let Some(value) = authorization.map(str::trim).filter(|v| !v.is_empty()) else {
            return Err(Denied::new("missing", "no Authorization header"));
        };
        match self {
            Admission::Open => Ok(()),
            Admission::Jwt { secret, validation } => {
                let token = bearer(value).ok_or_else(|| Denied::new("scheme", "the Authorization header is not a Bearer token"))?;
                if token.is_empty() {
                    return Err(Denied::new("missing", "no token after Bearer"));
                }
                let claims = jwt::verify_hs256(token, secret.expose(), validation, now)
                    .map_err(|e| Denied { reason: e.reason(), message: e.to_string() })?;
                // A signed webhook (the platform's, or callpipe's own with the same secret)
                // carries the hash of its body: it is not an upgrade credential, whoever
                // received it.
                if claims.contains_key("payload_hash") {
                    return Err(Denied::new("webhook_token", "a signed webhook's token is not accepted for an upgrade"));
                }
                Ok(())
            }
            Admission::Token(secret) => {
                // Both forms are always compared, so the time taken does not tell which one matched.
                let bare = constant_time_eq(value.as_bytes(), secret.expose());
                let bearer = bearer(value).is_some_and(|t| constant_time_eq(t.as_bytes(), secret.expose()));
                if bare | bearer { Ok(()) } else { Err(Denied::new("bad_token", "the token does not match")) }
            }
        }
    }

    /// Parses a route's `auth` table: `{ type = "jwt", secret = "...", application_id = "...",
    /// leeway_s = 60, max_age_s = 300 }` (all but `type` and `secret` optional) or
    /// `{ type = "token", token = "..." }`. Secrets may be `env:NAME`.
    pub fn from_table(table: &toml::Table) -> Result<Admission, AuthConfigError> {
        let kind = match table.get("type") {
            Some(toml::Value::String(kind)) => kind.as_str(),
            Some(_) => return Err(AuthConfigError::TypeNotString),
            None => return Err(AuthConfigError::MissingType),
        };
        let keys: &[&str] = match kind {
            "jwt" => &["type", "secret", "application_id", "leeway_s", "max_age_s"],
            "token" => &["type", "token"],
            other => return Err(AuthConfigError::UnknownType(other.to_owned())),
        };
        if let Some(key) = table.keys().find(|k| !keys.contains(&k.as_str())) {
            return Err(AuthConfigError::UnknownKey { key: key.clone(), kind: kind.to_owned(), expected: keys.join(", ") });
        }
        if kind == "token" {
            let token = required_str(table, "token")?;
            return Secret::parse(token).map(Admission::Token).map_err(|source| AuthConfigError::Secret { key: "token", source });
        }
        let secret = Secret::parse(required_str(table, "secret")?).map_err(|source| AuthConfigError::Secret { key: "secret", source })?;
        let defaults = Validation::default();
        let application_id = match table.get("application_id") {
            None => None,
            Some(toml::Value::String(id)) if !id.is_empty() => Some(id.clone()),
            Some(_) => return Err(AuthConfigError::ApplicationId),
        };
        let leeway = seconds(table, "leeway_s", 0, MAX_LEEWAY_S)?.unwrap_or(defaults.leeway);
        let max_age = seconds(table, "max_age_s", 1, MAX_AGE_S)?.unwrap_or(defaults.max_age);
        Ok(Admission::Jwt { secret, validation: Validation { leeway, max_age, application_id } })
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Denied {}

/// The token of a `Bearer <token>` value (scheme case-insensitive, one or more spaces).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_at(value.find([' ', '\t']).unwrap_or(value.len()));
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim_start_matches([' ', '\t']))
}

fn required_str<'a>(table: &'a toml::Table, key: &'static str) -> Result<&'a str, AuthConfigError> {
    match table.get(key) {
        Some(toml::Value::String(s)) => Ok(s),
        Some(_) => Err(AuthConfigError::NotAString(key)),
        None => Err(AuthConfigError::Missing(key)),
    }
}

fn seconds(table: &toml::Table, key: &'static str, min: i64, max: i64) -> Result<Option<Duration>, AuthConfigError> {
    match table.get(key) {
        None => Ok(None),
        Some(toml::Value::Integer(n)) if (min..=max).contains(n) => Ok(Some(Duration::from_secs(n.unsigned_abs()))),
        Some(_) => Err(AuthConfigError::Seconds { key, min, max }),
    }
}

/// Mints the JWT the platform sends on a `{"type":"vonage"}` upgrade, for the emulator: HS256
/// with claims `iat`, `jti`, `iss` (`callpipe-emulator`) and, if given, `application_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformJwt {
    secret: Secret,
    application_id: Option<String>,
}

/// Makes every `jti` of this process distinct.
static JTI_COUNTER: AtomicU64 = AtomicU64::new(0);

impl PlatformJwt {
    /// The `iss` claim of the emulator's tokens.
    pub const ISSUER: &'static str = "callpipe-emulator";

    /// A minter signing with `secret`, adding `application_id` when given.
    pub fn new(secret: Secret, application_id: Option<String>) -> PlatformJwt {
        PlatformJwt { secret, application_id }
    }

    /// The claims of a token issued at `now`; `jti` is unique in this process (time, process
    /// id and a counter, in hex).
    pub fn claims(&self, now: SystemTime) -> Value {
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let jti = format!("{:x}-{:x}-{:x}", since_epoch.as_nanos(), std::process::id(), JTI_COUNTER.fetch_add(1, Ordering::Relaxed));
        let mut claims = Map::new();
        claims.insert("iat".into(), since_epoch.as_secs().into());
        claims.insert("jti".into(), jti.into());
        claims.insert("iss".into(), PlatformJwt::ISSUER.into());
        if let Some(id) = &self.application_id {
            claims.insert("application_id".into(), id.as_str().into());
        }
        Value::Object(claims)
    }

    /// `Bearer <a fresh token issued at now>`, the value of the upgrade's `Authorization` header.
    pub fn authorization(&self, now: SystemTime) -> String {
        format!("Bearer {}", jwt::sign_hs256(&self.claims(now), self.secret.expose()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn secret(s: &str) -> Secret {
        Secret::parse(s).unwrap()
    }

    fn table(text: &str) -> toml::Table {
        toml::from_str::<toml::Table>(&format!("auth = {text}")).unwrap()["auth"].as_table().unwrap().clone()
    }

    #[test]
    fn open_always_passes() {
        assert_eq!(Admission::default(), Admission::Open);
        assert_eq!(Admission::Open.check(None, at(T)), Ok(()));
        assert_eq!(Admission::Open.check(Some("Basic xyz"), at(T)), Ok(()));
    }

    #[test]
    fn jwt_admission() {
        let key = "jwt-admission-secret";
        let admission = Admission::Jwt { secret: secret(key), validation: Validation::default() };
        let token = jwt::sign_hs256(&json!({"iat": T}), key.as_bytes());
        for header in [format!("Bearer {token}"), format!("bearer {token}"), format!("BEARER   {token}"), format!("  Bearer\t{token} ")] {
            assert_eq!(admission.check(Some(&header), at(T)), Ok(()), "{header:?}");
        }
        let reason = |header: Option<&str>| admission.check(header, at(T)).unwrap_err().reason;
        assert_eq!(reason(None), "missing");
        assert_eq!(reason(Some("")), "missing");
        assert_eq!(reason(Some("Bearer ")), "missing");
        assert_eq!(reason(Some("bearer")), "missing");
        assert_eq!(reason(Some(&token)), "scheme", "a bare JWT");
        assert_eq!(reason(Some(&format!("Basic {token}"))), "scheme");
        assert_eq!(reason(Some(&format!("Bearertoken {token}"))), "scheme");
        assert_eq!(reason(Some("Bearer not.a.jwt")), "malformed");
        let other = jwt::sign_hs256(&json!({"iat": T}), b"someone-else");
        assert_eq!(reason(Some(&format!("Bearer {other}"))), "bad_signature");
        assert_eq!(admission.check(Some(&format!("Bearer {token}")), at(T + 1000)).unwrap_err().reason, "expired");
        let webhook = jwt::sign_hs256(&json!({"iat": T, "payload_hash": jwt::payload_hash(b"{}")}), key.as_bytes());
        assert_eq!(reason(Some(&format!("Bearer {webhook}"))), "webhook_token", "a signed webhook's token opens no call");
    }

    #[test]
    fn token_admission() {
        let admission = Admission::Token(secret("s3cr3t-static-token"));
        assert_eq!(admission.check(Some("s3cr3t-static-token"), at(T)), Ok(()), "bare, as the custom type sends it");
        assert_eq!(admission.check(Some("Bearer s3cr3t-static-token"), at(T)), Ok(()));
        assert_eq!(admission.check(Some("bearer  s3cr3t-static-token"), at(T)), Ok(()));
        let reason = |header: Option<&str>| admission.check(header, at(T)).unwrap_err().reason;
        assert_eq!(reason(None), "missing");
        assert_eq!(reason(Some("   ")), "missing");
        assert_eq!(reason(Some("s3cr3t-static-tokeN")), "bad_token", "same length, last byte differs");
        assert_eq!(reason(Some("s3cr3t-static-toke")), "bad_token", "a prefix");
        assert_eq!(reason(Some("s3cr3t-static-token-and-more")), "bad_token");
        assert_eq!(reason(Some("Basic s3cr3t-static-token")), "bad_token");
        // A configured token that itself starts with "Bearer " matches verbatim.
        let with_scheme = Admission::Token(secret("Bearer abc"));
        assert_eq!(with_scheme.check(Some("Bearer abc"), at(T)), Ok(()));
        assert_eq!(with_scheme.check(Some("abc"), at(T)).unwrap_err().reason, "bad_token");
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"abc", b"xbc"));
    }

    #[test]
    fn denials_never_quote_the_token_or_the_secret() {
        let key = "jwt-secret-that-must-not-leak";
        let jwt = Admission::Jwt { secret: secret(key), validation: Validation::default() };
        let good = jwt::sign_hs256(&json!({"iat": T}), key.as_bytes());
        let wrong = jwt::sign_hs256(&json!({"iat": T}), b"x");
        let static_token = "static-token-that-must-not-leak";
        let token = Admission::Token(secret(static_token));
        let cases = [
            (&jwt, format!("Bearer {wrong}")),
            (&jwt, format!("Bearer {good}x")),
            (&jwt, format!("Token {good}")),
            (&jwt, good.clone()),
            (&token, format!("{static_token}x")),
            (&token, format!("Basic {static_token}")),
            (&token, good.clone()),
        ];
        for (admission, header) in cases {
            let denied = admission.check(Some(&header), at(T + 100_000)).unwrap_err();
            let signature = header.rsplit('.').next().unwrap();
            for text in [denied.message.as_str(), &denied.to_string(), &format!("{denied:?}"), &format!("{admission:?}")] {
                assert!(!text.contains(key) && !text.contains(static_token), "{text}");
                assert!(!text.contains(&header) && !text.contains(signature), "{text}");
            }
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let s = secret("hunter2-hunter2");
        assert_eq!(format!("{s:?}"), "Secret(redacted)");
        assert_eq!(s.expose(), b"hunter2-hunter2");
        assert!(Secret::parse("").is_err());
        assert!(Secret::from_bytes(Vec::new()).is_none());
    }

    #[test]
    fn secret_from_environment() {
        let name = "CALLPIPE_AUTH_TEST_SECRET_7F3A";
        // SAFETY: setting a variable races only with environment reads that bypass std's lock
        // (libc getenv in C code); the library's tests run no such code, and no other test
        // touches this name.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var(name, "from-the-environment");
        }
        assert_eq!(secret(&format!("env:{name}")).expose(), b"from-the-environment");
        let unset = Secret::parse("env:CALLPIPE_AUTH_TEST_NEVER_SET_7F3A").unwrap_err().to_string();
        assert!(unset.contains("CALLPIPE_AUTH_TEST_NEVER_SET_7F3A") && unset.contains("not set"), "{unset}");
        assert!(Secret::parse("env:").is_err());
        assert!(Secret::parse("env:A=B").is_err());
        // Only the prefix `env:` reads the environment.
        assert_eq!(secret("ENV:X").expose(), b"ENV:X");
    }

    #[test]
    fn from_table_jwt() {
        let parsed =
            Admission::from_table(&table(r#"{ type = "jwt", secret = "k", application_id = "app", leeway_s = 5, max_age_s = 60 }"#));
        let expected = Admission::Jwt {
            secret: secret("k"),
            validation: Validation { leeway: Duration::from_secs(5), max_age: Duration::from_secs(60), application_id: Some("app".into()) },
        };
        assert_eq!(parsed, Ok(expected));
        let defaults = Admission::from_table(&table(r#"{ type = "jwt", secret = "k" }"#));
        assert_eq!(defaults, Ok(Admission::Jwt { secret: secret("k"), validation: Validation::default() }));
    }

    #[test]
    fn from_table_token() {
        assert_eq!(Admission::from_table(&table(r#"{ type = "token", token = "t" }"#)), Ok(Admission::Token(secret("t"))));
    }

    #[test]
    fn from_table_errors() {
        let err = |text: &str| Admission::from_table(&table(text)).unwrap_err().to_string();
        let unknown = err(r#"{ type = "jwt", secret = "top-secret-value", sceret = "x" }"#);
        assert!(unknown.contains("unknown key `sceret`") && unknown.contains("application_id"), "{unknown}");
        assert!(!unknown.contains("top-secret-value"));
        assert!(err(r#"{ type = "token", token = "t", secret = "s" }"#).contains("unknown key `secret`"));
        assert!(err(r#"{ type = "basic" }"#).contains("unknown type"));
        assert!(err(r#"{ secret = "k" }"#).contains("`type` is required"));
        assert!(err(r#"{ type = 1 }"#).contains("`type` must be a string"));
        assert!(err(r#"{ type = "jwt" }"#).contains("`secret` is required"));
        assert!(err(r#"{ type = "token" }"#).contains("`token` is required"));
        assert!(err(r#"{ type = "jwt", secret = "" }"#).contains("empty"));
        assert!(err(r#"{ type = "jwt", secret = 5 }"#).contains("expected a string"));
        assert!(err(r#"{ type = "jwt", secret = "k", leeway_s = -1 }"#).contains("leeway_s"));
        assert!(err(r#"{ type = "jwt", secret = "k", leeway_s = 1.5 }"#).contains("leeway_s"));
        assert!(err(r#"{ type = "jwt", secret = "k", max_age_s = 0 }"#).contains("max_age_s"));
        assert!(err(r#"{ type = "jwt", secret = "k", max_age_s = 100000 }"#).contains("max_age_s"));
        assert!(err(r#"{ type = "jwt", secret = "k", application_id = "" }"#).contains("application_id"));
        assert!(err(r#"{ type = "token", token = "env:CALLPIPE_AUTH_TEST_NEVER_SET_7F3A" }"#).contains("not set"));
        // Typed, with the cause behind `source()`.
        let typed = Admission::from_table(&table(r#"{ type = "token", token = "env:CALLPIPE_AUTH_TEST_NEVER_SET_7F3A" }"#)).unwrap_err();
        assert!(matches!(&typed, AuthConfigError::Secret { key: "token", source: SecretError::Unset(_) }), "{typed:?}");
        assert!(std::error::Error::source(&typed).is_some_and(|s| s.to_string().contains("is not set")));
    }

    #[test]
    fn platform_jwt_is_accepted_by_the_verifier() {
        let minter = PlatformJwt::new(secret("platform-secret"), Some("app-9".into()));
        let header = minter.authorization(at(T));
        let validation = Validation { application_id: Some("app-9".into()), ..Validation::default() };
        let admission = Admission::Jwt { secret: secret("platform-secret"), validation };
        assert_eq!(admission.check(Some(&header), at(T + 30)), Ok(()));
        let token = header.strip_prefix("Bearer ").unwrap();
        let claims = jwt::verify_hs256(token, b"platform-secret", &Validation::default(), at(T)).unwrap();
        assert_eq!(claims["iat"], T);
        assert_eq!(claims["iss"], PlatformJwt::ISSUER);
        assert_eq!(claims["application_id"], "app-9");
        assert!(!claims.contains_key("exp"), "the platform's tokens carry no exp");
        // Each token has its own jti, even at the same instant.
        let again = minter.claims(at(T));
        assert_ne!(again["jti"], claims["jti"]);
        assert!(PlatformJwt::new(secret("s"), None).claims(at(T)).get("application_id").is_none());
    }
}
