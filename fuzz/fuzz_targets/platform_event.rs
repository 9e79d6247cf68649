//! `PlatformEvent::parse` and `AppAction::parse` on arbitrary UTF-8 text (non-UTF-8 inputs are
//! skipped).
//!
//! Asserts: neither parser panics; a parsed `PlatformEvent` other than `Unknown` round-trips,
//! `PlatformEvent::parse(&e.to_json()) == Ok(e)`; a parsed `AppAction` round-trips the same way,
//! `AppAction::parse(&a.to_json()) == Ok(a)`.
#![no_main]

use callpipe::protocol::{AppAction, PlatformEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(event) = PlatformEvent::parse(text)
        && !matches!(event, PlatformEvent::Unknown { .. })
    {
        let json = event.to_json();
        assert_eq!(PlatformEvent::parse(&json), Ok(event), "event round trip\ninput: {text:?}\nencoded: {json}");
    }
    if let Ok(action) = AppAction::parse(text) {
        let json = action.to_json();
        assert_eq!(AppAction::parse(&json), Ok(action), "action round trip\ninput: {text:?}\nencoded: {json}");
    }
});
