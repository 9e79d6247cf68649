//! The control API's commands on a session (streams, mute and earmuff, tones, clear and notify,
//! barge-in, input) and what an echo keeps room for.

use super::*;

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
