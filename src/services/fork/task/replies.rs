//! What the fork's task does with the target's messages: binary audio into the backlog at the
//! call's rate (resampled when the target's rate differs), text into events, and with
//! `replies = "commands"` the commands (`../command.rs`) carried out.

use ringbuf::traits::*;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{Ended, Task};
use crate::audio::MAX_KEYS;
use crate::protocol::DtmfDigit;
use crate::services::fork::command::{Command, CommandError, parse_command};
use crate::services::fork::link::Reply;

/// The tone of each key a `dtmf` command plays, in ms.
const DTMF_TONE_MS: u32 = 50;

/// The silence after each key, in ms.
const DTMF_GAP_MS: u32 = 50;

/// A `dtmf` command's keys, or what is wrong with them.
fn parse_keys(digits: &str) -> Result<Vec<DtmfDigit>, CommandError> {
    let count = digits.chars().count();
    if count > MAX_KEYS {
        return Err(CommandError::TooManyKeys { max: MAX_KEYS, count });
    }
    digits.chars().map(|c| DtmfDigit::from_char(c).ok_or(CommandError::NotAKey(c))).collect()
}

impl Task {
    /// Handles one message from the target; `Some` when the connection ends.
    pub(super) fn handle_message(&mut self, message: Message) -> Option<Ended> {
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
        if self.commands
            && let Some(value) = value.as_ref()
        {
            match parse_command(value) {
                Ok(Some(command)) => return self.command(command),
                Ok(None) => {}
                Err(error) => {
                    self.event("fork:error", json!({ "fork": self.name, "error": error.to_string(), "data": value }));
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
                self.next_marker = self.next_marker.next();
                let marker = self.next_marker;
                self.notify_payloads.insert(marker, payload);
                let at = self.pushed + self.backlog.len() as u64;
                let _ = self.replies.try_push(Reply::Notify { marker, at });
            }
            Command::Hangup => {
                let _ = self.replies.try_push(Reply::Hangup);
            }
            Command::Dtmf(digits) => match parse_keys(&digits) {
                Ok(keys) => self.queue_call_audio(&crate::audio::render_keys(&keys, self.call_rate, DTMF_TONE_MS, DTMF_GAP_MS)),
                Err(error) => self.event("fork:error", json!({ "fork": self.name, "error": error.to_string() })),
            },
            Command::Play(path) => match crate::audio::load_wav(std::path::Path::new(&path), self.call_rate) {
                Ok(audio) => self.queue_call_audio(&audio),
                Err(e) => self.event("fork:error", json!({ "fork": self.name, "error": e.to_string() })),
            },
        }
    }
}
