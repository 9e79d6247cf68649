//! The `denoise` processor: noise suppression of the caller's audio with RNNoise, for the
//! processors after it (a recorder, a fork to a speech recognizer, a conference).
//!
//! RNNoise (Valin, 2018) is a small recurrent network that estimates, every 10 ms, a gain for
//! each of 22 bands of a 48 kHz spectrum, plus a pitch comb filter for voiced speech; callpipe
//! runs the pure-Rust port, `nnnoiseless`. Each pass converts the caller's 20 ms frame to 48 kHz
//! with callpipe's own [`Resampler`] (960 samples), runs RNNoise on its two 480-sample frames,
//! and converts the result back into the caller's frame ([`Context::input_mut`]).
//!
//! # Guarantees
//!
//! * One frame out per frame in: every pass rewrites exactly the caller's frame, in place, so the
//!   call's audio keeps its length and its timing. A pass without caller audio (a pause) runs the
//!   filters on silence, so time stays continuous and speech that was still in the filters comes
//!   out, delayed like the rest.
//! * Silence stays silence: RNNoise leaves a silent frame untouched, and digital silence in
//!   comes out as digital silence once the filters have emptied.
//! * `level` blends the denoised audio with the original, aligned to it (the original is delayed
//!   inside the chain by RNNoise's own delay, so the blend does not comb-filter): 1 (the
//!   default) is denoised only, 0 the original through the same resamplers, 0.5 suppresses the
//!   noise by at most about 6 dB.
//! * [`Processor::prepare`] allocates everything: the RNNoise state (about 20 kB, boxed), the two
//!   resamplers, the scratch buffers. [`Processor::process`] allocates, frees and locks nothing,
//!   with one caveat, RNNoise's FFTs: `nnnoiseless` runs them through `easyfft`, which keeps its
//!   FFT plans and scratch buffers in thread-locals, built on a thread's first FFT and kept for
//!   the thread's life. `prepare` builds them for the thread it runs on; a media thread builds
//!   them on its first `denoise` pass (50 allocator calls, 23 kB, once per thread, never freed
//!   or rebuilt) unless it called [`Denoise::prime_thread`] when it started. After that each FFT
//!   costs two thread-local map lookups and an `Arc` clone and drop (atomic counts, no lock),
//!   and a pass allocates nothing (the bench counts it).
//!
//! # Delay
//!
//! [`Processor::delay`] is the sum of three parts: the resampler up to 48 kHz, RNNoise's own
//! 10 ms, and the resampler back. RNNoise analyses a 20 ms window every 10 ms and rebuilds its
//! output by overlap-adding the windows, so each output frame completes the window that began
//! one frame (480 samples at 48 kHz, 10 ms) earlier: that is its whole delay (its high-pass
//! filter, which only removes what is below a few tens of Hz, adds nothing measurable). The
//! resamplers' filters are linear-phase, so the sum holds at every frequency. Cross-correlating
//! the input and output of speech puts the peak within 2 µs of the reported delay at 8 and
//! 16 kHz (the unit test `delay_is_what_the_audio_shows` checks it to 1 ms):
//!
//! | call rate | to 48 kHz | RNNoise | back | reported | measured |
//! |---|---|---|---|---|---|
//! | 8 kHz | 1.865 ms | 10 ms | 1.865 ms | 13.729 ms | 13.728 ms |
//! | 16 kHz | 0.927 ms | 10 ms | 0.927 ms | 11.854 ms | 11.852 ms |
//! | 24 kHz | 0.615 ms | 10 ms | 0.615 ms | 11.229 ms | – |
//!
//! # Figures
//!
//! `cargo run --release --example denoise_bench` measures the SNR improvement on speech in noise,
//! the noise floor in pauses and the cost per pass; BENCHMARKS.md has its table. On English
//! sentences (espeak-ng) in white noise at 5 dB SNR, the SNR rises by 5.3 dB at 8 kHz and 6.0 dB
//! at 16 kHz (pink noise: 7.4 and 6.9 dB; more at 0 dB, less at 10 dB), and in white or pink
//! noise the pauses between sentences get 25 to 32 dB quieter. Babble, other voices, is speech
//! to RNNoise: it gains about 1 dB, and its pauses 1 to 3 dB. Clean speech comes out with a residual error 22 dB down (what RNNoise changes in
//! speech). A pass costs 140 to 190 µs (medians) on a busy 2-core x86-64 VM, at any rate,
//! RNNoise's two frames nearly all of it (the resampling is 17 to 29 µs): under 1 % of a core
//! per call.
//!
//! RNNoise was trained on full-band audio: at 8 kHz it sees only the bottom 4 kHz of its
//! spectrum, and still suppresses white and pink noise about as well as at 16 kHz.

use std::time::Duration;

use nnnoiseless::DenoiseState;

use super::{Context, Processor, ProcessorError, Setup};
use crate::resample::Resampler;

/// RNNoise's rate.
const RNNOISE_HZ: u32 = 48_000;

/// RNNoise's frame: 10 ms at 48 kHz.
const RNNOISE_FRAME: usize = DenoiseState::FRAME_SIZE;

/// One pass at 48 kHz: two RNNoise frames.
const PASS_48K: usize = 2 * RNNOISE_FRAME;

/// RNNoise's own delay: one frame.
const RNNOISE_DELAY: Duration = Duration::from_millis(10);

/// The `denoise` parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DenoiseConfig {
    /// How much of the denoised audio replaces the original, 0 to 1: the output is
    /// `level × denoised + (1 − level) × original`, the original delayed to match. 1 (the
    /// default) is fully denoised; 0 is the original, delayed and resampled but not denoised.
    pub level: f64,
}

impl Default for DenoiseConfig {
    fn default() -> DenoiseConfig {
        DenoiseConfig { level: 1.0 }
    }
}

/// Removes noise from the caller's audio with RNNoise; see `src/processor/denoise.rs`.
#[derive(Clone)]
pub struct Denoise {
    config: DenoiseConfig,
    /// Everything `prepare` builds.
    state: Option<Box<Prepared>>,
}

/// What `prepare` builds: the filters and their scratch space.
#[derive(Clone)]
struct Prepared {
    rnnoise: Box<DenoiseState<'static>>,
    up: Resampler,
    down: Resampler,
    /// The pass at 48 kHz, as samples for the resamplers.
    pcm: [i16; PASS_48K],
    /// The pass at 48 kHz, as RNNoise's input.
    input: [f32; PASS_48K],
    /// RNNoise's output.
    output: [f32; PASS_48K],
    /// The last RNNoise frame of the previous pass, the original to blend with (`level` < 1).
    dry: [f32; RNNOISE_FRAME],
    level: f32,
}

impl Denoise {
    /// A denoiser with `config`, checked here.
    pub fn new(config: DenoiseConfig) -> Result<Denoise, ProcessorError> {
        if !(0.0..=1.0).contains(&config.level) {
            return Err(ProcessorError::Config {
                processor: "denoise".into(),
                message: format!("level {} is not between 0 and 1", config.level),
            });
        }
        Ok(Denoise { config, state: None })
    }

    /// The configuration.
    pub fn config(&self) -> &DenoiseConfig {
        &self.config
    }

    /// Builds RNNoise's FFT plans and scratch buffers for the calling thread (see the module
    /// docs), so that the thread's first `denoise` pass allocates nothing. Allocates; call it
    /// once when a media thread starts. Calling it again costs one RNNoise frame and a
    /// throwaway RNNoise state.
    pub fn prime_thread() {
        let mut scratch = DenoiseState::new();
        let mut out = [0.0f32; RNNOISE_FRAME];
        scratch.process_frame(&mut out, &[0.0f32; RNNOISE_FRAME]);
    }

    /// The delay for a call at `hz`, or `None` if the resampler refuses the rate.
    fn delay_at(hz: u32) -> Option<Duration> {
        let up = Resampler::new(hz, RNNOISE_HZ).ok()?;
        let down = Resampler::new(RNNOISE_HZ, hz).ok()?;
        Some(up.delay() + RNNOISE_DELAY + down.delay())
    }
}

impl std::fmt::Debug for Denoise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Denoise").field("config", &self.config).field("prepared", &self.state.is_some()).finish()
    }
}

impl Processor for Denoise {
    fn name(&self) -> &'static str {
        "denoise"
    }

    fn prepare(&mut self, setup: &Setup<'_>) -> Result<(), ProcessorError> {
        let error = |e: crate::resample::ResampleError| ProcessorError::invalid("denoise", "", e);
        let hz = setup.rate.hz();
        let up = Resampler::new(hz, RNNOISE_HZ).map_err(error)?;
        let down = Resampler::new(RNNOISE_HZ, hz).map_err(error)?;
        Denoise::prime_thread();
        self.state = Some(Box::new(Prepared {
            rnnoise: DenoiseState::new(),
            up,
            down,
            pcm: [0; PASS_48K],
            input: [0.0; PASS_48K],
            output: [0.0; PASS_48K],
            dry: [0.0; RNNOISE_FRAME],
            level: self.config.level as f32,
        }));
        Ok(())
    }

    fn process(&mut self, cx: &mut Context<'_>) {
        let Some(p) = self.state.as_deref_mut() else { return };
        // A pause's input is silence: it goes through the same filters.
        p.up.process(cx.input(), &mut p.pcm);
        for (x, &s) in p.input.iter_mut().zip(&p.pcm) {
            *x = f32::from(s);
        }
        for (out, input) in p.output.chunks_exact_mut(RNNOISE_FRAME).zip(p.input.chunks_exact(RNNOISE_FRAME)) {
            p.rnnoise.process_frame(out, input);
        }
        if p.level < 1.0 {
            // The original, one RNNoise frame late like the output: the previous pass's last
            // frame, then this pass's first.
            let (wet, dry) = (p.level, 1.0 - p.level);
            let (first, second) = p.output.split_at_mut(RNNOISE_FRAME);
            for (y, &x) in first.iter_mut().zip(&p.dry) {
                *y = wet * *y + dry * x;
            }
            for (y, &x) in second.iter_mut().zip(&p.input[..RNNOISE_FRAME]) {
                *y = wet * *y + dry * x;
            }
            p.dry.copy_from_slice(&p.input[RNNOISE_FRAME..]);
        }
        for (s, &y) in p.pcm.iter_mut().zip(&p.output) {
            *s = y.round().clamp(-32768.0, 32767.0) as i16;
        }
        p.down.process(&p.pcm, cx.input_mut());
    }

    fn queues_output(&self) -> bool {
        false
    }

    fn delay(&self) -> Duration {
        match &self.state {
            Some(p) => p.up.delay() + RNNOISE_DELAY + p.down.delay(),
            // Not prepared yet: the rate is unknown; the narrowband figure, the largest.
            None => Denoise::delay_at(8000).unwrap_or(RNNOISE_DELAY),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::testkit::Harness;
    use crate::processor::testkit::signal::{Rng, syllables};
    use crate::protocol::SampleRate;

    /// Voice-like audio at `hz` ([`syllables`] around 130 Hz) in `words` runs of five
    /// syllables; `pause_ms` of silence before each run and after the last (to a whole 20 ms
    /// frame). Also returns where the pauses are, in samples.
    fn voice(hz: u32, words: usize, pause_ms: usize, seed: u64) -> (Vec<f64>, Vec<(usize, usize)>) {
        let pause = pause_ms * hz as usize / 1000;
        let mut rng = Rng(seed);
        let (mut out, mut pauses) = (Vec::new(), Vec::new());
        for _ in 0..words {
            pauses.push((out.len(), out.len() + pause));
            out.resize(out.len() + pause, 0.0);
            out.extend(syllables(hz, 5, 130.0, &mut rng));
        }
        pauses.push((out.len(), out.len() + pause));
        out.resize((out.len() + pause).next_multiple_of(hz as usize / 50), 0.0);
        (out, pauses)
    }

    fn rms(x: impl IntoIterator<Item = f64>) -> f64 {
        let (sum, n) = x.into_iter().fold((0.0, 0usize), |(s, n), v| (s + v * v, n + 1));
        (sum / n.max(1) as f64).sqrt()
    }

    fn db(ratio: f64) -> f64 {
        20.0 * ratio.log10()
    }

    /// `clean` plus white noise at `snr_db` (against the voiced parts' RMS), as samples.
    fn noisy(clean: &[f64], snr_db: f64, seed: u64) -> Vec<i16> {
        let voiced = rms(clean.iter().copied().filter(|x| x.abs() > 1.0));
        let sigma = voiced / 10f64.powf(snr_db / 20.0);
        let mut rng = Rng(seed);
        clean.iter().map(|&x| (x + sigma * rng.gauss()).round().clamp(-32768.0, 32767.0) as i16).collect()
    }

    fn run(config: DenoiseConfig, rate: SampleRate, audio: &[i16]) -> Harness<Denoise> {
        let mut h = Harness::new(Denoise::new(config).unwrap(), rate).unwrap();
        h.run(audio);
        h
    }

    /// The lag (in samples) at which `y` best matches `x`, from 0 to `max`.
    fn best_lag(x: &[f64], y: &[i16], max: usize) -> usize {
        (0..=max)
            .max_by(|&a, &b| {
                let c = |lag: usize| x.iter().zip(&y[lag..]).map(|(a, &b)| a * f64::from(b)).sum::<f64>();
                c(a).total_cmp(&c(b))
            })
            .unwrap()
    }

    #[test]
    fn suppresses_white_noise_and_keeps_the_voice() {
        // Measured: 25.9 dB at 8 kHz, 17.8 dB at 16 kHz; the voice 0.8 and 0.6 dB quieter.
        for (rate, min_drop) in [(SampleRate::Hz8000, 18.0), (SampleRate::Hz16000, 12.0)] {
            let (clean, pauses) = voice(rate.hz(), 2, 500, 7);
            let input = noisy(&clean, 5.0, 11);
            let h = run(DenoiseConfig::default(), rate, &input);
            assert_eq!(h.heard.len(), input.len(), "one frame out per frame in");
            let d = (h.processor.delay().as_secs_f64() * f64::from(rate.hz())).round() as usize;
            // The pauses after the first (RNNoise learns the noise in the first), less 100 ms at
            // each end.
            let margin = rate.frame_samples() * 5;
            let floor = |x: &[i16], shift: usize| {
                rms(pauses[1..]
                    .iter()
                    .flat_map(|&(a, b)| x[a + shift + margin..(b + shift - margin).min(x.len())].iter().map(|&s| f64::from(s))))
            };
            let drop = db(floor(&input, 0) / floor(&h.heard, d));
            assert!(drop >= min_drop, "{rate}: the noise floor dropped by {drop:.1} dB only");
            // Where the voice is, its level stays (the remaining noise included).
            let voiced =
                |x: &[i16], shift: usize| rms(clean.iter().zip(&x[shift..]).filter(|(c, _)| c.abs() > 1.0).map(|(_, &s)| f64::from(s)));
            let change = db(voiced(&h.heard, d) / rms(clean.iter().copied().filter(|c| c.abs() > 1.0)));
            assert!((-3.0..=1.0).contains(&change), "{rate}: the voice changed by {change:.1} dB");
        }
    }

    #[test]
    fn delay_is_what_the_audio_shows() {
        // Measured: the best whole-sample lag is 13.750 ms at 8 kHz (13.729 reported), 11.875 ms
        // at 16 kHz (11.854 reported).
        for rate in [SampleRate::Hz8000, SampleRate::Hz16000] {
            let (clean, _) = voice(rate.hz(), 1, 200, 3);
            let input: Vec<i16> = clean.iter().map(|&x| x.round() as i16).collect();
            let h = run(DenoiseConfig::default(), rate, &input);
            let reported = h.processor.delay().as_secs_f64() * 1000.0;
            let measured = best_lag(&clean, &h.heard, rate.frame_samples()) as f64 * 1000.0 / f64::from(rate.hz());
            assert!((reported - measured).abs() <= 1.0, "{rate}: reported {reported:.2} ms, measured {measured:.2} ms");
            assert!((11.0..=14.0).contains(&reported), "{rate}: {reported}");
        }
    }

    #[test]
    fn silence_stays_silence_and_a_pause_keeps_time() {
        let rate = SampleRate::Hz8000;
        let mut h = Harness::new(Denoise::new(DenoiseConfig::default()).unwrap(), rate).unwrap();
        h.silence(500);
        assert!(h.heard.iter().all(|&s| s == 0), "silence in, silence out");
        let (clean, _) = voice(rate.hz(), 1, 100, 5);
        let mut input: Vec<i16> = clean.iter().map(|&x| x.round() as i16).collect();
        input.truncate(input.len() / 160 * 160);
        let speech_end = h.heard.len() + input.iter().rposition(|&s| s != 0).unwrap();
        h.run(&input);
        // The platform pauses: the passes go on, and bring out what was still in the filters.
        h.pause(500);
        assert_eq!(h.heard.len(), (500 + 500) / 20 * 160 + input.len(), "one frame per pass");
        let tail = &h.heard[speech_end..];
        let d = (h.processor.delay().as_secs_f64() * 8000.0).round() as usize;
        assert!(tail[..d].iter().any(|&s| s.abs() > 100), "the delayed end of the voice comes out in the pause");
        let quiet = tail.iter().rposition(|&s| s != 0).unwrap();
        assert!(quiet < 2 * d, "then silence: the last non-zero sample is {quiet} samples after the voice");
    }

    #[test]
    fn level_blends_with_the_original_in_time() {
        let rate = SampleRate::Hz16000;
        let (clean, pauses) = voice(rate.hz(), 1, 500, 9);
        let input = noisy(&clean, 5.0, 13);
        let d = (Denoise::delay_at(rate.hz()).unwrap().as_secs_f64() * 16000.0).round() as usize;
        let (a, b) = pauses[1];
        let floor = |x: &[i16]| rms(x[a + d + 1600..b + d - 1600].iter().map(|&s| f64::from(s)));
        // Level 0: the original through the same resamplers, RNNoise's frame later: exactly.
        let bypass = run(DenoiseConfig { level: 0.0 }, rate, &input);
        let (mut up, mut down) = (Resampler::new(16000, RNNOISE_HZ).unwrap(), Resampler::new(RNNOISE_HZ, 16000).unwrap());
        let mut line = vec![0i16; RNNOISE_FRAME];
        let mut expected = Vec::new();
        for frame in input.chunks(320) {
            let mut pass = [0i16; PASS_48K];
            up.process(frame, &mut pass);
            line.extend_from_slice(&pass);
            let mut out = [0i16; 320];
            down.process(&line[..PASS_48K], &mut out);
            line.drain(..PASS_48K);
            expected.extend_from_slice(&out);
        }
        assert!(bypass.heard == expected, "level 0 is the original, delayed by RNNoise's frame");
        // Half and half: the noise is at most halved, 6 dB (measured 5.6), never cancelled or
        // doubled.
        let half = run(DenoiseConfig { level: 0.5 }, rate, &input);
        let drop = db(floor(&bypass.heard) / floor(&half.heard));
        assert!((4.0..=6.5).contains(&drop), "level 0.5 lowered the noise by {drop:.1} dB");
    }

    #[test]
    fn checks_its_level_and_describes_itself() {
        assert!(Denoise::new(DenoiseConfig { level: 1.5 }).is_err());
        assert!(Denoise::new(DenoiseConfig { level: -0.1 }).is_err());
        assert!(Denoise::new(DenoiseConfig { level: f64::NAN }).is_err());
        let denoise = Denoise::new(DenoiseConfig::default()).unwrap();
        assert_eq!(denoise.config().level, 1.0);
        assert_eq!(denoise.name(), "denoise");
        assert!(!denoise.queues_output());
        assert_eq!(denoise.timeline(), crate::processor::Timeline::Caller);
        for rate in SampleRate::ALL {
            let up = Resampler::new(rate.hz(), RNNOISE_HZ).unwrap().delay();
            let down = Resampler::new(RNNOISE_HZ, rate.hz()).unwrap().delay();
            println!("{rate}: up {up:?}, down {down:?}, total {:?}", Denoise::delay_at(rate.hz()).unwrap());
        }
    }
}
