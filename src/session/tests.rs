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

fn samples_of(bytes: &[u8]) -> Vec<i16> {
    bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

fn audio_frames(out: Vec<Out>) -> Vec<Vec<i16>> {
    out.into_iter()
        .filter_map(|o| match o {
            Out::Audio(_, bytes) => Some(samples_of(&bytes)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_api_stream_plays_its_samples_exactly_then_reports_done() {
    let t0 = Instant::now();
    let mut s = session_with(vec![], SessionConfig::default());
    // Two and a half frames, played twice: five frames, the last padded with silence.
    let audio: Vec<i16> = (0..400).map(|i| i * 3 - 600).collect();
    s.handle_control(Control::Stream { id: 7, audio: audio.clone().into(), loops: 2, gain: 1.0, barge_in: BargeInMode::Off });
    let mut heard = Vec::new();
    for n in 0..8u32 {
        let now = t0 + FRAME_DURATION * n;
        s.handle_tick(now);
        heard.extend(audio_frames(drain(&mut s, now)));
    }
    assert_eq!(heard.len(), 5, "two plays of 400 samples fill five 160-sample frames");
    let flat: Vec<i16> = heard.concat();
    let expected: Vec<i16> = audio.iter().chain(&audio).copied().chain(std::iter::repeat_n(0, 0)).collect();
    assert_eq!(&flat[..800], &expected[..]);
    assert_eq!(s.poll_event(), Some(Event::StreamDone { id: 7, reason: StreamEnd::Finished }));
    assert_eq!(s.stats().players_active, 0);
}

#[test]
fn a_new_stream_replaces_the_old_and_stop_ends_it() {
    let t0 = Instant::now();
    let mut s = session_with(vec![], SessionConfig::default());
    s.handle_control(Control::Stream { id: 1, audio: vec![5i16; 160].into(), loops: 0, gain: 1.0, barge_in: BargeInMode::Off });
    s.handle_tick(t0);
    assert_eq!(s.stats().players_active, 1);
    s.handle_control(Control::Stream { id: 2, audio: vec![9i16; 160].into(), loops: 0, gain: 0.5, barge_in: BargeInMode::Off });
    assert_eq!(s.poll_event(), Some(Event::StreamDone { id: 1, reason: StreamEnd::Replaced }));
    s.handle_tick(t0 + FRAME_DURATION);
    let frames = audio_frames(drain(&mut s, t0 + FRAME_DURATION));
    assert_eq!(frames.last().unwrap()[0], 5, "the gain rounds 4.5 away from zero");
    s.handle_control(Control::StopStream);
    assert_eq!(s.poll_event(), Some(Event::StreamDone { id: 2, reason: StreamEnd::Stopped }));
    s.handle_tick(t0 + FRAME_DURATION * 2);
    assert!(audio_frames(drain(&mut s, t0 + FRAME_DURATION * 2)).is_empty(), "nothing plays after the stop");
}

#[test]
fn mute_silences_the_caller_side_and_earmuff_deafens_the_processors() {
    let t0 = Instant::now();
    let mut s = echo_session();
    let tick = |s: &mut Session, n: u32| {
        let now = t0 + FRAME_DURATION * n;
        s.handle_audio(&frame_bytes(100), now);
        s.handle_tick(now);
        audio_frames(drain(s, now))
    };
    assert_eq!(tick(&mut s, 0).len(), 1);
    s.handle_control(Control::Mute(true));
    assert!(tick(&mut s, 1).is_empty(), "muted: nothing reaches the caller");
    s.handle_control(Control::Mute(false));
    assert_eq!(tick(&mut s, 2).len(), 1);
    s.handle_control(Control::Earmuff(true));
    assert!(tick(&mut s, 3).is_empty(), "earmuffed: the echo hears nothing to send back");
    assert_eq!(s.stats().input_missing, 0, "the caller's frames did arrive");
    s.handle_control(Control::Earmuff(false));
    assert_eq!(tick(&mut s, 4)[0][0], 100);
}

#[test]
fn api_dtmf_replaces_the_outbound_audio_while_it_plays() {
    let t0 = Instant::now();
    let mut s = echo_session();
    let tones: Vec<i16> = vec![1234; 200];
    s.handle_control(Control::Dtmf { audio: tones.into() });
    let mut frames = Vec::new();
    for n in 0..3u32 {
        let now = t0 + FRAME_DURATION * n;
        s.handle_audio(&frame_bytes(100), now);
        s.handle_tick(now);
        frames.extend(audio_frames(drain(&mut s, now)));
    }
    assert!(frames[0].iter().all(|v| *v == 1234), "the echo is replaced, not mixed");
    assert!(frames[1][..40].iter().all(|v| *v == 1234) && frames[1][40..].iter().all(|v| *v == 0));
    assert_eq!(frames[2][0], 100, "then the echo again");
}

#[test]
fn api_clear_and_notify_go_out_in_order() {
    let t0 = Instant::now();
    let mut s = session_with(vec![], SessionConfig::default());
    s.handle_control(Control::Notify { marker: Marker(1 << 63) });
    s.handle_tick(t0);
    assert_eq!(drain(&mut s, t0), [Out::Notify(1 << 63)], "nothing queued: the notify leaves at once");
    s.handle_platform(InboundEvent::NotifyPlayed { marker: Marker(1 << 63) });
    s.handle_control(Control::Clear);
    s.handle_tick(t0 + FRAME_DURATION);
    assert_eq!(drain(&mut s, t0 + FRAME_DURATION), [Out::Clear]);
    assert_eq!(s.stats().unmatched_acks, 0);
}

/// Queues one frame of a constant per pass, as a `resample` wrapper queues its converted audio.
struct Queues(i16);

impl Processor for Queues {
    fn name(&self) -> &'static str {
        "queues"
    }

    fn timeline(&self) -> crate::processor::Timeline {
        crate::processor::Timeline::Wall
    }

    fn process(&mut self, cx: &mut Context<'_>) {
        let frame = [self.0; 160];
        cx.enqueue_output(&frame);
    }
}

#[test]
fn an_api_stream_mixes_into_queued_audio_one_frame_per_pass() {
    let t0 = Instant::now();
    let mut s = session_with(vec![Box::new(Queues(100))], SessionConfig::default());
    s.handle_control(Control::Stream { id: 1, audio: vec![7i16; 160 * 4].into(), loops: 1, gain: 1.0, barge_in: BargeInMode::Off });
    let mut frames = Vec::new();
    for n in 0..6u32 {
        let now = t0 + FRAME_DURATION * n;
        s.handle_tick(now);
        frames.extend(audio_frames(drain(&mut s, now)));
    }
    assert!(frames.len() <= 6 + 3, "no second frame per pass: {}", frames.len());
    assert!(frames[..4].iter().all(|f| f.iter().all(|v| *v == 107)), "mixed, not interleaved");
    assert!(frames[4].iter().all(|v| *v == 100));
    assert_eq!(s.stats().dropped_out, 0);
}

#[test]
fn dtmf_sequences_follow_each_other_and_mute_drops_what_waits() {
    let t0 = Instant::now();
    let mut s = session_with(vec![], SessionConfig::default());
    s.handle_control(Control::Dtmf { audio: vec![1i16; 160].into() });
    s.handle_control(Control::Dtmf { audio: vec![2i16; 160].into() });
    s.handle_control(Control::Dtmf { audio: vec![3i16; 160].into() });
    let mut firsts = Vec::new();
    for n in 0..4u32 {
        let now = t0 + FRAME_DURATION * n;
        s.handle_tick(now);
        firsts.extend(audio_frames(drain(&mut s, now)).iter().map(|f| f[0]));
    }
    assert_eq!(firsts, [1, 3], "the second waited and the third replaced it");

    // Audio queued ahead of its time is dropped the moment the call is muted.
    let mut q = session_with(vec![Box::new(Queues(5)), Box::new(Queues(6))], SessionConfig::default());
    q.handle_tick(t0);
    drain(&mut q, t0);
    q.handle_control(Control::Mute(true));
    q.handle_tick(t0 + FRAME_DURATION);
    assert!(audio_frames(drain(&mut q, t0 + FRAME_DURATION)).is_empty());
}

/// Emits `speech:started` at one pass, as a `vad` would.
struct SpeaksAt(u64);

impl Processor for SpeaksAt {
    fn name(&self) -> &'static str {
        "speaks-at"
    }

    fn timeline(&self) -> crate::processor::Timeline {
        crate::processor::Timeline::Wall
    }

    fn process(&mut self, cx: &mut Context<'_>) {
        if cx.position() == self.0 {
            cx.emit(Event::Speech(Speech::Started { start_ms: self.0 * 20 }));
        }
    }
}

#[test]
fn speech_barges_in_on_the_api_stream_and_a_key_does_not() {
    let t0 = Instant::now();
    let mut s = session_with(vec![Box::new(SpeaksAt(5))], SessionConfig::default());
    s.handle_control(Control::Stream { id: 3, audio: vec![7i16; 160].into(), loops: 0, gain: 1.0, barge_in: BargeInMode::Speech });
    s.handle_platform(InboundEvent::Dtmf { digit: DtmfDigit::Digit(1), duration_ms: Some(100) });
    let mut events = Vec::new();
    for n in 0..10u32 {
        let now = t0 + FRAME_DURATION * n;
        s.handle_tick(now);
        drain(&mut s, now);
        events.extend(std::iter::from_fn(|| s.poll_event()));
    }
    // The event of pass 5 reaches the session's watch at pass 6, after six frames played.
    let barge = BargeIn { interrupted: Interrupted::Stream { id: 3 }, cause: BargeCause::Speech, played_ms: 120 };
    assert!(events.contains(&Event::StreamDone { id: 3, reason: StreamEnd::BargeIn }), "{events:?}");
    assert!(events.contains(&Event::BargeIn(barge)), "{events:?}");
    assert_eq!(s.stats().clears, 1);
    assert_eq!(s.stats().players_active, 0);
}

#[test]
fn the_api_input_collects_keys_and_times_out() {
    let t0 = Instant::now();
    let mut s = session_with(vec![], SessionConfig::default());
    let config = InputConfig { max_digits: 2, time_out: 0.1, ..InputConfig::default() };
    s.handle_control(Control::Input(InputCollector::new(&config)));
    s.handle_platform(InboundEvent::Dtmf { digit: DtmfDigit::Digit(4), duration_ms: None });
    let mut events = Vec::new();
    for n in 0..20u32 {
        let now = t0 + FRAME_DURATION * n;
        s.handle_tick(now);
        drain(&mut s, now);
        events.extend(std::iter::from_fn(|| s.poll_event()).filter(|e| matches!(e, Event::Input(_))));
    }
    let [Event::Input(collected)] = &events[..] else { panic!("{events:?}") };
    assert_eq!((collected.digits(), collected.timed_out), ("4", true));
}

#[test]
fn an_echo_carries_no_room_for_events_or_queued_audio_until_it_has_events() {
    let t0 = Instant::now();
    let mut s = echo_session();
    let rooms = |s: &Session| {
        [
            s.events_now.capacity(),
            s.events_next.capacity(),
            s.events_out.capacity(),
            s.requests.events.capacity(),
            s.requests.queued.capacity(),
        ]
    };
    let mut n = 0u32;
    let mut pass = |s: &mut Session| {
        let now = t0 + FRAME_DURATION * n;
        s.handle_audio(&frame_bytes(n as i16), now);
        s.handle_tick(now);
        drain(s, now);
        while s.poll_event().is_some() {}
        n += 1;
    };
    for _ in 0..100 {
        pass(&mut s);
    }
    assert_eq!(rooms(&s), [0; 5], "a clean echo call holds no event lists and no staging");
    // A key from the platform: its list makes room for a few, and a pass later so has the list
    // it trades buffers with, whichever pass the next event falls on.
    s.handle_platform(InboundEvent::Dtmf { digit: DtmfDigit::Digit(1), duration_ms: Some(100) });
    pass(&mut s);
    pass(&mut s);
    let [now, next, ..] = rooms(&s);
    assert!(now >= crate::processor::EVENTS_TO_START && next >= crate::processor::EVENTS_TO_START, "{:?}", rooms(&s));
    assert_eq!(rooms(&s)[4], 0, "an echo never queues audio");
}
