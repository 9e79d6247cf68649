//! Compact JWTs signed with HMAC-SHA256 (RFC 7519, RFC 7515), and the SHA-256 payload hash the
//! platform's signed webhooks carry.
//!
//! The platform signs the JWT it sends on a `{"type":"vonage"}` WebSocket upgrade, and its
//! signed webhooks, with HS256 and the account's signature secret (docs/protocol.md §1). The claims
//! carry `iat` and often no `exp`, so a token without `exp` expires `max_age` after `iat`.
//!
//! What [`verify_hs256`] guarantees:
//! * The verifier, never the token, chooses the algorithm: a header whose `alg` is anything but
//!   exactly `"HS256"` (`none`, `None`, `HS512`, `RS256`, missing…) is refused before any
//!   signature work, and no key is ever looked up from the header (`kid`, `jku`, `jwk` are
//!   ignored). Headers with `crit` extensions are refused (RFC 7515 §4.1.11).
//! * The signature is compared in constant time, and the claims are parsed only once it holds.
//! * Work is bounded: a token over [`MAX_TOKEN_BYTES`] is refused before it is decoded.
//! * Time is an argument; nothing here reads a clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// The only header [`sign_hs256`] writes.
pub const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// The longest token [`verify_hs256`] decodes. The platform's tokens are a few hundred bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

type HmacSha256 = Hmac<Sha256>;

/// base64url (RFC 4648 §5) without padding on output; on input padding is optional, other
/// alphabets and non-canonical trailing bits are refused.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// How [`verify_hs256`] judges a token's times and audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// Clock skew allowed on every time check.
    pub leeway: Duration,
    /// How long after `iat` a token without `exp` stays valid.
    pub max_age: Duration,
    /// If set, the `application_id` claim must equal it.
    pub application_id: Option<String>,
}

impl Default for Validation {
    /// 60 s leeway, 300 s maximum age, any application.
    fn default() -> Validation {
        Validation { leeway: Duration::from_secs(60), max_age: Duration::from_secs(300), application_id: None }
    }
}

/// Why a token was refused. Messages never contain the token or the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Not three base64url parts of JSON, too long, a wrongly typed claim, or `crit` extensions.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header names an algorithm other than HS256 (or none).
    #[error("algorithm {0} is not accepted (only HS256)")]
    Algorithm(String),
    /// The HMAC does not match.
    #[error("bad signature")]
    Signature,
    /// Past `exp`, or older than the maximum age when there is no `exp`.
    #[error("token expired")]
    Expired,
    /// Before `nbf`, or issued in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// No `iat` claim.
    #[error("token has no iat claim")]
    MissingIssuedAt,
    /// The `application_id` claim is missing or another application's.
    #[error("token is for another application")]
    ApplicationId,
}

impl JwtError {
    /// A short, stable snake_case label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            JwtError::Malformed(_) => "malformed",
            JwtError::Algorithm(_) => "algorithm",
            JwtError::Signature => "bad_signature",
            JwtError::Expired => "expired",
            JwtError::NotYetValid => "not_yet_valid",
            JwtError::MissingIssuedAt => "missing_iat",
            JwtError::ApplicationId => "application_id",
        }
    }
}

/// Signs `claims` as a compact JWT with the header [`HEADER`].
pub fn sign_hs256(claims: &Value, secret: &[u8]) -> String {
    let mut token = BASE64URL.encode(HEADER);
    token.push('.');
    token.push_str(&BASE64URL.encode(claims.to_string()));
    let tag = mac(secret, token.as_bytes()).finalize().into_bytes();
    token.push('.');
    token.push_str(&BASE64URL.encode(tag));
    token
}

/// Verifies an HS256 compact JWT at time `now` and returns its claims.
///
/// Checks, in order: size, shape, header (`alg` exactly `"HS256"`, no `crit`), signature, then
/// the claims: `iat` present and not beyond `leeway` in the future, `nbf` (if present) not
/// beyond `leeway` in the future, `exp` (if present) not more than `leeway` in the past, or
/// without `exp` `iat` not older than `max_age + leeway`, and `application_id` if configured.
pub fn verify_hs256(token: &str, secret: &[u8], validation: &Validation, now: SystemTime) -> Result<Map<String, Value>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::Malformed(format!("longer than {MAX_TOKEN_BYTES} bytes")));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed("expected three dot-separated parts".into()));
    };
    check_header(&decode_object(header, "header")?)?;
    let signature = BASE64URL.decode(signature).map_err(|_| JwtError::Malformed("signature is not base64url".into()))?;
    let signed = &token[..header.len() + 1 + payload.len()];
    mac(secret, signed.as_bytes()).verify_slice(&signature).map_err(|_| JwtError::Signature)?;
    let claims = decode_object(payload, "claims")?;
    check_claims(&claims, validation, now)?;
    Ok(claims)
}

/// Lowercase hex SHA-256 of `body`: the `payload_hash` claim of the platform's signed webhooks.
pub fn payload_hash(body: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = Sha256::digest(body);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

fn mac(secret: &[u8], data: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (longer ones are hashed first), so this cannot fail.
    #[allow(clippy::expect_used)]
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac
}

/// Decodes one base64url part holding a JSON object.
fn decode_object(part: &str, what: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = BASE64URL.decode(part).map_err(|_| JwtError::Malformed(format!("{what} is not base64url")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(JwtError::Malformed(format!("{what} is not a JSON object"))),
        Err(_) => Err(JwtError::Malformed(format!("{what} is not JSON"))),
    }
}

fn check_header(header: &Map<String, Value>) -> Result<(), JwtError> {
    match header.get("alg") {
        Some(Value::String(alg)) if alg == "HS256" => {}
        Some(Value::String(alg)) => return Err(JwtError::Algorithm(printable(alg))),
        Some(_) => return Err(JwtError::Algorithm("(not a string)".into())),
        None => return Err(JwtError::Algorithm("(missing)".into())),
    }
    if header.contains_key("crit") {
        return Err(JwtError::Malformed("critical header extensions (crit) are not supported".into()));
    }
    Ok(())
}

fn check_claims(claims: &Map<String, Value>, validation: &Validation, now: SystemTime) -> Result<(), JwtError> {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    let leeway = validation.leeway.as_secs_f64();
    let iat = seconds(claims, "iat")?.ok_or(JwtError::MissingIssuedAt)?;
    if iat > now + leeway {
        return Err(JwtError::NotYetValid);
    }
    if seconds(claims, "nbf")?.is_some_and(|nbf| nbf > now + leeway) {
        return Err(JwtError::NotYetValid);
    }
    let expires = match seconds(claims, "exp")? {
        Some(exp) => exp,
        None => iat + validation.max_age.as_secs_f64(),
    };
    if now > expires + leeway {
        return Err(JwtError::Expired);
    }
    if let Some(expected) = &validation.application_id
        && claims.get("application_id").and_then(Value::as_str) != Some(expected.as_str())
    {
        return Err(JwtError::ApplicationId);
    }
    Ok(())
}

/// A NumericDate claim (RFC 7519 §2: seconds, integer or not), if present.
fn seconds(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => value.as_f64().map(Some).ok_or_else(|| JwtError::Malformed(format!("{name} is not a number"))),
    }
}

/// The token's `alg`, shortened and stripped of anything unprintable, for a log line.
fn printable(alg: &str) -> String {
    let mut out: String = alg.chars().take(16).map(|c| if c.is_ascii_graphic() { c } else { '?' }).collect();
    if alg.chars().nth(16).is_some() {
        out.push('…');
    }
    format!("\"{out}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"a-signature-secret";
    /// 2023-11-14T22:13:20Z.
    const T: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Signs raw header and payload text, so tests can build tokens `sign_hs256` never would.
    fn sign_raw(header: &str, payload: &str, secret: &[u8]) -> String {
        let signed = format!("{}.{}", BASE64URL.encode(header), BASE64URL.encode(payload));
        let tag = mac(secret, signed.as_bytes()).finalize().into_bytes();
        format!("{signed}.{}", BASE64URL.encode(tag))
    }

    fn verify(token: &str, now: u64) -> Result<Map<String, Value>, JwtError> {
        verify_hs256(token, SECRET, &Validation::default(), at(now))
    }

    fn refused(token: &str, now: u64) -> JwtError {
        verify(token, now).expect_err("the token must be refused")
    }

    #[test]
    fn round_trip() {
        let claims = json!({"iat": T, "jti": "abc", "application_id": "app-1", "nested": {"a": [1, 2]}});
        let token = sign_hs256(&claims, SECRET);
        assert_eq!(token.split('.').next(), Some(BASE64URL.encode(HEADER).as_str()));
        assert!(!token.contains('='), "no padding");
        let got = verify(&token, T + 10).unwrap();
        assert_eq!(Value::Object(got), claims);
    }

    /// Computed independently with Python's `hmac`, `hashlib` and `base64`.
    #[test]
    fn known_answer_vector() {
        let claims = json!({"iat": 1_700_000_000, "jti": "6f1c2e-known-answer", "iss": "callpipe-emulator",
                            "application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"});
        let expected = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpYXQiOjE3MDAwMDAwMDAsImp0aSI6IjZmMWMyZS1rbm93bi1hbnN3ZXIiLCJpc3MiOiJjYWxscGlwZS1lbXVsYXRvciIsImFwcGxpY2F0aW9uX2lkIjoiYWFhYWFhYWEtYmJiYi1jY2NjLWRkZGQtMDEyMzQ1Njc4OWFiIn0.IXslyso5Zw4d6zMxdN6k3HbxJWfDNHoydh2cYlKF7U8";
        assert_eq!(sign_hs256(&claims, b"known-answer-secret"), expected);
        let validation = Validation { application_id: Some("aaaaaaaa-bbbb-cccc-dddd-0123456789ab".into()), ..Validation::default() };
        let got = verify_hs256(expected, b"known-answer-secret", &validation, at(1_700_000_100)).unwrap();
        assert_eq!(got["jti"], "6f1c2e-known-answer");
    }

    /// The widely published HS256 example (secret `your-256-bit-secret`), with no `exp`.
    #[test]
    fn published_example_verifies() {
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        let claims = verify_hs256(token, b"your-256-bit-secret", &Validation::default(), at(1_516_239_022 + 100)).unwrap();
        assert_eq!(claims["name"], "John Doe");
        let late = verify_hs256(token, b"your-256-bit-secret", &Validation::default(), at(1_516_239_022 + 361)).unwrap_err();
        assert_eq!(late, JwtError::Expired);
    }

    #[test]
    fn payload_hash_matches_sha256sum() {
        // `printf '%s' '<body>' | sha256sum`
        let body = br#"{"status":"answered","uuid":"63f61863-4a51-4f6b-86e1-46edebcf9356"}"#;
        assert_eq!(payload_hash(body), "44fbf5400f8749608f26f09af696a0def289774c2a9b05dbcf9953a0fc0c09f6");
        assert_eq!(payload_hash(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn expiry_with_exp() {
        let token = sign_hs256(&json!({"iat": T, "exp": T + 30}), SECRET);
        assert!(verify(&token, T + 30 + 60).is_ok(), "within the leeway after exp");
        let err = refused(&token, T + 30 + 61);
        assert_eq!((err.clone(), err.reason()), (JwtError::Expired, "expired"));
        // exp overrides max_age: a long-lived token is fine long after iat.
        let long = sign_hs256(&json!({"iat": T, "exp": T + 3600}), SECRET);
        assert!(verify(&long, T + 3000).is_ok());
    }

    #[test]
    fn expiry_without_exp_uses_max_age() {
        let token = sign_hs256(&json!({"iat": T}), SECRET);
        assert!(verify(&token, T + 300 + 60).is_ok());
        assert_eq!(refused(&token, T + 300 + 61), JwtError::Expired);
        let strict = Validation { leeway: Duration::ZERO, max_age: Duration::from_secs(10), application_id: None };
        assert_eq!(verify_hs256(&token, SECRET, &strict, at(T + 11)).unwrap_err(), JwtError::Expired);
    }

    #[test]
    fn issued_in_the_future() {
        let token = sign_hs256(&json!({"iat": T + 60}), SECRET);
        assert!(verify(&token, T).is_ok(), "within the leeway");
        let token = sign_hs256(&json!({"iat": T + 61}), SECRET);
        let err = refused(&token, T);
        assert_eq!((err.clone(), err.reason()), (JwtError::NotYetValid, "not_yet_valid"));
        // Fractional seconds count.
        let token = sign_hs256(&json!({"iat": T as f64 + 60.5}), SECRET);
        assert_eq!(refused(&token, T), JwtError::NotYetValid);
        let token = sign_hs256(&json!({"iat": T as f64 + 59.5}), SECRET);
        assert!(verify(&token, T).is_ok());
    }

    #[test]
    fn not_before() {
        let token = sign_hs256(&json!({"iat": T, "nbf": T + 100}), SECRET);
        assert_eq!(refused(&token, T), JwtError::NotYetValid);
        assert!(verify(&token, T + 40).is_ok());
    }

    #[test]
    fn bad_signatures() {
        let token = sign_hs256(&json!({"iat": T}), SECRET);
        let err = verify_hs256(&token, b"another-secret", &Validation::default(), at(T)).unwrap_err();
        assert_eq!((err.clone(), err.reason()), (JwtError::Signature, "bad_signature"));
        // One character of the signature changed (the first, so that no padding bits are involved).
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let first = signature.as_bytes()[0];
        let flipped = format!("{signed}.{}{}", if first == b'A' { 'B' } else { 'A' }, &signature[1..]);
        assert_eq!(refused(&flipped, T), JwtError::Signature);
        // A truncated signature, an empty one, and claims swapped under a valid signature.
        assert_eq!(refused(&format!("{signed}.{}", &signature[..20]), T), JwtError::Signature);
        assert_eq!(refused(&format!("{signed}."), T), JwtError::Signature);
        let other = sign_hs256(&json!({"iat": T, "admin": true}), SECRET);
        let forged = format!("{}.{}.{signature}", token.split('.').next().unwrap(), other.split('.').nth(1).unwrap());
        assert_eq!(refused(&forged, T), JwtError::Signature);
    }

    #[test]
    fn the_token_never_chooses_the_algorithm() {
        let payload = format!(r#"{{"iat":{T}}}"#);
        // alg none with an empty signature: the classic forgery.
        let unsigned = format!("{}.{}.", BASE64URL.encode(r#"{"alg":"none","typ":"JWT"}"#), BASE64URL.encode(&payload));
        let err = refused(&unsigned, T);
        assert_eq!(err.reason(), "algorithm");
        assert_eq!(err, JwtError::Algorithm("\"none\"".into()));
        for header in [
            r#"{"alg":"None"}"#,
            r#"{"alg":"NONE"}"#,
            r#"{"alg":"HS512"}"#,
            r#"{"alg":"RS256"}"#,
            r#"{"alg":"ES256"}"#,
            r#"{"alg":"hs256"}"#,
        ] {
            // Even correctly HMAC-SHA256-signed with the right secret.
            let token = sign_raw(header, &payload, SECRET);
            assert!(matches!(refused(&token, T), JwtError::Algorithm(_)), "{header}");
        }
        for header in [r#"{"typ":"JWT"}"#, r#"{"alg":null}"#, r#"{"alg":["HS256"]}"#] {
            let token = sign_raw(header, &payload, SECRET);
            assert_eq!(refused(&token, T).reason(), "algorithm", "{header}");
        }
        // typ is ignored, absent or not.
        assert!(verify(&sign_raw(r#"{"alg":"HS256"}"#, &payload, SECRET), T).is_ok());
        assert!(verify(&sign_raw(r#"{"typ":"at+jwt","alg":"HS256"}"#, &payload, SECRET), T).is_ok());
    }

    #[test]
    fn crit_headers_are_refused() {
        let token = sign_raw(r#"{"alg":"HS256","crit":["exp"]}"#, &format!(r#"{{"iat":{T}}}"#), SECRET);
        assert!(matches!(refused(&token, T), JwtError::Malformed(_)));
    }

    #[test]
    fn malformed_shapes() {
        let good = sign_hs256(&json!({"iat": T}), SECRET);
        let parts: Vec<&str> = good.split('.').collect();
        let cases = [
            ("two parts", format!("{}.{}", parts[0], parts[1])),
            ("four parts", format!("{good}.{}", parts[2])),
            ("one part", parts[0].to_owned()),
            ("empty", String::new()),
            ("header not JSON", format!("{}.{}.{}", BASE64URL.encode("alg=HS256"), parts[1], parts[2])),
            ("header not an object", format!("{}.{}.{}", BASE64URL.encode(r#"["HS256"]"#), parts[1], parts[2])),
            ("non-base64 header", format!("{}!.{}.{}", parts[0], parts[1], parts[2])),
            ("standard alphabet signature", format!("{}.{}.{}", parts[0], parts[1], parts[2].replace('_', "/").replace('-', "+") + "/")),
            ("non-base64 signature", format!("{}.{}.{}*", parts[0], parts[1], parts[2])),
        ];
        for (what, token) in cases {
            let err = refused(&token, T);
            assert!(matches!(err, JwtError::Malformed(_)), "{what}: {err:?}");
            assert_eq!(err.reason(), "malformed");
        }
    }

    #[test]
    fn padded_parts_are_accepted() {
        // Claims of 25 bytes need "==" in padded base64.
        let token = sign_raw(HEADER, &format!(r#"{{"iat":{T},"ab":1}}"#), SECRET);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts[1].len() % 4, 2);
        // Padding changes the signed text, so sign the padded form.
        let signed = format!("{}.{}==", parts[0], parts[1]);
        let tag = mac(SECRET, signed.as_bytes()).finalize().into_bytes();
        assert!(verify(&format!("{signed}.{}", BASE64URL.encode(tag)), T).is_ok());
    }

    #[test]
    fn claims_must_be_an_object_with_numeric_times() {
        for payload in ["[1,2]", "\"iat\"", "42", "not json"] {
            let token = sign_raw(HEADER, payload, SECRET);
            assert_eq!(refused(&token, T).reason(), "malformed", "{payload}");
        }
        let token = sign_raw(HEADER, r#"{"iat":"1700000000"}"#, SECRET);
        assert!(matches!(refused(&token, T), JwtError::Malformed(_)));
        let token = sign_raw(HEADER, &format!(r#"{{"iat":{T},"exp":"soon"}}"#), SECRET);
        assert!(matches!(refused(&token, T), JwtError::Malformed(_)));
    }

    #[test]
    fn missing_iat() {
        let token = sign_hs256(&json!({"exp": T + 100, "application_id": "app"}), SECRET);
        let err = refused(&token, T);
        assert_eq!((err.clone(), err.reason()), (JwtError::MissingIssuedAt, "missing_iat"));
    }

    #[test]
    fn application_id() {
        let validation = Validation { application_id: Some("app-1".into()), ..Validation::default() };
        let check = |claims: Value| verify_hs256(&sign_hs256(&claims, SECRET), SECRET, &validation, at(T));
        assert!(check(json!({"iat": T, "application_id": "app-1"})).is_ok());
        let err = check(json!({"iat": T, "application_id": "app-2"})).unwrap_err();
        assert_eq!((err.clone(), err.reason()), (JwtError::ApplicationId, "application_id"));
        assert_eq!(check(json!({"iat": T})).unwrap_err(), JwtError::ApplicationId);
        assert_eq!(check(json!({"iat": T, "application_id": 1})).unwrap_err(), JwtError::ApplicationId);
        // Without an expected id, any (or none) passes.
        assert!(verify(&sign_hs256(&json!({"iat": T, "application_id": "app-2"}), SECRET), T).is_ok());
    }

    #[test]
    fn oversized_tokens_are_refused_unread() {
        let big = "x".repeat(6500);
        let token = sign_hs256(&json!({"iat": T, "pad": big}), SECRET);
        assert!(token.len() > MAX_TOKEN_BYTES);
        let err = refused(&token, T);
        assert_eq!(err, JwtError::Malformed(format!("longer than {MAX_TOKEN_BYTES} bytes")));
        // Just under the limit is fine.
        let token = sign_hs256(&json!({"iat": T, "pad": "x".repeat(5900)}), SECRET);
        assert!(token.len() <= MAX_TOKEN_BYTES);
        assert!(verify(&token, T).is_ok());
    }

    #[test]
    fn messages_stay_short_and_printable() {
        let alg = format!("RS256\n{}", "A".repeat(1000));
        let token = sign_raw(&json!({"alg": alg}).to_string(), &format!(r#"{{"iat":{T}}}"#), SECRET);
        let message = refused(&token, T).to_string();
        assert!(message.len() < 80, "{message}");
        assert!(!message.contains('\n'));
        assert!(message.contains("RS256?"));
    }
}
