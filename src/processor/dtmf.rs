//! The `dtmf_detect` processor: finds DTMF keypresses in the caller's audio, merges them with
//! the platform's own `websocket:dtmf` reports, and can mute the tones for later processors.
//!
//! # What it guarantees (ITU-T Q.23 frequencies, ITU-T Q.24 reception figures)
//!
//! At 8, 16 and 24 kHz, for each of the 16 keys (each checked by the unit tests):
//!
//! | Q.24 figure | accepted | rejected |
//! |---|---|---|
//! | frequency deviation, each tone | ≤ 1.5 % | ≥ 3.5 % |
//! | twist, high tone weaker ("normal") | ≤ 8 dB | ≥ 10 dB |
//! | twist, high tone stronger ("reverse") | ≤ 4 dB | ≥ 6 dB |
//! | level per tone (dynamic range ≥ 35 dB) | −5 to −40 dBFS | below `level_floor_dbfs` (−45) |
//! | tone duration (`min_duration_ms` = 40) | ≥ 40 ms | ≤ 20 ms |
//! | pause between keys | ≥ 40 ms ends a key | interruptions ≤ 10 ms are bridged |
//! | white noise | keys at 15 dB SNR | no key in noise alone |
//!
//! Reported durations are within 2 ms of the tone's. Speech and music are kept out by the
//! share of energy the two tones must hold and by a second-harmonic check (see `analysis`);
//! the unit tests count false keys in synthetic speech and harmonic chords (BENCHMARKS.md has
//! the rate per hour).
//!
//! # How
//!
//! Eight Goertzel filters at the exact DTMF frequencies run over 4 ms hops; every hop, the last
//! three make a 12 ms window (about the classic 102 samples at 8 kHz, but sliding by 4 ms),
//! which is judged on energy, dominance, frequency (measured from each tone's phase advance
//! between windows), level, twist, the tones' share of the window's energy and their second
//! harmonics. A key is a run of windows with the same verdict; it ends after [`GAP_HOPS`] hops
//! without it (20 ms), and is reported if at least [`MIN_PASSES`] of its windows found the
//! harmonics weak and it lasted at least three quarters of `min_duration_ms` (30 ms by default:
//! halfway between Q.24's "reject ≤ 20" and "accept ≥ 40"). The tone's share of the first and
//! last windows says where in them it started and stopped.
//!
//! # Events and the merge with the platform
//!
//! A key is reported once, after it ends, as [`Event::Dtmf`] with `duration_ms: Some(ms)`. The
//! platform may report the same key (`websocket:dtmf`, received here as an `Event::Dtmf` with
//! [`DtmfSource::Platform`]); when it does within `merge_window_ms` (300) of the tone (before,
//! during or after it), the detector emits one event with [`DtmfSource::Both`]. To wait for the
//! platform, a detection is held for up to `merge_window_ms` after the tone ends; when the
//! platform's twin arrives earlier, or had already arrived, the event leaves at once. Events
//! leave in the order of the keys, so one held detection holds back the ones after it. So:
//!
//! * an `Inband` event leaves in the first pass that ends at least `merge_window_ms` after the
//!   tone ended (and no earlier than the key ends, 20 ms after the tone); the event's
//!   `start_ms` says when the tone started, in call time;
//! * a `Both` event leaves between the end of the tone and `merge_window_ms` after it;
//! * platform reports with no in-band twin are not repeated (the session already delivers
//!   them), and a platform report merges with at most one detection.
//!
//! With `merge_window_ms = 0` detections leave as soon as a key ends (20 ms after the tone).
//!
//! # Muting
//!
//! With `mute = true` every frame during which a key is being heard (from the second window in
//! which it appears, [`MUTE_PASSES`], until it ends) is zeroed for the processors after this
//! one, so that a recorder does not keep the tones. Waiting for a second window keeps speech
//! from ever being muted in the tests; with no look-ahead, it means that the first 13 ms or so
//! of a tone that starts near the end of a frame are left in that frame.
//!
//! # Real time
//!
//! Everything is sized in [`Processor::prepare`]; `process` and `handle_event` allocate,
//! lock, log and format nothing. The per-frame cost is in BENCHMARKS.md (`dtmf_detect/*`).

mod analysis;
mod complex;
#[cfg(test)]
pub(super) mod testkit;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use analysis::{Analyzer, Candidate};

use super::{Context, DtmfSource, Event, Processor, ProcessorError, Setup};
use crate::protocol::DtmfDigit;

/// Hops (4 ms) without the key that end it: bridges Q.24's 10 ms interruptions.
pub const GAP_HOPS: u32 = 5;

/// Windows that must see a key, with weak second harmonics, before it can be reported.
pub const MIN_PASSES: u32 = 4;

/// Windows that must see a key (with weak harmonics) before `mute` acts.
pub const MUTE_PASSES: u32 = 2;

/// The longest `merge_window_ms` accepted.
pub const MAX_MERGE_WINDOW_MS: u32 = 2_000;

/// Detections that may wait for a platform twin at once: more than the longest merge window can
/// hold at the fastest keying (a key takes at least 16 ms), so none is ever dropped.
const MAX_PENDING: usize = 128;

/// Platform reports remembered while waiting for an in-band twin; a further one replaces the
/// oldest.
const MAX_HELD: usize = 8;

/// The `dtmf_detect` parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DtmfDetectConfig {
    /// Tones at least this long are reported; tones under three quarters of it are not.
    /// Default 40 (Q.24), between 25 and 1000.
    pub min_duration_ms: u32,
    /// How far apart an in-band detection and a platform report of the same key may be and
    /// still be merged into one event; also how long a detection waits for its twin. Default
    /// 300, at most 2000.
    pub merge_window_ms: u32,
    /// Zero the caller's audio for later processors while a key is heard. Default false.
    pub mute: bool,
    /// Tones weaker than this (dBFS per tone, peak convention: 0 dBFS is a full-scale sine)
    /// are ignored. Default −45, between −90 and −10.
    pub level_floor_dbfs: f64,
}

impl Default for DtmfDetectConfig {
    fn default() -> DtmfDetectConfig {
        DtmfDetectConfig { min_duration_ms: 40, merge_window_ms: 300, mute: false, level_floor_dbfs: -45.0 }
    }
}

/// Detects DTMF keys in the caller's audio, to the ITU-T Q.24 figures at 8, 16 and 24 kHz:
/// tones within 1.5 % of the Q.23 frequencies are accepted and 3.5 % off rejected, twist up to
/// 8 dB normal and 4 dB reverse accepted (10 and 6 dB rejected), −5 to −40 dBFS per tone,
/// tones of 40 ms or more accepted and of 20 ms or less rejected, keys 40 ms apart kept apart,
/// keys detected at 15 dB SNR.
///
/// Each key is emitted once, after it ends, as [`Event::Dtmf`] with its start in call time and
/// its duration (each within 2 ms).
/// A platform report of the same key within `merge_window_ms` of the tone turns it into one
/// [`DtmfSource::Both`] event; otherwise it leaves as [`DtmfSource::Inband`] once the window
/// has passed after the tone (the detector's only delay). With `mute`, the caller's frames are
/// zeroed for later processors while a key is heard. Nothing is allocated after `prepare`.
#[derive(Debug, Clone)]
pub struct DtmfDetect {
    config: DtmfDetectConfig,
    analyzer: Option<Analyzer>,
    tracker: Tracker,
}

impl DtmfDetect {
    /// A detector with `config`, checked here.
    pub fn new(config: DtmfDetectConfig) -> Result<DtmfDetect, ProcessorError> {
        let error = |message: String| Err(ProcessorError::Config { processor: "dtmf_detect".into(), message });
        if !(25..=1000).contains(&config.min_duration_ms) {
            return error(format!("min_duration_ms {} is not between 25 and 1000", config.min_duration_ms));
        }
        if config.merge_window_ms > MAX_MERGE_WINDOW_MS {
            return error(format!("merge_window_ms {} is over the maximum of {MAX_MERGE_WINDOW_MS}", config.merge_window_ms));
        }
        if !(-90.0..=-10.0).contains(&config.level_floor_dbfs) {
            return error(format!("level_floor_dbfs {} is not between -90 and -10", config.level_floor_dbfs));
        }
        Ok(DtmfDetect { config, analyzer: None, tracker: Tracker::default() })
    }

    /// The configuration.
    pub fn config(&self) -> &DtmfDetectConfig {
        &self.config
    }
}

impl Processor for DtmfDetect {
    fn name(&self) -> &'static str {
        "dtmf_detect"
    }

    fn queues_output(&self) -> bool {
        false
    }

    fn prepare(&mut self, setup: &Setup<'_>) -> Result<(), ProcessorError> {
        let analyzer = Analyzer::new(setup.rate, self.config.level_floor_dbfs);
        let per_ms = u64::from(setup.rate.hz()) / 1000;
        self.tracker = Tracker {
            rate_hz: u64::from(setup.rate.hz()),
            frame: setup.frame_samples() as u64,
            window: analyzer.window_samples() as u64,
            min_samples: u64::from(self.config.min_duration_ms) * 3 * per_ms / 4,
            merge: u64::from(self.config.merge_window_ms) * per_ms,
            run: None,
            pending: VecDeque::with_capacity(MAX_PENDING),
            held: [None; MAX_HELD],
        };
        self.analyzer = Some(analyzer);
        Ok(())
    }

    fn process(&mut self, cx: &mut Context<'_>) {
        let (Some(analyzer), tracker) = (&mut self.analyzer, &mut self.tracker) else { return };
        let frame_start = cx.position() * tracker.frame;
        let input = cx.input();
        let mut heard = tracker.hearing();
        let mut done = 0;
        while done < input.len() {
            let (used, hop) = analyzer.feed(&input[done..], tracker.established());
            done += used;
            if let Some(hop) = hop {
                tracker.handle_window(hop.candidate, frame_start + done as u64);
                heard |= tracker.hearing();
            }
        }
        let now = frame_start + input.len() as u64;
        tracker.flush(now, false, cx);
        if self.config.mute && heard {
            cx.input_mut().fill(0);
        }
    }

    fn handle_event(&mut self, event: &Event, cx: &mut Context<'_>) {
        if let Event::Dtmf { digit, source: DtmfSource::Platform, .. } = event
            && self.analyzer.is_some()
        {
            let at = cx.position() * self.tracker.frame;
            self.tracker.handle_platform(*digit, at, cx);
        }
    }

    fn finish(&mut self, cx: &mut Context<'_>) {
        if self.analyzer.is_some() {
            let now = cx.position() * self.tracker.frame;
            self.tracker.close_run();
            self.tracker.flush(now, true, cx);
        }
    }
}

/// A key being heard: a run of windows with the same verdict.
#[derive(Debug, Clone, Copy)]
struct Run {
    digit: DtmfDigit,
    passes: u32,
    /// Windows that also found both second harmonics weak.
    pure: u32,
    misses: u32,
    /// Start sample and tone fraction of the first and last windows that saw the key.
    first: (u64, f32),
    last: (u64, f32),
    /// The sum of the tone fractions seen: their mean, less the first and last, is the
    /// fraction of a window the tone fills completely (1 in a clean signal, less in noise).
    fractions: f32,
}

impl Run {
    fn new(candidate: Candidate, start: u64) -> Run {
        let seen = (start, candidate.fraction);
        let pure = u32::from(candidate.pure);
        Run { digit: candidate.digit, passes: 1, pure, misses: 0, first: seen, last: seen, fractions: candidate.fraction }
    }

    /// The tone fraction of a window the tone fills.
    fn full(&self) -> f32 {
        if self.passes > 2 {
            (self.fractions - self.first.1 - self.last.1) / (self.passes - 2) as f32
        } else {
            self.first.1.max(self.last.1)
        }
    }
}

/// A key heard in full, waiting for its platform twin or for the merge window to pass.
#[derive(Debug, Clone, Copy)]
struct Detection {
    digit: DtmfDigit,
    /// First and one-past-last sample of the tone, since the call started.
    start: u64,
    end: u64,
    twin: bool,
}

/// A platform report waiting for an in-band twin.
#[derive(Debug, Clone, Copy)]
struct Held {
    digit: DtmfDigit,
    at: u64,
}

/// Keys over time: runs, held detections and platform reports. Times are in samples since the
/// call started.
#[derive(Debug, Clone, Default)]
struct Tracker {
    rate_hz: u64,
    frame: u64,
    window: u64,
    /// Shortest tone reported.
    min_samples: u64,
    /// The merge window.
    merge: u64,
    run: Option<Run>,
    pending: VecDeque<Detection>,
    held: [Option<Held>; MAX_HELD],
}

impl Tracker {
    /// Whether a key is being heard: seen with weak harmonics in at least [`MUTE_PASSES`]
    /// windows, and not ended.
    fn hearing(&self) -> bool {
        self.run.is_some_and(|run| run.pure >= MUTE_PASSES)
    }

    /// The key in progress, once enough of its windows found its harmonics weak that further
    /// windows need not check them again.
    fn established(&self) -> Option<DtmfDigit> {
        self.run.filter(|run| run.pure >= MIN_PASSES).map(|run| run.digit)
    }

    /// The verdict on the window that ends at sample `end`.
    fn handle_window(&mut self, candidate: Option<Candidate>, end: u64) {
        let start = end.saturating_sub(self.window);
        match (&mut self.run, candidate) {
            (Some(run), Some(c)) if run.digit == c.digit => {
                run.passes += 1;
                run.pure += u32::from(c.pure);
                run.misses = 0;
                run.last = (start, c.fraction);
                run.fractions += c.fraction;
            }
            (Some(run), None) => {
                run.misses += 1;
                if run.misses >= GAP_HOPS {
                    self.close_run();
                }
            }
            (_, Some(c)) => {
                self.close_run();
                self.run = Some(Run::new(c, start));
            }
            (None, None) => {}
        }
    }

    /// Ends the run in progress, keeping it as a detection if it is a key.
    fn close_run(&mut self) {
        let Some(run) = self.run.take() else { return };
        let window = self.window as f32;
        let full = run.full();
        let covered = |fraction: f32| (fraction / full).min(1.0);
        let start = run.first.0 + ((1.0 - covered(run.first.1)) * window).round() as u64;
        let end = run.last.0 + (covered(run.last.1) * window).round() as u64;
        if run.pure < MIN_PASSES || end.saturating_sub(start) < self.min_samples {
            return;
        }
        let mut detection = Detection { digit: run.digit, start, end, twin: false };
        if let Some(slot) =
            self.held.iter_mut().find(|h| h.is_some_and(|h| h.digit == run.digit && h.at + self.merge >= start && h.at <= end + self.merge))
        {
            *slot = None;
            detection.twin = true;
        }
        if self.pending.len() == MAX_PENDING {
            // Cannot happen within the limits (a key takes at least 16 ms); keep the newest.
            self.pending.pop_front();
        }
        self.pending.push_back(detection);
    }

    /// A platform report of `digit` received at sample `at`.
    fn handle_platform(&mut self, digit: DtmfDigit, at: u64, cx: &mut Context<'_>) {
        let merge = self.merge;
        let near = |d: &Detection| at + merge >= d.start && at <= d.end + merge;
        if let Some(detection) = self.pending.iter_mut().find(|d| !d.twin && d.digit == digit && near(d)) {
            detection.twin = true;
            self.flush(at, false, cx);
            return;
        }
        let slot = match self.held.iter().position(Option::is_none) {
            Some(free) => free,
            None => (0..MAX_HELD).min_by_key(|&i| self.held[i].map_or(0, |h| h.at)).unwrap_or(0),
        };
        self.held[slot] = Some(Held { digit, at });
    }

    /// Emits the detections that are due at sample `now` (all of them when `all`), in order,
    /// and forgets platform reports that can no longer find a twin.
    fn flush(&mut self, now: u64, all: bool, cx: &mut Context<'_>) {
        while let Some(head) = self.pending.front() {
            if !(all || head.twin || now >= head.end + self.merge) {
                break;
            }
            let source = if head.twin { DtmfSource::Both } else { DtmfSource::Inband };
            let (start_ms, duration_ms) = key_times_ms(head.start, head.end, self.rate_hz);
            cx.emit(Event::Dtmf { digit: head.digit, start_ms: Some(start_ms), duration_ms: Some(duration_ms), source });
            self.pending.pop_front();
        }
        // A run opens about one window after its tone starts; a report is useful while a tone
        // starting within the merge window after it may still open a run, or while such a run
        // is open.
        let (merge, lag, run) = (self.merge, 2 * self.window, self.run);
        for slot in &mut self.held {
            if let Some(h) = *slot {
                let open = run.is_some_and(|r| r.digit == h.digit && r.first.0 <= h.at + merge);
                if h.at + merge + lag < now && !open {
                    *slot = None;
                }
            }
        }
    }
}

/// A key's start and duration in whole ms of call time, from its first and past-the-end samples.
/// Both ends are rounded to the nearest ms and the duration is their difference, so a key never
/// ends after the audio it was heard in (rounding start and duration apart could add 1 ms).
fn key_times_ms(start: u64, end: u64, rate_hz: u64) -> (u64, u32) {
    let ms = |sample: u64| (sample * 1000 + rate_hz / 2) / rate_hz;
    let (start_ms, end_ms) = (ms(start), ms(end));
    (start_ms, u32::try_from(end_ms - start_ms).unwrap_or(u32::MAX))
}
