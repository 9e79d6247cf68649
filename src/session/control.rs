//! Commands from the control plane (the HTTP API), applied by the media thread between passes,
//! and the API's audio (a stream, DTMF tones) played into the wall passes.
//!
//! A command is plain data: audio arrives already decoded and at the call's rate, as a
//! [`SharedAudio`] the media thread only reads. The sender keeps a clone of every buffer it hands
//! over and drops it once the session has let go of its own, so the media thread never frees
//! audio (dropping its `Arc` is a counter decrement).

use std::sync::Arc;

use super::Session;
use crate::call::{Event, StreamEnd};

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
    },
    /// Stops the API's stream.
    StopStream,
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
        marker: u64,
    },
}

/// Audio the API is playing into a call, one frame per pass.
#[derive(Debug)]
pub(super) struct ApiAudio {
    pub id: u64,
    audio: SharedAudio,
    cursor: usize,
    plays_left: Option<u32>,
    gain: f32,
}

impl ApiAudio {
    pub fn new(id: u64, audio: SharedAudio, loops: u32, gain: f32) -> ApiAudio {
        ApiAudio { id, audio, cursor: 0, plays_left: (loops > 0).then_some(loops), gain }
    }

    /// Adds (or, with `replace`, writes) the next frame into `out`. Returns whether the audio
    /// has ended; a last partial frame is followed by silence.
    pub fn play_into(&mut self, out: &mut [i16], replace: bool) -> bool {
        if self.audio.is_empty() {
            return true;
        }
        let mut filled = 0;
        while filled < out.len() {
            let take = (out.len() - filled).min(self.audio.len() - self.cursor);
            let (dst, src) = (&mut out[filled..filled + take], &self.audio[self.cursor..self.cursor + take]);
            match (replace, self.gain == 1.0) {
                (true, true) => dst.copy_from_slice(src),
                (true, false) => dst.iter_mut().zip(src).for_each(|(d, s)| *d = scale(*s, self.gain)),
                (false, true) => dst.iter_mut().zip(src).for_each(|(d, s)| *d = d.saturating_add(*s)),
                (false, false) => dst.iter_mut().zip(src).for_each(|(d, s)| *d = d.saturating_add(scale(*s, self.gain))),
            }
            filled += take;
            self.cursor += take;
            if self.cursor == self.audio.len() {
                self.cursor = 0;
                if let Some(left) = self.plays_left.as_mut() {
                    *left -= 1;
                    if *left == 0 {
                        if replace {
                            out[filled..].fill(0);
                        }
                        return true;
                    }
                }
            }
        }
        false
    }
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
            Control::Stream { id, audio, loops, gain } => {
                self.end_stream(StreamEnd::Replaced);
                self.stream = Some(ApiAudio::new(id, audio, loops, gain));
            }
            Control::StopStream => self.end_stream(StreamEnd::Stopped),
            Control::Dtmf { audio } => {
                // Keys follow the ones playing (one sequence may wait; a newer one replaces it).
                let keys = ApiAudio::new(0, audio, 1, 1.0);
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

    /// Adds the API's stream and DTMF to this pass's output and applies mute. Returns whether
    /// the output now carries audio.
    pub(super) fn play_api_audio(&mut self, mut written: bool) -> bool {
        if let Some(stream) = self.stream.as_mut() {
            // Mixed into what goes out in this pass: this pass's frame, or, when the processors
            // queued audio instead (a `resample` wrapper does), the head of that audio.
            let frame = self.output.len();
            let queued = &mut self.requests.queued;
            let target = if !written && !queued.is_empty() {
                if queued.len() < frame {
                    queued.resize(frame, 0);
                }
                &mut queued[..frame]
            } else {
                written = true;
                &mut self.output[..]
            };
            if stream.play_into(target, false) {
                self.end_stream(StreamEnd::Finished);
            }
        }
        if let Some(dtmf) = self.dtmf.as_mut() {
            // The tones replace everything else while they play.
            self.requests.queued.clear();
            if dtmf.play_into(&mut self.output, true) {
                self.dtmf = self.dtmf_next.take();
            }
            written = true;
        }
        self.muted_output(written)
    }
}

fn scale(sample: i16, gain: f32) -> i16 {
    (f32::from(sample) * gain).round().clamp(-32768.0, 32767.0) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plays_its_loops_then_ends_and_mixes_or_replaces() {
        let audio: SharedAudio = (1..=5).collect::<Vec<i16>>().into();
        let mut a = ApiAudio::new(1, audio.clone(), 2, 1.0);
        let mut out = [100i16; 4];
        assert!(!a.play_into(&mut out, false));
        assert_eq!(out, [101, 102, 103, 104]);
        let mut out = [0i16; 4];
        assert!(!a.play_into(&mut out, true));
        assert_eq!(out, [5, 1, 2, 3]);
        let mut out = [9i16; 4];
        assert!(a.play_into(&mut out, true), "the second play ends in this frame");
        assert_eq!(out, [4, 5, 0, 0]);

        let mut forever = ApiAudio::new(2, audio, 0, 0.5);
        for _ in 0..100 {
            let mut out = [0i16; 4];
            assert!(!forever.play_into(&mut out, false));
            assert!(out.iter().all(|s| (0..=3).contains(s)), "{out:?}");
        }
    }

    #[test]
    fn gain_saturates_instead_of_wrapping() {
        let mut a = ApiAudio::new(1, vec![30_000i16, -30_000].into(), 1, 2.0);
        let mut out = [0i16; 2];
        a.play_into(&mut out, false);
        assert_eq!(out, [32_767, -32_768]);
    }
}
