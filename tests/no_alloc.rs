//! The media path's steady state allocates nothing: a counting global allocator watches the
//! exact per-call step a media thread runs (the endpoint's delivery, one tick, what it sends),
//! through a scripted endpoint, over thousands of ticks with DTMF, clear and notify traffic, and
//! with the DTMF detector (fed real keying) and generator in the pipeline. The same over real
//! sockets, with every thread of a running server watched: `tests/no_alloc_socket.rs`.
//!
//! The counting allocator (`tests/support/counting.rs`) is the tests' only `unsafe` code (the
//! library itself forbids it).
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::f64::consts::TAU;
use std::time::Instant;

use callpipe::call::{BargeInMode, Speech};
use callpipe::media::{Script, call_rings, step};
use callpipe::processor::{
    CallInfo, Context, Denoise, DenoiseConfig, DtmfDetect, DtmfDetectConfig, DtmfSend, DtmfSendConfig, Echo, Event, Fork, ForkConfig,
    ForkReplies, ForkSend, Input, InputConfig, Pipeline, Play, PlayConfig, Processor, Record, RecordChannels, RecordConfig, RecordFormat,
    Resample, Vad, VadConfig,
};
#[cfg(feature = "tts")]
use callpipe::processor::{Talk, TalkConfig};
use callpipe::protocol::{DtmfDigit, FRAME_DURATION, MAX_FRAME_BYTES, Metadata, SampleRate};
use callpipe::session::{InboundEvent, Session, SessionConfig};
use ringbuf::traits::{Consumer, Producer};

#[path = "support/counting.rs"]
mod counting;

use counting::{Counting, allocations_during};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Queues a prompt every 50 passes with a notify after it, mixes a tone into every frame, and
/// barges in on DTMF: exercises every request a processor can make.
struct Busy;

impl Processor for Busy {
    fn name(&self) -> &'static str {
        "busy"
    }

    fn process(&mut self, cx: &mut Context<'_>) {
        if cx.position().is_multiple_of(50) {
            let prompt = [300i16; 480];
            let n = cx.rate().frame_samples();
            cx.enqueue_output(&prompt[..n]);
            cx.enqueue_output(&prompt[..n / 2]);
            cx.notify(cx.position());
        }
        let tone = [100i16; 480];
        let n = cx.rate().frame_samples();
        cx.mix_output(&tone[..n]);
    }

    fn handle_event(&mut self, event: &Event, cx: &mut Context<'_>) {
        if let Event::Dtmf { .. } = event {
            cx.clear();
            cx.emit(Event::Dtmf {
                digit: DtmfDigit::Pound,
                start_ms: None,
                duration_ms: None,
                source: callpipe::processor::DtmfSource::Inband,
            });
        }
    }
}

/// The connection side's writes: everything the media thread released goes to the "socket",
/// every audio item a whole frame.
fn send_released(script: &Script, out: &mut [u8; MAX_FRAME_BYTES], rate: SampleRate) {
    let mut state = script.lock();
    assert_eq!(state.sent.len() % rate.frame_bytes(), 0, "whole frames");
    while !state.sent.is_empty() {
        for (o, b) in out.iter_mut().zip(state.sent.drain(..rate.frame_bytes())) {
            *o = b;
        }
    }
    state.notifies.clear();
}

thread_local! {
    /// `speech:started` events seen by [`steady_state_allocations_with`] on this thread.
    static SPEECH_EVENTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Allocations over 10,000 steady-state ticks, and the session's counters at the end.
fn steady_state_allocations(rate: SampleRate, stages: Vec<Box<dyn Processor>>) -> (usize, callpipe::session::SessionStats) {
    let frame: Vec<u8> = (0..rate.frame_bytes()).map(|i| i as u8).collect();
    let (allocations, stats, _) = steady_state_allocations_with(rate, stages, &[frame], 3);
    (allocations, stats)
}

/// The warm-up's stall (ticks).
const STALL: std::ops::Range<u32> = 200..206;

/// The same with the caller sending `frames` over and over, `cut` bytes short every seventh
/// one; also returns the DTMF events the processors emitted (and counts their speech events in
/// [`SPEECH_EVENTS`]).
fn steady_state_allocations_with(
    rate: SampleRate,
    stages: Vec<Box<dyn Processor>>,
    frames: &[Vec<u8>],
    cut: usize,
) -> (usize, callpipe::session::SessionStats, usize) {
    let call = CallInfo { id: "a".into(), path: "/echo".into(), metadata: Metadata::new(rate) };
    let config = SessionConfig::default();
    let services = callpipe::services::Services::new();
    let mut session = Session::new(rate, &call, Pipeline::new(stages), config, &services).unwrap();
    let (mut conn, mut media) = call_rings();
    let script = Script::with_capacity(16 * 1024);
    let mut endpoint = script.endpoint();
    let mut out = [0u8; MAX_FRAME_BYTES];
    let mut dtmf_events = 0;
    let t0 = Instant::now();
    let mut tick = |n: u32| {
        // Connection side: a frame in (sometimes an odd size), a DTMF now and then. A call's
        // buffers start small and grow when a burst first needs more (crate::bounded), so the
        // warm-up has one: a stall of 6 frames whose backlog then
        // comes at once, as a TCP stall's does (shorter than the bursts a recording spills
        // for, whose memory goes back after them: the recorder's own tests cover those).
        if STALL.contains(&n) {
            step(&mut session, &mut media, endpoint.as_mut(), t0 + FRAME_DURATION * n);
            return;
        }
        if n == STALL.end {
            for k in STALL {
                script.deliver(&frames[k as usize % frames.len()]);
            }
        }
        let frame = &frames[n as usize % frames.len()];
        let cut = if n.is_multiple_of(7) { frame.len() - cut } else { frame.len() };
        script.deliver(&frame[..cut]);
        if n.is_multiple_of(97) {
            script.deliver_event(InboundEvent::Dtmf { digit: DtmfDigit::Digit(1), duration_ms: Some(100) });
        }
        if n.is_multiple_of(53) {
            script.deliver_event(InboundEvent::Cleared);
            script.deliver_event(InboundEvent::NotifyPlayed { marker: callpipe::call::Marker(u64::from(n.saturating_sub(3))) });
        }
        // Media thread.
        step(&mut session, &mut media, endpoint.as_mut(), t0 + FRAME_DURATION * n);
        // Connection side: everything released goes to the socket.
        send_released(&script, &mut out, rate);
        // Processor events are rare and leave on the connection side, which may allocate.
        while let Some(event) = conn.events_out.try_pop() {
            match event {
                Event::Dtmf { .. } => dtmf_events += 1,
                Event::Speech(Speech::Started { .. }) => {
                    SPEECH_EVENTS.with(|n| n.set(n.get() + 1));
                }
                _ => {}
            }
        }
    };
    for n in 0..400 {
        tick(n);
    }
    let allocations = allocations_during(|| {
        for n in 400..10_400 {
            tick(n);
        }
    });
    (allocations, session.stats(), dtmf_events)
}

#[test]
fn the_echo_path_never_allocates() {
    for rate in SampleRate::ALL {
        let (allocations, stats) = steady_state_allocations(rate, vec![Box::new(Echo::new(0).unwrap())]);
        assert_eq!(allocations, 0, "{rate}");
        assert!(stats.frames_released >= 10_000, "{stats:?}");
        let (allocations, stats) = steady_state_allocations(rate, vec![Box::new(Echo::new(120).unwrap())]);
        assert_eq!(allocations, 0, "{rate} delayed");
        assert!(stats.frames_released >= 9_900, "{stats:?}");
    }
}

#[test]
fn a_call_on_a_clean_network_never_grows_its_buffers() {
    // What a call starts with is what a clean network needs (docs/media.md, "Memory per
    // call"): each frame on time, one per visit, the echo released and written in the visit.
    // From its first frame on, such a call allocates nothing at all.
    for rate in SampleRate::ALL {
        let call = CallInfo { id: "a".into(), path: "/echo".into(), metadata: Metadata::new(rate) };
        let services = callpipe::services::Services::new();
        let stages: Vec<Box<dyn Processor>> = vec![Box::new(Echo::new(0).unwrap())];
        let mut session = Session::new(rate, &call, Pipeline::new(stages), SessionConfig::default(), &services).unwrap();
        let (_conn, mut media) = call_rings();
        let script = Script::with_capacity(16 * 1024);
        let mut endpoint = script.endpoint();
        let frame: Vec<u8> = (0..rate.frame_bytes()).map(|i| i as u8).collect();
        let mut out = [0u8; MAX_FRAME_BYTES];
        let t0 = Instant::now();
        let allocations = allocations_during(|| {
            for n in 0..3000 {
                script.deliver(&frame);
                step(&mut session, &mut media, endpoint.as_mut(), t0 + FRAME_DURATION * n);
                send_released(&script, &mut out, rate);
            }
        });
        assert_eq!(allocations, 0, "{rate}");
        assert!(session.stats().frames_released >= 2990, "{:?}", session.stats());
    }
}

#[test]
fn clear_notify_mixing_and_events_never_allocate() {
    for rate in SampleRate::ALL {
        let stages: Vec<Box<dyn Processor>> = vec![Box::new(Echo::new(0).unwrap()), Box::new(Busy)];
        let (allocations, stats) = steady_state_allocations(rate, stages);
        assert_eq!(allocations, 0, "{rate}");
        assert!(stats.clears >= 100 && stats.notifies >= 100, "the traffic really ran: {stats:?}");
    }
}

/// The caller keying "1234567890*#ABCD" over and over (60 ms tones at -12 dBFS per tone, 60 ms
/// gaps), as little-endian frames.
fn keying(rate: SampleRate) -> Vec<Vec<u8>> {
    let fs = f64::from(rate.hz());
    let amplitude = 32_767.0 * 10f64.powf(-12.0 / 20.0);
    let tone = (0.06 * fs) as usize;
    let mut samples: Vec<i16> = Vec::new();
    for c in "1234567890*#ABCD".chars() {
        let i = DtmfDigit::ALL.iter().position(|d| d.as_char() == c).unwrap();
        let (low, high) = ([697.0, 770.0, 852.0, 941.0][i / 4], [1209.0, 1336.0, 1477.0, 1633.0][i % 4]);
        samples.extend((0..tone).map(|n| {
            let t = n as f64 / fs;
            (amplitude * ((TAU * low * t).sin() + (TAU * high * t).sin())) as i16
        }));
        samples.extend(std::iter::repeat_n(0, tone));
    }
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    bytes.chunks_exact(rate.frame_bytes()).map(<[u8]>::to_vec).collect()
}

#[test]
fn dtmf_detection_merging_and_muting_never_allocate() {
    for rate in SampleRate::ALL {
        for mute in [false, true] {
            let detect = DtmfDetect::new(DtmfDetectConfig { mute, ..DtmfDetectConfig::default() }).unwrap();
            let stages: Vec<Box<dyn Processor>> = vec![Box::new(detect), Box::new(Echo::new(0).unwrap())];
            // Frames one sample short now and then keep the samples aligned (odd cuts would not).
            let (allocations, stats, keys) = steady_state_allocations_with(rate, stages, &keying(rate), 2);
            assert_eq!(allocations, 0, "{rate} mute {mute}");
            // 200 s of keying at 16 keys per 1.92 s, and a platform 1 every 97 ticks.
            assert!(keys >= 1_600, "{rate}: the detector really ran: {keys} keys");
            assert!(stats.frames_released >= 10_000, "{stats:?}");
        }
    }
}

#[test]
fn dtmf_sending_never_allocates() {
    for rate in SampleRate::ALL {
        // 64 keys of 1.5 s with 2 s gaps: the sequence (and its one "dtmf:sent" event) outlasts
        // the 200 s measured.
        let config = DtmfSendConfig { digits: "1234567890*#ABCD".repeat(4), tone_ms: 1_500, gap_ms: 2_000, ..DtmfSendConfig::default() };
        let stages: Vec<Box<dyn Processor>> = vec![Box::new(DtmfSend::new(config).unwrap()), Box::new(Echo::new(0).unwrap())];
        let (allocations, stats) = steady_state_allocations(rate, stages);
        assert_eq!(allocations, 0, "{rate}");
        assert!(stats.frames_released >= 10_000, "{stats:?}");
    }
}

/// Writes a 0.25 s 16-bit mono WAV file at 11,025 Hz (resampled to every call rate).
fn quarter_second_wav(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("callpipe-no-alloc-play-{}-{name}.wav", std::process::id()));
    let spec = hound::WavSpec { channels: 1, sample_rate: 11_025, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut writer = hound::WavWriter::create(&path, spec).unwrap();
    for i in 0..2_756 {
        writer.write_sample(((i * 37) % 20_000 - 10_000) as i16).unwrap();
    }
    writer.finalize().unwrap();
    path
}

#[test]
fn playing_a_file_never_allocates() {
    // The file played forever (frames that span the loop point every 12.5 passes), mixed with
    // the echo. With barge-in, the platform's DTMF at tick 0 stops playback (its "stream:done"
    // event, which the player builds when it is armed, falls in the unmeasured first 200
    // ticks) and the later keys reach a stopped player; the barge-in itself is measured below.
    let path = quarter_second_wav("steady");
    for rate in SampleRate::ALL {
        for barge_in in [BargeInMode::Off, BargeInMode::Both] {
            let config = PlayConfig { loops: 0, barge_in, level_db: -3.0, ..PlayConfig::new(&path) };
            let stages: Vec<Box<dyn Processor>> = vec![Box::new(Play::new(config).unwrap()), Box::new(Echo::new(0).unwrap())];
            let (allocations, stats) = steady_state_allocations(rate, stages);
            assert_eq!(allocations, 0, "{rate} barge_in {barge_in:?}");
            assert!(stats.frames_released >= 10_000, "{stats:?}");
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// Requests for a processor driven by hand, as a session's are after a processor's first
/// emitted event: the list of a pass's events starts empty and is made at that event (a call
/// without events carries none), before the passes these tests count.
fn requests_after_an_event(rate: SampleRate, queue_capacity: usize) -> callpipe::processor::Requests {
    let mut requests = callpipe::processor::Requests::new(queue_capacity);
    let frame = rate.frame_samples();
    let (mut input, mut output) = (vec![0i16; frame], vec![0i16; frame]);
    let mut cx = Context::new(Instant::now(), 0, rate, &mut input, true, &mut output, &mut requests);
    cx.emit(Event::Dtmf {
        digit: DtmfDigit::Digit(0),
        start_ms: None,
        duration_ms: None,
        source: callpipe::processor::DtmfSource::Platform,
    });
    requests.reset(queue_capacity);
    requests
}

#[test]
fn finishing_and_barging_in_never_allocate_in_the_player() {
    // The player alone, driven pass by pass: playing to the end and a DTMF barge-in (with its
    // clear) only move the prebuilt "stream:done" events into the pass's bounded buffers.
    let path = quarter_second_wav("paths");
    for rate in SampleRate::ALL {
        let call = CallInfo { id: "a".into(), path: "/play".into(), metadata: Metadata::new(rate) };
        let n = rate.frame_samples();
        for barge_in in [BargeInMode::Off, BargeInMode::Dtmf] {
            let mut play = Play::new(PlayConfig { loops: 2, barge_in, ..PlayConfig::new(&path) }).unwrap();
            let services = callpipe::services::Services::new();
            play.prepare(&callpipe::processor::Setup { rate, call: &call, services: &services }).unwrap();
            let mut requests = requests_after_an_event(rate, n * 4);
            let (mut input, mut output) = (vec![0i16; n], vec![0i16; n]);
            let key = Event::Dtmf {
                digit: DtmfDigit::Digit(1),
                start_ms: None,
                duration_ms: None,
                source: callpipe::processor::DtmfSource::Inband,
            };
            let mut written = [false; 40];
            let allocations = allocations_during(|| {
                for (pass, written) in written.iter_mut().enumerate() {
                    output.fill(0);
                    let mut cx = Context::new(Instant::now(), pass as u64, rate, &mut input, true, &mut output, &mut requests);
                    if pass == 20 {
                        play.handle_event(&key, &mut cx);
                    }
                    play.process(&mut cx);
                    *written = cx.output_written();
                }
            });
            assert_eq!(allocations, 0, "{rate} barge_in {barge_in:?}");
            // Two plays of 0.25 s end in pass 24 (or 25 after resampling); a barge-in at pass 20.
            let last = written.iter().rposition(|w| *w).unwrap();
            if barge_in != BargeInMode::Off {
                assert_eq!(last, 19, "{rate}");
            } else {
                assert!((24..=25).contains(&last), "{rate}: {last}");
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// The speech fixture at `rate`, with a second of silence after it, as the caller's frames.
fn speech_frames(rate: SampleRate) -> Vec<Vec<u8>> {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/speech-en-16k.wav");
    let mut speech = callpipe::audio::load_wav(&fixture, rate).unwrap();
    speech.resize(speech.len().next_multiple_of(rate.frame_samples()) + rate.hz() as usize, 0);
    speech.chunks(rate.frame_samples()).map(|f| f.iter().flat_map(|s| s.to_le_bytes()).collect()).collect()
}

#[test]
fn speech_detection_noise_suppression_and_input_never_allocate() {
    // The caller speaks a sentence over and over (a speech:started every 5 s or so), cleaned by
    // `denoise` before `vad` hears it; `input` collects the platform's keys (a collection of 3
    // ends every 291 ticks, a new one starts on the next 1); a prompt stops at the first speech.
    let path = quarter_second_wav("voice");
    for rate in SampleRate::ALL {
        SPEECH_EVENTS.with(|n| n.set(0));
        let input = InputConfig { max_digits: 3, on_digit: Some(DtmfDigit::Digit(1)), ..InputConfig::default() };
        let play = PlayConfig { loops: 0, barge_in: BargeInMode::Speech, ..PlayConfig::new(&path) };
        let stages: Vec<Box<dyn Processor>> = vec![
            Box::new(Denoise::new(DenoiseConfig::default()).unwrap()),
            Box::new(Vad::new(VadConfig::default()).unwrap()),
            Box::new(Input::new(input).unwrap()),
            Box::new(Play::new(play).unwrap()),
            Box::new(Echo::new(0).unwrap()),
        ];
        // Whole frames only: `cut` 0 keeps the speech intact.
        let (allocations, stats, _) = steady_state_allocations_with(rate, stages, &speech_frames(rate), 0);
        assert_eq!(allocations, 0, "{rate}");
        assert!(stats.frames_released >= 10_000, "{stats:?}");
        let starts = SPEECH_EVENTS.with(std::cell::Cell::get);
        assert!(starts >= 30, "{rate}: the detector really ran: {starts} speech:started");
    }
    let _ = std::fs::remove_file(&path);
}

#[cfg(feature = "tts")]
#[test]
fn talking_never_allocates_on_the_media_thread() {
    // The synthesis thread allocates on its own thread; the media thread reads the published
    // chunks. Looping forever, the talk is still being synthesized during the first passes.
    for rate in SampleRate::ALL {
        let talk = TalkConfig { loops: 0, ..TalkConfig::new("Your call is important to us. Please hold. ".repeat(3)) };
        let stages: Vec<Box<dyn Processor>> = vec![Box::new(Talk::new(talk).unwrap()), Box::new(Echo::new(0).unwrap())];
        let (allocations, stats) = steady_state_allocations(rate, stages);
        assert_eq!(allocations, 0, "{rate}");
        assert!(stats.frames_released >= 10_000, "{stats:?}");
    }
}

#[test]
fn recording_never_allocates_on_the_media_thread() {
    // The writer thread allocates and writes on its own thread, which this per-thread counter
    // does not watch; the media thread only copies into the ring. The "recording" event of the
    // first pass (and the writer's start) fall in the unmeasured first 200 ticks. With the `opus`
    // feature, Opus too: the encoder runs on the writer thread.
    let formats: &[RecordFormat] = if cfg!(feature = "opus") { &[RecordFormat::Wav, RecordFormat::Opus] } else { &[RecordFormat::Wav] };
    for (rate, format) in SampleRate::ALL.into_iter().flat_map(|rate| formats.iter().map(move |format| (rate, *format))) {
        for channels in [RecordChannels::Stereo, RecordChannels::Mixed, RecordChannels::Caller] {
            let name = format!("{}-{rate}-{}-{}", std::process::id(), channels.as_str(), format.as_str());
            let dir = std::env::temp_dir().join(format!("callpipe-no-alloc-{name}"));
            let template = format!("{{call_id}}.{}", format.as_str());
            let config = RecordConfig { template, channels, format, ..RecordConfig::new(dir.clone()) };
            let mut record = Record::new(config).unwrap();
            let outcomes = record.outcomes().unwrap();
            let stages: Vec<Box<dyn Processor>> = vec![Box::new(Echo::new(0).unwrap()), Box::new(record)];
            let (allocations, stats) = steady_state_allocations(rate, stages);
            assert_eq!(allocations, 0, "{rate} {channels:?} {format:?}");
            assert!(stats.frames_released >= 10_000, "{stats:?}");
            // The session (and with it the recorder) is gone: the writer finalizes the file.
            let outcome = outcomes.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
            assert_eq!(outcome.error, None);
            assert!(outcome.samples > 0, "{outcome:?}");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

#[test]
fn the_counter_sees_allocations() {
    // The test above would pass vacuously if the allocator were not counting.
    assert!(allocations_during(|| drop(std::hint::black_box(vec![1u8; 64]))) >= 1);
}

#[test]
fn processors_at_another_rate_never_allocate() {
    for rate in SampleRate::ALL {
        for inner in SampleRate::ALL.into_iter().filter(|r| *r != rate) {
            let stages: Vec<Box<dyn Processor>> =
                vec![Box::new(DtmfDetect::new(DtmfDetectConfig::default()).unwrap()), Box::new(Echo::new(0).unwrap()), Box::new(Busy)];
            let stages: Vec<Box<dyn Processor>> = vec![Box::new(Resample::new(inner, Pipeline::new(stages)))];
            let (allocations, stats, keys) = steady_state_allocations_with(rate, stages, &keying(rate), 2);
            assert_eq!(allocations, 0, "{rate} inside {inner}");
            assert!(keys >= 1_600, "{rate} inside {inner}: the detector heard the keys through the resampler: {keys} keys");
            assert!(stats.clears >= 100 && stats.notifies >= 100, "clear and notify passed out: {stats:?}");
        }
    }
}

#[test]
fn control_commands_never_allocate_on_the_media_thread() {
    use callpipe::session::{Control, SharedAudio};
    for rate in SampleRate::ALL {
        let call = CallInfo { id: "c".into(), path: "/echo".into(), metadata: Metadata::new(rate) };
        let config = SessionConfig::default();
        let services = callpipe::services::Services::new();
        let mut session = Session::new(rate, &call, Pipeline::new(vec![Box::new(Echo::new(0).unwrap())]), config, &services).unwrap();
        let (mut conn, mut media) = call_rings();
        let script = Script::with_capacity(16 * 1024);
        let mut endpoint = script.endpoint();
        // The audio is made before, and kept here, as the connection task keeps it: the media
        // thread only ever drops a second reference.
        let stream: SharedAudio = (0..rate.frame_samples() as i16 * 7).collect::<Vec<i16>>().into();
        let tones: SharedAudio = callpipe::processor::render_dtmf("1#", rate, 100, 100).unwrap().into();
        let frame: Vec<u8> = (0..rate.frame_bytes()).map(|i| i as u8).collect();
        let mut out = [0u8; MAX_FRAME_BYTES];
        let t0 = Instant::now();
        let mut events = 0;
        let mut tick = |n: u32| {
            script.deliver(&frame);
            let command = match n % 450 / 50 {
                0 => Control::Stream { id: u64::from(n), audio: stream.clone(), loops: 3, gain: 0.5, barge_in: BargeInMode::Both },
                1 => Control::Mute(true),
                2 => Control::Mute(false),
                3 => Control::Dtmf { audio: tones.clone() },
                4 => Control::Earmuff(true),
                5 => Control::Earmuff(false),
                6 => Control::Notify { marker: callpipe::call::Marker(1 << 63 | u64::from(n)) },
                7 => Control::Clear,
                _ => Control::StopStream,
            };
            if n.is_multiple_of(50) {
                assert!(conn.control_in.try_push(command).is_ok());
            }
            if n % 450 == 310 {
                // The platform reports the notify played, as it does once it reaches it.
                script.deliver_event(InboundEvent::NotifyPlayed { marker: callpipe::call::Marker(1 << 63 | u64::from(n - 10)) });
            }
            step(&mut session, &mut media, endpoint.as_mut(), t0 + FRAME_DURATION * n);
            send_released(&script, &mut out, rate);
            while conn.events_out.try_pop().is_some() {
                events += 1;
            }
        };
        for n in 0..450 {
            tick(n);
        }
        let allocations = allocations_during(|| {
            for n in 450..10_350 {
                tick(n);
            }
        });
        assert_eq!(allocations, 0, "{rate}");
        assert!(events >= 22, "every stream ended and was reported: {events}");
    }
}

#[test]
fn forking_never_allocates_on_the_media_thread() {
    // A target that accepts TCP (the kernel's backlog) and never answers the upgrade: the fork's
    // task waits on its own runtime, the ring fills, frames are dropped and counted, and the
    // task's `fork:overrun` event is moved into `emit`. Only `process` and `handle_event` are
    // measured, pass by pass: the reset that drops the emitted event happens outside (the
    // session's whole path, events included, is measured with a live target further down).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let cases = [
        (SampleRate::Hz8000, 16000, ForkSend::Caller),
        (SampleRate::Hz16000, 16000, ForkSend::Caller),
        (SampleRate::Hz24000, 48000, ForkSend::Caller),
        (SampleRate::Hz8000, 16000, ForkSend::Both),
        (SampleRate::Hz16000, 16000, ForkSend::Both),
    ];
    for (rate, fork_rate, send) in cases {
        let config = ForkConfig {
            rate: Some(fork_rate),
            send,
            buffer_ms: 200,
            replies: ForkReplies::Commands,
            ..ForkConfig::new(format!("ws://{addr}/{{call_id}}"))
        };
        let mut fork = Fork::new(config).unwrap();
        let call = CallInfo { id: "a".into(), path: "/fork".into(), metadata: Metadata::new(rate) };
        let services = callpipe::services::Services::new();
        fork.prepare(&callpipe::processor::Setup { rate, call: &call, services: &services }).unwrap();
        let frame = rate.frame_samples();
        let mut requests = requests_after_an_event(rate, frame * 50);
        let (mut input, mut output) = (vec![0i16; frame], vec![0i16; frame]);
        let dtmf = Event::Dtmf {
            digit: DtmfDigit::Digit(5),
            start_ms: None,
            duration_ms: None,
            source: callpipe::processor::DtmfSource::Platform,
        };
        let t0 = Instant::now();
        let (mut allocations, mut emitted) = (0, 0);
        for n in 0..400u64 {
            for (i, s) in input.iter_mut().enumerate() {
                *s = ((n as usize * frame + i) % 200) as i16 * 100;
            }
            output.fill(0);
            requests.reset(frame * 50);
            let mut cx = Context::new(t0 + FRAME_DURATION * n as u32, n, rate, &mut input, true, &mut output, &mut requests);
            allocations += allocations_during(|| {
                if n % 50 == 0 {
                    fork.handle_event(&dtmf, &mut cx);
                }
                fork.process(&mut cx);
            });
            emitted += requests.events().len();
            // Passes take a few ms, not 20: the task sees the drops on its own clock.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(allocations, 0, "{rate} {send:?}");
        assert!(fork.dropped_frames() > 0, "the ring filled");
        assert!(emitted >= 1, "the overrun event was moved into emit");
        let mut cx = Context::new(t0, 400, rate, &mut input, false, &mut output, &mut requests);
        assert_eq!(allocations_during(|| fork.finish(&mut cx)), 0, "{rate}: finish only sets a flag");
    }
    drop(listener);
}

#[test]
fn a_forks_replies_never_allocate_on_the_media_thread() {
    // A live target (a plain thread): it sends a second of audio, a notify, then barges in and
    // sends more audio. The media side pops the reply ring, mixes, takes the commands and moves
    // the `fork:connected` event: measured pass by pass as above.
    use callpipe::processor::ForkReplies;
    use tokio_tungstenite::tungstenite::{self, Message};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let target = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut ws = tungstenite::accept(stream).unwrap();
        let audio = |n: i16| Message::binary((0..8000).flat_map(|i| ((i % 100) as i16 * n).to_le_bytes()).collect::<Vec<u8>>());
        ws.send(audio(50)).unwrap();
        ws.send(Message::text(r#"{"action":"notify","payload":1}"#)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        ws.send(Message::text(r#"{"action":"clear"}"#)).unwrap();
        ws.send(audio(-50)).unwrap();
        let _ = ws.get_mut().set_read_timeout(Some(std::time::Duration::from_secs(3)));
        while ws.read().is_ok() {}
    });
    let rate = SampleRate::Hz8000;
    let config = ForkConfig { replies: ForkReplies::Commands, ..ForkConfig::new(format!("ws://{addr}/bot")) };
    let mut fork = Fork::new(config).unwrap();
    let call = CallInfo { id: "a".into(), path: "/fork".into(), metadata: Metadata::new(rate) };
    let services = callpipe::services::Services::new();
    fork.prepare(&callpipe::processor::Setup { rate, call: &call, services: &services }).unwrap();
    let frame = rate.frame_samples();
    let mut requests = requests_after_an_event(rate, frame * 50);
    let (mut input, mut output) = (vec![0i16; frame], vec![0i16; frame]);
    let t0 = Instant::now();
    let (mut allocations, mut mixed, mut notifies, mut clears) = (0, 0, 0, 0);
    for n in 0..600u64 {
        output.fill(0);
        requests.reset(frame * 50);
        let mut cx = Context::new(t0 + FRAME_DURATION * n as u32, n, rate, &mut input, true, &mut output, &mut requests);
        allocations += allocations_during(|| fork.process(&mut cx));
        mixed += usize::from(cx.output_written());
        notifies += requests.notifies().len();
        clears += usize::from(requests.clear_requested());
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let mut cx = Context::new(t0, 600, rate, &mut input, false, &mut output, &mut requests);
    fork.finish(&mut cx);
    assert_eq!(allocations, 0);
    assert!(mixed >= 50, "reply audio was mixed in {mixed} passes");
    assert_eq!((notifies, clears), (1, 1));
    drop(fork);
    target.join().unwrap();
}

#[test]
fn conference_mixing_never_allocates_on_the_media_thread() {
    use callpipe::processor::{Conference, ConferenceConfig, ConferenceSettings, Conferences, Mixer};
    // Members at every rate in a 16 kHz conference with the AGC on, one muted; the mixer and
    // every member's pass run as the media thread runs them.
    let hub = Conferences::new();
    let settings = ConferenceSettings { agc: true, ..ConferenceSettings::default() };
    let mut mixer: Option<Mixer> = None;
    let mut calls = Vec::new();
    let mut memberships = Vec::new();
    for (i, rate) in SampleRate::ALL.into_iter().chain(SampleRate::ALL).enumerate() {
        let call = CallInfo { id: format!("m{i}").into(), path: "/conf".into(), metadata: Metadata::new(rate) };
        let config = ConferenceConfig { settings: settings.clone(), ..ConferenceConfig::new("no-alloc") };
        let stages: Vec<Box<dyn Processor>> = vec![Box::new(Conference::new(config).unwrap())];
        let services = callpipe::services::Services::new();
        let mut session = Session::new(rate, &call, Pipeline::new(stages), SessionConfig::default(), &services).unwrap();
        let join = session.take_conference_joins().pop().unwrap();
        let (admitted, membership) = hub.admit(join, None, std::time::SystemTime::now()).unwrap();
        mixer.get_or_insert_with(|| Mixer::new(admitted.conference.clone(), admitted.mixed)).add(admitted.member);
        let (conn, media) = call_rings();
        let script = Script::with_capacity(16 * 1024);
        let endpoint = script.endpoint();
        let frame: Vec<u8> = (0..rate.frame_bytes()).map(|b| (b * 37 + i) as u8).collect();
        calls.push((session, conn, media, rate, frame, script, endpoint));
        memberships.push(membership);
    }
    memberships[1].member.set_muted(true);
    let mut mixer = mixer.unwrap();
    let mut out = [0u8; MAX_FRAME_BYTES];
    let t0 = Instant::now();
    let mut tick = |n: u32| {
        mixer.mix();
        for (session, conn, media, rate, frame, script, endpoint) in &mut calls {
            script.deliver(frame);
            step(session, media, endpoint.as_mut(), t0 + FRAME_DURATION * n);
            send_released(script, &mut out, *rate);
            while conn.events_out.try_pop().is_some() {}
        }
    };
    for n in 0..200 {
        tick(n);
    }
    let allocations = allocations_during(|| {
        for n in 200..5_200 {
            tick(n);
        }
    });
    assert_eq!(allocations, 0);
    for m in &memberships {
        let m = &m.member;
        assert_eq!(m.missing_down.load(std::sync::atomic::Ordering::Relaxed), 0, "{}", m.call_id);
    }
}

/// A target on a plain thread that sends `{"transcript":...}` text replies every 20 ms (50 a
/// second) for `seconds`, then reads until the fork closes.
fn chatty_target(listener: std::net::TcpListener, seconds: u32) -> std::thread::JoinHandle<u32> {
    use tokio_tungstenite::tungstenite::{self, Message};
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut ws = tungstenite::accept(stream).unwrap();
        let replies = seconds * 50;
        for n in 0..replies {
            ws.send(Message::text(format!(r#"{{"transcript":"word {n}","final":false}}"#))).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = ws.get_mut().set_read_timeout(Some(std::time::Duration::from_secs(3)));
        while ws.read().is_ok() {}
        replies
    })
}

#[test]
fn a_forks_text_replies_pass_through_the_session_without_allocating() {
    // The whole media-thread step (rings in, one tick, rings out) with a fork whose live target
    // sends 50 text replies a second: each becomes a `fork:message` event, made on the fork's
    // task, moved through the reply ring, `emit`, the session (to the other processors, then
    // out) and the event ring. The media thread neither allocates nor frees: it lets go of each
    // event before the connection side takes it, which drops it (outside the count, as the
    // connection task would). Also with the fork inside a `resample` wrapper, which clones each
    // event (a reference count) for the inner processors.
    for wrapped in [false, true] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let config = ForkConfig::new(format!("ws://{}/stt", listener.local_addr().unwrap()));
        let target = chatty_target(listener, 4);
        let rate = SampleRate::Hz8000;
        let fork: Box<dyn Processor> = Box::new(Fork::new(config).unwrap());
        let stages: Vec<Box<dyn Processor>> = if wrapped {
            vec![Box::new(Echo::new(0).unwrap()), Box::new(Resample::new(SampleRate::Hz16000, Pipeline::new(vec![fork])))]
        } else {
            vec![Box::new(Echo::new(0).unwrap()), fork]
        };
        let call = CallInfo { id: "a".into(), path: "/fork".into(), metadata: Metadata::new(rate) };
        let config = SessionConfig::default();
        let services = callpipe::services::Services::new();
        let mut session = Session::new(rate, &call, Pipeline::new(stages), config, &services).unwrap();
        let (mut conn, mut media) = call_rings();
        let script = Script::with_capacity(16 * 1024);
        let mut endpoint = script.endpoint();
        let frame: Vec<u8> = (0..rate.frame_bytes()).map(|i| i as u8).collect();
        let mut out = [0u8; MAX_FRAME_BYTES];
        let t0 = Instant::now();
        let (mut allocations, mut messages) = (0, 0);
        // 5 s of ticks, 10 ms apart in real time: the replies arrive between them. The session's
        // event lists start empty, make room for a few at the first event and grow once more,
        // at the first pass with more events than they hold (crate::bounded): a 200 ms hold-up in the warm-up brings about ten replies to
        // one pass, as a busy machine would, so that their growth comes before the count.
        for n in 0..500u32 {
            if n == 10 {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            script.deliver(&frame);
            let measured = allocations_during(|| {
                step(&mut session, &mut media, endpoint.as_mut(), t0 + FRAME_DURATION * n);
            });
            if n >= 25 {
                allocations += measured;
            }
            send_released(&script, &mut out, rate);
            while let Some(event) = conn.events_out.try_pop() {
                if let Event::Custom { name: "fork:message", data } = &event {
                    assert_eq!(data["fork"], "127.0.0.1");
                    messages += 1;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(allocations, 0, "wrapped in resample: {wrapped}");
        assert_eq!(session.stats().dropped_requests, 0, "{:?}", session.stats());
        drop(session);
        let sent = target.join().unwrap();
        assert!(messages >= 150 && messages <= sent, "wrapped {wrapped}: {messages} of {sent} replies came out as events");
    }
}
