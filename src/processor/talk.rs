//! The `talk` processor: speaks a text to the caller (the Voice API's `talk` action), mixed
//! into the outbound audio, synthesized by the server's text to speech ([`crate::services::tts`],
//! espeak-ng, the `tts` cargo feature).
//!
//! Parameters: `text` (up to 1,500 characters, or SSML in `<speak>`), `language` (a BCP-47
//! code such as `en-GB`, `de-DE`; default `en-US`), `voice` (an espeak-ng variant such as `f3`
//! or `m2`), `level` (-1 to 1, as the Voice API's: a gain of `1 + level`), `loop` (0: until the
//! call ends; default 1), `barge_in` (`"dtmf"`, `"speech"` with a `vad` in the route, `"both"`),
//! and `on_event` / `on_digit` to wait for an event or a key, as `play` does.
//!
//! # Guarantees
//!
//! * The text, language and voice are checked when the configuration loads (a build without
//!   the `tts` feature refuses `talk` there, saying how to rebuild). Synthesis starts in
//!   `prepare`, off the media thread, and streams: the first words play as soon as they are
//!   synthesized (a pass finds them), the rest follows as it comes.
//! * Each wall-clock pass mixes one frame of speech into the outbound frame. When it ends, a
//!   `talk:done` event (`{"source": "talk", "reason": "finished"}`) is emitted; a barge-in
//!   clears (callpipe's queue and the platform's buffer) and emits `talk:done` with `barge_in`
//!   and a `barge_in` event with how much had played; a synthesis that fails emits `failed`.
//! * Nothing is allocated, locked or freed on the media thread: the events are built in
//!   `prepare`, and the audio's memory belongs to the synthesis thread.

use super::trigger::Trigger;
use super::{Context, Event, Processor, ProcessorError, Setup};
use crate::audio::Blend;
use crate::call::{BargeIn, BargeInMode, Interrupted};
use crate::protocol::DtmfDigit;
use crate::services::tts::{TalkAudio, TalkRequest, Tts};

/// The `talk` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TalkConfig {
    /// What to say: text, or SSML in `<speak>`.
    pub text: String,
    /// A BCP-47 language code. Default `en-US`.
    pub language: String,
    /// An espeak-ng voice variant, or the language's own voice.
    pub voice: Option<String>,
    /// -1 to 1: a gain of `1 + level`. Default 0.
    pub level: f64,
    /// How many times to say it; 0 until the call ends. Default 1.
    pub loops: u32,
    /// What from the caller interrupts it.
    pub barge_in: BargeInMode,
    /// Wait for this key instead of starting with the call.
    pub on_digit: Option<DtmfDigit>,
    /// Wait for an event of this name.
    pub on_event: Option<String>,
}

impl TalkConfig {
    /// Says `text` once in US English.
    pub fn new(text: impl Into<String>) -> TalkConfig {
        TalkConfig {
            text: text.into(),
            language: "en-US".into(),
            voice: None,
            level: 0.0,
            loops: 1,
            barge_in: BargeInMode::Off,
            on_digit: None,
            on_event: None,
        }
    }
}

/// Speaks a text to the caller; see `src/processor/talk.rs`.
#[derive(Debug)]
pub struct Talk {
    config: TalkConfig,
    audio: Option<TalkAudio>,
    playing: bool,
    finished: Option<Event>,
    barged_in: Option<Event>,
    failed: Option<Event>,
}

impl Talk {
    /// A talk with `config`, checked here: the text and its language and voice (which starts
    /// the synthesis thread), so build talks off the media thread.
    pub fn new(config: TalkConfig) -> Result<Talk, ProcessorError> {
        if !(-1.0..=1.0).contains(&config.level) {
            return Err(ProcessorError::Config {
                processor: "talk".into(),
                message: format!("level {} is not between -1 and 1", config.level),
            });
        }
        Trigger::new(config.on_digit, config.on_event.as_deref())
            .check("input")
            .map_err(|message| ProcessorError::Config { processor: "talk".into(), message })?;
        Tts.check(&config.text, &config.language, config.voice.as_deref()).map_err(|e| ProcessorError::invalid("talk", "", e))?;
        Ok(Talk { config, audio: None, playing: false, finished: None, barged_in: None, failed: None })
    }

    /// What starts the talk when it does not start with the call.
    fn trigger(&self) -> Trigger<'_> {
        Trigger::new(self.config.on_digit, self.config.on_event.as_deref())
    }

    fn build_events(&mut self) {
        let done = |reason: &str| Event::custom("talk:done", serde_json::json!({ "reason": reason }));
        self.finished.get_or_insert_with(|| done("finished"));
        self.barged_in.get_or_insert_with(|| done("barge_in"));
        self.failed.get_or_insert_with(|| done("failed"));
    }
}

impl Processor for Talk {
    fn name(&self) -> &'static str {
        "talk"
    }

    fn queues_output(&self) -> bool {
        false
    }

    fn players_active(&self) -> u64 {
        u64::from(self.playing)
    }

    fn timeline(&self) -> super::Timeline {
        super::Timeline::Wall
    }

    fn prepare(&mut self, setup: &Setup<'_>) -> Result<(), ProcessorError> {
        let request = TalkRequest {
            text: self.config.text.clone(),
            language: self.config.language.clone(),
            voice: self.config.voice.clone(),
            rate: setup.rate,
            queued_at: std::time::Instant::now(),
        };
        let shared = setup.services.tts.speak(request).map_err(|e| ProcessorError::invalid("talk", "", e))?;
        self.audio = Some(TalkAudio::new(shared, self.config.loops, (1.0 + self.config.level) as f32));
        self.playing = !self.trigger().waits();
        self.build_events();
        Ok(())
    }

    fn process(&mut self, cx: &mut Context<'_>) {
        let Some(audio) = self.audio.as_mut().filter(|_| self.playing) else { return };
        let played = audio.play_into(cx.output_mut(), Blend::Mix);
        if played.ended {
            self.playing = false;
            let event = if audio.shared().failed() { self.failed.take() } else { self.finished.take() };
            if let Some(event) = event {
                cx.emit(event);
            }
        }
    }

    fn handle_event(&mut self, event: &Event, cx: &mut Context<'_>) {
        if let Some(cause) = self.config.barge_in.interrupted_by(event).filter(|_| self.playing)
            && let Some(audio) = self.audio.as_ref()
        {
            self.playing = false;
            cx.clear();
            let played_ms = audio.played() * 1000 / u64::from(cx.rate().hz());
            if let Some(done) = self.barged_in.take() {
                cx.emit(done);
            }
            cx.emit(Event::BargeIn(BargeIn { interrupted: Interrupted::Talk { id: 0 }, cause, played_ms }));
        }
        if self.trigger().fired_by(event, cx.event_from_upstream())
            && let Some(audio) = self.audio.as_mut()
        {
            // Re-arming rebuilds the events it used: once per trigger, off the steady state.
            audio.restart();
            self.playing = true;
            self.build_events();
        }
    }

    fn finish(&mut self, _cx: &mut Context<'_>) {
        if let Some(audio) = self.audio.as_ref() {
            audio.shared().cancel();
        }
    }
}

#[cfg(all(test, feature = "tts"))]
mod tests {
    use super::*;
    use crate::processor::testkit::Harness;
    use crate::protocol::SampleRate;

    fn reasons(h: &Harness<Talk>) -> Vec<String> {
        h.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Custom { name: "talk:done", data } => Some(data["reason"].as_str().unwrap_or_default().to_owned()),
                Event::BargeIn(_) => Some("barge_in event".into()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn speaks_then_reports_finished() {
        let mut h = Harness::new(Talk::new(TalkConfig::new("Hello there.")).unwrap(), SampleRate::Hz16000).unwrap();
        let mut passes = 0;
        while reasons(&h).is_empty() && passes < 500 {
            std::thread::sleep(std::time::Duration::from_millis(2));
            h.silence(20);
            passes += 1;
        }
        assert_eq!(reasons(&h), ["finished"]);
        let loud = h.sent.iter().filter(|s| s.unsigned_abs() > 1000).count();
        assert!(loud > 1600, "speech was sent: {loud} loud samples");
    }

    #[test]
    fn speech_barges_in_and_bad_parameters_are_refused() {
        let mut config = TalkConfig::new("This is a long announcement that the caller will interrupt before it ends.");
        config.barge_in = BargeInMode::Speech;
        let mut h = Harness::new(Talk::new(config).unwrap(), SampleRate::Hz8000).unwrap();
        for _ in 0..50 {
            std::thread::sleep(std::time::Duration::from_millis(2));
            h.silence(20);
        }
        h.deliver(Event::Speech(crate::call::Speech::Started { start_ms: 900 }));
        h.silence(20);
        assert_eq!(reasons(&h), ["barge_in", "barge_in event"]);
        assert_eq!(h.clears, [50]);
        let error = |c: TalkConfig| Talk::new(c).unwrap_err().to_string();
        assert!(error(TalkConfig { level: 2.0, ..TalkConfig::new("hi") }).contains("level 2"));
        assert!(error(TalkConfig { language: "xx-QQ".into(), ..TalkConfig::new("hi") }).contains("has no voice"));
        assert!(error(TalkConfig::new("")).contains("must not be empty"));
    }
}
