//! Criterion benchmarks of callpipe's per-frame hot paths.
//!
//! Every benchmark reports the cost of one 20 ms frame: one iteration is one frame (or one
//! parsed text message). Run with `cargo bench --bench core`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use callpipe::processor::{
    CallInfo, Conference, ConferenceConfig, ConferenceSettings, Conferences, Context, DtmfDetect, DtmfDetectConfig, Echo, Mixer, Pipeline,
    Processor, Record, RecordChannels, RecordConfig, Requests, Setup, TIMING_INTERVAL,
};
use callpipe::protocol::{FRAME_DURATION, MAX_FRAME_BYTES, Metadata, PlatformEvent, SampleRate};
use callpipe::resample::Resampler;
use callpipe::session::{Session, SessionConfig, Transmit};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringbuf::{HeapRb, traits::*};

/// The documented metadata frame (docs/protocol.md section 2).
const METADATA: &str = r#"{"event":"websocket:connected","content-type":"audio/l16;rate=16000","caller":"447700900123","lang":"en-GB"}"#;

/// A platform DTMF event.
const DTMF: &str = r#"{"event":"websocket:dtmf","digit":"5","duration":260}"#;

/// Frames of inbound ring capacity, as the default `SessionConfig::inbound_buffer_frames`.
const RING_FRAMES: usize = 16;

/// Frames run before measuring, so that delay lines and the pacer are in their steady state.
const PRE_ROLL_FRAMES: u32 = 50;

/// One frame of non-silent L16 audio at `rate`: a ramp, little-endian.
fn frame_bytes(rate: SampleRate) -> Vec<u8> {
    (0..rate.frame_samples()).flat_map(|i| ((i as i16).wrapping_mul(97)).to_le_bytes()).collect()
}

fn call_info(rate: SampleRate) -> CallInfo {
    CallInfo { id: "bench".into(), path: "/echo".into(), metadata: Metadata::new(rate) }
}

/// An echo session at `rate`, built as the echo route builds it.
fn echo_session(rate: SampleRate, delay_ms: u32) -> Session {
    let echo = match Echo::new(delay_ms) {
        Ok(echo) => echo,
        Err(err) => panic!("echo processor: {err}"),
    };
    let stages: Vec<Box<dyn Processor>> = vec![Box::new(echo)];
    let services = callpipe::services::Services::new();
    match Session::new(rate, &call_info(rate), Pipeline::new(stages), SessionConfig::default(), &services) {
        Ok(session) => session,
        Err(err) => panic!("session: {err}"),
    }
}

/// The media thread's per-frame work: caller audio in, one tick, everything released drained.
/// Returns the number of audio frames released.
#[inline(always)]
fn echo_frame(session: &mut Session, frame: &[u8], now: Instant, out: &mut [u8; MAX_FRAME_BYTES]) -> usize {
    session.handle_audio(frame, now);
    session.handle_tick(now);
    let mut frames = 0;
    while let Some(transmit) = session.poll_transmit(out) {
        if let Transmit::Audio { .. } = transmit {
            frames += 1;
        }
        black_box(transmit);
    }
    black_box(&out[..]);
    frames
}

fn bench_parse(c: &mut Criterion) {
    c.bench_function("metadata_parse", |b| b.iter(|| black_box(Metadata::parse(black_box(METADATA)))));
    c.bench_function("platform_event_parse", |b| b.iter(|| black_box(PlatformEvent::parse(black_box(DTMF)))));
}

fn bench_ring(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_push_pop");
    group.throughput(Throughput::Elements(1));
    for rate in SampleRate::ALL {
        let frame = frame_bytes(rate);
        let (mut prod, mut cons) = HeapRb::<u8>::new(rate.frame_bytes() * RING_FRAMES).split();
        let mut popped = [0u8; 2 * MAX_FRAME_BYTES];
        group.bench_with_input(BenchmarkId::from_parameter(rate.hz()), &frame, |b, frame| {
            b.iter(|| {
                let pushed = prod.push_slice(black_box(frame));
                let n = cons.pop_slice(&mut popped);
                debug_assert_eq!((pushed, n), (frame.len(), frame.len()));
                black_box((pushed, &popped[..n]));
            })
        });
    }
    group.finish();
}

fn bench_echo(c: &mut Criterion, name: &str, rates: &[SampleRate], delay_ms: u32) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    for &rate in rates {
        let frame = frame_bytes(rate);
        let mut session = echo_session(rate, delay_ms);
        let mut out = [0u8; MAX_FRAME_BYTES];
        let mut now = Instant::now();
        let mut released = 0;
        for _ in 0..PRE_ROLL_FRAMES {
            released = echo_frame(&mut session, &frame, now, &mut out);
            now += FRAME_DURATION;
        }
        assert_eq!(released, 1, "{name}/{}: the pre-rolled session releases one frame per tick", rate.hz());
        let before = session.stats();
        group.bench_with_input(BenchmarkId::from_parameter(rate.hz()), &frame, |b, frame| {
            b.iter(|| {
                let released = echo_frame(&mut session, frame, now, &mut out);
                now += FRAME_DURATION;
                released
            })
        });
        let stats = session.stats();
        assert_eq!(
            stats.frames_released - before.frames_released,
            stats.passes - before.passes,
            "{name}/{}: one frame out per frame in",
            rate.hz()
        );
        assert_eq!((stats.dropped_in, stats.dropped_out, stats.input_missing), (0, 0, 0), "{name}/{}: {stats:?}", rate.hz());
    }
    group.finish();
}

fn bench_echo_pipeline(c: &mut Criterion) {
    bench_echo(c, "echo_pipeline", &SampleRate::ALL, 0);
}

fn bench_echo_pipeline_delayed(c: &mut Criterion) {
    bench_echo(c, "echo_pipeline_delayed", &[SampleRate::Hz16000], 200);
}

/// The per-stage timing's cost: one 16 kHz media-thread frame (as `echo_pipeline`) through an
/// echo pipeline and a `dtmf_detect` + echo pipeline fed speech-like audio, with timing off,
/// on every pass, and on one pass in [`TIMING_INTERVAL`] (the default). The difference from
/// `off`, divided by the stages, is the timing's cost per stage per pass.
fn bench_pipeline_timing(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline_timing");
    group.throughput(Throughput::Elements(1));
    let rate = SampleRate::Hz16000;
    let audio: Vec<u8> = speech_like(rate, 2).iter().flat_map(|s| s.to_le_bytes()).collect();
    let frames: Vec<&[u8]> = audio.chunks_exact(rate.frame_bytes()).collect();
    let default = format!("1in{TIMING_INTERVAL}");
    for (route, detect) in [("echo", false), ("dtmf_echo", true)] {
        for (setting, interval) in [("off", 0), ("every", 1), (default.as_str(), TIMING_INTERVAL)] {
            let mut stages: Vec<Box<dyn Processor>> = Vec::new();
            if detect {
                match DtmfDetect::new(DtmfDetectConfig::default()) {
                    Ok(detector) => stages.push(Box::new(detector)),
                    Err(err) => panic!("dtmf_detect: {err}"),
                }
            }
            match Echo::new(0) {
                Ok(echo) => stages.push(Box::new(echo)),
                Err(err) => panic!("echo: {err}"),
            }
            let mut pipeline = Pipeline::new(stages);
            pipeline.set_timing_interval(interval);
            let services = callpipe::services::Services::new();
            let mut session = match Session::new(rate, &call_info(rate), pipeline, SessionConfig::default(), &services) {
                Ok(session) => session,
                Err(err) => panic!("session: {err}"),
            };
            let mut out = [0u8; MAX_FRAME_BYTES];
            let mut now = Instant::now();
            let mut n = 0usize;
            for _ in 0..PRE_ROLL_FRAMES {
                echo_frame(&mut session, frames[n % frames.len()], now, &mut out);
                n += 1;
                now += FRAME_DURATION;
            }
            group.bench_function(BenchmarkId::new(route, setting), |b| {
                b.iter(|| {
                    let released = echo_frame(&mut session, frames[n % frames.len()], now, &mut out);
                    n += 1;
                    now += FRAME_DURATION;
                    released
                })
            });
            let stats = session.stats();
            assert_eq!((stats.dropped_in, stats.dropped_out, stats.input_missing), (0, 0, 0), "{route}/{setting}: {stats:?}");
        }
    }
    group.finish();
}

/// `seconds` of speech-like noise at `rate`: a jittered 120 Hz pulse train and white noise through
/// two formant resonators (500 and 1500 Hz) that move every 150 ms, at about -20 dBFS. Not a
/// tone: the detector's usual input.
fn speech_like(rate: SampleRate, seconds: u32) -> Vec<i16> {
    let fs = f64::from(rate.hz());
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let mut resonators = [(0.0f64, 0.0f64); 2];
    let mut out = Vec::new();
    for i in 0..(seconds * rate.hz()) as usize {
        let segment = (i as f64 / fs / 0.15) as usize;
        let formants = [500.0 + 60.0 * (segment % 5) as f64, 1500.0 - 90.0 * (segment % 7) as f64];
        let pulse = if i % (fs / 120.0) as usize == 0 { 40.0 } else { 0.0 };
        let mut x = pulse + noise();
        let mut y = 0.0;
        for ((y1, y2), hz) in resonators.iter_mut().zip(formants) {
            let r = (-std::f64::consts::PI * 100.0 / fs).exp();
            let v = (1.0 - r) * x + 2.0 * r * (std::f64::consts::TAU * hz / fs).cos() * *y1 - r * r * *y2;
            (*y2, *y1) = (*y1, v);
            y += v;
        }
        x = y;
        out.push((x * 3000.0).clamp(-32768.0, 32767.0) as i16);
    }
    out
}

/// `seconds` of the key 5 (770 and 1336 Hz at -10 dBFS each): the detector's dearest input,
/// every window of which runs every check.
fn key_five(rate: SampleRate, seconds: u32) -> Vec<i16> {
    let fs = f64::from(rate.hz());
    let amplitude = 32_767.0 * 10f64.powf(-0.5);
    (0..(seconds * rate.hz()) as usize)
        .map(|i| {
            let t = i as f64 / fs;
            let tau = std::f64::consts::TAU;
            (amplitude * ((tau * 770.0 * t).sin() + (tau * 1336.0 * t).sin())) as i16
        })
        .collect()
}

fn bench_dtmf_detect(c: &mut Criterion) {
    bench_detector(c, "dtmf_detect", speech_like);
    bench_detector(c, "dtmf_detect_key", key_five);
}

/// `dtmf_detect`'s `process` on 20 ms frames of `audio`, one frame per iteration.
fn bench_detector(c: &mut Criterion, name: &str, audio: fn(SampleRate, u32) -> Vec<i16>) {
    let make = || -> Box<dyn Processor> {
        match DtmfDetect::new(DtmfDetectConfig::default()) {
            Ok(detector) => Box::new(detector),
            Err(err) => panic!("dtmf_detect: {err}"),
        }
    };
    bench_stage(c, name, make, |rate| audio(rate, 2));
}

/// The speech fixture (4 s of espeak-ng speech) at `rate`, with a second of silence after it.
fn speech(rate: SampleRate) -> Vec<i16> {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/speech-en-16k.wav");
    let mut audio = match callpipe::audio::load_wav(&fixture, rate) {
        Ok(audio) => audio,
        Err(err) => panic!("{}: {err}", fixture.display()),
    };
    audio.resize(audio.len().next_multiple_of(rate.frame_samples()) + rate.hz() as usize, 0);
    audio
}

/// The voice processors on speech: `vad` (speech detection) and `denoise` (RNNoise between
/// the resamplers), one 20 ms frame per iteration.
fn bench_voice(c: &mut Criterion) {
    let vad = || -> Box<dyn Processor> {
        Box::new(callpipe::processor::Vad::new(callpipe::processor::VadConfig::default()).unwrap_or_else(|e| panic!("{e}")))
    };
    bench_stage(c, "vad", vad, speech);
    let denoise = || -> Box<dyn Processor> {
        Box::new(callpipe::processor::Denoise::new(callpipe::processor::DenoiseConfig::default()).unwrap_or_else(|e| panic!("{e}")))
    };
    bench_stage(c, "denoise", denoise, speech);
}

/// A processor's `process` on 20 ms frames of `audio`, one frame per iteration, at every rate.
fn bench_stage(c: &mut Criterion, name: &str, make: impl Fn() -> Box<dyn Processor>, audio: impl Fn(SampleRate) -> Vec<i16>) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    for rate in SampleRate::ALL {
        let mut stage = make();
        let call = call_info(rate);
        let services = callpipe::services::Services::new();
        if let Err(err) = stage.prepare(&Setup { rate, call: &call, services: &services }) {
            panic!("{name} prepare: {err}");
        }
        let audio = audio(rate);
        let mut frames: Vec<Vec<i16>> = audio.chunks_exact(rate.frame_samples()).map(<[i16]>::to_vec).collect();
        let mut output = vec![0i16; rate.frame_samples()];
        let mut requests = Requests::new(rate.frame_samples());
        let now = Instant::now();
        let mut position = 0u64;
        group.bench_function(BenchmarkId::from_parameter(rate.hz()), |b| {
            b.iter(|| {
                let n = frames.len();
                let input = &mut frames[position as usize % n];
                requests.reset(rate.frame_samples());
                let mut cx = Context::new(now, position, rate, input, true, &mut output, &mut requests);
                stage.process(black_box(&mut cx));
                position += 1;
            })
        });
    }
    group.finish();
}

/// Frames `record` gets in one timed run: under the ring's 100 frames (2 s).
const RECORD_CHUNK_FRAMES: u32 = 80;

/// `record`'s `process` (stereo, the default) on 20 ms frames: the reported time is per frame.
///
/// The writer thread empties the ring every 20 ms, far slower than a benchmark loop pushes. So
/// each criterion iteration times [`RECORD_CHUNK_FRAMES`] frames, reports their mean, then waits
/// (untimed) for the writer to drain: every timed push lands in the ring instead of taking the
/// cheaper ring-full path, which the final `dropped() == 0` check confirms. The waits make each
/// iteration take 45 ms of wall time, so this group takes few samples.
fn bench_record(c: &mut Criterion) {
    let mut group = c.benchmark_group("record_push");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20).warm_up_time(Duration::from_millis(1)).measurement_time(Duration::from_secs(1));
    let dir = std::env::temp_dir().join(format!("callpipe-bench-record-{}", std::process::id()));
    for rate in SampleRate::ALL {
        let config =
            RecordConfig { template: "{call_id}-{rate}.wav".into(), channels: RecordChannels::Stereo, ..RecordConfig::new(dir.clone()) };
        let mut record = match Record::new(config) {
            Ok(record) => record,
            Err(err) => panic!("record: {err}"),
        };
        let call = call_info(rate);
        let services = callpipe::services::Services::new();
        if let Err(err) = record.prepare(&Setup { rate, call: &call, services: &services }) {
            panic!("record prepare: {err}");
        }
        let mut input: Vec<i16> = (0..rate.frame_samples()).map(|i| (i as i16).wrapping_mul(97)).collect();
        let mut output = input.clone();
        let mut requests = Requests::new(rate.frame_samples());
        let now = Instant::now();
        let mut position = 0u64;
        group.bench_function(BenchmarkId::from_parameter(rate.hz()), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    for _ in 0..RECORD_CHUNK_FRAMES {
                        let mut cx = Context::new(now, position, rate, &mut input, true, &mut output, &mut requests);
                        record.process(black_box(&mut cx));
                        position += 1;
                    }
                    timed += started.elapsed() / RECORD_CHUNK_FRAMES;
                    std::thread::sleep(Duration::from_millis(45));
                }
                timed
            })
        });
        assert_eq!(record.dropped(), 0, "every timed push went into the ring");
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// [`Resampler::process`] on one 20 ms frame of speech-like audio: one conversion per iteration.
fn bench_resample(c: &mut Criterion) {
    let mut group = c.benchmark_group("resample");
    group.throughput(Throughput::Elements(1));
    for (from, to) in [(8000, 16000), (16000, 8000), (8000, 24000), (24000, 8000), (16000, 24000), (8000, 48000), (48000, 8000)] {
        let mut resampler = match Resampler::new(from, to) {
            Ok(resampler) => resampler,
            Err(err) => panic!("resampler: {err}"),
        };
        // 48 kHz is no call rate: speech-like audio made at 24 kHz serves (the cost does not
        // depend on the content).
        let audio = speech_like(SampleRate::from_hz(from).unwrap_or(SampleRate::Hz24000), 2);
        let frames: Vec<&[i16]> = audio.chunks_exact(resampler.input_frame_len()).collect();
        let mut output = vec![0i16; resampler.output_frame_len()];
        let mut position = 0usize;
        group.bench_function(BenchmarkId::from_parameter(format!("{}to{}", from / 1000, to / 1000)), |b| {
            b.iter(|| {
                resampler.process(black_box(frames[position % frames.len()]), &mut output);
                position += 1;
                black_box(&output);
            })
        });
    }
    group.finish();
}

/// One conference cycle: the mixer, then every member's pass (its `conference` processor, with
/// its resamplers), as the media thread runs them. One iteration is one 20 ms cycle of the whole
/// conference; divide by the member count for the cost per member per frame (criterion's
/// throughput, in members per second, is its inverse).
fn bench_conference(c: &mut Criterion) {
    let mut group = c.benchmark_group("conference");
    for members in [10usize, 100] {
        for (label, rates, agc) in [
            ("16k", &[SampleRate::Hz16000][..], false),
            ("16k_agc", &[SampleRate::Hz16000][..], true),
            ("mixed", &SampleRate::ALL[..], false),
            ("mixed_agc", &SampleRate::ALL[..], true),
        ] {
            group.throughput(Throughput::Elements(members as u64));
            let hub = Conferences::new();
            let name = format!("bench-{members}-{label}");
            let settings = ConferenceSettings { agc, max_members: members, ..ConferenceSettings::default() };
            let mut mixer: Option<Mixer> = None;
            let mut calls = Vec::new();
            let mut memberships = Vec::new();
            for i in 0..members {
                let rate = rates[i % rates.len()];
                let mut member =
                    match Conference::new(ConferenceConfig { settings: settings.clone(), ..ConferenceConfig::new(name.clone()) }) {
                        Ok(member) => member,
                        Err(err) => panic!("conference: {err}"),
                    };
                let call = CallInfo { id: format!("m{i}").into(), path: "/conf".into(), metadata: Metadata::new(rate) };
                let services = callpipe::services::Services::new();
                if let Err(err) = member.prepare(&Setup { rate, call: &call, services: &services }) {
                    panic!("prepare: {err}");
                }
                let Some(join) = member.take_conference_join() else { panic!("no join") };
                let (admitted, membership) = match hub.admit(join, None, std::time::SystemTime::now()) {
                    Ok(admitted) => admitted,
                    Err(err) => panic!("admit: {err}"),
                };
                mixer.get_or_insert_with(|| Mixer::new(admitted.conference.clone(), admitted.mixed)).add(admitted.member);
                memberships.push(membership);
                // Every member talks: speech-like audio, each from its own offset.
                let audio = speech_like(rate, 2);
                calls.push((member, rate, audio, i * 7, vec![0i16; rate.frame_samples()], vec![0i16; rate.frame_samples()]));
            }
            let Some(mut mixer) = mixer else { panic!("no members") };
            let mut requests = Requests::new(SampleRate::Hz24000.frame_samples());
            let now = Instant::now();
            let mut position = 0usize;
            group.bench_function(BenchmarkId::new(label, members), |b| {
                b.iter(|| {
                    mixer.mix();
                    for (member, rate, audio, offset, input, output) in &mut calls {
                        let n = rate.frame_samples();
                        let frames = audio.len() / n;
                        let at = (position + *offset) % frames * n;
                        input.copy_from_slice(&audio[at..at + n]);
                        output.fill(0);
                        let mut cx = Context::new(now, position as u64, *rate, input, true, output, &mut requests);
                        member.process(black_box(&mut cx));
                    }
                    position += 1;
                })
            });
        }
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_parse, bench_ring, bench_echo_pipeline, bench_echo_pipeline_delayed, bench_dtmf_detect, bench_voice, bench_record, bench_resample,
        bench_pipeline_timing, bench_conference
}
criterion_main!(benches);
