//! What an emulated call does: the caller's audio and keys, how long it lasts, how the platform
//! behaves (playout limit, strictness, frame tags, recording) and the network in between.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::auth::PlatformJwt;
use crate::client::network::Impairment;
use crate::protocol::{DtmfDigit, SampleRate};

/// What a call plays, and how the emulator behaves.
#[derive(Debug, Clone)]
pub struct CallPlan {
    /// The call's rate.
    pub rate: SampleRate,
    /// Metadata headers, flattened into the first message.
    pub headers: Map<String, Value>,
    /// Extra HTTP headers on the upgrade (e.g. `Authorization`).
    pub upgrade_headers: Vec<(String, String)>,
    /// Sign a fresh platform JWT for each call and send it as `Authorization: Bearer <JWT>`,
    /// as the platform does for `{"type":"vonage"}`.
    pub jwt: Option<PlatformJwt>,
    /// What the caller says.
    pub source: Source,
    /// How long the caller streams audio.
    pub duration: Duration,
    /// Hang up this long after the start, even mid-stream.
    pub hangup_after: Option<Duration>,
    /// After the stream ends, how long to keep listening before hanging up.
    pub linger: Duration,
    /// Keypresses to send, as `websocket:dtmf` events.
    pub dtmf: Vec<(Duration, DtmfDigit)>,
    /// How the keypresses reach the bot: as the platform's events, as tones in the audio, or
    /// both.
    pub dtmf_mode: DtmfMode,
    /// Duration of each keypress.
    pub dtmf_duration: Duration,
    /// Frames the playout buffer holds (the platform's limit).
    pub playout_limit: usize,
    /// Close the call on a frame of the wrong size, like the platform.
    pub strict: bool,
    /// Tag frames with sequence numbers and send times (load runs).
    pub tag_frames: bool,
    /// Record a stereo WAV: left what the emulator sent, right what the bot played.
    pub record: Option<PathBuf>,
    /// The network on the platform's sending side: jitter and stalls (late, never lost).
    pub network: Impairment,
    /// A pause in the platform's sending: from this far into the call, for this long, no
    /// frames are sent; the caller's audio resumes where it stopped, at real-time pace.
    pub pause: Option<(Duration, Duration)>,
}

impl CallPlan {
    /// A plan with the defaults: silence for `duration`, 3072-frame playout, lenient.
    pub fn new(rate: SampleRate, duration: Duration) -> CallPlan {
        CallPlan {
            rate,
            headers: Map::new(),
            upgrade_headers: Vec::new(),
            jwt: None,
            source: Source::Silence,
            duration,
            hangup_after: None,
            linger: Duration::from_millis(500),
            dtmf: Vec::new(),
            dtmf_mode: DtmfMode::Event,
            dtmf_duration: Duration::from_millis(100),
            playout_limit: 3072,
            strict: false,
            tag_frames: false,
            record: None,
            network: Impairment::default(),
            pause: None,
        }
    }
}

/// What the emulated caller says.
#[derive(Debug, Clone)]
pub enum Source {
    /// Digital silence.
    Silence,
    /// A continuous sine at this frequency (−12 dBFS).
    Tone(f64),
    /// These samples at the call rate, once, then silence.
    Samples(Arc<[i16]>),
}

/// How the emulator presses keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DtmfMode {
    /// As the platform reports a keypress it detected: a `websocket:dtmf` event only.
    #[default]
    Event,
    /// As a caller's phone sends them when the platform does not detect keys: tones in the
    /// audio only (to test a bot's in-band detection on its own).
    Inband,
    /// Both: the event, and the tones in the audio.
    Both,
}
