//! The caller's side of an emulated call, one 20 ms tick at a time: the caller's next frame
//! (its audio, any in-band key, a tag), the keys due as `websocket:dtmf` events, one frame of the
//! bot's audio played out of the playout buffer, the `notify` acknowledgements that playing
//! releases, and the hang-up when it is time.

use std::time::{Duration, Instant};

use super::tag::{self, TAG_BYTES};
use super::{DtmfMode, Out, PlatformCall, Source};
use crate::audio::{DTMF_LEVEL_DBFS, DtmfTone};
use crate::client::metrics::{Metrics, record};
use crate::protocol::{PlatformEvent, decode_l16, encode_l16};

/// A playout gap shorter than this (in ticks) between two stretches of bot audio is an underrun;
/// a longer one is the end of an utterance.
const GAP_TICKS: u32 = 25;

impl PlatformCall {
    /// One 20 ms tick scheduled at `scheduled`, run at `now`: the caller's next frame, any due
    /// keypress, one frame of playout, and the hang-up when it is time.
    pub fn handle_tick(&mut self, scheduled: Instant, now: Instant, metrics: &mut Metrics, emit: &mut dyn FnMut(Out<'_>)) {
        if self.closed {
            return;
        }
        let started = *self.started.get_or_insert(scheduled);
        let elapsed = scheduled.saturating_duration_since(started);
        let pause = self.plan.pause.map_or(Duration::ZERO, |(_, length)| length);
        if self.plan.hangup_after.is_some_and(|h| elapsed >= h) || elapsed >= self.plan.duration + pause + self.plan.linger {
            self.close(1000, emit);
            return;
        }
        self.send_due_dtmf(elapsed, now, emit);
        let paused = self.plan.pause.is_some_and(|(at, length)| elapsed >= at && elapsed < at + length);
        let streaming = elapsed < self.plan.duration + pause;
        if paused {
            self.report.frames_paused += 1;
        } else if streaming {
            self.fill_source();
            let n = encode_l16(&self.pcm, &mut self.bytes);
            if self.plan.tag_frames && n >= TAG_BYTES {
                let sent_ns = u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
                tag::write(&mut self.bytes, self.report.frames_sent as u32, sent_ns);
            }
            emit(Out::Binary(&self.bytes));
            self.report.frames_sent += 1;
            let late = now.saturating_duration_since(scheduled);
            record(&mut metrics.send_late, late);
            let second = scheduled.saturating_duration_since(self.epoch).as_secs() as usize;
            record(&mut metrics.window(second).send_late, late);
        } else {
            self.pcm.fill(0);
        }
        self.play_out(emit);
    }

    fn fill_source(&mut self) {
        match &self.plan.source {
            Source::Silence => self.pcm.fill(0),
            Source::Tone(_) => match &mut self.tone {
                Some(tone) => tone.fill(&mut self.pcm),
                None => self.pcm.fill(0),
            },
            Source::Samples(samples) => {
                let n = self.pcm.len();
                let from = self.source_pos.min(samples.len());
                let to = (from + n).min(samples.len());
                self.pcm[..to - from].copy_from_slice(&samples[from..to]);
                self.pcm[to - from..].fill(0);
                self.source_pos = from + n;
            }
        }
        if let Some(tone) = &mut self.inband {
            tone.fill(&mut self.pcm);
            if tone.is_finished() {
                self.inband = None;
            }
        }
    }

    fn send_due_dtmf(&mut self, elapsed: Duration, now: Instant, emit: &mut dyn FnMut(Out<'_>)) {
        while let Some(&(at, digit)) = self.plan.dtmf.get(self.dtmf_next) {
            if at > elapsed {
                return;
            }
            self.dtmf_next += 1;
            let ms = u32::try_from(self.plan.dtmf_duration.as_millis()).unwrap_or(u32::MAX);
            if self.plan.dtmf_mode != DtmfMode::Inband {
                self.text = PlatformEvent::Dtmf { digit, duration_ms: Some(ms) }.to_json();
                emit(Out::Text(&self.text));
            }
            self.report.dtmf_sent += 1;
            self.dtmf_waiting = Some(now);
            if self.plan.dtmf_mode != DtmfMode::Event {
                let samples = (u128::from(self.plan.rate.hz()) * self.plan.dtmf_duration.as_nanos() / 1_000_000_000) as u64;
                self.inband = DtmfTone::for_key(digit, self.plan.rate, DTMF_LEVEL_DBFS).ok().map(|t| t.with_length(samples));
            }
        }
    }

    fn play_out(&mut self, emit: &mut dyn FnMut(Out<'_>)) {
        if self.playout.len() >= self.frame_bytes {
            for (dst, src) in self.bytes.iter_mut().zip(self.playout.drain(..self.frame_bytes)) {
                *dst = src;
            }
            decode_l16(&self.bytes, &mut self.played);
            self.played_bytes += self.frame_bytes as u64;
            self.report.frames_played += 1;
            if self.empty_run > 0 && self.playing {
                self.report.underrun_gaps += 1;
                self.report.underrun_ticks += u64::from(self.empty_run);
            }
            self.empty_run = 0;
            self.playing = true;
        } else {
            self.played.fill(0);
            if self.playing {
                self.empty_run += 1;
                if self.empty_run > GAP_TICKS {
                    self.playing = false;
                    self.empty_run = 0;
                }
            }
        }
        if let Some(recorder) = &mut self.recorder
            && let Err(e) = recorder.write(&self.pcm, &self.played)
        {
            self.report.error.get_or_insert_with(|| format!("recording failed: {e}"));
            self.recorder = None;
        }
        self.release_markers(emit);
    }

    pub(super) fn release_markers(&mut self, emit: &mut dyn FnMut(Out<'_>)) {
        while self.markers.front().is_some_and(|(position, _)| *position <= self.played_bytes) {
            if let Some((_, payload)) = self.markers.pop_front() {
                self.text = PlatformEvent::Notify { payload }.to_json();
                emit(Out::Text(&self.text));
            }
        }
    }
}
