//! `auth::jwt::verify_hs256` and `auth::jwt::sign_hs256` with a fixed secret, a fixed `now`
//! and the default `Validation`.
//!
//! Input layout: byte 0 picks the mode (`b % 3`), byte 1 how a byte is changed in round trips
//! (`XOR (b % 127) + 1`, so the token stays ASCII) and byte 2 which bytes (four, a quarter of
//! the token apart, starting at `b`); the rest is used per mode:
//! 0: the rest, as UTF-8, is a token; 1: the rest, as UTF-8, is claims JSON that is signed;
//! 2: claims built from the rest (`iat` up to 6 minutes old, `nbf` and `exp` optional, a
//! `sub` string and an `n` number from the rest), signed.
//!
//! Asserts: `verify_hs256` never panics. A token it accepts verifies again to the same claims,
//! and its claims signed anew verify to the same claims. Signed claims (mode 1) never fail on
//! shape, algorithm or signature, only on their times (or as malformed when `iat`, `nbf` or
//! `exp` is not a number), and when accepted come back equal;
//! claims built valid (mode 2) always verify and come back equal. For every accepted signed
//! token, changing any one byte makes `verify_hs256` fail (four positions per input, chosen by
//! the input, so that runs cover every position without verifying each token hundreds of times).
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use callpipe::auth::jwt::{JwtError, Validation, sign_hs256, verify_hs256};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

const SECRET: &[u8] = b"fuzz-signature-secret";
/// 2023-11-14T22:13:20Z.
const NOW: u64 = 1_700_000_000;

fn verify(token: &str) -> Result<Map<String, Value>, JwtError> {
    verify_hs256(token, SECRET, &Validation::default(), UNIX_EPOCH + Duration::from_secs(NOW))
}

/// Checks what must hold for any accepted token.
fn accepted(token: &str, claims: &Map<String, Value>) {
    assert_eq!(verify(token).as_ref(), Ok(claims), "an accepted token did not verify again identically");
    let resigned = sign_hs256(&Value::Object(claims.clone()), SECRET);
    assert_eq!(verify(&resigned).as_ref(), Ok(claims), "accepted claims signed anew changed");
}

/// Signs `claims`; when the token verifies, checks that it gives `claims` back and that a
/// one-byte change at four positions from `at` on makes it fail. Returns the verdict.
fn round_trip(claims: &Map<String, Value>, xor: u8, at: usize) -> Result<(), JwtError> {
    let token = sign_hs256(&Value::Object(claims.clone()), SECRET);
    let verdict = verify(&token);
    if let Err(err) = &verdict {
        // A time claim that is not a number is the only form error signed claims can have.
        let bad_time = ["iat", "nbf", "exp"].iter().any(|name| claims.get(*name).is_some_and(|v| !v.is_number()));
        let allowed = match err {
            JwtError::Malformed(_) => bad_time,
            JwtError::Algorithm(_) | JwtError::Signature => false,
            _ => true,
        };
        assert!(allowed, "signed claims failed on their form: {err}\n{token}");
        return Err(err.clone());
    }
    assert_eq!(verdict.as_ref(), Ok(claims), "signed claims came back changed");
    accepted(&token, claims);
    let mut bytes = token.into_bytes();
    let len = bytes.len();
    for i in (0..4).map(|k| (at + k * len / 4) % len) {
        bytes[i] ^= xor;
        // XOR with 1..=127 keeps ASCII ASCII.
        if let Ok(flipped) = std::str::from_utf8(&bytes) {
            assert!(verify(flipped).is_err(), "token still verifies with byte {i} changed: {flipped}");
        }
        bytes[i] ^= xor;
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let [mode, flip, position, ref rest @ ..] = *data else {
        return;
    };
    let (xor, at) = (flip % 127 + 1, usize::from(position));
    match mode % 3 {
        0 => {
            let Ok(token) = std::str::from_utf8(rest) else { return };
            if let Ok(claims) = verify(token) {
                accepted(token, &claims);
            }
        }
        1 => {
            let Ok(text) = std::str::from_utf8(rest) else { return };
            if let Ok(Value::Object(claims)) = serde_json::from_str::<Value>(text) {
                let _ = round_trip(&claims, xor, at);
            }
        }
        _ => {
            let [age_lo, age_hi, flags, ref tail @ ..] = *rest else { return };
            let age = u64::from(u16::from_le_bytes([age_lo, age_hi])) % 360;
            let iat = NOW - age;
            let mut claims = json!({ "iat": iat });
            if flags & 1 != 0 {
                // Not before: up to a minute in the future (the leeway) or in the past.
                claims["nbf"] = json!(NOW + 60 - u64::from(flags >> 2) % 120);
            }
            if flags & 2 != 0 {
                // Expiry: up to a minute in the past (the leeway) or in the future.
                claims["exp"] = json!(NOW - 60 + u64::from(flags >> 2) % 3600);
            }
            let (text, number) = tail.split_at(tail.len().saturating_sub(8));
            claims["sub"] = json!(String::from_utf8_lossy(text));
            if let Ok(n) = <[u8; 8]>::try_from(number) {
                let n = f64::from_le_bytes(n);
                if n.is_finite() {
                    claims["n"] = json!(n);
                }
            }
            let Value::Object(claims) = claims else { return };
            if let Err(err) = round_trip(&claims, xor, at) {
                panic!("valid claims were refused: {err}: {claims:?}");
            }
        }
    }
});
