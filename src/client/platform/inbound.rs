//! What the bot sends an emulated call: its audio (checked for size, matched against the tags of
//! an echo, timed for jitter, queued for playout up to the platform's limit) and its actions
//! (`clear` drops the playout buffer, `notify` waits for the audio before it to play).

use std::time::{Duration, Instant};

use super::{Out, PlatformCall, tag};
use crate::client::metrics::{Metrics, record};
use crate::client::wire::Message;
use crate::protocol::{AppAction, FRAME_DURATION, PlatformEvent};

impl PlatformCall {
    /// A message from the bot, received at `now`.
    pub fn handle_message(&mut self, now: Instant, message: Message<'_>, metrics: &mut Metrics, emit: &mut dyn FnMut(Out<'_>)) {
        if self.closed {
            return;
        }
        match message {
            Message::Binary(frame) => self.handle_audio(now, frame, metrics, emit),
            Message::Text(text) => match AppAction::parse(text) {
                Ok(AppAction::Clear) => {
                    self.report.clears += 1;
                    if let Some(started) = self.started {
                        self.report.clears_at_ms.push(now.saturating_duration_since(started).as_secs_f64() * 1000.0);
                    }
                    self.playout.clear();
                    self.played_bytes = self.queued_bytes;
                    self.text = PlatformEvent::Cleared.to_json();
                    emit(Out::Text(&self.text));
                    self.release_markers(emit);
                }
                Ok(AppAction::Notify { payload }) => {
                    self.report.notifies += 1;
                    self.markers.push_back((self.queued_bytes, payload));
                    self.release_markers(emit);
                }
                Err(e) => {
                    self.report.bad_text += 1;
                    self.violation(format!("text message refused: {e}"));
                }
            },
            Message::Ping(_) | Message::Pong => {}
            Message::Close(code) => {
                self.report.close_code = code.or(Some(1005));
                self.closed = true;
            }
        }
    }

    fn handle_audio(&mut self, now: Instant, frame: &[u8], metrics: &mut Metrics, emit: &mut dyn FnMut(Out<'_>)) {
        self.report.frames_received += 1;
        if frame.len() != self.frame_bytes {
            self.report.wrong_size += 1;
            self.violation(format!("frame of {} bytes, expected {}", frame.len(), self.frame_bytes));
            if self.plan.strict {
                self.report.closed_for_violation = true;
                self.close(1007, emit);
                return;
            }
        }
        let second = now.saturating_duration_since(self.epoch).as_secs() as usize;
        let tag = if self.plan.tag_frames { tag::read(frame) } else { None };
        if let Some((seq, sent_ns)) = tag {
            self.count_seq(seq);
            let rtt = now.saturating_duration_since(self.epoch + Duration::from_nanos(sent_ns));
            record(&mut metrics.rtt, rtt);
            record(&mut metrics.window(second).rtt, rtt);
        }
        if let Some((last, last_sent)) = self.last_arrival {
            let arrival = now.saturating_duration_since(last);
            let deviation = arrival.abs_diff(FRAME_DURATION);
            record(&mut metrics.arrival, deviation);
            record(&mut metrics.window(second).arrival, deviation);
            // RFC 3550 section 6.4.1: D = (Rj - Ri) - (Sj - Si); J += (|D| - J) / 16.
            let sent_delta = match (tag, last_sent) {
                (Some((_, sj)), Some(si)) => sj as f64 - si as f64,
                _ => FRAME_DURATION.as_nanos() as f64,
            };
            let d = arrival.as_nanos() as f64 - sent_delta;
            self.jitter_ns += (d.abs() - self.jitter_ns) / 16.0;
        }
        self.last_arrival = Some((now, tag.map(|t| t.1)));
        if let Some(sent_at) = self.dtmf_waiting
            && frame.chunks_exact(2).any(|s| i16::from_le_bytes([s[0], s[1]]).unsigned_abs() > 64)
        {
            self.report.dtmf_latency_ms.push(now.saturating_duration_since(sent_at).as_secs_f64() * 1000.0);
            self.dtmf_waiting = None;
        }
        let frames_buffered = self.playout.len() / self.frame_bytes;
        if frames_buffered >= self.plan.playout_limit {
            self.report.playout_overflow += 1;
            return;
        }
        self.playout.extend(frame);
        self.queued_bytes += frame.len() as u64;
        self.report.playout_high_water = self.report.playout_high_water.max((self.playout.len() / self.frame_bytes) as u64);
    }

    fn count_seq(&mut self, seq: u32) {
        let (word, bit) = (seq as usize / 64, seq % 64);
        if seq as u64 >= self.report.frames_sent {
            self.violation(format!("echoed sequence {seq} was never sent"));
            return;
        }
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.report.duplicated += 1;
            return;
        }
        self.seen[word] |= 1 << bit;
        self.report.echoed += 1;
        match self.highest_seq {
            Some(h) if seq < h => self.report.reordered += 1,
            _ => self.highest_seq = Some(seq),
        }
    }
}
