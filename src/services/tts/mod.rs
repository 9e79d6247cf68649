//! Text to speech for `talk`: libespeak-ng (Debian's `libespeak-ng1`, dozens of languages,
//! offline) on a synthesis thread of its own, streaming each talk's audio at its call's rate
//! to the media thread that plays it.
//!
//! The library is built in with the `tts` cargo feature (`cargo build --release --features
//! tts`, which needs `libespeak-ng-dev`); without it [`Tts::speak`] and [`Tts::check`] return
//! [`TtsError::NotBuilt`], whose message says how to rebuild, and a route with `talk` is refused
//! when the configuration loads.
//!
//! libespeak-ng keeps one global state per process and is not thread-safe, so there is one
//! synthesis thread per process (`callpipe-tts`, started on first use), shared by every server
//! in it: the one process-wide thing in the services besides the forks' TLS cache. See
//! `engine.rs` for how it schedules talks and `talk.rs` for how their audio reaches the media
//! thread without allocating or freeing there.

// The library's C API: the one place callpipe calls foreign code of its own.
#[cfg(feature = "tts")]
#[allow(unsafe_code)]
mod engine;
#[cfg(feature = "tts")]
#[allow(unsafe_code)]
mod espeak;
mod talk;

use std::sync::Arc;
use std::time::Instant;

pub use talk::{MAX_CHUNKS, TalkAudio, TalkShared};

use crate::protocol::SampleRate;

/// The longest text of one talk, in characters (the Voice API's limit).
pub const MAX_TEXT_CHARS: usize = 1500;

/// What a build without the `tts` feature says when asked to speak.
pub const TTS_FEATURE_MISSING: &str = "this build of callpipe has no text to speech: rebuild it with \
     `cargo build --release --features tts` (which needs the libespeak-ng-dev package)";

/// Why a talk could not be synthesized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TtsError {
    /// The build has no text to speech.
    #[error("{TTS_FEATURE_MISSING}")]
    NotBuilt,
    /// The synthesis thread could not start (or has ended).
    #[error("text to speech is not available: {0}")]
    Engine(String),
    /// No voice speaks the language.
    #[error("language {language:?} has no voice (use a BCP-47 code espeak-ng speaks, e.g. en-GB, en-US, de-DE, fr-FR, es-ES)")]
    UnknownLanguage {
        /// The language asked for.
        language: String,
    },
    /// The voice variant does not exist.
    #[error("voice {voice:?} is not one of espeak-ng's variants (e.g. f1 to f5, m1 to m7, klatt)")]
    UnknownVoice {
        /// The variant asked for.
        voice: String,
    },
    /// The text is empty.
    #[error("`text` must not be empty")]
    EmptyText,
    /// The text is too long.
    #[error("`text` has {chars} characters, over the limit of {MAX_TEXT_CHARS}")]
    TextTooLong {
        /// Its length.
        chars: usize,
    },
}

/// A talk to synthesize.
#[derive(Debug, Clone)]
pub struct TalkRequest {
    /// The text, or SSML (`<speak>...</speak>`).
    pub text: String,
    /// A BCP-47 language code, e.g. `en-GB`.
    pub language: String,
    /// An espeak-ng voice variant (`f3`, `m2`, `klatt`), or the language's default.
    pub voice: Option<String>,
    /// The call's rate: the audio is resampled to it.
    pub rate: SampleRate,
    /// When the talk was asked for (time to first audio counts from here).
    pub queued_at: Instant,
}

/// What the synthesis thread has done so far, process-wide.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TtsStats {
    /// Talks asked for.
    pub talks: u64,
    /// Seconds of speech synthesized.
    pub audio_seconds: f64,
    /// Seconds spent synthesizing.
    pub synth_seconds: f64,
    /// Time to first audio, summed over the talks that have published audio.
    pub first_audio_seconds_total: f64,
}

/// The server's way to the synthesis thread. Cloning is free.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tts;

impl Tts {
    /// Whether this build has text to speech.
    pub const fn built() -> bool {
        cfg!(feature = "tts")
    }

    /// Checks a talk's text, language and voice without synthesizing (starting the thread when
    /// needed); returns the library's voice name. A language and voice checked before are
    /// answered at once, so building a call's `talk` does not wait for the synthesis thread.
    pub fn check(&self, text: &str, language: &str, voice: Option<&str>) -> Result<String, TtsError> {
        check_text(text)?;
        #[cfg(feature = "tts")]
        {
            engine::engine()?.check(language, voice)
        }
        #[cfg(not(feature = "tts"))]
        {
            let _ = (language, voice);
            Err(TtsError::NotBuilt)
        }
    }

    /// Starts synthesizing `request`: its audio is published to the returned talk as it comes.
    /// A language or voice that turns out unknown makes a talk that fails at once (check first
    /// with [`Tts::check`] for an error to show).
    pub fn speak(&self, request: TalkRequest) -> Result<Arc<TalkShared>, TtsError> {
        check_text(&request.text)?;
        #[cfg(feature = "tts")]
        {
            let shared = TalkShared::new();
            engine::engine()?.send(engine::Request::Speak { request, shared: shared.clone() })?;
            Ok(shared)
        }
        #[cfg(not(feature = "tts"))]
        {
            Err(TtsError::NotBuilt)
        }
    }

    /// What the synthesis thread has done so far (zeros before it starts, or without `tts`).
    pub fn stats(&self) -> TtsStats {
        #[cfg(feature = "tts")]
        if let Ok(engine) = engine::engine() {
            return engine.stats.snapshot();
        }
        TtsStats::default()
    }
}

fn check_text(text: &str) -> Result<(), TtsError> {
    let chars = text.chars().count();
    if text.trim().is_empty() {
        Err(TtsError::EmptyText)
    } else if chars > MAX_TEXT_CHARS {
        Err(TtsError::TextTooLong { chars })
    } else {
        Ok(())
    }
}

/// Whether `text` is SSML: it starts with `<speak`.
pub fn is_ssml(text: &str) -> bool {
    text.trim_start().starts_with("<speak")
}

/// `text` cut after each sentence's end (`.`, `!`, `?`, `;` or `:` before white space, or a
/// line break), so that a talk can be synthesized a sentence at a time.
pub fn sentences(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        current.push(c);
        let end = matches!(c, '.' | '!' | '?' | ';' | ':') && chars.peek().is_none_or(|n| n.is_whitespace()) || c == '\n';
        if end && !current.trim().is_empty() {
            pieces.push(std::mem::take(&mut current));
        }
    }
    if !current.trim().is_empty() {
        pieces.push(current);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_into_sentences_and_checked() {
        assert_eq!(sentences("Hello there. How are you?  Fine!\nBye"), ["Hello there.", " How are you?", "  Fine!", "\nBye"]);
        assert_eq!(sentences("One\nTwo"), ["One\n", "Two"]);
        assert_eq!(sentences("3.14 is pi"), ["3.14 is pi"]);
        assert!(is_ssml("  <speak>hi</speak>"));
        assert_eq!(check_text("  "), Err(TtsError::EmptyText));
        assert_eq!(check_text(&"a".repeat(1501)), Err(TtsError::TextTooLong { chars: 1501 }));
    }

    /// Plays a talk to its end into 20 ms frames, as a media thread would, and returns its
    /// samples (and whether it failed).
    #[cfg(feature = "tts")]
    pub(crate) fn play_out(shared: Arc<TalkShared>, rate: SampleRate) -> (Vec<i16>, bool) {
        let mut audio = TalkAudio::new(shared.clone(), 1, 1.0);
        let mut all = Vec::new();
        let mut frame = vec![0i16; rate.frame_samples()];
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        while Instant::now() < deadline {
            let played = audio.play_into(&mut frame, crate::audio::Blend::Replace);
            all.extend_from_slice(&frame[..played.samples]);
            if played.ended {
                return (all, shared.failed());
            }
            if played.samples == 0 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        panic!("the talk did not end");
    }

    #[cfg(feature = "tts")]
    #[test]
    fn speech_is_synthesized_at_the_call_rate_in_chunks() {
        let tts = Tts;
        assert!(tts.check("hi", "en-GB", None).is_ok());
        assert_eq!(tts.check("hi", "de-DE", Some("f3")).unwrap(), "de+f3");
        assert!(matches!(tts.check("hi", "xx-YY", None), Err(TtsError::UnknownLanguage { .. })));
        assert!(matches!(tts.check("hi", "en-GB", Some("nope")), Err(TtsError::UnknownVoice { .. })));
        // Checked again, they answer the same (from what was resolved before).
        assert_eq!(tts.check("other text", "de-DE", Some("f3")).unwrap(), "de+f3");
        assert!(matches!(tts.check("hi", "xx-YY", None), Err(TtsError::UnknownLanguage { .. })));
        assert!(matches!(tts.check("hi", "en-GB", Some("nope")), Err(TtsError::UnknownVoice { .. })));
        for rate in [SampleRate::Hz8000, SampleRate::Hz16000, SampleRate::Hz24000] {
            let text = "Hello. This is callpipe speaking. Please hold the line while we connect you.";
            let request = TalkRequest { text: text.into(), language: "en-GB".into(), voice: None, rate, queued_at: Instant::now() };
            let shared = tts.speak(request).unwrap();
            let (audio, failed) = play_out(shared.clone(), rate);
            assert!(!failed);
            let seconds = audio.len() as f64 / f64::from(rate.hz());
            assert!((2.5..12.0).contains(&seconds), "{rate:?}: {seconds} s of speech");
            assert!(shared.published() >= 3, "published in pieces: {}", shared.published());
            let rms = (audio.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / audio.len() as f64).sqrt();
            assert!(rms > 500.0, "{rate:?}: speech, not silence (rms {rms})");
        }
        // Cancelled: it stops early.
        let long = "This sentence is long enough to take a while. ".repeat(30);
        let request =
            TalkRequest { text: long, language: "en-US".into(), voice: None, rate: SampleRate::Hz8000, queued_at: Instant::now() };
        let shared = tts.speak(request).unwrap();
        shared.cancel();
        let (audio, _) = play_out(shared, SampleRate::Hz8000);
        assert!(audio.len() < 8000 * 20, "cancelled early: {} samples", audio.len());
    }

    #[cfg(not(feature = "tts"))]
    #[test]
    fn a_build_without_tts_says_how_to_rebuild() {
        let error = Tts.check("hello", "en-GB", None).unwrap_err();
        assert_eq!(error, TtsError::NotBuilt);
        assert!(error.to_string().contains("--features tts"));
    }
}
