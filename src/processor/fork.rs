//! The `fork` processor: sends the caller's audio to a WebSocket target of its own (a
//! transcription service, a voice bot, an analytics sink) and relays the target's replies into
//! the call. Several forks may run in one route.
//!
//! # Threads and rings
//!
//! ```text
//!  media thread (process)                        fork runtime (one tokio task per fork)
//!  caller frame -> resample -> audio ring  ───────>  frames of `frame_ms` -> L16 or Opus
//!  mix one frame per pass  <- reply audio ring <───  binary replies (resampled), dtmf, play
//!  emit / clear / notify / hang up <- reply ring <─  text replies, connection events
//!  dtmf, notify played -> note ring  ──────────────>  text messages to the target
//! ```
//!
//! * The media thread only copies samples into and out of fixed-capacity rings (sized in
//!   [`Processor::prepare`]), runs the allocation-free [`Resampler`] to the fork's `rate`
//!   (its state kept across frames), and moves ready-made events out of a ring into
//!   [`Context::emit`]. It never blocks on the target. A pass in which the caller sent nothing
//!   sends silence, so the target's audio keeps time with the call. With `send = "both"` the
//!   outbound frame (as the processors before the fork wrote it, plus the fork's replies) is
//!   converted too and interleaved as the right channel.
//! * One process-wide tokio runtime with two worker threads named `callpipe-fork`, started with
//!   the first fork, owns every target connection. It is neither a media thread nor the server's
//!   runtime. Each fork is one task, spawned in `prepare`. The task connects (`ws://`, or
//!   `wss://` over rustls: see `fork/target.rs`), sends `first_message`, then every
//!   [`POLL_INTERVAL`] sends the ring's whole frames of `frame_ms` as binary messages (L16, or
//!   one Opus packet each, encoded on the task: see `fork/codec.rs`), and reads the target's
//!   replies. The media thread never wakes the task: polling bounds the added latency to one
//!   interval plus one frame.
//! * The audio ring holds `buffer_ms` (2 s by default). When it is full (the target is slow,
//!   dead, or being reconnected), frames are dropped and counted, and the task reports a
//!   `fork:overrun` event when dropping starts and when it stops.
//! * Reconnects use exponential backoff with jitter, from 250 ms doubling to 10 s, whenever the
//!   connection fails (TCP, TLS, the upgrade, or [`CONNECT_TIMEOUT`] for the three) or the
//!   target closes with anything but a clean 1000. After a clean close the target initiated,
//!   the fork stops for the rest of the call.
//! * At the end of the call (`finish`, or `Drop`) a flag tells the task to send the whole frames
//!   left, close with 1000 and end: within [`STOP_TIMEOUT`] in every case.
//!
//! # Replies
//!
//! * **Binary** messages are L16 little-endian at `reply_rate` (by default the fork's `rate`),
//!   resampled to the call's rate on the network side and mixed into the outbound frame, one
//!   frame per pass ([`Context::mix_output`], so they mix with what earlier stages wrote, e.g.
//!   an `echo`). The task keeps up to [`MAX_BACKLOG_SECONDS`] of audio sent faster than real
//!   time and feeds the reply ring from it. A partial last frame is played (padded with silence)
//!   when nothing more came for a pass.
//! * **Text** messages become `fork:message` events; with `replies = "commands"`, those with a
//!   known `action` are commands (see [`parse_command`]).
//!
//! Events are made (allocated) on the task and reach the call through [`Context::emit`], which
//! moves them; the session passes them on to the other processors and out without copying or
//! freeing them (see the session's module docs), so a target may send many text replies (a
//! transcript word by word) at no cost to the media thread beyond moving a few words per event;
//! only an event dropped because a bounded queue is full (counted) is freed on the media
//! thread. The `clear`, `notify`, `hangup` commands and the audio reach the media path as plain
//! values.
//!
//! # Format and metrics
//!
//! * The target learns what it receives from the templates: `{codec}` (`l16` or `opus`),
//!   `{rate}`, `{channels}`, `{frame_ms}` and `{content_type}` (`audio/l16;rate=16000`,
//!   `audio/opus;rate=48000;channels=2`) may be put in the URL, a header or `first_message`.
//! * Each fork name has process-wide counters (connects, failed attempts, disconnects by
//!   reason, frames and bytes sent, frames dropped, replies by kind, reply audio dropped),
//!   updated by the task only: see `fork/metrics.rs` and [`fork_totals`].

mod codec;
mod metrics;
mod target;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ringbuf::{HeapCons, HeapProd, HeapRb, traits::*};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, frame::coding::CloseCode};
use tokio_tungstenite::tungstenite::{Message, http::HeaderName, http::HeaderValue};

#[cfg(feature = "opus")]
pub use codec::ForkOpusEncoder;
pub use codec::{DEFAULT_FORK_OPUS_BITRATE_PER_CHANNEL, ForkCodec};
pub use metrics::{ForkCounters, ForkTotals, fork_totals};

use super::{CallInfo, Context, Event, Processor, ProcessorError, Setup};
use crate::protocol::{FRAMES_PER_SECOND, SampleRate};
use crate::resample::{RATES, Resampler};
use codec::Encoder;
use metrics::Disconnect;
use target::{Security, Ws};

/// How often each fork's task sends the audio ring's whole frames and feeds the reply ring.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How long a fork's task may take, once the call has ended, to send what is left and close.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest a connection attempt (TCP and upgrade) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Reply audio the task keeps for the call beyond the reply ring, in seconds; more is dropped.
pub const MAX_BACKLOG_SECONDS: usize = 60;

/// The first reconnect delay; it doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(250);

/// The longest reconnect delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A send that takes longer marks the target as stalled: audio then waits in the ring.
const SEND_TIMEOUT: Duration = Duration::from_millis(100);

/// How long without drops ends an overrun.
const OVERRUN_QUIET: Duration = Duration::from_millis(100);

/// Items in the ring of events and commands to the media thread.
const REPLY_RING: usize = 64;

/// Items in the ring of notes (DTMF, notify played) from the media thread to the task.
const NOTE_RING: usize = 32;

/// Pending `notify` commands a fork tracks at once.
const MAX_PENDING_NOTIFIES: usize = 8;

/// Reply-ring capacity in 20 ms frames at the call's rate.
const REPLY_AUDIO_FRAMES: usize = 25;

/// `notify` markers of forks start here, far from other processors' markers and below the
/// control API's (bit 52): every marker stays under 2^53, so a platform component that reads
/// JSON numbers as doubles echoes it intact.
const MARKER_BASE: u64 = 1 << 51;

/// Frame sizes a fork may send, in ms.
pub const FRAME_MS: [u32; 4] = [10, 20, 40, 60];

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
}

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
        }
    }

    /// The Opus bitrate in use: `bitrate`, or the default per channel.
    pub fn opus_bitrate(&self) -> u32 {
        self.bitrate.unwrap_or(DEFAULT_FORK_OPUS_BITRATE_PER_CHANNEL * self.send.channels() as u32)
    }
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Piece {
    Literal(String),
    CallId,
    Path,
    Header(String),
    Codec,
    Rate,
    Channels,
    FrameMs,
    ContentType,
}

/// What a fork sends, for the templates: the target learns the format from the URL, a header
/// or the first message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Format {
    codec: ForkCodec,
    rate: u32,
    channels: usize,
    frame_ms: u32,
}

impl Format {
    /// `audio/l16;rate=16000` or `audio/opus;rate=16000`, with `;channels=2` when stereo.
    fn content_type(self) -> String {
        let channels = if self.channels == 2 { ";channels=2" } else { "" };
        format!("audio/{};rate={}{channels}", self.codec.as_str(), self.rate)
    }
}

/// How a template's values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Escape {
    /// Percent-encoding of everything but RFC 3986's unreserved characters.
    Url,
    /// The inside of a JSON string.
    Json,
    /// As is, control characters removed.
    Header,
}

/// Parses a template: `{call_id}`, `{path}` and `{header:NAME}` (NAME of `[A-Za-z0-9_-]`) are
/// placeholders; every other character, braces included, is literal.
pub(super) fn parse_template(text: &str) -> Vec<Piece> {
    parse_pieces(text, false)
}

/// Parses a fork's template: the placeholders of [`parse_template`], and those of the format
/// sent, `{codec}`, `{rate}`, `{channels}`, `{frame_ms}` and `{content_type}`.
fn parse_fork_template(text: &str) -> Vec<Piece> {
    parse_pieces(text, true)
}

fn parse_pieces(text: &str, with_format: bool) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        literal.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let placeholder = after.find('}').and_then(|close| {
            let inner = &after[..close];
            let piece = match inner {
                "call_id" => Some(Piece::CallId),
                "path" => Some(Piece::Path),
                "codec" if with_format => Some(Piece::Codec),
                "rate" if with_format => Some(Piece::Rate),
                "channels" if with_format => Some(Piece::Channels),
                "frame_ms" if with_format => Some(Piece::FrameMs),
                "content_type" if with_format => Some(Piece::ContentType),
                _ => inner
                    .strip_prefix("header:")
                    .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                    .map(|name| Piece::Header(name.to_owned())),
            };
            piece.map(|p| (p, close))
        });
        match placeholder {
            Some((piece, close)) => {
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(piece);
                rest = &after[close + 1..];
            }
            None => {
                literal.push('{');
                rest = after;
            }
        }
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    pieces
}

/// Fills a template from the call; a missing header is empty.
pub(super) fn render(pieces: &[Piece], call: &CallInfo, escape: Escape) -> String {
    render_pieces(pieces, call, None, escape)
}

/// Fills a fork's template from the call and the format sent.
fn render_with_format(pieces: &[Piece], call: &CallInfo, format: Format, escape: Escape) -> String {
    render_pieces(pieces, call, Some(format), escape)
}

/// Fills `pieces`; the format's placeholders (only a fork's templates have them) are empty
/// without a format.
fn render_pieces(pieces: &[Piece], call: &CallInfo, format: Option<Format>, escape: Escape) -> String {
    use std::borrow::Cow;
    let mut out = String::new();
    for piece in pieces {
        let value = match piece {
            Piece::Literal(text) => {
                out.push_str(text);
                continue;
            }
            Piece::CallId => Cow::Borrowed(call.id.as_str()),
            Piece::Path => Cow::Borrowed(call.path.as_str()),
            Piece::Header(name) => call.metadata.header_str(name).unwrap_or_default(),
            Piece::Codec => format.map_or(Cow::Borrowed(""), |f| Cow::Borrowed(f.codec.as_str())),
            Piece::Rate => format.map_or(Cow::Borrowed(""), |f| Cow::Owned(f.rate.to_string())),
            Piece::Channels => format.map_or(Cow::Borrowed(""), |f| Cow::Owned(f.channels.to_string())),
            Piece::FrameMs => format.map_or(Cow::Borrowed(""), |f| Cow::Owned(f.frame_ms.to_string())),
            Piece::ContentType => format.map_or(Cow::Borrowed(""), |f| Cow::Owned(f.content_type())),
        };
        push_escaped(&mut out, &value, escape);
    }
    out
}

fn push_escaped(out: &mut String, value: &str, escape: Escape) {
    match escape {
        Escape::Url => {
            for byte in value.bytes() {
                if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                    out.push(char::from(byte));
                } else {
                    out.push_str(&format!("%{byte:02X}"));
                }
            }
        }
        Escape::Json => {
            let quoted = Value::from(value).to_string();
            out.push_str(&quoted[1..quoted.len() - 1]);
        }
        Escape::Header => out.extend(value.chars().filter(|c| !c.is_control())),
    }
}

/// A call for checking templates at configuration time.
fn sample_call() -> CallInfo {
    CallInfo { id: "call-id".into(), path: "/path".into(), metadata: crate::protocol::Metadata::new(SampleRate::Hz8000) }
}

/// A format for checking templates at configuration time.
const SAMPLE_FORMAT: Format = Format { codec: ForkCodec::L16, rate: 8000, channels: 1, frame_ms: 20 };

/// A command from the target (with `replies = "commands"`), one JSON object per text message:
///
/// * `{"action":"clear"}`: barge-in. Drops the target's audio not yet played and everything
///   queued for the caller, and sends the platform a `clear`.
/// * `{"action":"notify","payload":{...}}`: when everything the target sent before it has
///   played to the caller, the target receives `{"event":"notify","payload":{...}}`.
/// * `{"action":"hangup"}`: hangs up the call (close 1000, hang-up reason `"processor"`).
/// * `{"action":"dtmf","digits":"12#"}`: plays DTMF keys to the caller after the audio sent
///   before (50 ms tones, 50 ms gaps).
/// * `{"action":"play","url":"file:///path/prompt.wav"}`: plays a WAV file to the caller after
///   the audio sent before.
///
/// Anything else (no `action`, an unknown one) is not a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Barge-in.
    Clear,
    /// Tell the target when the audio so far has played.
    Notify(Value),
    /// Hang up the call.
    Hangup,
    /// Play DTMF keys.
    Dtmf(String),
    /// Play a WAV file.
    Play(String),
}

/// A command from a text message, `Ok(None)` when it is not one, `Err` when it names a known
/// action with bad arguments.
pub fn parse_command(value: &Value) -> Result<Option<Command>, String> {
    let Some(action) = value.get("action").and_then(Value::as_str) else { return Ok(None) };
    Ok(Some(match action {
        "clear" => Command::Clear,
        "hangup" => Command::Hangup,
        "notify" => Command::Notify(value.get("payload").cloned().unwrap_or(Value::Null)),
        "dtmf" => match value.get("digits").and_then(Value::as_str) {
            Some(digits) if !digits.is_empty() => Command::Dtmf(digits.to_owned()),
            _ => return Err("dtmf needs \"digits\", e.g. {\"action\":\"dtmf\",\"digits\":\"12#\"}".into()),
        },
        "play" => match value.get("url").and_then(Value::as_str).and_then(|u| u.strip_prefix("file://")) {
            Some(path) if !path.is_empty() => Command::Play(path.to_owned()),
            _ => return Err("play needs a \"url\" of the form file:///path/to/file.wav".into()),
        },
        _ => return Ok(None),
    }))
}

/// What the task hands to the media thread, besides audio.
#[derive(Debug)]
enum Reply {
    /// A ready-made event, moved into `emit`.
    Event(Event),
    /// Barge-in: drop the reply audio pushed before sample number `upto`, then `clear`.
    Clear { upto: u64 },
    /// Ask for `marker` once the reply audio up to sample number `at` has been mixed.
    Notify { marker: u64, at: u64 },
    /// Hang up the call.
    Hangup,
}

/// What the media thread tells the task.
#[derive(Debug, Clone, Copy)]
enum Note {
    Dtmf(char),
    Played(u64),
}

/// State shared by the processor and its task.
#[derive(Debug, Default)]
struct Shared {
    /// The call has ended: send what is left, close and end.
    stop: AtomicBool,
    /// The target closed cleanly: stop pushing audio.
    done: AtomicBool,
    /// Frames dropped because the audio ring was full.
    dropped: AtomicU64,
}

/// The rings of one fork, media side.
struct MediaSide {
    audio: HeapProd<i16>,
    reply_audio: HeapCons<i16>,
    replies: HeapCons<Reply>,
    notes: HeapProd<Note>,
}

/// Forks the call's audio to a WebSocket target. See the module documentation in
/// `src/processor/fork.rs`.
pub struct Fork {
    config: ForkConfig,
    url: Vec<Piece>,
    headers: Vec<(HeaderName, Vec<Piece>)>,
    first_message: Option<Vec<Piece>>,
    name: String,
    security: Security,
    counters: Arc<ForkCounters>,
    shared: Arc<Shared>,
    side: Option<MediaSide>,
    resampler: Option<Resampler>,
    resampled: Vec<i16>,
    /// With `send = "both"`: the outbound frame's converter, its output, and the interleaved pair.
    outbound_resampler: Option<Resampler>,
    outbound_resampled: Vec<i16>,
    stereo: Vec<i16>,
    reply_frame: Vec<i16>,
    /// Reply samples taken out of the reply ring so far.
    popped: u64,
    /// The reply ring's length at the previous pass, to play a partial frame once it stops growing.
    last_partial: usize,
    pending_notifies: [(u64, u64); MAX_PENDING_NOTIFIES],
    n_pending: usize,
    /// This fork's `notify` markers are `marker_base + n`.
    marker_base: u64,
    stopped: bool,
}

static NEXT_FORK: AtomicU64 = AtomicU64::new(0);

fn config_error(message: impl Into<String>) -> ProcessorError {
    ProcessorError::Config { processor: "fork".into(), message: message.into() }
}

/// Checks `codec` against this build and `bitrate` against the codec.
fn check_codec(config: &ForkConfig) -> Result<(), ProcessorError> {
    let bitrates = super::record::OPUS_BITRATES;
    match (config.codec, config.bitrate) {
        (ForkCodec::L16, Some(_)) => Err(config_error("`bitrate` applies to codec = \"opus\" only")),
        (ForkCodec::Opus, _) if !cfg!(feature = "opus") => Err(config_error(format!("codec = \"opus\": {}", super::OPUS_FEATURE_MISSING))),
        (ForkCodec::Opus, Some(bits)) if !bitrates.contains(&bits) => {
            Err(config_error(format!("`bitrate` must be between {} and {} bits per second, not {bits}", bitrates.start(), bitrates.end())))
        }
        _ => Ok(()),
    }
}

impl Fork {
    /// A fork with `config`, checked here: the URL (with sample values), the rates, the frame
    /// size, the buffer, the header names, the codec and its bitrate, and for `wss://` the trust
    /// roots (`ca_file` is read the first time a fork names it: see `fork/target.rs`).
    ///
    /// Registers the fork's name in the process's fork counters ([`fork_totals`]): a lock, an
    /// allocation, maybe a file read. Build forks off the media thread.
    pub fn new(config: ForkConfig) -> Result<Fork, ProcessorError> {
        let url = parse_fork_template(&config.url);
        let sample = render_with_format(&url, &sample_call(), SAMPLE_FORMAT, Escape::Url);
        let parsed = url::Url::parse(&sample).map_err(|e| config_error(format!("`url` {:?} is not a URL: {e}", config.url)))?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(config_error("`url` needs a host"));
        }
        let security = match parsed.scheme() {
            "ws" if config.ca_file.is_some() => return Err(config_error("`ca_file` applies to wss:// targets only")),
            "ws" => Security::Plain,
            "wss" => Security::Tls(target::tls_config(config.ca_file.as_deref()).map_err(config_error)?),
            other => return Err(config_error(format!("`url` must be ws:// or wss://, not {other}://"))),
        };
        check_codec(&config)?;
        for (key, rate) in [("rate", config.rate), ("reply_rate", config.reply_rate)] {
            if let Some(rate) = rate
                && !RATES.contains(&rate)
            {
                return Err(config_error(format!("`{key}` must be 8000, 16000, 24000 or 48000, not {rate}")));
            }
        }
        if !FRAME_MS.contains(&config.frame_ms) {
            return Err(config_error(format!("`frame_ms` must be 10, 20, 40 or 60, not {}", config.frame_ms)));
        }
        if !(100..=60_000).contains(&config.buffer_ms) {
            return Err(config_error(format!("`buffer_ms` must be between 100 and 60000, not {}", config.buffer_ms)));
        }
        let headers = config
            .headers
            .iter()
            .map(|(name, value)| {
                let header =
                    HeaderName::from_bytes(name.as_bytes()).map_err(|_| config_error(format!("`headers`: bad header name {name:?}")))?;
                Ok((header, parse_fork_template(value)))
            })
            .collect::<Result<Vec<_>, ProcessorError>>()?;
        let first_message = config.first_message.as_deref().map(parse_fork_template);
        let name = config.name.clone().unwrap_or_else(|| parsed.host_str().unwrap_or_default().to_owned());
        let counters = metrics::counters(&name);
        let marker_base = MARKER_BASE + ((NEXT_FORK.fetch_add(1, Ordering::Relaxed) % (1 << 26)) << 24);
        Ok(Fork {
            config,
            url,
            headers,
            first_message,
            name,
            security,
            counters,
            shared: Arc::default(),
            side: None,
            resampler: None,
            resampled: Vec::new(),
            outbound_resampler: None,
            outbound_resampled: Vec::new(),
            stereo: Vec::new(),
            reply_frame: Vec::new(),
            popped: 0,
            last_partial: 0,
            pending_notifies: [(0, 0); MAX_PENDING_NOTIFIES],
            n_pending: 0,
            marker_base,
            stopped: false,
        })
    }

    /// The label used in events.
    pub fn label(&self) -> &str {
        &self.name
    }

    /// Frames dropped so far because the audio ring was full.
    pub fn dropped_frames(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    fn stop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            self.shared.stop.store(true, Ordering::Release);
        }
    }

    /// Applies the task's events and commands, in order, as far as this pass has room.
    fn take_replies(&mut self, cx: &mut Context<'_>) {
        let Some(side) = self.side.as_mut() else { return };
        while let Some(reply) = side.replies.try_peek() {
            if matches!(reply, Reply::Event(_)) && cx.events_room() == 0 {
                return;
            }
            let Some(reply) = side.replies.try_pop() else { return };
            match reply {
                Reply::Event(event) => cx.emit(event),
                Reply::Clear { upto } => {
                    let stale = upto.saturating_sub(self.popped);
                    let skipped = side.reply_audio.skip(usize::try_from(stale).unwrap_or(usize::MAX));
                    self.popped += skipped as u64;
                    self.n_pending = 0;
                    self.last_partial = 0;
                    cx.clear();
                }
                Reply::Notify { marker, at } => {
                    if at <= self.popped {
                        cx.notify(marker);
                    } else if self.n_pending < MAX_PENDING_NOTIFIES {
                        self.pending_notifies[self.n_pending] = (marker, at);
                        self.n_pending += 1;
                    } else {
                        cx.notify(marker);
                    }
                }
                Reply::Hangup => cx.hang_up(),
            }
        }
    }

    /// Mixes one frame of the target's audio into the outbound frame.
    fn play_replies(&mut self, cx: &mut Context<'_>) {
        let Some(side) = self.side.as_mut() else { return };
        let frame = self.reply_frame.len();
        let available = side.reply_audio.occupied_len();
        // A partial frame waits one pass for the rest of it.
        let take = if available >= frame || (available > 0 && available == self.last_partial) { available.min(frame) } else { 0 };
        self.last_partial = if take == 0 { available } else { 0 };
        if take > 0 {
            self.reply_frame.fill(0);
            let n = side.reply_audio.pop_slice(&mut self.reply_frame[..take]);
            self.popped += n as u64;
            cx.mix_output(&self.reply_frame);
        }
        let mut i = 0;
        while i < self.n_pending {
            let (marker, at) = self.pending_notifies[i];
            if at <= self.popped {
                cx.notify(marker);
                self.n_pending -= 1;
                self.pending_notifies[i] = self.pending_notifies[self.n_pending];
            } else {
                i += 1;
            }
        }
    }
}

impl std::fmt::Debug for Fork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fork")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("dropped_frames", &self.dropped_frames())
            .finish_non_exhaustive()
    }
}

impl Processor for Fork {
    fn name(&self) -> &'static str {
        "fork"
    }

    fn queues_output(&self) -> bool {
        false
    }

    fn prepare(&mut self, setup: &Setup<'_>) -> Result<(), ProcessorError> {
        if self.side.is_some() {
            return Err(config_error("a fork processor can only be prepared once"));
        }
        let call_rate = setup.rate.hz();
        let rate = self.config.rate.unwrap_or(call_rate);
        let reply_rate = self.config.reply_rate.unwrap_or(rate);
        let frame = (rate / FRAMES_PER_SECOND) as usize;
        let channels = self.config.send.channels();
        if rate != call_rate {
            self.resampler = Some(Resampler::new(call_rate, rate).map_err(|e| config_error(e.to_string()))?);
            if channels == 2 {
                self.outbound_resampler = Some(Resampler::new(call_rate, rate).map_err(|e| config_error(e.to_string()))?);
            }
        }
        self.resampled = vec![0; frame];
        if channels == 2 {
            self.outbound_resampled = vec![0; frame];
            self.stereo = vec![0; 2 * frame];
        }
        self.reply_frame = vec![0; setup.frame_samples()];
        // Whole 20 ms frames, at least one of the target's frames.
        let frames = (self.config.buffer_ms as usize).div_ceil(20).max(self.config.frame_ms as usize / 20);
        let (audio, audio_out) = HeapRb::<i16>::new(frames * frame * channels).split();
        let (reply_audio_in, reply_audio) = HeapRb::<i16>::new(REPLY_AUDIO_FRAMES * setup.frame_samples()).split();
        let (replies_in, replies) = HeapRb::<Reply>::new(REPLY_RING).split();
        let (notes, notes_out) = HeapRb::<Note>::new(NOTE_RING).split();
        let reply_resampler = if reply_rate != call_rate {
            Some(Resampler::new(reply_rate, call_rate).map_err(|e| config_error(e.to_string()))?)
        } else {
            None
        };
        let format = Format { codec: self.config.codec, rate, channels, frame_ms: self.config.frame_ms };
        let encoder = Encoder::new(self.config.codec, rate, channels, self.config.frame_ms, self.config.opus_bitrate())
            .map_err(|e| config_error(format!("`codec`: {e}")))?;
        let mut request = render_with_format(&self.url, setup.call, format, Escape::Url)
            .into_client_request()
            .map_err(|e| config_error(format!("`url`: {e}")))?;
        for (name, value) in &self.headers {
            let value = render_with_format(value, setup.call, format, Escape::Header);
            let value = HeaderValue::from_str(&value).map_err(|e| config_error(format!("`headers`.{name}: {e}")))?;
            request.headers_mut().insert(name.clone(), value);
        }
        let chunk = (rate * self.config.frame_ms / 1000) as usize * channels;
        let task = Task {
            name: self.name.clone(),
            request,
            security: self.security.clone(),
            first_message: self.first_message.as_ref().map(|t| render_with_format(t, setup.call, format, Escape::Json)),
            chunk,
            frame: vec![0; chunk],
            encoder,
            counters: self.counters.clone(),
            counted_drops: 0,
            replies_mode: self.config.replies,
            call_rate: setup.rate,
            reply_resampler,
            reply_pending: Vec::new(),
            backlog: VecDeque::new(),
            backlog_cap: MAX_BACKLOG_SECONDS * call_rate as usize,
            pushed: 0,
            audio: audio_out,
            reply_audio: reply_audio_in,
            replies: replies_in,
            notes: notes_out,
            shared: self.shared.clone(),
            notify_payloads: HashMap::new(),
            next_marker: self.marker_base,
            overrun: Overrun::default(),
        };
        let runtime = runtime().map_err(|e| config_error(format!("cannot start the fork runtime: {e}")))?;
        runtime.spawn(task.run());
        self.side = Some(MediaSide { audio, reply_audio, replies, notes });
        Ok(())
    }

    fn timeline(&self) -> super::Timeline {
        // Replies are played on the wall clock; the caller's audio goes out on its own timeline.
        super::Timeline::Both
    }

    fn process(&mut self, cx: &mut Context<'_>) {
        if self.stopped {
            return;
        }
        self.take_replies(cx);
        self.play_replies(cx);
        let Some(side) = self.side.as_mut() else { return };
        if !cx.pass().caller || self.shared.done.load(Ordering::Acquire) {
            return;
        }
        let mut samples: &[i16] = match self.resampler.as_mut() {
            Some(resampler) => {
                resampler.process(cx.input(), &mut self.resampled);
                &self.resampled
            }
            None => cx.input(),
        };
        if self.config.send == ForkSend::Both {
            let outbound: &[i16] = match self.outbound_resampler.as_mut() {
                Some(resampler) => {
                    resampler.process(cx.output(), &mut self.outbound_resampled);
                    &self.outbound_resampled
                }
                None => cx.output(),
            };
            for ((pair, l), r) in self.stereo.chunks_exact_mut(2).zip(samples).zip(outbound) {
                pair[0] = *l;
                pair[1] = *r;
            }
            samples = &self.stereo;
        }
        if side.audio.vacant_len() >= samples.len() {
            side.audio.push_slice(samples);
        } else {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn handle_event(&mut self, event: &Event, _cx: &mut Context<'_>) {
        let Some(side) = self.side.as_mut() else { return };
        if self.config.replies != ForkReplies::Commands {
            return;
        }
        let note = match event {
            Event::Dtmf { source: super::DtmfSource::Both, .. } => return,
            Event::Dtmf { digit, .. } => Note::Dtmf(digit.as_char()),
            Event::NotifyPlayed { marker } if (self.marker_base..self.marker_base + (1 << 24)).contains(marker) => Note::Played(*marker),
            _ => return,
        };
        let _ = side.notes.try_push(note);
    }

    fn finish(&mut self, _cx: &mut Context<'_>) {
        self.stop();
    }
}

impl Drop for Fork {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The process's runtime for fork connections, started on first use.
fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("callpipe-fork")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Overrun tracking on the task's side of the audio ring.
#[derive(Debug, Default)]
struct Overrun {
    /// The drop count last seen, and when it last grew.
    seen: u64,
    last_drop: Option<tokio::time::Instant>,
    /// The drop count when the current overrun started.
    started_at: Option<u64>,
}

/// Why a connection ended.
enum Ended {
    /// The call ended.
    Stop,
    /// The target closed with 1000: no reconnect.
    Clean,
    /// Anything else: reconnect.
    Lost(String),
}

/// A fork's network side.
struct Task {
    name: String,
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
    security: Security,
    first_message: Option<String>,
    /// Samples per binary message at the fork's rate (interleaved, with `send = "both"`).
    chunk: usize,
    /// One message's samples, taken from the audio ring.
    frame: Vec<i16>,
    encoder: Encoder,
    counters: Arc<ForkCounters>,
    /// The ring's drop count already added to `counters`.
    counted_drops: u64,
    replies_mode: ForkReplies,
    call_rate: SampleRate,
    reply_resampler: Option<Resampler>,
    /// Binary reply samples waiting for a whole 20 ms frame at `reply_rate`.
    reply_pending: Vec<i16>,
    /// Reply audio at the call's rate not yet in the reply ring.
    backlog: VecDeque<i16>,
    backlog_cap: usize,
    /// Reply samples pushed into the reply ring so far.
    pushed: u64,
    audio: HeapCons<i16>,
    reply_audio: HeapProd<i16>,
    replies: HeapProd<Reply>,
    notes: HeapCons<Note>,
    shared: Arc<Shared>,
    notify_payloads: HashMap<u64, Value>,
    next_marker: u64,
    overrun: Overrun,
}

impl Task {
    async fn run(mut self) {
        self.connect_and_send().await;
        self.count_drops();
    }

    /// Connects, sends and reconnects until the call ends or the target closes cleanly.
    async fn connect_and_send(&mut self) {
        let mut backoff = MIN_BACKOFF;
        let mut failures = 0u32;
        loop {
            if self.stopping() {
                return;
            }
            let connecting = tokio::time::timeout(CONNECT_TIMEOUT, target::connect(self.request.clone(), self.security.clone()));
            tokio::pin!(connecting);
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            let attempt = loop {
                tokio::select! {
                    r = &mut connecting => break r,
                    _ = tick.tick() => {
                        if self.stopping() {
                            return;
                        }
                        self.housekeeping();
                    }
                }
            };
            let ended = match attempt {
                Ok(Ok(ws)) => {
                    failures = 0;
                    backoff = MIN_BACKOFF;
                    self.counters.connected();
                    self.event("fork:connected", json!({ "fork": self.name, "url": self.request.uri().to_string() }));
                    let ended = self.session(ws).await;
                    self.counters.disconnected(match ended {
                        Ended::Stop => Disconnect::CallEnded,
                        Ended::Clean => Disconnect::TargetClosed,
                        Ended::Lost(_) => Disconnect::Error,
                    });
                    ended
                }
                Ok(Err(error)) => {
                    self.counters.connect_failed();
                    Ended::Lost(format!("connect failed: {error}"))
                }
                Err(_) => {
                    self.counters.connect_failed();
                    Ended::Lost("connect timed out".into())
                }
            };
            match ended {
                Ended::Stop => return,
                Ended::Clean => {
                    self.shared.done.store(true, Ordering::Release);
                    self.event(
                        "fork:disconnected",
                        json!({ "fork": self.name, "reason": "closed by the target (1000)", "reconnect": false }),
                    );
                    // Nothing more to send; audio the target sent before it closed still plays.
                    while !self.stopping() {
                        self.housekeeping();
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    return;
                }
                Ended::Lost(reason) => {
                    // Every lost connection is reported; of a run of failed attempts, the first.
                    if failures == 0 {
                        tracing::info!(fork = self.name, reason, "fork target lost; reconnecting");
                        self.event("fork:disconnected", json!({ "fork": self.name, "reason": reason, "reconnect": true }));
                    }
                    failures += 1;
                }
            }
            let delay = jitter(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            let deadline = tokio::time::Instant::now() + delay;
            while tokio::time::Instant::now() < deadline {
                if self.stopping() {
                    return;
                }
                self.housekeeping();
                tokio::time::sleep(POLL_INTERVAL.max(Duration::from_millis(20))).await;
            }
        }
    }

    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Acquire)
    }

    /// Sends a ready-made event to the media thread (dropped when its ring is full).
    fn event(&mut self, name: &'static str, data: Value) {
        if self.replies.try_push(Reply::Event(Event::custom(name, data))).is_err() {
            tracing::debug!(fork = self.name, name, "fork event dropped: ring full");
        }
    }

    /// One connection, until it ends.
    async fn session(&mut self, mut ws: Ws) -> Ended {
        // Each connection is a stream of its own.
        self.encoder.reset();
        if let Some(text) = self.first_message.clone()
            && let Err(e) = send_timeout(&mut ws, Message::text(text)).await
        {
            return Ended::Lost(e);
        }
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stalled = false;
        loop {
            tokio::select! {
                message = ws.next() => match message {
                    Some(Ok(message)) => {
                        if let Some(ended) = self.handle_message(message) {
                            return ended;
                        }
                    }
                    Some(Err(e)) => return Ended::Lost(e.to_string()),
                    None => return Ended::Lost("connection closed without a close frame".into()),
                },
                _ = tick.tick() => {
                    if self.stopping() {
                        self.close(ws).await;
                        return Ended::Stop;
                    }
                    self.housekeeping();
                    if stalled {
                        match tokio::time::timeout(SEND_TIMEOUT, ws.flush()).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => return Ended::Lost(e.to_string()),
                            Err(_) => continue,
                        }
                    }
                    if let Err(e) = self.send_notes(&mut ws).await {
                        return Ended::Lost(e);
                    }
                    match self.send_audio(&mut ws).await {
                        Ok(done) => stalled = !done,
                        Err(e) => return Ended::Lost(e),
                    }
                }
            }
        }
    }

    /// Sends the ring's whole frames. `Ok(false)` when a send took too long (the frame is in
    /// the socket's buffer; the rest waits in the ring).
    async fn send_audio(&mut self, ws: &mut Ws) -> Result<bool, String> {
        while self.audio.occupied_len() >= self.chunk {
            self.audio.pop_slice(&mut self.frame);
            let payload = self.encoder.encode(&self.frame)?;
            let bytes = payload.len();
            match tokio::time::timeout(SEND_TIMEOUT, ws.send(Message::binary(payload))).await {
                Ok(Ok(())) => self.counters.sent(bytes),
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => {
                    self.counters.sent(bytes);
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Sends the caller's DTMF and played notifies as text.
    async fn send_notes(&mut self, ws: &mut Ws) -> Result<(), String> {
        while let Some(note) = self.notes.try_pop() {
            let text = match note {
                Note::Dtmf(digit) => json!({ "event": "dtmf", "digit": digit.to_string() }),
                Note::Played(marker) => {
                    let payload = self.notify_payloads.remove(&marker).unwrap_or(Value::Null);
                    json!({ "event": "notify", "payload": payload })
                }
            };
            send_timeout(ws, Message::text(text.to_string())).await?;
        }
        Ok(())
    }

    /// At the end of the call: the whole frames left, then a clean close, within the bound.
    async fn close(&mut self, mut ws: Ws) {
        let _ = tokio::time::timeout(STOP_TIMEOUT, async {
            let _ = self.send_audio(&mut ws).await;
            let frame = CloseFrame { code: CloseCode::Normal, reason: "call ended".into() };
            let _ = ws.close(Some(frame)).await;
            // Wait for the target's close frame, briefly.
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }

    /// Adds the frames the media thread dropped since the last look to the counters.
    fn count_drops(&mut self) {
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        if dropped > self.counted_drops {
            self.counters.dropped(dropped - self.counted_drops);
            self.counted_drops = dropped;
        }
    }

    /// Overrun events and counts, and the reply ring's feed from the backlog.
    fn housekeeping(&mut self) {
        self.count_drops();
        let now = tokio::time::Instant::now();
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        if dropped > self.overrun.seen {
            self.overrun.seen = dropped;
            self.overrun.last_drop = Some(now);
            if self.overrun.started_at.is_none() {
                self.overrun.started_at = Some(dropped - 1);
                tracing::debug!(fork = self.name, "fork overrun started");
                self.event("fork:overrun", json!({ "fork": self.name, "state": "started" }));
            }
        } else if let (Some(start), Some(last)) = (self.overrun.started_at, self.overrun.last_drop)
            && now.duration_since(last) >= OVERRUN_QUIET
        {
            self.overrun.started_at = None;
            self.event("fork:overrun", json!({ "fork": self.name, "state": "stopped", "dropped_frames": dropped - start }));
        }
        while !self.backlog.is_empty() && self.reply_audio.vacant_len() > 0 {
            let (a, _) = self.backlog.as_slices();
            let n = self.reply_audio.push_slice(a);
            self.backlog.drain(..n);
            self.pushed += n as u64;
        }
    }

    /// Handles one message from the target; `Some` when the connection ends.
    fn handle_message(&mut self, message: Message) -> Option<Ended> {
        match message {
            Message::Binary(bytes) => {
                self.counters.reply(true);
                let samples = bytes.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]));
                self.queue_reply_audio(samples);
            }
            Message::Text(text) => {
                self.counters.reply(false);
                self.handle_text(text.as_str());
            }
            Message::Close(frame) => {
                return Some(match frame {
                    Some(frame) if frame.code == CloseCode::Normal => Ended::Clean,
                    Some(frame) => Ended::Lost(format!("closed by the target ({}: {})", u16::from(frame.code), frame.reason)),
                    None => Ended::Lost("closed by the target without a code".into()),
                });
            }
            _ => {}
        }
        None
    }

    /// Adds binary reply audio at `reply_rate` to the backlog at the call's rate.
    fn queue_reply_audio(&mut self, samples: impl ExactSizeIterator<Item = i16>) {
        let rate = self.call_rate.hz();
        match self.reply_resampler.as_mut() {
            None => {
                let room = self.backlog_cap.saturating_sub(self.backlog.len());
                self.counters.reply_audio_dropped(samples.len().saturating_sub(room), rate);
                self.backlog.extend(samples.take(room));
            }
            Some(resampler) => {
                self.reply_pending.extend(samples);
                let (inp, outp) = (resampler.input_frame_len(), resampler.output_frame_len());
                let mut out = vec![0i16; outp];
                let whole = self.reply_pending.len() / inp * inp;
                for frame in self.reply_pending[..whole].chunks_exact(inp) {
                    resampler.process(frame, &mut out);
                    if self.backlog.len() + outp <= self.backlog_cap {
                        self.backlog.extend(&out);
                    } else {
                        self.counters.reply_audio_dropped(outp, rate);
                    }
                }
                self.reply_pending.drain(..whole);
            }
        }
        self.housekeeping();
    }

    /// Queues audio rendered on this side (DTMF, a file) after the target's audio.
    fn queue_call_audio(&mut self, samples: &[i16]) {
        let room = self.backlog_cap.saturating_sub(self.backlog.len());
        self.counters.reply_audio_dropped(samples.len().saturating_sub(room), self.call_rate.hz());
        self.backlog.extend(&samples[..samples.len().min(room)]);
        self.housekeeping();
    }

    fn handle_text(&mut self, text: &str) {
        let value: Option<Value> = serde_json::from_str(text).ok();
        if self.replies_mode == ForkReplies::Commands
            && let Some(value) = value.as_ref()
        {
            match parse_command(value) {
                Ok(Some(command)) => return self.command(command),
                Ok(None) => {}
                Err(error) => {
                    self.event("fork:error", json!({ "fork": self.name, "error": error, "data": value }));
                    return;
                }
            }
        }
        let data = value.unwrap_or_else(|| json!({ "text": text }));
        self.event("fork:message", json!({ "fork": self.name, "data": data }));
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Clear => {
                self.backlog.clear();
                self.reply_pending.clear();
                let _ = self.replies.try_push(Reply::Clear { upto: self.pushed });
            }
            Command::Notify(payload) => {
                self.next_marker += 1;
                let marker = self.next_marker;
                self.notify_payloads.insert(marker, payload);
                let at = self.pushed + self.backlog.len() as u64;
                let _ = self.replies.try_push(Reply::Notify { marker, at });
            }
            Command::Hangup => {
                let _ = self.replies.try_push(Reply::Hangup);
            }
            Command::Dtmf(digits) => match super::render_dtmf(&digits, self.call_rate, 50, 50) {
                Ok(audio) => self.queue_call_audio(&audio),
                Err(e) => self.event("fork:error", json!({ "fork": self.name, "error": e.to_string() })),
            },
            Command::Play(path) => match crate::audio::load_wav(std::path::Path::new(&path), self.call_rate) {
                Ok(audio) => self.queue_call_audio(&audio),
                Err(e) => self.event("fork:error", json!({ "fork": self.name, "error": e.to_string() })),
            },
        }
    }
}

async fn send_timeout(ws: &mut Ws, message: Message) -> Result<(), String> {
    match tokio::time::timeout(SEND_TIMEOUT * 10, ws.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("send timed out".into()),
    }
}

/// `delay` ± 20 %, from the clock's low bits (no RNG needed for spreading reconnects).
fn jitter(delay: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let factor = 0.8 + f64::from(nanos % 1000) / 1000.0 * 0.4;
    delay.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Metadata;

    fn call() -> CallInfo {
        let metadata =
            Metadata::parse(r#"{"event":"websocket:connected","content-type":"audio/l16;rate=8000","caller":"+44 \"7\"/1"}"#).unwrap();
        CallInfo { id: "a b".into(), path: "/bot/1".into(), metadata }
    }

    #[test]
    fn templates_fill_and_escape_for_urls_json_and_headers() {
        let t = parse_template("ws://h/x/{call_id}?p={path}&c={header:caller}&m={header:missing}");
        assert_eq!(render(&t, &call(), Escape::Url), "ws://h/x/a%20b?p=%2Fbot%2F1&c=%2B44%20%227%22%2F1&m=");
        let t = parse_template(r#"{"event":"start","call_id":"{call_id}","caller":"{header:caller}","x":{}}"#);
        let text = render(&t, &call(), Escape::Json);
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value, json!({ "event": "start", "call_id": "a b", "caller": "+44 \"7\"/1", "x": {} }));
        let t = parse_template("Bearer {header:caller}{unknown}{header:}");
        assert_eq!(render(&t, &call(), Escape::Header), "Bearer +44 \"7\"/1{unknown}{header:}");
    }

    #[test]
    fn templates_tell_the_target_the_format() {
        let t = parse_fork_template(r#"{"codec":"{codec}","rate":{rate},"channels":{channels},"ms":{frame_ms},"type":"{content_type}"}"#);
        let stereo_opus = Format { codec: ForkCodec::Opus, rate: 48000, channels: 2, frame_ms: 60 };
        let value: Value = serde_json::from_str(&render_with_format(&t, &call(), stereo_opus, Escape::Json)).unwrap();
        assert_eq!(value, json!({ "codec": "opus", "rate": 48000, "channels": 2, "ms": 60, "type": "audio/opus;rate=48000;channels=2" }));
        let t = parse_fork_template("ws://h/{codec}?type={content_type}");
        let mono_l16 = Format { codec: ForkCodec::L16, rate: 16000, channels: 1, frame_ms: 20 };
        assert_eq!(render_with_format(&t, &call(), mono_l16, Escape::Url), "ws://h/l16?type=audio%2Fl16%3Brate%3D16000");
        // Templates that are not a fork's keep these names literal.
        assert_eq!(render(&parse_template("{codec}-{rate}-{call_id}"), &call(), Escape::Header), "{codec}-{rate}-a b");
    }

    #[test]
    fn config_is_checked_with_clear_errors() {
        let error = |c: ForkConfig| Fork::new(c).unwrap_err().to_string();
        assert!(Fork::new(ForkConfig::new("ws://127.0.0.1:9/{call_id}")).is_ok());
        assert!(Fork::new(ForkConfig::new("wss://stt.example/{call_id}")).is_ok());
        assert!(error(ForkConfig::new("http://x/")).contains("must be ws:// or wss://"));
        let ca_file = Some(PathBuf::from("/nonexistent/ca.pem"));
        assert!(error(ForkConfig { ca_file: ca_file.clone(), ..ForkConfig::new("ws://x/") }).contains("`ca_file` applies to wss://"));
        let message = error(ForkConfig { ca_file, ..ForkConfig::new("wss://x/") });
        assert!(message.contains("`ca_file` /nonexistent/ca.pem: cannot read it"), "{message}");
        assert!(
            error(ForkConfig { bitrate: Some(32_000), ..ForkConfig::new("ws://x/") })
                .contains("`bitrate` applies to codec = \"opus\" only")
        );
        let opus = |bitrate| ForkConfig { codec: ForkCodec::Opus, bitrate, ..ForkConfig::new("ws://x/") };
        if cfg!(feature = "opus") {
            assert!(Fork::new(opus(Some(32_000))).is_ok());
            assert!(error(opus(Some(1_000))).contains("`bitrate` must be between 6000 and 256000"));
        } else {
            assert!(error(opus(None)).contains("built without the `opus` feature"));
        }
        assert_eq!(opus(None).opus_bitrate(), 24_000);
        assert_eq!(ForkConfig { send: ForkSend::Both, ..opus(None) }.opus_bitrate(), 48_000);
        assert!(error(ForkConfig::new("not a url")).contains("is not a URL"));
        assert!(error(ForkConfig { rate: Some(11025), ..ForkConfig::new("ws://x/") }).contains("`rate` must be"));
        assert!(error(ForkConfig { reply_rate: Some(44100), ..ForkConfig::new("ws://x/") }).contains("`reply_rate` must be"));
        assert!(error(ForkConfig { frame_ms: 30, ..ForkConfig::new("ws://x/") }).contains("`frame_ms` must be 10, 20, 40 or 60"));
        assert!(error(ForkConfig { buffer_ms: 10, ..ForkConfig::new("ws://x/") }).contains("`buffer_ms`"));
        assert!(
            error(ForkConfig { headers: vec![("bad name".into(), "v".into())], ..ForkConfig::new("ws://x/") }).contains("bad header name")
        );
        assert_eq!(Fork::new(ForkConfig::new("ws://stt.example:81/x")).unwrap().label(), "stt.example");
    }

    #[test]
    fn commands_parse_and_others_are_not_commands() {
        assert_eq!(parse_command(&json!({ "action": "clear" })), Ok(Some(Command::Clear)));
        assert_eq!(parse_command(&json!({ "action": "hangup" })), Ok(Some(Command::Hangup)));
        assert_eq!(parse_command(&json!({ "action": "notify", "payload": { "n": 1 } })), Ok(Some(Command::Notify(json!({ "n": 1 })))));
        assert_eq!(parse_command(&json!({ "action": "dtmf", "digits": "12#" })), Ok(Some(Command::Dtmf("12#".into()))));
        assert_eq!(parse_command(&json!({ "action": "play", "url": "file:///a.wav" })), Ok(Some(Command::Play("/a.wav".into()))));
        assert!(parse_command(&json!({ "action": "play", "url": "http://x/a.wav" })).is_err());
        assert!(parse_command(&json!({ "action": "dtmf" })).is_err());
        assert_eq!(parse_command(&json!({ "action": "dance" })), Ok(None));
        assert_eq!(parse_command(&json!({ "transcript": "hi" })), Ok(None));
    }

    #[test]
    fn the_registry_reads_ca_file_codec_and_bitrate() {
        let registry = super::super::ProcessorRegistry::with_builtins();
        let build = |text: &str| {
            let spec = super::super::ProcessorSpec::from_table(toml::from_str(text).unwrap()).unwrap();
            registry.build(&spec).map(|p| p.name()).map_err(|e| e.to_string())
        };
        assert_eq!(build("type = 'fork'\nurl = 'ws://x/'\ncodec = 'l16'"), Ok("fork"));
        assert!(build("type = 'fork'\nurl = 'ws://x/'\ncodec = 'mp3'").unwrap_err().contains("`codec` must be \"l16\" or \"opus\""));
        assert!(build("type = 'fork'\nurl = 'ws://x/'\nbitrate = 'high'").unwrap_err().contains("`bitrate` must be an integer"));
        assert!(build("type = 'fork'\nurl = 'ws://x/'\nbitrate = 32000").unwrap_err().contains("applies to codec = \"opus\" only"));
        assert!(build("type = 'fork'\nurl = 'wss://x/'\nca_file = 7").unwrap_err().contains("`ca_file` must be a string"));
        assert!(build("type = 'fork'\nurl = 'wss://x/'\nca_file = '/nonexistent/ca.pem'").unwrap_err().contains("cannot read it"));
    }
}
