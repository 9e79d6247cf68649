//! The emulated call driven tick by tick and message by message, without sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::client::metrics::Metrics;
use crate::client::wire::Message;
use crate::protocol::{DtmfDigit, FRAME_DURATION, SampleRate};

fn plan(rate: SampleRate, secs: u64) -> CallPlan {
    CallPlan::new(rate, Duration::from_secs(secs))
}

#[derive(Debug, PartialEq)]
enum Sent {
    Text(String),
    Binary(usize),
    Close(u16),
}

fn tick(call: &mut PlatformCall, t: Instant, metrics: &mut Metrics) -> Vec<Sent> {
    let mut out = Vec::new();
    call.handle_tick(t, t, metrics, &mut |o| out.push(sent(o)));
    out
}

fn message(call: &mut PlatformCall, t: Instant, m: Message<'_>, metrics: &mut Metrics) -> Vec<Sent> {
    let mut out = Vec::new();
    call.handle_message(t, m, metrics, &mut |o| out.push(sent(o)));
    out
}

fn sent(o: Out<'_>) -> Sent {
    match o {
        Out::Text(t) => Sent::Text(t.to_owned()),
        Out::Binary(b) => Sent::Binary(b.len()),
        Out::Close(c) => Sent::Close(c),
    }
}

const NOTIFY: &str = r#"{"action":"notify","payload":{"n":1}}"#;
const ACK: &str = r#"{"event":"websocket:notify","payload":{"n":1}}"#;

#[test]
fn sends_one_exact_frame_per_tick_then_hangs_up() {
    let t0 = Instant::now();
    let mut m = Metrics::new();
    let mut call = PlatformCall::new(Arc::new(plan(SampleRate::Hz24000, 1)), t0);
    assert_eq!(call.metadata(), r#"{"event":"websocket:connected","content-type":"audio/l16;rate=24000"}"#);
    for n in 0..50u32 {
        assert_eq!(tick(&mut call, t0 + FRAME_DURATION * n, &mut m), [Sent::Binary(960)]);
    }
    // Linger (500 ms) with no audio, then close 1000.
    for n in 50..75u32 {
        assert!(tick(&mut call, t0 + FRAME_DURATION * n, &mut m).is_empty());
    }
    assert_eq!(tick(&mut call, t0 + FRAME_DURATION * 75, &mut m), [Sent::Close(1000)]);
    assert!(call.is_done());
    assert_eq!(call.finish().frames_sent, 50);
}

#[test]
fn notify_is_acknowledged_only_once_the_audio_before_it_has_played() {
    let t0 = Instant::now();
    let mut m = Metrics::new();
    let mut call = PlatformCall::new(Arc::new(plan(SampleRate::Hz8000, 10)), t0);
    // The bot bursts five frames and a notify at once.
    for _ in 0..5 {
        assert!(message(&mut call, t0, Message::Binary(&[1u8; 320]), &mut m).is_empty());
    }
    assert!(message(&mut call, t0, Message::Text(NOTIFY), &mut m).is_empty(), "nothing has played yet");
    assert_eq!(call.report().playout_high_water, 5);
    // One frame plays per tick: the acknowledgement comes with the fifth.
    for n in 0..5u32 {
        let out = tick(&mut call, t0 + FRAME_DURATION * n, &mut m);
        if n < 4 {
            assert_eq!(out, [Sent::Binary(320)], "tick {n}");
        } else {
            assert_eq!(out, [Sent::Binary(320), Sent::Text(ACK.into())], "tick {n}");
        }
    }
    // A notify with nothing queued is acknowledged at once.
    assert_eq!(message(&mut call, t0, Message::Text(NOTIFY), &mut m), [Sent::Text(ACK.into())]);
    assert_eq!(call.report().frames_played, 5);
}

#[test]
fn clear_drops_the_buffer_and_is_acknowledged() {
    let t0 = Instant::now();
    let mut m = Metrics::new();
    let mut call = PlatformCall::new(Arc::new(plan(SampleRate::Hz8000, 10)), t0);
    for _ in 0..100 {
        message(&mut call, t0, Message::Binary(&[1u8; 320]), &mut m);
    }
    message(&mut call, t0, Message::Text(NOTIFY), &mut m);
    tick(&mut call, t0, &mut m);
    let out = message(&mut call, t0, Message::Text(r#"{"action":"clear"}"#), &mut m);
    assert_eq!(out, [Sent::Text(r#"{"event":"websocket:cleared"}"#.into()), Sent::Text(ACK.into())]);
    tick(&mut call, t0 + FRAME_DURATION, &mut m);
    let report = call.finish();
    assert_eq!((report.frames_played, report.clears, report.notifies), (1, 1, 1));
}

#[test]
fn counts_wrong_sizes_and_strict_mode_closes() {
    let t0 = Instant::now();
    let mut m = Metrics::new();
    let mut lenient = PlatformCall::new(Arc::new(plan(SampleRate::Hz16000, 10)), t0);
    assert!(message(&mut lenient, t0, Message::Binary(&[0u8; 641]), &mut m).is_empty());
    message(&mut lenient, t0, Message::Text("{\"action\":\"dance\"}"), &mut m);
    let report = lenient.finish();
    assert_eq!((report.wrong_size, report.bad_text, report.violation_count()), (1, 1, 2));
    assert_eq!(report.violations[0], "frame of 641 bytes, expected 640");
    let mut strict = PlatformCall::new(Arc::new(CallPlan { strict: true, ..plan(SampleRate::Hz16000, 10) }), t0);
    assert_eq!(message(&mut strict, t0, Message::Binary(&[0u8; 320]), &mut m), [Sent::Close(1007)]);
    assert!(strict.is_done());
    assert!(strict.finish().closed_for_violation);
}

#[test]
fn playout_limit_overflow_and_underrun_gaps() {
    let t0 = Instant::now();
    let mut m = Metrics::new();
    let mut call = PlatformCall::new(Arc::new(CallPlan { playout_limit: 10, ..plan(SampleRate::Hz8000, 10) }), t0);
    for _ in 0..15 {
        message(&mut call, t0, Message::Binary(&[1u8; 320]), &mut m);
    }
    let mut t = 0u32;
    let mut next = || {
        t += 1;
        t0 + FRAME_DURATION * t
    };
    for _ in 0..10 {
        tick(&mut call, next(), &mut m);
    }
    // Three ticks of silence, then the bot speaks again: one gap of 60 ms.
    for _ in 0..3 {
        tick(&mut call, next(), &mut m);
    }
    message(&mut call, t0, Message::Binary(&[1u8; 320]), &mut m);
    tick(&mut call, next(), &mut m);
    // A long silence is the end of an utterance, not an underrun.
    for _ in 0..40 {
        tick(&mut call, next(), &mut m);
    }
    message(&mut call, t0, Message::Binary(&[1u8; 320]), &mut m);
    tick(&mut call, next(), &mut m);
    let report = call.finish();
    assert_eq!(report.playout_overflow, 5);
    assert_eq!(report.playout_high_water, 10);
    assert_eq!((report.underrun_gaps, report.underrun_ticks), (1, 3));
}

#[test]
fn dtmf_goes_out_on_time_and_echoed_tags_are_matched() {
    let t0 = Instant::now();
    let mut m = Metrics::new();
    let plan = CallPlan {
        dtmf: vec![(Duration::from_millis(40), DtmfDigit::Digit(5))],
        tag_frames: true,
        source: Source::Samples(vec![1000i16; 8000].into()),
        ..plan(SampleRate::Hz8000, 10)
    };
    let mut call = PlatformCall::new(Arc::new(plan), t0);
    let mut frames = Vec::new();
    for n in 0..4u32 {
        let t = t0 + FRAME_DURATION * n;
        let mut out = Vec::new();
        call.handle_tick(t, t, &mut m, &mut |o| match o {
            Out::Binary(b) => frames.push(b.to_vec()),
            Out::Text(text) => out.push(text.to_owned()),
            Out::Close(_) => {}
        });
        assert_eq!(out.len(), usize::from(n == 2), "the key goes out at 40 ms");
        if n == 2 {
            assert_eq!(out[0], r#"{"event":"websocket:dtmf","digit":"5","duration":100}"#);
        }
    }
    // Echo them back out of order, one twice.
    let back = t0 + FRAME_DURATION * 4;
    for i in [0, 2, 1, 3, 3] {
        message(&mut call, back, Message::Binary(&frames[i]), &mut m);
    }
    let report = call.finish();
    assert_eq!((report.echoed, report.duplicated, report.reordered, report.lost), (4, 1, 1, 0));
    assert_eq!(report.dtmf_sent, 1);
    assert_eq!(report.dtmf_latency_ms.len(), 1, "the first audible frame after the key");
    assert_eq!(m.rtt.len(), 5);
}

#[test]
fn inband_keys_replace_the_callers_audio_for_their_duration() {
    let t0 = Instant::now();
    let mut m = Metrics::new();
    let plan = CallPlan {
        dtmf: vec![(Duration::from_millis(40), DtmfDigit::Pound)],
        dtmf_mode: DtmfMode::Inband,
        dtmf_duration: Duration::from_millis(70),
        source: Source::Samples(vec![7i16; 8000].into()),
        ..plan(SampleRate::Hz8000, 1)
    };
    let mut call = PlatformCall::new(Arc::new(plan), t0);
    let mut audio = Vec::new();
    for n in 0..10u32 {
        let t = t0 + FRAME_DURATION * n;
        call.handle_tick(t, t, &mut m, &mut |o| match o {
            Out::Binary(b) => audio.extend(b.chunks_exact(2).map(|s| i16::from_le_bytes([s[0], s[1]]))),
            Out::Text(text) => panic!("inband only, yet {text}"),
            Out::Close(_) => {}
        });
    }
    // The key replaces samples 320..880 (40 ms to 110 ms); the caller's audio is on either side.
    assert!(audio[..320].iter().all(|&s| s == 7));
    assert!(audio[880..].iter().all(|&s| s == 7));
    let tone = &audio[320..880];
    assert!(tone.iter().filter(|&&s| s.unsigned_abs() > 3000).count() > 400, "the tone is there");
    assert!(tone[0].abs() < 100 && tone[tone.len() - 1].abs() < 100, "edges: {} .. {}", tone[0], tone[tone.len() - 1]);
    assert_eq!(call.finish().dtmf_sent, 1);
}
