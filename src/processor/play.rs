//! The `play` processor: plays a WAV file to the caller (the Voice API's `stream` action), mixed
//! into the outbound audio.
//!
//! [`Processor::prepare`] loads the whole file with [`load_wav`] (any WAV: mono or stereo,
//! 16/24/32-bit integer or 32-bit float, any rate, resampled to the call's rate) and applies
//! `level_db` once, as a linear gain with rounding and saturation. The samples are played with
//! [`Playback`], the player the session uses for the control API's streams too; this processor
//! adds when to start, barge-in and its `stream:done` events. `prepare` runs off the media
//! thread, before the first frame; a file that cannot be read or decoded makes it fail with
//! [`ProcessorError::Config`] naming the file, and the server then closes that call with 1011.
//! A configuration loaded from TOML checks that the file is a WAV it can read (a missing prompt
//! stops `callpipe serve` at start-up); the file is read again at each call, so it may be
//! replaced while serving, and one removed after start-up gives that 1011.
//!
//! # Guarantees
//!
//! * From the first pass at or after `start_ms` (pass `⌈start_ms / 20⌉`), each pass mixes exactly
//!   one frame of the file into the outbound frame (saturating, as [`Context::mix_output`] does),
//!   so the file is mixed with, not written over, what other processors send. The samples are
//!   sample-exact and in order; with `loop` > 1 (or 0: until the call ends) the plays follow
//!   each other back to back, with no gap. The last frame of the last play is mixed as far as
//!   the file goes; the rest of that frame is silence. Frames after the end are not written.
//! * When playback ends, one [`Event::Custom`] `"stream:done"` with
//!   `{"file": ..., "reason": "finished"}` is emitted in the pass that carries the last samples.
//!   With `barge_in = "dtmf"` (or `true`), any [`Event::Dtmf`] (from the platform or detected
//!   in-band) while playback is pending or under way stops it; with `"speech"`, the caller
//!   starting to speak does ([`Event::Speech`] `speech:started` from a `vad` processor in the
//!   route, which a route with speech barge-in must have); `"both"` is either. It calls
//!   [`Context::clear`] (so the platform also drops what it has buffered, and so does callpipe,
//!   including this pass's outbound audio so far) and emits `"stream:done"` with
//!   `"reason": "barge_in"`, then, when it had started playing, an [`Event::BargeIn`]
//!   (`barge_in`, with the file and how many ms of it had been sent). A call that ends first
//!   (for example with `loop = 0`) emits nothing.
//! * Both `stream:done` events are built in `prepare`; `emit` only moves one, and the
//!   `barge_in` event is a plain value. Nothing is allocated, locked or
//!   read from disk after `prepare`.
//!
//! # Starting on an event
//!
//! With `on_digit` (a key, from the platform or detected in-band) or `on_event` (the name of
//! another processor's event, such as another player's `"stream:done"`), the player waits
//! instead of starting with the call, and plays `start_ms` after each such event: "press 1 to
//! hear the menu again" restarts it from the beginning, even mid-play. Re-arming rebuilds the two
//! prebuilt `stream:done` events, the one allocation after `prepare`, once per trigger.
//!
//! There is no way yet to stop a playback from outside (the control API is a later issue).

use std::path::PathBuf;

use super::trigger::Trigger;
use super::{Context, Event, Processor, ProcessorError, Setup};
use crate::audio::{Blend, Playback, load_wav};
use crate::call::{BargeIn, BargeInMode, Interrupted};
use crate::protocol::DtmfDigit;

/// The quietest `level_db`.
pub const MIN_LEVEL_DB: f64 = -60.0;

/// The loudest `level_db`.
pub const MAX_LEVEL_DB: f64 = 10.0;

/// The latest `start_ms`: an hour.
pub const MAX_START_MS: u32 = 3_600_000;

/// The `play` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct PlayConfig {
    /// The WAV file, read in `prepare` (once per call).
    pub file: PathBuf,
    /// How many times to play it; 0 plays it until the call ends. Default 1 (the `loop`
    /// parameter).
    pub loops: u32,
    /// Gain in dB, −60 to +10, applied with saturation. Default 0.
    pub level_db: f64,
    /// When playback starts, in ms after the call starts, up to an hour; rounded up to the next
    /// 20 ms pass. Default 0.
    pub start_ms: u32,
    /// What from the caller stops playback and clears buffered audio: a key, the start of
    /// speech (with a `vad` in the route), both, or nothing (the default).
    pub barge_in: BargeInMode,
    /// Wait for this key instead of starting with the call (the `on_digit` parameter).
    pub on_digit: Option<DtmfDigit>,
    /// Wait for an event of this name from another processor (the `on_event` parameter).
    pub on_event: Option<String>,
}

impl PlayConfig {
    /// Plays `file` once, at its level, from the start of the call, without barge-in.
    pub fn new(file: impl Into<PathBuf>) -> PlayConfig {
        PlayConfig { file: file.into(), loops: 1, level_db: 0.0, start_ms: 0, barge_in: BargeInMode::Off, on_digit: None, on_event: None }
    }
}

/// Plays a WAV file to the caller, mixed into the outbound frames; see `src/processor/play.rs`.
#[derive(Debug, Clone)]
pub struct Play {
    config: PlayConfig,
    /// The file at the call's rate, with the gain applied, and where its playing is.
    playback: Playback,
    /// The pass that carries the first sample.
    start_pass: u64,
    /// Whether playback has ended (or was stopped).
    stopped: bool,
    finished: Option<Event>,
    barged_in: Option<Event>,
    /// The file's name, for rebuilding the events when a trigger re-arms the player, and for
    /// the `barge_in` event.
    name: std::sync::Arc<str>,
}

impl Play {
    /// A player with `config`, checked here (the file is only read in `prepare`).
    pub fn new(config: PlayConfig) -> Result<Play, ProcessorError> {
        let error = |message: String| Err(ProcessorError::Config { processor: "play".into(), message });
        if config.file.as_os_str().is_empty() {
            return error("`file` must not be empty".into());
        }
        if !(MIN_LEVEL_DB..=MAX_LEVEL_DB).contains(&config.level_db) {
            return error(format!("level_db {} is not between {MIN_LEVEL_DB} and {MAX_LEVEL_DB}", config.level_db));
        }
        if let Err(message) = Trigger::new(config.on_digit, config.on_event.as_deref()).check("stream:done") {
            return error(message);
        }
        if config.start_ms > MAX_START_MS {
            return error(format!("start_ms {} is over an hour", config.start_ms));
        }
        let loops = config.loops;
        Ok(Play {
            config,
            playback: Playback::new(Vec::new().into(), loops, 1.0),
            start_pass: 0,
            stopped: false,
            finished: None,
            barged_in: None,
            name: "".into(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PlayConfig {
        &self.config
    }

    /// The file's samples at the call's rate with the gain applied (empty before `prepare`).
    pub fn samples(&self) -> &[i16] {
        self.playback.audio()
    }

    /// What starts playback when it does not start with the call.
    fn trigger(&self) -> Trigger<'_> {
        Trigger::new(self.config.on_digit, self.config.on_event.as_deref())
    }

    /// (Re)starts playback from the beginning, `start_ms` after this pass.
    fn arm(&mut self, cx: &Context<'_>) {
        self.start_pass = cx.position() + u64::from(self.config.start_ms).div_ceil(20);
        self.playback.restart();
        self.stopped = false;
        if self.finished.is_none() || self.barged_in.is_none() {
            self.build_events();
        }
    }

    fn build_events(&mut self) {
        let done = |reason: &str| Event::custom("stream:done", serde_json::json!({ "file": &*self.name, "reason": reason }));
        self.finished = Some(done("finished"));
        self.barged_in = Some(done("barge_in"));
    }

    /// Ends playback and emits the matching `stream:done` event. The other prebuilt event is
    /// kept, not dropped: freeing it here would free on the media thread.
    fn stop(&mut self, cx: &mut Context<'_>, barge_in: bool) {
        self.stopped = true;
        let event = if barge_in { self.barged_in.take() } else { self.finished.take() };
        if let Some(event) = event {
            cx.emit(event);
        }
    }
}

impl Processor for Play {
    fn name(&self) -> &'static str {
        "play"
    }

    fn queues_output(&self) -> bool {
        false
    }

    fn players_active(&self) -> u64 {
        u64::from(!self.stopped && !self.samples().is_empty())
    }

    fn prepare(&mut self, setup: &Setup<'_>) -> Result<(), ProcessorError> {
        let file = &self.config.file;
        let samples = load_wav(file, setup.rate)
            .map_err(|e| ProcessorError::Config { processor: "play".into(), message: format!("file {}: {e}", file.display()) })?;
        let gain = 10f64.powf(self.config.level_db / 20.0);
        let samples = if self.config.level_db == 0.0 {
            samples
        } else {
            samples.iter().map(|&s| (f64::from(s) * gain).round().clamp(-32768.0, 32767.0) as i16).collect()
        };
        self.playback = Playback::new(samples.into(), self.config.loops, 1.0);
        self.start_pass = u64::from(self.config.start_ms).div_ceil(20);
        self.stopped = self.trigger().waits();
        self.name = file.display().to_string().into();
        self.build_events();
        Ok(())
    }

    fn timeline(&self) -> super::Timeline {
        super::Timeline::Wall
    }

    fn process(&mut self, cx: &mut Context<'_>) {
        if self.stopped || self.samples().is_empty() || cx.position() < self.start_pass {
            return;
        }
        if self.playback.play_into(cx.output_mut(), Blend::Mix).ended {
            self.stop(cx, false);
        }
    }

    fn handle_event(&mut self, event: &Event, cx: &mut Context<'_>) {
        let started = cx.position() >= self.start_pass;
        if let Some(cause) = self.config.barge_in.interrupted_by(event).filter(|_| !self.stopped) {
            cx.clear();
            let played_ms = self.playback.played() * 1000 / u64::from(cx.rate().hz());
            self.stop(cx, true);
            if started {
                let interrupted = Interrupted::Play { file: self.name.clone() };
                cx.emit(Event::BargeIn(BargeIn { interrupted, cause, played_ms }));
            }
        }
        if self.trigger().fired_by(event, cx.event_from_upstream()) && !self.samples().is_empty() {
            self.arm(cx);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Instant;

    use super::*;
    use crate::processor::testkit::Harness;
    use crate::processor::{CallInfo, DtmfSource, Requests};
    use crate::protocol::{DtmfDigit, Metadata, SampleRate};

    /// Writes a 16-bit WAV file of `channels` interleaved `samples` at `hz`.
    fn write_wav(name: &str, hz: u32, channels: u16, samples: &[i16]) -> PathBuf {
        let path = std::env::temp_dir().join(format!("callpipe-play-{}-{name}.wav", std::process::id()));
        let spec = hound::WavSpec { channels, sample_rate: hz, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
        let mut writer = hound::WavWriter::create(&path, spec).unwrap();
        for s in samples {
            writer.write_sample(*s).unwrap();
        }
        writer.finalize().unwrap();
        path
    }

    /// 1,000 samples rising by 30 from −15,000: no zeros, so silence is easy to tell apart.
    fn ramp() -> Vec<i16> {
        (0..1000).map(|i| -15_000 + 30 * i as i16 + if i >= 500 { 1 } else { 0 }).collect()
    }

    /// What one play run produced: the outbound frames, whether each was written, the events
    /// with their pass, and the passes that requested a clear.
    fn prepared(config: PlayConfig, rate: SampleRate) -> Play {
        let mut play = Play::new(config).unwrap();
        let call = CallInfo { id: "t".into(), path: "/play".into(), metadata: Metadata::new(rate) };
        play.prepare(&Setup { rate, call: &call, services: &crate::services::Services::new() }).unwrap();
        play
    }

    /// A player of `config` run for `passes` passes of the caller's silence through the
    /// processor test kit, with the events `events(pass)` delivered before each pass.
    fn drive(config: PlayConfig, rate: SampleRate, passes: u64, events: impl Fn(u64) -> Vec<Event>) -> Harness<Play> {
        let mut h = Harness::new(Play::new(config).unwrap(), rate).unwrap();
        for pass in 0..passes {
            events(pass).into_iter().for_each(|e| h.deliver(e));
            h.silence(20);
        }
        h
    }

    fn done(path: &Path, reason: &str) -> Event {
        Event::custom("stream:done", serde_json::json!({ "file": path.display().to_string(), "reason": reason }))
    }

    fn key() -> Event {
        Event::Dtmf { digit: DtmfDigit::Digit(5), start_ms: None, duration_ms: Some(100), source: DtmfSource::Platform }
    }

    #[test]
    fn plays_the_file_sample_exact_then_reports_finished() {
        let path = write_wav("exact", 8000, 1, &ramp());
        let run = drive(PlayConfig::new(&path), SampleRate::Hz8000, 10, |_| vec![]);
        // 1,000 samples: 6 full frames of 160 and 40 samples in pass 6.
        let sent = &run.sent;
        assert_eq!(sent[..1000], ramp()[..]);
        assert!(sent[1000..].iter().all(|s| *s == 0));
        assert_eq!(run.written, [true, true, true, true, true, true, true, false, false, false]);
        assert_eq!(run.events, [(6, done(&path, "finished"))]);
        assert!(run.clears.is_empty());
    }

    #[test]
    fn loops_back_to_back_and_mixes_with_what_is_there() {
        let path = write_wav("loop", 8000, 1, &ramp());
        let mut config = PlayConfig::new(&path);
        config.loops = 3;
        let run = drive(config, SampleRate::Hz8000, 25, |_| vec![]);
        let sent = &run.sent;
        assert_eq!(sent[..3000], ramp().repeat(3)[..]);
        assert!(sent[3000..].iter().all(|s| *s == 0));
        // 3,000 samples end in pass 18.
        assert_eq!(run.events, [(18, done(&path, "finished"))]);

        // `loop = 0` keeps going; mix_output adds to an earlier processor's audio.
        let mut config = PlayConfig::new(&path);
        config.loops = 0;
        let mut play = prepared(config, SampleRate::Hz8000);
        let mut requests = Requests::new(1600);
        for pass in 0..100u64 {
            let mut input = vec![0i16; 160];
            let mut output = vec![7i16; 160];
            let mut cx = Context::new(Instant::now(), pass, SampleRate::Hz8000, &mut input, true, &mut output, &mut requests);
            play.process(&mut cx);
            let at = (pass as usize * 160) % 1000;
            assert_eq!(output[0], ramp()[at] + 7, "pass {pass}");
        }
        assert!(requests.events.is_empty());
    }

    #[test]
    fn level_db_scales_the_samples() {
        let path = write_wav("level", 8000, 1, &ramp());
        let mut config = PlayConfig::new(&path);
        config.level_db = -6.0206;
        let sent = drive(config, SampleRate::Hz8000, 7, |_| vec![]).sent;
        for (got, want) in sent.iter().zip(ramp()) {
            assert!((i32::from(*got) - i32::from(want) / 2).abs() <= 1, "{got} vs {want}");
        }
        // +10 dB saturates instead of wrapping.
        let mut config = PlayConfig::new(&path);
        config.level_db = 10.0;
        let play = prepared(config, SampleRate::Hz8000);
        assert_eq!(play.samples()[0], -32768);
        assert_eq!(play.samples()[999], 32767);
    }

    #[test]
    fn start_ms_delays_playback_to_its_pass() {
        let path = write_wav("start", 8000, 1, &ramp());
        let mut config = PlayConfig::new(&path);
        config.start_ms = 100;
        let run = drive(config, SampleRate::Hz8000, 15, |_| vec![]);
        assert_eq!(run.written.iter().position(|w| *w), Some(5));
        assert_eq!(run.sent[800..1800], ramp()[..]);
        assert_eq!(run.events, [(11, done(&path, "finished"))]);
    }

    #[test]
    fn a_44k_stereo_file_plays_at_16k_with_the_right_length() {
        // 0.5 s of a 440 Hz sine in both channels.
        let samples: Vec<i16> =
            (0..22_050).flat_map(|i| [((i as f64 * std::f64::consts::TAU * 440.0 / 44_100.0).sin() * 10_000.0) as i16; 2]).collect();
        let path = write_wav("stereo", 44_100, 2, &samples);
        let run = drive(PlayConfig::new(&path), SampleRate::Hz16000, 40, |_| vec![]);
        let frames = run.written.iter().filter(|w| **w).count();
        // 0.5 s is 25 frames (8,000 samples).
        assert!((25..=26).contains(&frames), "{frames} frames");
        assert!(run.processor.samples().len().abs_diff(8000) <= 320, "{}", run.processor.samples().len());
        assert_eq!(run.events.len(), 1);
    }

    #[test]
    fn a_key_or_another_event_starts_it_and_restarts_it() {
        let path = write_wav("trigger", 8000, 1, &ramp());
        let mut config = PlayConfig::new(&path);
        config.on_digit = Some(DtmfDigit::Digit(1));
        let one = Event::Dtmf { digit: DtmfDigit::Digit(1), start_ms: None, duration_ms: Some(80), source: DtmfSource::Inband };
        // Key 5 does nothing; key 1 at pass 3 starts it; key 1 again at pass 5 starts it over;
        // after it finishes, key 1 at pass 20 plays it once more.
        let run = drive(config, SampleRate::Hz8000, 30, |pass| match pass {
            2 => vec![key()],
            3 | 5 | 20 => vec![one.clone()],
            _ => vec![],
        });
        assert_eq!(run.written.iter().position(|w| *w), Some(3), "nothing before the key");
        let sent = &run.sent;
        assert_eq!(sent[480..800], ramp()[..320], "passes 3-4: the first 320 samples");
        assert_eq!(sent[800..1800], ramp()[..], "pass 5: from the beginning again");
        assert!(sent[1800..3200].iter().all(|s| *s == 0));
        assert_eq!(sent[3200..4200], ramp()[..]);
        assert_eq!(run.events, [(11, done(&path, "finished")), (26, done(&path, "finished"))]);

        let mut config = PlayConfig::new(&path);
        config.on_event = Some("stream:done".into());
        config.start_ms = 40;
        let run =
            drive(config, SampleRate::Hz8000, 12, |pass| if pass == 1 { vec![done(Path::new("intro.wav"), "finished")] } else { vec![] });
        assert_eq!(run.written.iter().position(|w| *w), Some(3), "40 ms after the other player finished");
        assert_eq!(run.sent[480..1480], ramp()[..]);
    }

    #[test]
    fn barge_in_stops_playback_and_clears() {
        let path = write_wav("barge", 8000, 1, &ramp());
        let mut config = PlayConfig::new(&path);
        config.barge_in = BargeInMode::Dtmf;
        config.loops = 0;
        let run = drive(config, SampleRate::Hz8000, 10, |pass| if pass == 3 || pass == 5 { vec![key()] } else { vec![] });
        assert_eq!(run.written, [true, true, true, false, false, false, false, false, false, false]);
        assert_eq!(run.clears, [3], "one clear, at the key; the second key finds nothing playing");
        // Three passes of 160 samples had been sent: 60 ms.
        let barge = Event::BargeIn(BargeIn {
            interrupted: Interrupted::Play { file: path.display().to_string().into() },
            cause: crate::call::BargeCause::Dtmf,
            played_ms: 60,
        });
        assert_eq!(run.events, [(3, done(&path, "barge_in")), (3, barge)]);

        // With "speech", a key changes nothing and the start of speech stops it.
        let mut config = PlayConfig::new(&path);
        config.barge_in = BargeInMode::Speech;
        config.loops = 0;
        let speech = Event::Speech(crate::call::Speech::Started { start_ms: 10 });
        let run = drive(config, SampleRate::Hz8000, 10, |pass| match pass {
            2 => vec![key()],
            4 => vec![speech.clone()],
            _ => vec![],
        });
        assert_eq!(run.clears, [4]);
        assert!(matches!(&run.events[1], (4, Event::BargeIn(b)) if b.cause == crate::call::BargeCause::Speech && b.played_ms == 80));

        // Without barge_in, keys change nothing.
        let run = drive(PlayConfig::new(&path), SampleRate::Hz8000, 10, |pass| if pass < 5 { vec![key()] } else { vec![] });
        assert_eq!(run.sent[..1000], ramp()[..]);
        assert!(run.clears.is_empty());
        assert_eq!(run.events, [(6, done(&path, "finished"))]);
    }

    #[test]
    fn bad_parameters_and_missing_files_are_refused() {
        for config in [
            PlayConfig::new(""),
            PlayConfig { level_db: -61.0, ..PlayConfig::new("a.wav") },
            PlayConfig { level_db: 10.5, ..PlayConfig::new("a.wav") },
            PlayConfig { level_db: f64::NAN, ..PlayConfig::new("a.wav") },
            PlayConfig { start_ms: MAX_START_MS + 1, ..PlayConfig::new("a.wav") },
        ] {
            assert!(matches!(Play::new(config.clone()), Err(ProcessorError::Config { .. })), "{config:?}");
        }
        let missing = std::env::temp_dir().join("callpipe-play-no-such-file.wav");
        let mut play = Play::new(PlayConfig::new(&missing)).unwrap();
        let call = CallInfo { id: "t".into(), path: "/play".into(), metadata: Metadata::new(SampleRate::Hz8000) };
        match play.prepare(&Setup { rate: SampleRate::Hz8000, call: &call, services: &crate::services::Services::new() }) {
            Err(err @ ProcessorError::Config { .. }) => assert!(err.to_string().contains("callpipe-play-no-such-file.wav"), "{err}"),
            other => panic!("{other:?}"),
        }
    }
}
