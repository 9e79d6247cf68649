//! Commands from the control plane (the HTTP API), applied by the media thread between passes,
//! and the API's audio (a stream, DTMF tones) played into the wall passes with
//! [`Playback`], the player the `play` processor uses too.
//!
//! A command is plain data: audio arrives already decoded and at the call's rate, as a
//! [`SharedAudio`] the media thread only reads. The sender keeps a clone of every buffer it hands
//! over and drops it once the session has let go of its own, so the media thread never frees
//! audio (dropping its `Arc` is a counter decrement).

use std::sync::Arc;

use super::Session;
use crate::audio::{Blend, Playback};
use crate::call::Marker;
use crate::call::{BargeInMode, Event, StreamEnd, TalkEnd};
use crate::processor::InputCollector;
use crate::services::tts::TalkAudio;

use super::voice::ApiTalk;

/// Audio for a call, at the call's rate, shared read-only with the media thread.
pub type SharedAudio = Arc<[i16]>;

/// What the control plane can ask of a live call.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Control {
    /// Outbound silence (`true`) or back to normal: while muted, nothing the processors or the
    /// API play reaches the caller; audio waiting to leave is dropped at once.
    Mute(bool),
    /// The processors stop hearing the caller (`true`): they get silence, marked as missing input.
    Earmuff(bool),
    /// Plays `audio` to the caller, mixed into what the processors send, replacing any stream
    /// the API started before.
    Stream {
        /// Identifies the stream in its `stream:done` event.
        id: u64,
        /// The samples.
        audio: SharedAudio,
        /// Plays, 0 for until stopped.
        loops: u32,
        /// Linear gain applied to the samples.
        gain: f32,
        /// What from the caller stops it.
        barge_in: BargeInMode,
    },
    /// Stops the API's stream.
    StopStream,
    /// Speaks a talk to the caller, mixed into what the processors send, replacing any talk
    /// the API started before.
    Talk {
        /// Identifies the talk in its `talk:done` event.
        id: u64,
        /// Its audio, as the synthesis thread publishes it.
        audio: TalkAudio,
        /// What from the caller stops it.
        barge_in: BargeInMode,
    },
    /// Stops the API's talk.
    StopTalk,
    /// Collects the caller's keys (`PUT /calls/{id}/input`), replacing a collection under way;
    /// the result is an `input` event.
    Input(InputCollector),
    /// Plays `audio` (rendered DTMF tones) over the outbound audio: while it plays, it replaces
    /// whatever else would be sent, so the far end hears clean tones. Sent while tones play, it
    /// follows them (a third replaces the second while it waits).
    Dtmf {
        /// The tones and gaps.
        audio: SharedAudio,
    },
    /// `{"action":"clear"}`: drop the audio queued here and ask the platform to drop its buffer.
    Clear,
    /// `{"action":"notify"}` after everything queued so far.
    Notify {
        /// The marker the platform will echo.
        marker: Marker,
    },
}

/// The API's stream playing into a call: its id, for its `stream:done` event, its player,
/// and what interrupts it.
#[derive(Debug)]
pub(super) struct ApiStream {
    pub id: u64,
    pub playback: Playback,
    pub barge_in: BargeInMode,
}

impl Session {
    /// A command from the control plane; it applies from the next pass.
    pub fn handle_control(&mut self, command: Control) {
        match command {
            Control::Mute(on) => {
                // Silence at once: what waits here is dropped too (the platform holds at most
                // the look-ahead).
                if on && !self.muted {
                    self.outbound.clear();
                }
                self.muted = on;
            }
            Control::Earmuff(on) => self.earmuffed = on,
            Control::Stream { id, audio, loops, gain, barge_in } => {
                self.end_stream(StreamEnd::Replaced);
                self.stream = Some(ApiStream { id, playback: Playback::new(audio, loops, gain), barge_in });
            }
            Control::StopStream => self.end_stream(StreamEnd::Stopped),
            Control::Talk { id, audio, barge_in } => {
                self.end_talk(TalkEnd::Replaced);
                self.talk = Some(ApiTalk { id, audio, barge_in });
            }
            Control::StopTalk => self.end_talk(TalkEnd::Stopped),
            Control::Input(collector) => self.start_input(collector),
            Control::Dtmf { audio } => {
                // Keys follow the ones playing (one sequence may wait; a newer one replaces it).
                let keys = Playback::new(audio, 1, 1.0);
                if self.dtmf.is_none() {
                    self.dtmf = Some(keys);
                } else {
                    self.dtmf_next = Some(keys);
                }
            }
            Control::Clear => self.clear_outbound(),
            Control::Notify { marker } => {
                if !self.outbound.mark(marker) {
                    self.send_notify(marker);
                }
            }
        }
    }

    /// Ends the API's stream, if one plays, with an event.
    pub(super) fn end_stream(&mut self, reason: StreamEnd) {
        if let Some(stream) = self.stream.take() {
            self.emit_own(Event::StreamDone { id: stream.id, reason });
        }
    }

    /// Mute on a pass that plays no API audio.
    pub(super) fn muted_output(&mut self, written: bool) -> bool {
        if self.muted {
            self.requests.queued.clear();
            return false;
        }
        written
    }

    /// Adds the API's stream, talk and DTMF to this pass's output and applies mute. Returns
    /// whether the output now carries audio.
    pub(super) fn play_api_audio(&mut self, mut written: bool) -> bool {
        if self.stream.is_some() || self.talk.is_some() {
            // Mixed into what goes out in this pass: this pass's frame, or, when the processors
            // queued audio instead (a `resample` wrapper does), the head of that audio.
            let Session { output, requests, stream, talk, .. } = self;
            let frame = output.len();
            let queued = &mut requests.queued;
            let target = if !written && !queued.is_empty() {
                if queued.len() < frame {
                    queued.resize(frame, 0);
                }
                &mut queued[..frame]
            } else {
                written = true;
                &mut output[..]
            };
            let stream_ended = stream.as_mut().is_some_and(|s| s.playback.play_into(target, Blend::Mix).ended);
            let talk_ended = talk.as_mut().is_some_and(|t| t.audio.play_into(target, Blend::Mix).ended);
            if stream_ended {
                self.end_stream(StreamEnd::Finished);
            }
            if talk_ended {
                let failed = self.talk.as_ref().is_some_and(|t| t.audio.shared().failed());
                self.end_talk(if failed { TalkEnd::Failed } else { TalkEnd::Finished });
            }
        }
        if let Some(dtmf) = self.dtmf.as_mut() {
            // The tones replace everything else while they play.
            self.requests.queued.clear();
            if dtmf.play_into(&mut self.output, Blend::Replace).ended {
                self.dtmf = self.dtmf_next.take();
            }
            written = true;
        }
        self.muted_output(written)
    }
}
