//! The `dtmf_send` processor: plays a sequence of DTMF keys to the caller (the Voice API's "send
//! DTMF"), mixed into the outbound audio.
//!
//! Each key is its two ITU-T Q.23 frequencies, both at `level_dbfs` (peak convention: 0 dBFS is
//! a full-scale sine; the default −10 dBFS per tone is about −6.9 dBm0 per tone, taking G.711's
//! 0 dBm0 as −3.14 dBFS), for `tone_ms`, then `gap_ms` of silence; the first key starts
//! `start_ms` after the call starts. The defaults, 50 ms tones and 50 ms gaps, clear ITU-T
//! Q.24's reception figures (tones ≥ 40 ms, pauses ≥ 40 ms) with margin. Each tone has 1 ms
//! raised-cosine edges inside `tone_ms` against clicks and splatter: it is at full level for
//! `tone_ms − 2 ms`, at or above half level for `tone_ms − 1 ms`.
//!
//! # Guarantees
//!
//! * Timing is sample-exact on the call's clock: key `i` starts at sample
//!   `start + i × (tone + gap)`, whichever frames carry it, and the sines are phase-continuous
//!   across frames: each key is an [`audio::DtmfTone`](crate::audio::DtmfTone) of `tone_ms`,
//!   made in [`Processor::prepare`] (two-term recurrences in `f64`, with its edges).
//! * Only frames that carry tone are written (`mix_output`), so the processor adds no outbound
//!   frames of silence; the tone is mixed with, not written over, what earlier processors sent.
//! * When the last tone has played, one [`Event::Custom`] `"dtmf:sent"` with
//!   `{"digits": "..."}` is emitted. It is built in `prepare`, and `emit` (and the session
//!   after it) only moves it. Nothing allocates after `prepare`.

use super::{Context, Event, Processor, ProcessorError, Setup};
use crate::audio::DtmfTone;
use crate::protocol::{DtmfDigit, SampleRate};

/// Renders `digits` as DTMF at `rate`, all at once: each key's tones for `tone_ms` (with the
/// same level and edges as [`DtmfSend`]), then `gap_ms` of silence. The control API's "send
/// DTMF" plays this buffer.
pub fn render_dtmf(digits: &str, rate: SampleRate, tone_ms: u32, gap_ms: u32) -> Result<Vec<i16>, ProcessorError> {
    // The sender checks the keys and the timing as `dtmf_send` would; the audio is the one
    // generator's.
    let sender = DtmfSend::new(DtmfSendConfig { digits: digits.to_owned(), tone_ms, gap_ms, ..DtmfSendConfig::default() })?;
    Ok(crate::audio::render_keys(&sender.keys, rate, tone_ms, gap_ms))
}

/// The most keys in one sequence.
pub const MAX_DIGITS: usize = crate::audio::MAX_KEYS;

/// A configuration error of `dtmf_send`.
fn config_error(message: String) -> ProcessorError {
    ProcessorError::Config { processor: "dtmf_send".into(), message }
}

/// The `dtmf_send` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct DtmfSendConfig {
    /// The keys, e.g. `"1234#"`: `0-9`, `*`, `#`, `A-D` (or `a-d`), at most 64.
    pub digits: String,
    /// Each tone's duration, 20 to 10,000 ms. Default 50.
    pub tone_ms: u32,
    /// The silence after each tone, 20 to 10,000 ms. Default 50.
    pub gap_ms: u32,
    /// Each tone's level in dBFS (peak), −60 to −6 (two tones at −6 dBFS just reach full
    /// scale). Default −10.
    pub level_dbfs: f64,
    /// When the first tone starts, in ms after the call starts, up to an hour. Default 0.
    pub start_ms: u32,
}

impl Default for DtmfSendConfig {
    fn default() -> DtmfSendConfig {
        DtmfSendConfig { digits: String::new(), tone_ms: 50, gap_ms: 50, level_dbfs: -10.0, start_ms: 0 }
    }
}

/// Plays DTMF keys to the caller (the Voice API's "send DTMF"): each key's two ITU-T Q.23
/// sines at `level_dbfs` each for `tone_ms`, then `gap_ms` of silence, from `start_ms` after
/// the call starts, sample-exact on the call's clock and mixed into the outbound frames that
/// carry tone. When the last tone has played, one [`Event::Custom`] `"dtmf:sent"` with
/// `{"digits": "..."}` is emitted (built in `prepare`; the session's clone of it is the one
/// allocation per sequence).
#[derive(Debug, Clone)]
pub struct DtmfSend {
    config: DtmfSendConfig,
    keys: Vec<DtmfDigit>,
    /// Samples: before the first tone, per tone, per tone and gap.
    start: u64,
    tone: u64,
    period: u64,
    /// Per key, its tone at the call's rate, `tone` samples long.
    tones: Vec<DtmfTone>,
    buffer: Vec<i16>,
    done: Option<Event>,
}

impl DtmfSend {
    /// A sender with `config`, checked here.
    pub fn new(config: DtmfSendConfig) -> Result<DtmfSend, ProcessorError> {
        let error = |message: String| Err(config_error(message));
        let keys: Vec<DtmfDigit> = match config.digits.chars().map(DtmfDigit::from_char).collect::<Option<Vec<_>>>() {
            Some(keys) => keys,
            None => return error(format!("digits {:?} may only hold 0-9, *, #, A-D", config.digits)),
        };
        if keys.is_empty() || keys.len() > MAX_DIGITS {
            return error(format!("digits must hold 1 to {MAX_DIGITS} keys, not {}", keys.len()));
        }
        if !(20..=10_000).contains(&config.tone_ms) || !(20..=10_000).contains(&config.gap_ms) {
            return error(format!("tone_ms {} and gap_ms {} must be between 20 and 10000", config.tone_ms, config.gap_ms));
        }
        if !(-60.0..=-6.0).contains(&config.level_dbfs) {
            return error(format!("level_dbfs {} is not between -60 and -6", config.level_dbfs));
        }
        if config.start_ms > 3_600_000 {
            return error(format!("start_ms {} is over an hour", config.start_ms));
        }
        Ok(DtmfSend { config, keys, start: 0, tone: 0, period: 0, tones: Vec::new(), buffer: Vec::new(), done: None })
    }

    /// The configuration.
    pub fn config(&self) -> &DtmfSendConfig {
        &self.config
    }

    /// The keys, in order.
    pub fn keys(&self) -> &[DtmfDigit] {
        &self.keys
    }

    /// Writes `out.len()` samples of key `key` from sample `k` of its tone.
    fn render(&mut self, key: usize, k: u64, out: &mut [i16]) {
        if let Some(tone) = self.tones.get_mut(key) {
            tone.seek(k);
            tone.fill(out);
        }
    }
}

impl Processor for DtmfSend {
    fn name(&self) -> &'static str {
        "dtmf_send"
    }

    fn queues_output(&self) -> bool {
        false
    }

    fn prepare(&mut self, setup: &Setup<'_>) -> Result<(), ProcessorError> {
        self.set_rate(setup.rate)?;
        self.buffer = vec![0; setup.frame_samples()];
        let digits: String = self.keys.iter().map(|d| d.as_char()).collect();
        self.done = Some(Event::custom("dtmf:sent", serde_json::json!({ "digits": digits })));
        Ok(())
    }

    fn timeline(&self) -> super::Timeline {
        super::Timeline::Wall
    }

    fn process(&mut self, cx: &mut Context<'_>) {
        self.process_frame(cx);
    }
}

impl DtmfSend {
    /// Sets up the timing and the keys' tones for `rate`.
    fn set_rate(&mut self, rate: SampleRate) -> Result<(), ProcessorError> {
        let per_ms = u64::from(rate.hz()) / 1000;
        self.start = u64::from(self.config.start_ms) * per_ms;
        self.tone = u64::from(self.config.tone_ms) * per_ms;
        self.period = self.tone + u64::from(self.config.gap_ms) * per_ms;
        let (level, tone) = (self.config.level_dbfs, self.tone);
        self.tones = self
            .keys
            .iter()
            .map(|&key| DtmfTone::for_key(key, rate, level).map(|t| t.with_length(tone)))
            .collect::<Result<_, _>>()
            .map_err(|e| ProcessorError::invalid("dtmf_send", "`level_dbfs`", e))?;
        Ok(())
    }

    fn process_frame(&mut self, cx: &mut Context<'_>) {
        let n = self.buffer.len();
        if n == 0 || self.done.is_none() {
            return;
        }
        let frame_start = cx.position() * n as u64;
        let end = self.start + self.period * (self.keys.len() as u64 - 1) + self.tone;
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.fill(0);
        let mut written = false;
        let mut i = 0;
        while i < n {
            let t = frame_start + i as u64;
            let left = (n - i) as u64;
            if t < self.start {
                i += left.min(self.start - t) as usize;
                continue;
            }
            let (key, k) = (((t - self.start) / self.period) as usize, (t - self.start) % self.period);
            if key >= self.keys.len() {
                break;
            }
            if k >= self.tone {
                i += left.min(self.period - k) as usize;
                continue;
            }
            let run = left.min(self.tone - k) as usize;
            self.render(key, k, &mut buffer[i..i + run]);
            written = true;
            i += run;
        }
        if written {
            cx.mix_output(&buffer);
        }
        self.buffer = buffer;
        if frame_start + n as u64 >= end
            && let Some(done) = self.done.take()
        {
            cx.emit(done);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::f64::consts::TAU;

    use super::*;
    use crate::processor::dtmf::testkit::{Harness, key_hz};
    use crate::processor::{DtmfDetect, DtmfDetectConfig, DtmfSource};
    use crate::protocol::SampleRate;

    const KEYS: &str = "1234567890*#ABCD";

    fn sender(config: DtmfSendConfig, rate: SampleRate) -> Harness<DtmfSend> {
        Harness::new(DtmfSend::new(config).unwrap(), rate).unwrap()
    }

    /// The spans `(first, one past last)` of non-zero samples, splitting at runs of more than
    /// `quiet` zeros.
    fn bursts(audio: &[i16], quiet: usize) -> Vec<(usize, usize)> {
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for (i, s) in audio.iter().enumerate() {
            if *s != 0 {
                match spans.last_mut() {
                    Some(last) if i - last.1 <= quiet => last.1 = i + 1,
                    _ => spans.push((i, i + 1)),
                }
            }
        }
        spans
    }

    /// A sine's peak amplitude at `hz` over `audio` (a DFT at that frequency).
    fn amplitude_at(audio: &[i16], hz: f64, rate: SampleRate) -> f64 {
        let omega = TAU * hz / f64::from(rate.hz());
        let (re, im) = audio.iter().enumerate().fold((0.0, 0.0), |(re, im), (n, s)| {
            let (sin, cos) = (omega * n as f64).sin_cos();
            (re + f64::from(*s) * cos, im - f64::from(*s) * sin)
        });
        2.0 * (re * re + im * im).sqrt() / audio.len() as f64
    }

    #[test]
    fn sent_keys_decode_with_the_detector_at_every_rate() {
        for rate in SampleRate::ALL {
            let mut send = sender(DtmfSendConfig { digits: KEYS.into(), ..Default::default() }, rate);
            send.silence(1700);
            let mut detect =
                Harness::new(DtmfDetect::new(DtmfDetectConfig { merge_window_ms: 0, ..Default::default() }).unwrap(), rate).unwrap();
            detect.run(&send.sent);
            assert_eq!(detect.keys(), KEYS, "{rate}");
            for (digit, duration, source) in detect.dtmf() {
                assert_eq!(source, DtmfSource::Inband);
                let ms = duration.unwrap();
                assert!((48..=51).contains(&ms), "{rate} {digit}: {ms} ms");
            }
        }
    }

    #[test]
    fn rendered_keys_equal_the_processors_output_and_decode() {
        for rate in SampleRate::ALL {
            let rendered = render_dtmf(KEYS, rate, 100, 100).unwrap();
            assert_eq!(rendered.len(), KEYS.len() * 200 * rate.hz() as usize / 1000);
            let mut send = sender(DtmfSendConfig { digits: KEYS.into(), tone_ms: 100, gap_ms: 100, ..Default::default() }, rate);
            send.silence(KEYS.len() as u64 * 200);
            assert_eq!(rendered[..], send.sent[..rendered.len()], "{rate}: the same samples as the dtmf_send processor");
            let mut detect =
                Harness::new(DtmfDetect::new(DtmfDetectConfig { merge_window_ms: 0, ..Default::default() }).unwrap(), rate).unwrap();
            detect.run(&rendered);
            assert_eq!(detect.keys(), KEYS, "{rate}");
        }
        assert!(render_dtmf("12x", SampleRate::Hz8000, 100, 100).is_err());
        assert!(render_dtmf("", SampleRate::Hz8000, 100, 100).is_err());
    }

    #[test]
    fn timing_and_levels_are_as_configured() {
        for rate in SampleRate::ALL {
            let per_ms = rate.hz() as usize / 1000;
            for (tone_ms, gap_ms, level_dbfs, start_ms) in [(50, 50, -10.0, 0), (70, 45, -20.0, 130), (120, 200, -6.0, 37)] {
                let config = DtmfSendConfig { digits: "19#D".into(), tone_ms, gap_ms, level_dbfs, start_ms };
                let mut send = sender(config, rate);
                send.silence(u64::from(start_ms + 4 * (tone_ms + gap_ms)) + 100);
                let spans = bursts(&send.sent, 2);
                assert_eq!(spans.len(), 4, "{rate}: {spans:?}");
                for (i, ((first, last), digit)) in spans.iter().zip(send.processor.keys().to_vec()).enumerate() {
                    let start = (start_ms as usize + i * (tone_ms + gap_ms) as usize) * per_ms;
                    // The tone begins with sin(0) = 0, and the outermost samples of its edges may
                    // round to 0: allow 3 samples (0.125 to 0.375 ms).
                    assert!(first.abs_diff(start) <= 3, "{rate} key {i}: starts at {first}, expected {start}");
                    assert!((last - first).abs_diff(tone_ms as usize * per_ms) <= 3, "{rate} key {i}: {} samples", last - first);
                    // Levels, over the full-level part of the tone.
                    let steady = &send.sent[first + 2 * per_ms..last - 2 * per_ms];
                    let (low, high) = key_hz(digit);
                    for hz in [low, high] {
                        let dbfs = 20.0 * (amplitude_at(steady, hz, rate) / 32_767.0).log10();
                        assert!((dbfs - level_dbfs).abs() < 0.2, "{rate} {digit} {hz} Hz: {dbfs:.2} dBFS");
                    }
                }
            }
        }
    }

    #[test]
    fn tones_are_continuous_across_frames_and_only_tone_frames_are_written() {
        let rate = SampleRate::Hz8000;
        let config = DtmfSendConfig { digits: "5".into(), tone_ms: 200, gap_ms: 50, start_ms: 30, ..Default::default() };
        let mut send = sender(config, rate);
        send.silence(400);
        // 30..230 ms holds the tone: frames 1 to 11; frames 0 and 12.. are not written.
        let written: Vec<usize> = send.written.iter().enumerate().filter(|(_, w)| **w).map(|(i, _)| i).collect();
        assert_eq!(written, (1..=11).collect::<Vec<_>>());
        // Phase continuity: the largest step between samples is that of the sum of the sines.
        let (low, high) = key_hz(DtmfDigit::Digit(5));
        let a = 32_767.0 * 10f64.powf(-0.5);
        let bound = a * TAU * (low + high) / 8000.0 + 2.0;
        let steps = send.sent.windows(2).map(|w| f64::from((i32::from(w[1]) - i32::from(w[0])).abs()));
        assert!(steps.fold(0.0, f64::max) <= bound);
    }

    #[test]
    fn reports_once_when_the_last_tone_has_played() {
        let rate = SampleRate::Hz16000;
        let mut send = sender(DtmfSendConfig { digits: "12".into(), ..Default::default() }, rate);
        send.silence(140);
        assert!(send.events.is_empty(), "still playing at 140 ms");
        send.silence(400);
        let done: Vec<_> = send.events.iter().collect();
        assert_eq!(done.len(), 1);
        // The second tone ends at 150 ms, in pass 7.
        assert_eq!(*done[0], (7, Event::custom("dtmf:sent", serde_json::json!({ "digits": "12" }))));
    }

    #[test]
    fn bad_configurations_are_refused() {
        for config in [
            DtmfSendConfig { digits: "12x".into(), ..Default::default() },
            DtmfSendConfig { digits: String::new(), ..Default::default() },
            DtmfSendConfig { digits: "1".repeat(65), ..Default::default() },
            DtmfSendConfig { digits: "1".into(), tone_ms: 10, ..Default::default() },
            DtmfSendConfig { digits: "1".into(), gap_ms: 20_000, ..Default::default() },
            DtmfSendConfig { digits: "1".into(), level_dbfs: -3.0, ..Default::default() },
            DtmfSendConfig { digits: "1".into(), level_dbfs: f64::NAN, ..Default::default() },
            DtmfSendConfig { digits: "1".into(), start_ms: 4_000_000, ..Default::default() },
        ] {
            assert!(matches!(DtmfSend::new(config.clone()), Err(ProcessorError::Config { .. })), "{config:?}");
        }
        assert_eq!(DtmfSend::new(DtmfSendConfig { digits: "1".repeat(64), ..Default::default() }).unwrap().keys().len(), 64);
        assert_eq!(
            DtmfSend::new(DtmfSendConfig { digits: "abcd".into(), ..Default::default() }).unwrap().keys()[3],
            DtmfDigit::Letter(b'D')
        );
    }
}
