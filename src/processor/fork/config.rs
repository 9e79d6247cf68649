//! The `fork` parameters, checked by [`super::Fork::new`].

use std::path::PathBuf;

pub use crate::services::fork::{DEFAULT_FORK_OPUS_BITRATE_PER_CHANNEL, ForkCodec};

/// What to do with the target's text messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForkReplies {
    /// Every text message becomes a `fork:message` event.
    #[default]
    Events,
    /// Text messages with a known `action` are commands; others become `fork:message` events.
    Commands,
}

impl ForkReplies {
    /// Parses `"events"` or `"commands"`.
    pub fn parse(text: &str) -> Option<ForkReplies> {
        match text {
            "events" => Some(ForkReplies::Events),
            "commands" => Some(ForkReplies::Commands),
            _ => None,
        }
    }
}

/// Which audio a fork sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForkSend {
    /// Mono: the caller's audio, as the fork hears it (after the processors before it).
    #[default]
    Caller,
    /// Stereo, interleaved: left the caller, right the outbound frame as written by the
    /// processors before the fork plus the fork's own replies (what the caller hears from this
    /// pass, but for audio queued with `enqueue_output`).
    Both,
}

impl ForkSend {
    /// Parses `"caller"` or `"both"`.
    pub fn parse(text: &str) -> Option<ForkSend> {
        match text {
            "caller" => Some(ForkSend::Caller),
            "both" => Some(ForkSend::Both),
            _ => None,
        }
    }

    /// Channels in the audio sent.
    pub fn channels(self) -> usize {
        if self == ForkSend::Both { 2 } else { 1 }
    }
}

/// The `fork` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ForkConfig {
    /// The target, `ws://` or `wss://`: a template (see [`ForkConfig::first_message`] for the
    /// placeholders) whose values are percent-encoded.
    pub url: String,
    /// Extra upgrade headers: templates as `url`, whose values go in as they are (control
    /// characters removed).
    pub headers: Vec<(String, String)>,
    /// The rate sent to the target (8000, 16000, 24000 or 48000); `None` for the call's rate.
    pub rate: Option<u32>,
    /// Audio per binary message, in ms: 10, 20, 40 or 60.
    pub frame_ms: u32,
    /// A text message sent first on every connection: a template with `{call_id}`, `{path}`,
    /// `{header:NAME}` and the format sent, `{codec}`, `{rate}`, `{channels}`, `{frame_ms}` and
    /// `{content_type}`, whose values are JSON-escaped (put placeholders inside JSON strings).
    pub first_message: Option<String>,
    /// The audio ring between the media thread and the task, in ms (100 to 60000).
    pub buffer_ms: u32,
    /// What text replies are.
    pub replies: ForkReplies,
    /// The rate of binary replies; `None` for `rate`.
    pub reply_rate: Option<u32>,
    /// A label for events and logs; `None` for the URL's host.
    pub name: Option<String>,
    /// Which audio to send.
    pub send: ForkSend,
    /// Extra trust anchors for `wss://` (PEM certificates), besides the Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// The codec of the binary messages.
    pub codec: ForkCodec,
    /// The Opus bitrate in bits per second, all channels together; `None` for
    /// [`DEFAULT_FORK_OPUS_BITRATE_PER_CHANNEL`] per channel.
    pub bitrate: Option<u32>,
    /// What from the caller stops the target's reply audio while it plays (a key, speech, both,
    /// or nothing: the default).
    pub barge_in: crate::call::BargeInMode,
    /// The target streams live audio back (a conference, another media server), not replies to
    /// play whole: at most [`LIVE_REPLY_FRAMES`] frames of it wait, and what arrives late beyond
    /// that is skipped, so that a network stall does not add its length to the delay for the
    /// rest of the call.
    pub live: bool,
}

/// With `live`: frames of reply audio kept waiting at most; older ones are skipped.
pub const LIVE_REPLY_FRAMES: usize = 3;

impl ForkConfig {
    /// A configuration sending to `url` with the defaults.
    pub fn new(url: impl Into<String>) -> ForkConfig {
        ForkConfig {
            url: url.into(),
            headers: Vec::new(),
            rate: None,
            frame_ms: 20,
            first_message: None,
            buffer_ms: 2000,
            replies: ForkReplies::Events,
            reply_rate: None,
            name: None,
            send: ForkSend::Caller,
            ca_file: None,
            codec: ForkCodec::L16,
            bitrate: None,
            barge_in: crate::call::BargeInMode::Off,
            live: false,
        }
    }

    /// The Opus bitrate in use: `bitrate`, or the default per channel.
    pub fn opus_bitrate(&self) -> u32 {
        self.bitrate.unwrap_or(DEFAULT_FORK_OPUS_BITRATE_PER_CHANNEL * self.send.channels() as u32)
    }
}
