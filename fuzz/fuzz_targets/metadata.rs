//! `Metadata::parse` on arbitrary UTF-8 text (non-UTF-8 inputs are skipped).
//!
//! Asserts: parsing never panics; whatever parses round-trips through the canonical form, i.e.
//! `Metadata::parse(&m.to_json())` succeeds and equals `m`, and re-encoding that gives the same
//! text as the first `to_json()` (the canonical form is a fixed point).
#![no_main]

use callpipe::protocol::Metadata;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(m) = Metadata::parse(text) else {
        return;
    };
    let json = m.to_json();
    let again = match Metadata::parse(&json) {
        Ok(again) => again,
        Err(e) => panic!("canonical form does not parse: {e:?}\ninput: {text:?}\ncanonical: {json}"),
    };
    assert_eq!(again, m, "round trip changed the metadata\ninput: {text:?}\ncanonical: {json}");
    assert_eq!(again.to_json(), json, "canonical form is not stable\ninput: {text:?}");
});
