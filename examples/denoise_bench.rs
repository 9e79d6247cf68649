//! Measures the `denoise` processor at 8 and 16 kHz: how much it improves the SNR of speech in
//! white, pink and babble noise at 0, 5 and 10 dB, how far it lowers the noise floor in pauses,
//! its delay (measured against the one it reports), its cost per 20 ms pass, and whether a pass
//! allocates.
//!
//! ```sh
//! cargo run --release --example denoise_bench                 # real speech if espeak-ng is installed
//! cargo run --release --example denoise_bench -- --synthetic  # synthetic voiced speech only
//! ```
//!
//! Speech is English sentences spoken by `/usr/bin/espeak-ng` (`-v en-gb`), 600 ms apart, when
//! it exists, and otherwise (or with `--synthetic`) a voice-like synthetic signal: syllables of
//! voiced speech, a gliding pitch around 130 Hz whose harmonics are shaped by vowel formants.
//! Babble is six other talkers at once (espeak-ng voices or synthetic ones), pink noise white
//! noise through a -3 dB/octave filter.
//!
//! The figures, for each noise and input SNR:
//!
//! * SNR is active-speech power (20 ms frames within 40 dB of the loudest) over the power of the
//!   error, `output − reference`, over the whole signal. The reference is the clean speech
//!   through the same processor with `level = 0`: delayed exactly as the denoised output is, and
//!   through the same resamplers, so neither a misalignment nor their band limit counts as
//!   noise. The input's SNR is measured the same way (the noisy input with `level = 0`).
//! * segSNR is the mean over active frames of each 20 ms frame's SNR, clamped to −10..35 dB.
//! * The noise drop is how much quieter the pauses between sentences are after denoising, their
//!   first and last 100 ms left out.
//!
//! The cost is the time of each `process` call (one pass: resampling up, two RNNoise frames,
//! resampling down) on this machine: the median and 99th percentile over every pass of every run,
//! the lowest of the runs' medians (the least disturbed by other work on the machine), and the
//! median of the resampling alone.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use callpipe::processor::testkit::signal::{Rng, syllables};
use callpipe::processor::{CallInfo, Context, Denoise, DenoiseConfig, Processor, Requests, Setup};
use callpipe::protocol::{Metadata, SampleRate};
use callpipe::resample::Resampler;
use callpipe::services::Services;

/// Counts allocations, frees and reallocations (and the bytes allocated) while `WATCHING`.
struct Counting;

static WATCHING: AtomicBool = AtomicBool::new(false);
static CALLS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to the system allocator unchanged; counting has no effect on
// the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if WATCHING.load(Ordering::Relaxed) {
            CALLS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if WATCHING.load(Ordering::Relaxed) {
            CALLS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if WATCHING.load(Ordering::Relaxed) {
            CALLS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(new_size, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocator calls and bytes allocated (by any thread) while `f` runs.
fn allocations_during<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let (calls, bytes) = (CALLS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
    WATCHING.store(true, Ordering::SeqCst);
    let t = f();
    WATCHING.store(false, Ordering::SeqCst);
    (t, CALLS.load(Ordering::SeqCst) - calls, BYTES.load(Ordering::SeqCst) - bytes)
}

const ESPEAK: &str = "/usr/bin/espeak-ng";

const SENTENCES: [&str; 6] = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
];

const BABBLE: [(&str, &str); 6] = [
    ("en-us", "Four hours of steady work faced us, and the box was thrown beside the parked truck."),
    ("en-gb+f2", "A large size in stockings is hard to sell, and the boy was there when the sun rose."),
    ("en-gb-x-rp+m3", "The hogs were fed chopped corn and garbage, and a rod is used to catch pink salmon."),
    ("en-us+f4", "The source of the huge river is the clear spring, kick the ball straight and follow through."),
    ("en-gb-scotland", "Help the woman get back to her feet, a pot of tea helps to pass the evening."),
    ("en-us+m7", "Smoky fires lack flame and heat, the soft cushion broke the man's fall."),
];

/// Pause between sentences.
const PAUSE_MS: usize = 600;

/// `text` spoken by espeak-ng with `voice`, at `rate`.
fn espeak(voice: &str, text: &str, rate: SampleRate) -> Vec<f64> {
    let path = std::env::temp_dir().join(format!("callpipe-denoise-bench-{}.wav", std::process::id()));
    let status = std::process::Command::new(ESPEAK).args(["-v", voice, "-w"]).arg(&path).arg(text).status().expect("run espeak-ng");
    assert!(status.success(), "espeak-ng failed");
    let samples = callpipe::audio::load_wav(&path, rate).expect("read espeak-ng's WAV");
    let _ = std::fs::remove_file(&path);
    samples.into_iter().map(f64::from).collect()
}

/// Sentences `PAUSE_MS` apart, with a pause before the first and after the last; and where
/// the pauses are.
fn join(sentences: Vec<Vec<f64>>, rate: SampleRate) -> (Vec<f64>, Vec<(usize, usize)>) {
    let pause = PAUSE_MS * rate.hz() as usize / 1000;
    let (mut out, mut pauses) = (vec![0.0; pause], vec![(0, pause)]);
    for s in sentences {
        // Trim the synthesizer's own leading and trailing silence.
        let first = s.iter().position(|x| x.abs() > 30.0).unwrap_or(0);
        let last = s.iter().rposition(|x| x.abs() > 30.0).map_or(0, |i| i + 1);
        out.extend_from_slice(&s[first..last.max(first)]);
        pauses.push((out.len(), out.len() + pause));
        out.resize(out.len() + pause, 0.0);
    }
    (out, pauses)
}

/// Scales `x` so that its active speech has RMS `target`.
fn normalize(x: &mut [f64], target: f64, frame: usize) {
    let level = active_rms(x, frame);
    x.iter_mut().for_each(|v| *v *= target / level);
}

/// Which of `x`'s frames are active speech: within 40 dB of the loudest.
fn active(x: &[f64], frame: usize) -> Vec<bool> {
    let energies: Vec<f64> = x.chunks(frame).map(|c| c.iter().map(|v| v * v).sum::<f64>()).collect();
    let max = energies.iter().copied().fold(0.0, f64::max);
    energies.iter().map(|&e| e > max * 1e-4).collect()
}

fn active_rms(x: &[f64], frame: usize) -> f64 {
    let flags = active(x, frame);
    let (sum, n) = x
        .chunks(frame)
        .zip(&flags)
        .filter(|(_, a)| **a)
        .fold((0.0, 0), |(s, n), (c, _)| (s + c.iter().map(|v| v * v).sum::<f64>(), n + c.len()));
    (sum / n as f64).sqrt()
}

fn db(power_ratio: f64) -> f64 {
    10.0 * power_ratio.log10()
}

/// Noise of `kind` at `rate`, `len` samples, unit-ish scale.
fn noise(kind: &str, len: usize, rate: SampleRate, babble: &[f64], rng: &mut Rng) -> Vec<f64> {
    match kind {
        "white" => (0..len).map(|_| rng.gauss()).collect(),
        "pink" => {
            // Paul Kellet's filter: -3 dB/octave within 0.5 dB over the audio band.
            let mut b = [0.0f64; 7];
            (0..len)
                .map(|_| {
                    let w = rng.gauss();
                    b[0] = 0.99886 * b[0] + w * 0.0555179;
                    b[1] = 0.99332 * b[1] + w * 0.0750759;
                    b[2] = 0.96900 * b[2] + w * 0.1538520;
                    b[3] = 0.86650 * b[3] + w * 0.3104856;
                    b[4] = 0.55000 * b[4] + w * 0.5329522;
                    b[5] = -0.7616 * b[5] - w * 0.0168980;
                    let y = b[..6].iter().sum::<f64>() + b[6] + w * 0.5362;
                    b[6] = w * 0.115926;
                    y
                })
                .collect()
        }
        _ => {
            // The babble track, looped from a random point.
            let start = (rng.uniform() * babble.len() as f64) as usize;
            let _ = rate;
            (0..len).map(|i| babble[(start + i) % babble.len()]).collect()
        }
    }
}

/// Runs `audio` through a prepared `denoise` with `level`, one `process` per 20 ms frame, and
/// returns the output and each pass's duration.
fn run(rate: SampleRate, level: f64, audio: &[f64]) -> (Vec<i16>, Vec<Duration>) {
    let mut denoise = prepared(rate, level);
    let n = rate.frame_samples();
    let mut requests = Requests::new(n * 10);
    let (mut input, mut output) = (vec![0i16; n], vec![0i16; n]);
    let mut out = Vec::with_capacity(audio.len().next_multiple_of(n));
    let mut times = Vec::with_capacity(audio.len() / n + 1);
    for (position, chunk) in audio.chunks(n).enumerate() {
        input.fill(0);
        for (s, &x) in input.iter_mut().zip(chunk) {
            *s = x.round().clamp(-32768.0, 32767.0) as i16;
        }
        let mut cx = Context::new(Instant::now(), position as u64, rate, &mut input, true, &mut output, &mut requests);
        let start = Instant::now();
        denoise.process(&mut cx);
        times.push(start.elapsed());
        out.extend_from_slice(&input);
    }
    out.truncate(audio.len());
    (out, times)
}

fn prepared(rate: SampleRate, level: f64) -> Denoise {
    let mut denoise = Denoise::new(DenoiseConfig { level }).unwrap();
    let call = CallInfo { id: "bench".into(), path: "/bench".into(), metadata: Metadata::new(rate) };
    denoise.prepare(&Setup { rate, call: &call, services: &Services::new() }).unwrap();
    denoise
}

/// SNR and segmental SNR of `y` against `reference`, over `flags`' active frames.
fn snr(reference: &[i16], y: &[i16], flags: &[bool], frame: usize) -> (f64, f64) {
    let (mut speech, mut error, mut seg, mut frames) = (0.0, 0.0, 0.0, 0usize);
    for ((r, y), &a) in reference.chunks(frame).zip(y.chunks(frame)).zip(flags) {
        let s: f64 = r.iter().map(|&v| f64::from(v).powi(2)).sum();
        let e: f64 = r.iter().zip(y).map(|(&r, &y)| (f64::from(y) - f64::from(r)).powi(2)).sum();
        error += e;
        if a {
            speech += s;
            frames += 1;
            seg += db(s / e.max(1e-9)).clamp(-10.0, 35.0);
        }
    }
    let active_samples = (frames * frame) as f64;
    (db((speech / active_samples) / (error / reference.len() as f64)), seg / frames as f64)
}

/// The lag of `y` behind `x` where they correlate best, to a fraction of a sample (a parabola
/// through the peak), searched from 0 to `max` samples.
fn lag(x: &[f64], y: &[i16], max: usize) -> f64 {
    let c: Vec<f64> = (0..=max).map(|lag| x.iter().zip(&y[lag..]).map(|(a, &b)| a * f64::from(b)).sum()).collect();
    let k = (1..max).max_by(|&a, &b| c[a].total_cmp(&c[b])).unwrap();
    let (a, b, d) = (c[k - 1], c[k], c[k + 1]);
    k as f64 + 0.5 * (a - d) / (a - 2.0 * b + d)
}

/// The median time of a pass's resampling alone, up to 48 kHz and back, over 2000 passes.
fn resampling_cost(rate: SampleRate) -> f64 {
    let mut up = Resampler::new(rate.hz(), 48_000).unwrap();
    let mut down = Resampler::new(48_000, rate.hz()).unwrap();
    let mut rng = Rng(5);
    let input: Vec<i16> = (0..rate.frame_samples()).map(|_| (1000.0 * rng.gauss()) as i16).collect();
    let (mut wide, mut out) = (vec![0i16; 960], vec![0i16; rate.frame_samples()]);
    let mut times: Vec<Duration> = (0..2000)
        .map(|_| {
            let start = Instant::now();
            up.process(std::hint::black_box(&input), &mut wide);
            down.process(&wide, &mut out);
            start.elapsed()
        })
        .collect();
    median(&mut times, 0.5)
}

fn median(times: &mut [Duration], q: f64) -> f64 {
    times.sort_unstable();
    times[((times.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6
}

fn main() {
    let synthetic_only = std::env::args().any(|a| a == "--synthetic");
    let real = !synthetic_only && std::path::Path::new(ESPEAK).exists();
    let source = if real { "espeak-ng en-gb" } else { "synthetic voiced speech" };
    println!("Command: cargo run --release --example denoise_bench{}", if synthetic_only { " -- --synthetic" } else { "" });
    println!("Speech: {source}; noise-only pauses of {PAUSE_MS} ms between sentences.\n");

    let mut table = Vec::new();
    let mut costs = Vec::new();
    let mut delays = Vec::new();
    for rate in [SampleRate::Hz8000, SampleRate::Hz16000] {
        let frame = rate.frame_samples();
        let mut rng = Rng(0x5eed_0000 + u64::from(rate.hz()));
        let sentences: Vec<Vec<f64>> = if real {
            SENTENCES.iter().map(|s| espeak("en-gb", s, rate)).collect()
        } else {
            (0..SENTENCES.len()).map(|_| syllables(rate.hz(), 8, 130.0, &mut rng)).collect()
        };
        let (mut clean, pauses) = join(sentences, rate);
        normalize(&mut clean, 2000.0, frame);
        let flags = active(&clean, frame);
        let mut babble = vec![0.0f64; 0];
        for (i, (voice, text)) in BABBLE.iter().enumerate() {
            let talker = if real {
                espeak(voice, text, rate)
            } else {
                (0..4).flat_map(|_| syllables(rate.hz(), 10, 100.0 + 25.0 * i as f64, &mut rng)).collect()
            };
            if babble.len() < talker.len() {
                babble.resize(talker.len(), 0.0);
            }
            babble.iter_mut().zip(&talker).for_each(|(b, t)| *b += t);
        }

        // The reference: clean speech through the same chain, not denoised.
        let (reference, _) = run(rate, 0.0, &clean);
        let (denoised_clean, _) = run(rate, 1.0, &clean);
        let reported = prepared(rate, 1.0).delay().as_secs_f64() * 1000.0;
        let max_lag = 3 * frame / 2;
        let measured = lag(&clean, &denoised_clean, max_lag) * 1000.0 / f64::from(rate.hz());
        let bypass = lag(&clean, &reference, max_lag) * 1000.0 / f64::from(rate.hz());
        delays.push((rate, reported, measured, bypass));
        let (clean_snr, _) = snr(&reference, &denoised_clean, &flags, frame);

        let (mut times, mut run_medians) = (Vec::new(), Vec::new());
        for kind in ["white", "pink", "babble"] {
            for snr_in in [0.0, 5.0, 10.0] {
                let raw = noise(kind, clean.len(), rate, &babble, &mut rng);
                let scale = active_rms(&clean, frame)
                    / (raw.iter().map(|v| v * v).sum::<f64>() / raw.len() as f64).sqrt()
                    / 10f64.powf(snr_in / 20.0);
                let noisy: Vec<f64> = clean.iter().zip(&raw).map(|(s, n)| s + scale * n).collect();
                let (passed, _) = run(rate, 0.0, &noisy);
                let (denoised, t) = run(rate, 1.0, &noisy);
                let mut t = t;
                run_medians.push(median(&mut t, 0.5));
                times.extend(t);
                let (snr_before, seg_before) = snr(&reference, &passed, &flags, frame);
                let (snr_after, seg_after) = snr(&reference, &denoised, &flags, frame);
                let d = (reported * f64::from(rate.hz()) / 1000.0).round() as usize;
                let margin = rate.hz() as usize / 10;
                let floor = |x: &[i16]| {
                    let (sum, n) =
                        pauses[1..].iter().filter(|&&(a, b)| b + d <= x.len() && b - a > 2 * margin).fold((0.0, 0), |(s, n), &(a, b)| {
                            let w = &x[a + d + margin..b + d - margin];
                            (s + w.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>(), n + w.len())
                        });
                    sum / n as f64
                };
                let drop = db(floor(&passed) / floor(&denoised));
                table.push(format!(
                    "| {} kHz | {kind} | {snr_in:.0} dB | {snr_before:.1} → {snr_after:.1} dB | **{:+.1} dB** | {seg_before:.1} → {seg_after:.1} dB | **{:+.1} dB** | {drop:.1} dB |",
                    rate.hz() / 1000,
                    snr_after - snr_before,
                    seg_after - seg_before
                ));
            }
        }
        run_medians.sort_by(f64::total_cmp);
        costs.push((
            rate,
            median(&mut times, 0.5),
            median(&mut times, 0.99),
            run_medians[0],
            resampling_cost(rate),
            times.len(),
            clean_snr,
        ));
    }
    // The cost at 24 kHz too, on pink noise.
    {
        let rate = SampleRate::Hz24000;
        let mut rng = Rng(24);
        let audio: Vec<f64> = noise("pink", rate.hz() as usize * 20, rate, &[], &mut rng).iter().map(|v| 1000.0 * v).collect();
        let mut run_medians: Vec<f64> = audio.chunks(audio.len() / 5).map(|part| median(&mut run(rate, 1.0, part).1, 0.5)).collect();
        run_medians.sort_by(f64::total_cmp);
        let (_, mut times) = run(rate, 1.0, &audio);
        costs.push((rate, median(&mut times, 0.5), median(&mut times, 0.99), run_medians[0], resampling_cost(rate), times.len(), f64::NAN));
    }

    println!("| rate | noise | input SNR | SNR | ΔSNR | segSNR | ΔsegSNR | noise drop in pauses |");
    println!("|---|---|---|---|---|---|---|---|");
    table.iter().for_each(|row| println!("{row}"));
    println!(
        "\n| rate | delay reported | delay measured (cross-correlation) | cost per 20 ms pass: median | p99 | fastest run's median | of which resampling | passes timed | clean speech SNR after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (rate, median, p99, best, resampling, n, clean) in &costs {
        let delay = delays.iter().find(|d| d.0 == *rate);
        let (reported, measured) = match delay {
            Some((_, r, m, _)) => (format!("{r:.3} ms"), format!("{m:.3} ms")),
            None => (format!("{:.3} ms", prepared(*rate, 1.0).delay().as_secs_f64() * 1000.0), "–".into()),
        };
        let clean = if clean.is_nan() { "–".to_owned() } else { format!("{clean:.1} dB") };
        println!(
            "| {} kHz | {reported} | {measured} | {median:.0} µs | {p99:.0} µs | {best:.0} µs | {resampling:.0} µs | {n} | {clean} |",
            rate.hz() / 1000
        );
    }
    for (rate, _, _, bypass) in &delays {
        println!("\n{rate}: with level = 0 (resamplers and the aligned original only) the audio is {bypass:.3} ms late.");
    }

    // Allocations: a steady-state pass, and a new thread's first pass with and without priming.
    let rate = SampleRate::Hz16000;
    let mut denoise = prepared(rate, 1.0);
    let mut requests = Requests::new(3200);
    let (mut input, mut output) = (vec![1000i16; 320], vec![0i16; 320]);
    let ((), steady, _) = allocations_during(|| {
        for position in 0..500 {
            input.iter_mut().enumerate().for_each(|(i, s)| *s = ((i * 7919 + position * 31) % 2000) as i16 - 1000);
            let mut cx = Context::new(Instant::now(), position as u64, rate, &mut input, true, &mut output, &mut requests);
            denoise.process(&mut cx);
        }
    });
    println!("\nAllocator calls in 500 passes on the thread that prepared the processor: {steady}");
    let mut first_pass = |prime: bool| {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    if prime {
                        Denoise::prime_thread();
                    }
                    let mut cx = Context::new(Instant::now(), 0, rate, &mut input, true, &mut output, &mut requests);
                    let ((), calls, bytes) = allocations_during(|| denoise.process(&mut cx));
                    (calls, bytes)
                })
                .join()
                .unwrap()
        })
    };
    let (calls, bytes) = first_pass(false);
    println!("A new thread's first pass: {calls} allocator calls, {bytes} bytes (RNNoise's thread-local FFT plans and scratch)");
    let (calls, bytes) = first_pass(true);
    println!("A new thread's first pass after Denoise::prime_thread(): {calls} allocator calls, {bytes} bytes");
}
