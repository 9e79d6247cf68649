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
//!  dtmf, speech, notify played -> note ring  ─────>  text messages to the target
//! ```
//!
//! * The media thread only copies samples into and out of fixed-capacity rings (sized in
//!   [`Processor::prepare`]), runs the allocation-free [`Resampler`] to the fork's `rate`
//!   (its state kept across frames), and moves ready-made events out of a ring into
//!   [`Context::emit`]. It never blocks on the target. A pass in which the caller sent nothing
//!   sends silence, so the target's audio keeps time with the call. With `send = "both"` the
//!   outbound frame (as the processors before the fork wrote it, plus the fork's replies) is
//!   converted too and interleaved as the right channel.
//! * The network side belongs to the server's fork service ([`crate::services::fork`]): a
//!   tokio runtime of its own, with two worker threads named `callpipe-fork`, started with the
//!   first fork, owns every target connection. It is neither a media thread nor the server's
//!   runtime. Each fork is one task, started in `prepare`. The task connects (`ws://`, or
//!   `wss://` over rustls), sends `first_message`, then every [`POLL_INTERVAL`](crate::services::fork::POLL_INTERVAL) sends the ring's
//!   whole frames of `frame_ms` as binary messages (L16, or one Opus packet each, encoded on the
//!   task), and reads the target's replies. The media thread never wakes the task: polling
//!   bounds the added latency to one interval plus one frame.
//! * The audio ring holds `buffer_ms` (2 s by default). When it is full (the target is slow,
//!   dead, or being reconnected), frames are dropped and counted, and the task reports a
//!   `fork:overrun` event when dropping starts and when it stops.
//! * Reconnects use exponential backoff with jitter, from 250 ms doubling to 10 s, whenever the
//!   connection fails (TCP, TLS, the upgrade, or [`CONNECT_TIMEOUT`](crate::services::fork::CONNECT_TIMEOUT) for the three) or the
//!   target closes with anything but a clean 1000. After a clean close the target initiated,
//!   the fork stops for the rest of the call.
//! * At the end of the call (`finish`, or `Drop`) a flag tells the task to send the whole frames
//!   left, close with 1000 and end: within [`STOP_TIMEOUT`](crate::services::fork::STOP_TIMEOUT) in every case.
//!
//! # Replies
//!
//! * **Binary** messages are L16 little-endian at `reply_rate` (by default the fork's `rate`),
//!   resampled to the call's rate on the network side and mixed into the outbound frame, one
//!   frame per pass ([`Context::mix_output`], so they mix with what earlier stages wrote, e.g.
//!   an `echo`). The task keeps up to [`MAX_BACKLOG_SECONDS`](crate::services::fork::MAX_BACKLOG_SECONDS) of audio sent faster than real
//!   time and feeds the reply ring from it. A partial last frame is played (padded with silence)
//!   when nothing more came for a pass.
//! * With `barge_in` (`"dtmf"`, `"speech"` with a `vad` in the route, or `"both"`), the caller
//!   interrupting while reply audio plays drops the reply audio received so far, clears
//!   (callpipe's queue and the platform's buffer) and emits a `barge_in` event with how many ms
//!   of that reply had played; audio the target sends afterwards plays as usual.
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
//! * Each fork name has counters in the server's fork service (connects, failed attempts,
//!   disconnects by reason, frames and bytes sent, frames dropped, replies by kind, reply audio
//!   dropped), updated by the task only: see [`crate::services::ForkNet::totals`].

mod config;
mod replies;

#[cfg(feature = "opus")]
pub use crate::services::fork::ForkOpusEncoder;
pub use crate::services::fork::{
    Command, DEFAULT_FORK_OPUS_BITRATE_PER_CHANNEL, FRAME_MS, ForkCodec, ForkCounters, ForkTotals, parse_command,
};
pub use config::{ForkConfig, ForkReplies, ForkSend};

use ringbuf::traits::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{http::HeaderName, http::HeaderValue};

use super::template::{self, Escape, Format, Piece};
use super::{Context, Event, Processor, ProcessorError, Setup};
use crate::call::Marker;
use crate::protocol::FRAMES_PER_SECOND;
use crate::resample::{RATES, Resampler};
use crate::services::fork::{Encoder, MediaEnd, Note, Security, Target, tls_config};
use crate::services::recorder::{OPUS_BITRATES, OPUS_FEATURE_MISSING};

/// The most `notify` commands waiting for their audio to play.
const MAX_PENDING_NOTIFIES: usize = 8;

/// Frames of the target's audio the reply ring holds at the call's rate.
const REPLY_AUDIO_FRAMES: usize = 25;

/// Forks the call's audio to a WebSocket target. See the module documentation in
/// `src/processor/fork/mod.rs`.
pub struct Fork {
    config: ForkConfig,
    url: Vec<Piece>,
    headers: Vec<(HeaderName, Vec<Piece>)>,
    first_message: Option<Vec<Piece>>,
    name: String,
    /// The name again, shared with the `barge_in` events.
    label: std::sync::Arc<str>,
    security: Security,
    side: Option<MediaEnd>,
    resampler: Option<Resampler>,
    resampled: Vec<i16>,
    /// With `send = "both"`: the outbound frame's converter, its output, and the interleaved pair.
    outbound_resampler: Option<Resampler>,
    outbound_resampled: Vec<i16>,
    stereo: Vec<i16>,
    reply_frame: Vec<i16>,
    /// Reply samples taken out of the reply ring so far.
    popped: u64,
    /// Reply samples played since the reply ring last ran dry: the reply under way.
    reply_played: u64,
    /// The reply ring's length at the previous pass, to play a partial frame once it stops growing.
    last_partial: usize,
    pending_notifies: [(Marker, u64); MAX_PENDING_NOTIFIES],
    n_pending: usize,
    stopped: bool,
}

fn config_error(message: impl Into<String>) -> ProcessorError {
    ProcessorError::Config { processor: "fork".into(), message: message.into() }
}

/// Checks `codec` against this build and `bitrate` against the codec.
fn check_codec(config: &ForkConfig) -> Result<(), ProcessorError> {
    let bitrates = OPUS_BITRATES;
    match (config.codec, config.bitrate) {
        (ForkCodec::L16, Some(_)) => Err(config_error("`bitrate` applies to codec = \"opus\" only")),
        (ForkCodec::Opus, _) if !cfg!(feature = "opus") => Err(config_error(format!("codec = \"opus\": {}", OPUS_FEATURE_MISSING))),
        (ForkCodec::Opus, Some(bits)) if !bitrates.contains(&bits) => {
            Err(config_error(format!("`bitrate` must be between {} and {} bits per second, not {bits}", bitrates.start(), bitrates.end())))
        }
        _ => Ok(()),
    }
}

impl Fork {
    /// A fork with `config`, checked here: the URL (with sample values), the rates, the frame
    /// size, the buffer, the header names, the codec and its bitrate, and for `wss://` the trust
    /// roots (`ca_file` is read the first time a fork names it: see `services/fork/target.rs`),
    /// so build forks off the media thread.
    pub fn new(config: ForkConfig) -> Result<Fork, ProcessorError> {
        let url = template::parse_with_format(&config.url);
        let sample = template::render_with_format(&url, &template::sample_call(), template::SAMPLE_FORMAT, Escape::Url);
        let parsed = url::Url::parse(&sample).map_err(|e| config_error(format!("`url` {:?} is not a URL: {e}", config.url)))?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(config_error("`url` needs a host"));
        }
        let security = match parsed.scheme() {
            "ws" if config.ca_file.is_some() => return Err(config_error("`ca_file` applies to wss:// targets only")),
            "ws" => Security::Plain,
            "wss" => Security::Tls(tls_config(config.ca_file.as_deref()).map_err(|e| ProcessorError::invalid("fork", "", e))?),
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
                Ok((header, template::parse_with_format(value)))
            })
            .collect::<Result<Vec<_>, ProcessorError>>()?;
        let first_message = config.first_message.as_deref().map(template::parse_with_format);
        let name = config.name.clone().unwrap_or_else(|| parsed.host_str().unwrap_or_default().to_owned());
        Ok(Fork {
            config,
            url,
            headers,
            first_message,
            label: name.as_str().into(),
            name,
            security,
            side: None,
            resampler: None,
            resampled: Vec::new(),
            outbound_resampler: None,
            outbound_resampled: Vec::new(),
            stereo: Vec::new(),
            reply_frame: Vec::new(),
            popped: 0,
            reply_played: 0,
            last_partial: 0,
            pending_notifies: [(Marker(0), 0); MAX_PENDING_NOTIFIES],
            n_pending: 0,
            stopped: false,
        })
    }

    /// The label used in events.
    pub fn label(&self) -> &str {
        &self.name
    }

    /// Frames dropped so far because the audio ring was full.
    pub fn dropped_frames(&self) -> u64 {
        self.side.as_ref().map_or(0, MediaEnd::dropped)
    }

    fn stop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            if let Some(side) = self.side.as_ref() {
                side.stop();
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
            self.resampler = Some(Resampler::new(call_rate, rate).map_err(|e| ProcessorError::invalid("fork", "`rate`", e))?);
            if channels == 2 {
                self.outbound_resampler = Some(Resampler::new(call_rate, rate).map_err(|e| ProcessorError::invalid("fork", "`rate`", e))?);
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
        let reply_resampler = if reply_rate != call_rate {
            Some(Resampler::new(reply_rate, call_rate).map_err(|e| ProcessorError::invalid("fork", "`reply_rate`", e))?)
        } else {
            None
        };
        let format = Format { codec: self.config.codec, rate, channels, frame_ms: self.config.frame_ms };
        let encoder = Encoder::new(self.config.codec, rate, channels, self.config.frame_ms, self.config.opus_bitrate())
            .map_err(|e| ProcessorError::invalid("fork", "`codec`", e))?;
        let mut request = template::render_with_format(&self.url, setup.call, format, Escape::Url)
            .into_client_request()
            .map_err(|e| ProcessorError::invalid("fork", "`url`", e))?;
        for (name, value) in &self.headers {
            let value = template::render_with_format(value, setup.call, format, Escape::Header);
            let value = HeaderValue::from_str(&value).map_err(|e| config_error(format!("`headers`.{name}: {e}")))?;
            request.headers_mut().insert(name.clone(), value);
        }
        let target = Target {
            name: self.name.clone(),
            request,
            security: self.security.clone(),
            first_message: self.first_message.as_ref().map(|t| template::render_with_format(t, setup.call, format, Escape::Json)),
            chunk: (rate * self.config.frame_ms / 1000) as usize * channels,
            encoder,
            commands: self.config.replies == ForkReplies::Commands,
            call_rate: setup.rate,
            reply_resampler,
        };
        let side = setup
            .services
            .fork
            .start(target, frames * frame * channels, REPLY_AUDIO_FRAMES * setup.frame_samples())
            .map_err(|e| ProcessorError::invalid("fork", "", e))?;
        self.side = Some(side);
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
        if !cx.pass().caller || side.target_done() {
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
            side.count_drop();
        }
    }

    fn handle_event(&mut self, event: &Event, cx: &mut Context<'_>) {
        if let Some(cause) = self.config.barge_in.interrupted_by(event) {
            self.barge_in(cause, cx);
        }
        let Some(side) = self.side.as_mut() else { return };
        if self.config.replies != ForkReplies::Commands {
            return;
        }
        let note = match event {
            Event::Dtmf { source: super::DtmfSource::Both, .. } => return,
            Event::Dtmf { digit, .. } => Note::Dtmf(digit.as_char()),
            Event::Speech(speech) => Note::Speech(*speech),
            Event::NotifyPlayed { marker } if side.owns_marker(*marker) => Note::Played(*marker),
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn config_is_checked_with_clear_errors() {
        let error = |c: ForkConfig| Fork::new(c).unwrap_err().to_string();
        assert!(Fork::new(ForkConfig::new("ws://127.0.0.1:9/{call_id}")).is_ok());
        assert!(Fork::new(ForkConfig::new("wss://stt.example/{call_id}")).is_ok());
        assert!(error(ForkConfig::new("http://x/")).contains("must be ws:// or wss://"));
        let ca_file = Some(PathBuf::from("/nonexistent/ca.pem"));
        assert!(error(ForkConfig { ca_file: ca_file.clone(), ..ForkConfig::new("ws://x/") }).contains("`ca_file` applies to wss://"));
        let unreadable = Fork::new(ForkConfig { ca_file, ..ForkConfig::new("wss://x/") }).unwrap_err();
        let message = unreadable.to_string();
        assert!(message.contains("`ca_file` /nonexistent/ca.pem: cannot read it"), "{message}");
        let cause = std::error::Error::source(&unreadable).expect("the trust file's error is behind source()");
        assert!(cause.source().is_some(), "and the I/O error behind it: {cause}");
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
