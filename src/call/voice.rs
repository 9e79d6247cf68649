//! The voice vocabulary of a call: speech the caller starts and stops ([`Speech`]), digits
//! collected for an `input` ([`Collected`]), audio interrupted by the caller ([`BargeIn`],
//! chosen per player with [`BargeInMode`]) and the end of a `talk` ([`TalkEnd`]).
//!
//! Every type here is plain data of fixed size: the media thread makes these events without
//! allocating, and the server turns them into JSON ([`to_json`](Speech::to_json)) off it.

use serde_json::{Value, json};

use super::Event;
use crate::protocol::DtmfDigit;

/// The caller started or stopped speaking, as the `vad` processor decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speech {
    /// `speech:started`: the caller has been speaking for the minimum speech time since
    /// `start_ms` (call time of the first voiced frame).
    Started {
        /// Call time of the speech's onset, in ms.
        start_ms: u64,
    },
    /// `speech:stopped`: the caller has been silent for the minimum silence time.
    Stopped {
        /// Call time of the speech's onset, in ms.
        start_ms: u64,
        /// From the onset to the first silent frame, in ms.
        duration_ms: u64,
    },
}

impl Speech {
    /// The event's name: `speech:started` or `speech:stopped`.
    pub fn name(&self) -> &'static str {
        match self {
            Speech::Started { .. } => "speech:started",
            Speech::Stopped { .. } => "speech:stopped",
        }
    }

    /// The event's fields, as the call's events carry them.
    pub fn to_json(&self) -> Value {
        match self {
            Speech::Started { start_ms } => json!({ "start_ms": start_ms }),
            Speech::Stopped { start_ms, duration_ms } => json!({ "start_ms": start_ms, "duration_ms": duration_ms }),
        }
    }
}

/// The most digits an `input` collects (the Voice API's `maxDigits` limit).
pub const MAX_INPUT_DIGITS: usize = 20;

/// The digits one `input` collected: the Voice API's input webhook's `dtmf` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    digits: [u8; MAX_INPUT_DIGITS],
    len: u8,
    /// Whether it ended because `time_out` passed without a key (rather than by `max_digits`
    /// or `#`).
    pub timed_out: bool,
}

impl Collected {
    /// Nothing collected yet.
    pub const fn new() -> Collected {
        Collected { digits: [0; MAX_INPUT_DIGITS], len: 0, timed_out: false }
    }

    /// Adds a key; false when it is full.
    pub fn push(&mut self, digit: DtmfDigit) -> bool {
        let Some(slot) = self.digits.get_mut(usize::from(self.len)) else { return false };
        *slot = digit.as_char() as u8;
        self.len += 1;
        true
    }

    /// The keys, in order, as the string the Voice API reports (`"1234#"` keeps a submitting
    /// `#` out: see the `input` processor).
    pub fn digits(&self) -> &str {
        std::str::from_utf8(&self.digits[..usize::from(self.len)]).unwrap_or_default()
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether no key was collected.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `input` event's fields: `{"dtmf": {"digits": "...", "timed_out": bool}}`.
    pub fn to_json(&self) -> Value {
        json!({ "dtmf": { "digits": self.digits(), "timed_out": self.timed_out } })
    }
}

impl Default for Collected {
    fn default() -> Collected {
        Collected::new()
    }
}

/// What stops a player when the caller interrupts it (the `barge_in` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BargeInMode {
    /// Nothing interrupts it (`false`, the default).
    #[default]
    Off,
    /// A key from the caller (`"dtmf"`, or `true`).
    Dtmf,
    /// The caller starting to speak, as a `vad` processor in the route decides (`"speech"`).
    Speech,
    /// Either (`"both"`).
    Both,
}

impl BargeInMode {
    /// Parses `"dtmf"`, `"speech"`, `"both"`, `"off"`, or the booleans (`true` is `dtmf`, as it
    /// was before speech barge-in existed).
    pub fn from_json(value: &Value) -> Option<BargeInMode> {
        match value {
            Value::Bool(true) => Some(BargeInMode::Dtmf),
            Value::Bool(false) => Some(BargeInMode::Off),
            Value::String(s) => BargeInMode::parse(s),
            _ => None,
        }
    }

    /// Parses `"dtmf"`, `"speech"`, `"both"` or `"off"`.
    pub fn parse(text: &str) -> Option<BargeInMode> {
        match text {
            "off" | "false" => Some(BargeInMode::Off),
            "dtmf" | "true" => Some(BargeInMode::Dtmf),
            "speech" => Some(BargeInMode::Speech),
            "both" => Some(BargeInMode::Both),
            _ => None,
        }
    }

    /// The error message for a value that is not a mode.
    pub const EXPECTED: &'static str = "`barge_in` must be \"dtmf\", \"speech\", \"both\", \"off\", true or false";

    /// Whether speech can interrupt (the route then needs a `vad`).
    pub fn on_speech(self) -> bool {
        matches!(self, BargeInMode::Speech | BargeInMode::Both)
    }

    /// What in `event` interrupts a player with this mode, if anything: a key (not the merged
    /// twin of one already seen) or the start of speech.
    pub fn interrupted_by(self, event: &Event) -> Option<BargeCause> {
        match (self, event) {
            (BargeInMode::Dtmf | BargeInMode::Both, key) if key.new_key().is_some() => Some(BargeCause::Dtmf),
            (BargeInMode::Speech | BargeInMode::Both, Event::Speech(Speech::Started { .. })) => Some(BargeCause::Speech),
            _ => None,
        }
    }

    /// The mode's name.
    pub fn as_str(self) -> &'static str {
        match self {
            BargeInMode::Off => "off",
            BargeInMode::Dtmf => "dtmf",
            BargeInMode::Speech => "speech",
            BargeInMode::Both => "both",
        }
    }
}

/// What interrupted a player.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BargeCause {
    /// A key.
    Dtmf,
    /// The caller's speech.
    Speech,
}

impl BargeCause {
    /// `dtmf` or `speech`.
    pub fn as_str(self) -> &'static str {
        match self {
            BargeCause::Dtmf => "dtmf",
            BargeCause::Speech => "speech",
        }
    }
}

/// What was playing when the caller barged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interrupted {
    /// A `play` processor's file.
    Play {
        /// The file, as configured.
        file: std::sync::Arc<str>,
    },
    /// The control API's stream.
    Stream {
        /// Its `stream_id`.
        id: u64,
    },
    /// A `talk`: the control API's (with its `talk_id`) or a processor's (`id` 0).
    Talk {
        /// Its `talk_id`, 0 for a `talk` processor.
        id: u64,
    },
    /// A fork's reply audio.
    Fork {
        /// The fork's name.
        name: std::sync::Arc<str>,
    },
}

/// `barge_in`: the caller interrupted audio callpipe was playing; it stopped, callpipe's queue
/// was cleared and the platform was sent `{"action":"clear"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BargeIn {
    /// What stopped.
    pub interrupted: Interrupted,
    /// What interrupted it.
    pub cause: BargeCause,
    /// How much of it had played, in ms (of the current loop's start, all loops counted).
    pub played_ms: u64,
}

impl BargeIn {
    /// The `barge_in` event's fields.
    pub fn to_json(&self) -> Value {
        let mut data = json!({ "cause": self.cause.as_str(), "played_ms": self.played_ms });
        match &self.interrupted {
            Interrupted::Play { file } => {
                data["interrupted"] = json!("play");
                data["file"] = json!(&**file);
            }
            Interrupted::Stream { id } => {
                data["interrupted"] = json!("stream");
                data["stream_id"] = json!(id);
            }
            Interrupted::Talk { id } => {
                data["interrupted"] = json!("talk");
                if *id != 0 {
                    data["talk_id"] = json!(id);
                }
            }
            Interrupted::Fork { name } => {
                data["interrupted"] = json!("fork");
                data["fork"] = json!(&**name);
            }
        }
        data
    }
}

/// Why a `talk` ended, as its `talk:done` event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TalkEnd {
    /// It was spoken to the end (every loop).
    Finished,
    /// `DELETE /calls/{id}/talk`.
    Stopped,
    /// Another talk replaced it (`PUT /calls/{id}/talk` again), as a stream is replaced.
    Replaced,
    /// The caller interrupted it.
    BargeIn,
    /// Synthesis failed (the engine refused the text).
    Failed,
    /// The call ended first.
    Hangup,
}

impl TalkEnd {
    /// The `reason` of `talk:done`.
    pub fn as_str(self) -> &'static str {
        match self {
            TalkEnd::Finished => "finished",
            TalkEnd::Stopped => "stopped",
            TalkEnd::Replaced => "replaced",
            TalkEnd::BargeIn => "barge_in",
            TalkEnd::Failed => "failed",
            TalkEnd::Hangup => "hangup",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::DtmfSource;

    #[test]
    fn barge_in_modes_parse_and_say_what_interrupts_them() {
        assert_eq!(BargeInMode::from_json(&json!(true)), Some(BargeInMode::Dtmf));
        assert_eq!(BargeInMode::from_json(&json!(false)), Some(BargeInMode::Off));
        assert_eq!(BargeInMode::from_json(&json!("both")), Some(BargeInMode::Both));
        assert_eq!(BargeInMode::from_json(&json!("loud")), None);
        assert_eq!(BargeInMode::from_json(&json!(1)), None);
        let key = |source| Event::Dtmf { digit: DtmfDigit::Digit(1), start_ms: None, duration_ms: None, source };
        let speech = Event::Speech(Speech::Started { start_ms: 40 });
        let stopped = Event::Speech(Speech::Stopped { start_ms: 40, duration_ms: 500 });
        assert_eq!(BargeInMode::Dtmf.interrupted_by(&key(DtmfSource::Platform)), Some(BargeCause::Dtmf));
        assert_eq!(BargeInMode::Dtmf.interrupted_by(&key(DtmfSource::Both)), None, "a merged twin is not a new key");
        assert_eq!(BargeInMode::Dtmf.interrupted_by(&speech), None);
        assert_eq!(BargeInMode::Speech.interrupted_by(&speech), Some(BargeCause::Speech));
        assert_eq!(BargeInMode::Speech.interrupted_by(&stopped), None);
        assert_eq!(BargeInMode::Speech.interrupted_by(&key(DtmfSource::Inband)), None);
        assert_eq!(BargeInMode::Both.interrupted_by(&key(DtmfSource::Inband)), Some(BargeCause::Dtmf));
        assert_eq!(BargeInMode::Off.interrupted_by(&speech), None);
    }

    #[test]
    fn collected_digits_read_as_the_voice_api_reports_them() {
        let mut c = Collected::new();
        for d in [DtmfDigit::Digit(1), DtmfDigit::Star, DtmfDigit::Digit(0)] {
            assert!(c.push(d));
        }
        assert_eq!(c.digits(), "1*0");
        assert_eq!(c.to_json(), json!({ "dtmf": { "digits": "1*0", "timed_out": false } }));
        let mut full = Collected::new();
        assert!((0..MAX_INPUT_DIGITS).all(|_| full.push(DtmfDigit::Digit(9))));
        assert!(!full.push(DtmfDigit::Digit(9)));
        assert_eq!(full.len(), MAX_INPUT_DIGITS);
    }
}
