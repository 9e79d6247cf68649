//! The `Session` state machine (an echo pipeline) driven by an arbitrary sequence of inputs.
//!
//! The input is decoded with `arbitrary` into a rate, an echo delay (0..=500 ms) and a list of
//! operations: caller audio of any length (arriving at the next grid instant), platform DTMF, `cleared` and `notify` acks (matching
//! or not), ticks on the 20 ms grid delivered up to 65 ms late, and `finish` (hanging up or not).
//! After every operation all transmits and events are drained.
//!
//! Asserts: nothing panics; every `Transmit::Audio` is exactly one frame
//! (`len == rate.frame_bytes()`), with `deadline >= released` and
//! `deadline - released <= FRAME_DURATION * lookahead_frames`; with only the echo processor,
//! audio frames transmitted never exceed `stats().passes`, and always equal
//! `stats().frames_released`.
#![no_main]

use std::time::{Duration, Instant};

use callpipe::processor::{CallInfo, Echo, Pipeline};
use callpipe::protocol::{DtmfDigit, FRAME_DURATION, MAX_FRAME_BYTES, Metadata, SampleRate};
use callpipe::session::{InboundEvent, Session, SessionConfig, Transmit};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Op {
    /// `handle_audio` with these bytes.
    Audio(Vec<u8>),
    /// `handle_platform(Dtmf)` with `DtmfDigit::ALL[x % 16]`.
    Dtmf(u8),
    /// `handle_platform(Cleared)`.
    Cleared,
    /// `handle_platform(NotifyPlayed { marker })`.
    NotifyPlayed(u64),
    /// `handle_tick` at the next grid instant plus `late_us`.
    Tick { late_us: u16 },
    /// `finish(now, hanging_up)`.
    Finish(bool),
}

#[derive(Debug, Arbitrary)]
struct Input {
    rate: u8,
    delay_ms: u16,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let rate = SampleRate::ALL[usize::from(input.rate) % 3];
    let delay_ms = u32::from(input.delay_ms) % 501;
    let config = SessionConfig::default();
    let call = CallInfo { id: "fuzz".into(), path: "/echo".into(), metadata: Metadata::new(rate) };
    let echo = Echo::new(delay_ms).expect("delays up to 500 ms are valid");
    let mut session = Session::new(rate, &call, Pipeline::new(vec![Box::new(echo)]), config, &callpipe::services::Services::new())
        .expect("an echo pipeline prepares");

    let max_ahead = FRAME_DURATION * config.lookahead_frames;
    let t0 = Instant::now();
    let mut n_ticks = 0u32;
    let mut frames_out = 0u64;
    let mut buf = [0u8; MAX_FRAME_BYTES];

    for op in input.ops {
        match op {
            Op::Audio(bytes) => session.handle_audio(&bytes, t0 + FRAME_DURATION * n_ticks),
            Op::Dtmf(x) => session.handle_platform(InboundEvent::Dtmf { digit: DtmfDigit::ALL[usize::from(x) % 16], duration_ms: None }),
            Op::Cleared => session.handle_platform(InboundEvent::Cleared),
            Op::NotifyPlayed(marker) => session.handle_platform(InboundEvent::NotifyPlayed { marker: callpipe::call::Marker(marker) }),
            Op::Tick { late_us } => {
                let now = t0 + FRAME_DURATION * n_ticks + Duration::from_micros(u64::from(late_us));
                n_ticks += 1;
                session.handle_tick(now);
            }
            Op::Finish(hanging_up) => session.finish(t0 + FRAME_DURATION * n_ticks, hanging_up),
        }
        while let Some(t) = session.poll_transmit(&mut buf) {
            if let Transmit::Audio { released, deadline, len } = t {
                assert_eq!(len, rate.frame_bytes(), "an outbound frame of the wrong size");
                assert!(deadline >= released, "deadline {deadline:?} before release {released:?}");
                assert!(
                    deadline - released <= max_ahead,
                    "deadline {:?} ahead of release, more than the look-ahead {max_ahead:?}",
                    deadline - released
                );
                frames_out += 1;
            }
        }
        while session.poll_event().is_some() {}
        let stats = session.stats();
        assert!(frames_out <= stats.passes, "{frames_out} frames out of {} passes of an echo", stats.passes);
        assert_eq!(frames_out, stats.frames_released, "frames transmitted != frames_released");
    }
});
