//! Criterion benchmark of the `fork` processor's Opus encoding (the `opus` feature): the cost of
//! one 20 ms packet, as the fork's task pays it on the fork runtime (never the media thread),
//! at 8, 16, 24 and 48 kHz mono and 16 kHz stereo, at the fork's default bitrate (24 kb/s per
//! channel). One iteration encodes one frame of speech-like audio.
//!
//! Run with `cargo bench --features opus --bench fork_opus`.

use std::hint::black_box;
use std::time::Duration;

use callpipe::processor::{DEFAULT_FORK_OPUS_BITRATE_PER_CHANNEL, ForkOpusEncoder};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Two seconds of a voiced sound at `rate` Hz, `channels` interleaved: harmonics of a pitch
/// gliding between 100 and 160 Hz, shaped by two formants that move every 150 ms, plus a little
/// noise; the second channel is the first, delayed and softer. Encoders work harder on such a
/// signal than on silence or a pure tone.
fn voiced(rate: u32, channels: usize) -> Vec<i16> {
    let fs = f64::from(rate);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut noise = move || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) as f64 / f64::from(1u32 << 31) - 0.5
    };
    let n = 2 * rate as usize;
    let mut phase = 0.0f64;
    let mut mono = Vec::with_capacity(n);
    for i in 0..n {
        let t = i as f64 / fs;
        let pitch = 130.0 + 30.0 * (std::f64::consts::TAU * 0.7 * t).sin();
        phase += std::f64::consts::TAU * pitch / fs;
        let step = (t / 0.15) as usize;
        let (f1, f2) = (450.0 + 70.0 * (step % 4) as f64, 1300.0 + 150.0 * (step % 6) as f64);
        let mut x = 0.0;
        for k in 1..=30 {
            let hz = pitch * f64::from(k);
            if hz >= fs / 2.0 {
                break;
            }
            let gain = 1.0 / (1.0 + ((hz - f1) / 120.0).powi(2)) + 0.6 / (1.0 + ((hz - f2) / 180.0).powi(2));
            x += gain * (phase * f64::from(k)).sin();
        }
        mono.push(((x * 2500.0) + noise() * 300.0).clamp(-32768.0, 32767.0) as i16);
    }
    let delay = rate as usize / 1000;
    (0..n).flat_map(|i| (0..channels).map(move |c| if c == 0 { i } else { i.saturating_sub(delay) })).map(|i| mono[i]).collect()
}

fn bench_fork_opus(c: &mut Criterion) {
    let mut group = c.benchmark_group("fork_opus_encode");
    group.throughput(Throughput::Elements(1));
    for (rate, channels) in [(8000, 1), (16000, 1), (24000, 1), (48000, 1), (16000, 2)] {
        let bitrate = DEFAULT_FORK_OPUS_BITRATE_PER_CHANNEL * channels as u32;
        let mut encoder = match ForkOpusEncoder::new(rate, channels, 20, bitrate) {
            Ok(encoder) => encoder,
            Err(err) => panic!("encoder: {err}"),
        };
        let audio = voiced(rate, channels);
        let frames: Vec<&[i16]> = audio.chunks_exact(encoder.frame_len()).collect();
        let mut position = 0usize;
        let name = if channels == 2 { format!("stereo/{rate}") } else { format!("mono/{rate}") };
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let packet = match encoder.encode(black_box(frames[position % frames.len()])) {
                    Ok(packet) => packet.len(),
                    Err(err) => panic!("encode: {err}"),
                };
                position += 1;
                black_box(packet)
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_fork_opus
}
criterion_main!(benches);
