//! Socket-free session tests: byte literals in, a fake clock, exact frames out.

use std::time::{Duration, Instant};

use serde_json::Map;

use super::*;
use crate::call::{BargeCause, BargeIn, BargeInMode, Interrupted, Speech};
use crate::processor::{Context, Echo, InputCollector, InputConfig, Processor};
use crate::protocol::{DtmfDigit, FRAME_DURATION, MAX_FRAME_BYTES, Metadata};

fn call() -> CallInfo {
    CallInfo { id: "test".into(), path: "/echo".into(), metadata: Metadata { rate: SampleRate::Hz8000, headers: Map::new() } }
}

fn session_with(stages: Vec<Box<dyn Processor>>, config: SessionConfig) -> Session {
    Session::new(SampleRate::Hz8000, &call(), Pipeline::new(stages), config, &crate::services::Services::new()).unwrap()
}

fn echo_session() -> Session {
    session_with(vec![Box::new(Echo::new(0).unwrap())], SessionConfig::default())
}

fn frame_bytes(first: i16) -> Vec<u8> {
    (0..160).flat_map(|i| (first.wrapping_add(i)).to_le_bytes()).collect()
}

#[derive(Debug, PartialEq)]
enum Out {
    Audio(Duration, Vec<u8>),
    Clear,
    Notify(u64),
}

fn drain(session: &mut Session, now: Instant) -> Vec<Out> {
    let mut buf = [0u8; MAX_FRAME_BYTES];
    let mut out = Vec::new();
    while let Some(t) = session.poll_transmit(&mut buf) {
        out.push(match t {
            Transmit::Audio { deadline, len, .. } => {
                assert_eq!(len, 320, "every frame is exactly 20 ms");
                Out::Audio(deadline.saturating_duration_since(now), buf[..len].to_vec())
            }
            Transmit::Clear => Out::Clear,
            Transmit::Notify { marker } => Out::Notify(marker.0),
        });
    }
    out
}

#[test]
fn echo_returns_each_frame_byte_exact_in_the_same_tick() {
    let t0 = Instant::now();
    let mut s = echo_session();
    for n in 0..100u32 {
        let now = t0 + FRAME_DURATION * n;
        let bytes = frame_bytes(n as i16 * 7);
        s.handle_audio(&bytes, now);
        s.handle_tick(now);
        assert_eq!(drain(&mut s, now), [Out::Audio(Duration::ZERO, bytes)], "tick {n}");
    }
    assert_eq!(s.stats().frames_released, 100);
    assert_eq!(s.stats().input_missing, 0);
}

#[test]
fn wrong_sized_input_is_reframed_and_output_stays_exact() {
    let t0 = Instant::now();
    let mut s = echo_session();
    let stream: Vec<u8> = (0..1600i16).flat_map(|i| i.to_le_bytes()).collect();
    // 3,200 bytes in messages of 333 bytes (odd): ten 20 ms frames come back exact.
    let mut sent = Vec::new();
    for (n, chunk) in stream.chunks(333).enumerate() {
        s.handle_audio(chunk, t0 + FRAME_DURATION * n as u32);
        s.handle_tick(t0 + FRAME_DURATION * n as u32);
        for out in drain(&mut s, t0) {
            let Out::Audio(_, bytes) = out else { panic!("{out:?}") };
            sent.extend(bytes);
        }
    }
    for n in 10..14u32 {
        s.handle_tick(t0 + FRAME_DURATION * n);
        for out in drain(&mut s, t0) {
            let Out::Audio(_, bytes) = out else { panic!("{out:?}") };
            sent.extend(bytes);
        }
    }
    assert_eq!(sent, stream);
}

#[test]
fn a_pause_from_the_platform_sends_nothing_adds_no_latency_and_keeps_call_time() {
    let t0 = Instant::now();
    let mut s = echo_session();
    s.handle_audio(&frame_bytes(1), t0);
    s.handle_tick(t0);
    assert_eq!(drain(&mut s, t0).len(), 1);
    for ms in (1..1000u32).step_by(3) {
        s.handle_tick(t0 + Duration::from_millis(u64::from(ms)));
        assert!(drain(&mut s, t0).is_empty());
    }
    // The platform resumes at real-time pace after 980 ms: the frame waits for what follows it
    // (a stall's backlog, or the sender's next frame), the next frame comes a frame later, as
    // late, and 49 frames of silence go in before the two.
    let resumed = t0 + FRAME_DURATION * 50;
    s.handle_audio(&frame_bytes(2), resumed);
    s.handle_tick(resumed);
    assert!(drain(&mut s, resumed).is_empty());
    let now = resumed + BURST_WINDOW;
    s.handle_tick(now);
    assert!(drain(&mut s, now).is_empty(), "held until the sender's pace shows");
    let next = resumed + FRAME_DURATION;
    s.handle_audio(&frame_bytes(3), next);
    s.handle_tick(next);
    let out = drain(&mut s, next);
    assert_eq!(out.len(), 2, "silence is not echoed; the two frames at once: {out:?}");
    assert_eq!(out[0], Out::Audio(Duration::ZERO, frame_bytes(2)));
    let Out::Audio(_, ref third) = out[1] else { panic!("{out:?}") };
    assert_eq!(*third, frame_bytes(3));
    let stats = s.stats();
    assert_eq!(stats.input_missing, 49);
    assert_eq!(s.caller_position, 52, "call time: 52 frames");
    assert_eq!(stats.wall_only, 50, "the wall clock ticked on meanwhile (the 50th tick while the frame was held too)");
}

/// A processor that queues a long prompt at the first pass, asks for a notify after it, and
/// clears on the first DTMF.
struct Prompt {
    frames: usize,
    started: bool,
}

impl Processor for Prompt {
    fn name(&self) -> &'static str {
        "prompt"
    }

    fn timeline(&self) -> crate::processor::Timeline {
        crate::processor::Timeline::Wall
    }

    fn process(&mut self, cx: &mut Context<'_>) {
        if !self.started {
            self.started = true;
            for f in 0..self.frames {
                let frame = [f as i16; 160];
                assert_eq!(cx.enqueue_output(&frame), 160);
            }
            cx.notify(42);
        }
    }

    fn handle_event(&mut self, event: &Event, cx: &mut Context<'_>) {
        match event {
            Event::Dtmf { .. } => cx.clear(),
            Event::NotifyPlayed { marker } => cx.emit(Event::custom("played", marker.0)),
            _ => {}
        }
    }
}

fn first_sample(bytes: &[u8]) -> i16 {
    i16::from_le_bytes([bytes[0], bytes[1]])
}

#[test]
fn queued_audio_is_paced_and_notify_follows_it() {
    let t0 = Instant::now();
    let mut s = session_with(vec![Box::new(Prompt { frames: 6, started: false })], SessionConfig::default());
    let tick = |n: u32| t0 + FRAME_DURATION * n;
    s.handle_tick(tick(0));
    let out = drain(&mut s, tick(0));
    let deadlines: Vec<_> = out.iter().map(|o| if let Out::Audio(d, _) = o { *d } else { panic!() }).collect();
    assert_eq!(deadlines, [Duration::ZERO, FRAME_DURATION, FRAME_DURATION * 2], "lookahead of 3 frames");
    for n in 1..=3 {
        s.handle_tick(tick(n));
        let out = drain(&mut s, tick(n));
        assert_eq!(out.len(), if n == 3 { 2 } else { 1 }, "tick {n}: {out:?}");
        let Out::Audio(deadline, bytes) = &out[0] else { panic!() };
        assert_eq!(*deadline, FRAME_DURATION * 2);
        assert_eq!(first_sample(bytes), n as i16 + 2);
        if n == 3 {
            assert_eq!(out[1], Out::Notify(42), "notify right after the last frame before it");
        }
    }
    // The platform acknowledges; the processor hears of it at the next pass.
    s.handle_platform(InboundEvent::NotifyPlayed { marker: Marker(42) });
    s.handle_tick(tick(4));
    assert!(drain(&mut s, tick(4)).is_empty());
    // Its event reaches the other processors at the next pass, and goes out after it.
    assert_eq!(s.poll_event(), None);
    s.handle_tick(tick(5));
    assert!(drain(&mut s, tick(5)).is_empty());
    assert_eq!(s.poll_event(), Some(Event::custom("played", 42)));
    // An acknowledgement of something never sent is counted and ignored.
    s.handle_platform(InboundEvent::NotifyPlayed { marker: Marker(42) });
    s.handle_platform(InboundEvent::Cleared);
    assert_eq!(s.stats().unmatched_acks, 2);
}

#[test]
fn clear_drops_pending_audio_at_once_then_sends_clear_then_pending_notifies() {
    let t0 = Instant::now();
    let mut s = session_with(
        vec![Box::new(Prompt { frames: 40, started: false })],
        SessionConfig { outbound_queue_frames: 200, ..Default::default() },
    );
    s.handle_tick(t0);
    assert_eq!(drain(&mut s, t0).len(), 3);
    s.handle_platform(InboundEvent::Dtmf { digit: DtmfDigit::Digit(1), duration_ms: Some(100) });
    let t1 = t0 + FRAME_DURATION;
    s.handle_tick(t1);
    assert_eq!(drain(&mut s, t1), [Out::Clear, Out::Notify(42)]);
    // Nothing of the prompt is left to send.
    for n in 2..10u32 {
        let now = t0 + FRAME_DURATION * n;
        s.handle_tick(now);
        assert!(drain(&mut s, now).is_empty());
    }
    s.handle_platform(InboundEvent::Cleared);
    assert_eq!(s.stats().unmatched_acks, 0);
    assert_eq!(s.stats().clears, 1);
}

#[test]
fn the_grid_never_drifts_over_a_simulated_hour() {
    // A producer that queues exactly one frame per tick, with ticks delivered late by a varying
    // amount as a busy media thread would: deadlines stay exactly on the 20 ms grid.
    let t0 = Instant::now();
    let mut s =
        session_with(vec![Box::new(Prompt { frames: 0, started: true }), Box::new(Echo::new(0).unwrap())], SessionConfig::default());
    let ticks = 3600 * 50u32;
    let mut last_deadline = None;
    for n in 0..ticks {
        let scheduled = t0 + FRAME_DURATION * n;
        s.handle_audio(&frame_bytes(n as i16), scheduled);
        s.handle_tick(scheduled);
        for out in drain(&mut s, scheduled) {
            let Out::Audio(ahead, _) = out else { panic!() };
            let deadline = scheduled + ahead;
            if let Some(last) = last_deadline {
                assert_eq!(deadline - last, FRAME_DURATION, "tick {n}");
            }
            last_deadline = Some(deadline);
        }
    }
    assert_eq!(last_deadline, Some(t0 + FRAME_DURATION * (ticks - 1)));
    assert_eq!(s.stats().frames_released, u64::from(ticks));
    assert_eq!(s.stats().dropped_in, 0);
}

#[test]
fn the_backlog_of_a_stall_goes_through_whole_and_in_order() {
    // A 400 ms network stall: twenty frames arrive together. Every one goes through (no
    // silence, no drop) at once; the echo, whose outbound queue is sized for the look-ahead and
    // 40 ms (it never queues audio), sends what the look-ahead and its queue hold and drops the
    // rest, counted, so that its delay does not keep the stall.
    let t0 = Instant::now();
    let mut s = echo_session();
    s.handle_audio(&frame_bytes(0), t0);
    s.handle_tick(t0);
    let mut echoed = drain(&mut s, t0);
    let at = t0 + Duration::from_millis(420);
    for ms in 1..420 {
        s.handle_tick(t0 + Duration::from_millis(ms));
        echoed.extend(drain(&mut s, t0));
    }
    // As the media thread hands it over: what the inbound buffer has room for, a tick, the rest.
    let mut next = 1;
    while next <= 20 {
        while next <= 20 && s.inbound_room() >= 320 {
            s.handle_audio(&frame_bytes(next * 100), at);
            next += 1;
        }
        s.handle_tick(at);
    }
    let passes = s.caller_position;
    assert_eq!(passes, 21, "the whole backlog at once");
    for n in 0..30u32 {
        let now = at + FRAME_DURATION * n;
        s.handle_tick(now);
        echoed.extend(drain(&mut s, now));
    }
    let frames: Vec<Vec<u8>> = echoed.into_iter().map(|o| if let Out::Audio(_, b) = o { b } else { panic!() }).collect();
    // Frame 0, then the look-ahead (3) and the queue (3 + 2) of the backlog, in order.
    assert_eq!(frames, (0..=8).map(|n| frame_bytes(n * 100)).collect::<Vec<_>>());
    let stats = s.stats();
    assert_eq!((stats.dropped_in, stats.input_missing, stats.catchups, stats.dropped_out), (0, 0, 1, 12));
}

#[test]
fn hanging_up_pads_the_final_partial_frame() {
    struct Partial;
    impl Processor for Partial {
        fn name(&self) -> &'static str {
            "partial"
        }
        fn timeline(&self) -> crate::processor::Timeline {
            crate::processor::Timeline::Wall
        }
        fn process(&mut self, cx: &mut Context<'_>) {
            if cx.position() == 0 {
                cx.enqueue_output(&[5; 200]);
            }
        }
    }
    let t0 = Instant::now();
    let mut s = session_with(vec![Box::new(Partial)], SessionConfig::default());
    s.handle_tick(t0);
    assert_eq!(drain(&mut s, t0).len(), 1);
    s.finish(t0, true);
    let out = drain(&mut s, t0);
    assert_eq!(out.len(), 1);
    let Out::Audio(_, bytes) = &out[0] else { panic!() };
    assert_eq!(bytes.len(), 320);
    assert!(bytes[..80].chunks(2).all(|p| p == [5, 0]));
    assert!(bytes[80..].iter().all(|b| *b == 0));
    assert!(s.is_finished());
}

#[test]
fn a_19_ms_sender_is_followed_frame_by_frame_and_its_echo_stays_bounded() {
    // The platform's clock runs 5 % fast: a frame every 19 ms. Each goes through when it
    // arrives (nothing waits, nothing is cut); the echo that cannot leave faster than real time
    // waits in the bounded outbound queue, whose overflow is dropped and counted.
    let t0 = Instant::now();
    let mut s = echo_session();
    let mut sent = 0u64;
    for ms in 0..60_000u32 {
        let now = t0 + Duration::from_millis(u64::from(ms));
        if ms % 19 == 0 {
            s.handle_audio(&frame_bytes(sent as i16), now);
            sent += 1;
        }
        s.handle_tick(now);
        assert!(s.inbound.backlog() == 0, "frame waiting at {ms} ms");
        drain(&mut s, now);
    }
    let stats = s.stats();
    assert_eq!(s.caller_position, sent, "every frame, once");
    assert_eq!((stats.dropped_in, stats.input_missing), (0, 0));
    assert!(stats.dropped_out > 0 && s.outbound.queued() <= 50 * 160, "{stats:?}");
}

mod control;
