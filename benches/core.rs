//! Criterion benchmarks of callpipe's per-frame hot paths.
//!
//! Every benchmark reports the cost of one 20 ms frame: one iteration is one frame (or one
//! parsed text message). Run with `cargo bench --bench core`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use callpipe::processor::{CallInfo, Echo, Pipeline, Processor};
use callpipe::protocol::{FRAME_DURATION, MAX_FRAME_BYTES, Metadata, PlatformEvent, SampleRate};
use callpipe::session::{Session, SessionConfig, Transmit};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringbuf::{HeapRb, traits::*};

/// The documented metadata frame (PROTOCOL.md section 2).
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
    match Session::new(rate, &call_info(rate), Pipeline::new(stages), SessionConfig::default()) {
        Ok(session) => session,
        Err(err) => panic!("session: {err}"),
    }
}

/// The media thread's per-frame work: caller audio in, one tick, everything released drained.
/// Returns the number of audio frames released.
#[inline(always)]
fn echo_frame(session: &mut Session, frame: &[u8], now: Instant, out: &mut [u8; MAX_FRAME_BYTES]) -> usize {
    session.handle_audio(frame);
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

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_parse, bench_ring, bench_echo_pipeline, bench_echo_pipeline_delayed
}
criterion_main!(benches);
