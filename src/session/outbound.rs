//! callpipe's audio on its way out: a bounded sample queue, re-framed into exact 20 ms frames and
//! released by a pacer on the call's 20 ms grid.
//!
//! The pacer keeps an estimate of the platform's playout buffer: `played_until`, the time at which
//! the platform will have played everything sent so far. A frame may leave when, after sending
//! it, the platform would hold at most `lookahead` frames (docs/protocol.md section 3: the platform
//! plays what we send in order, and bursts play back choppy). A frame's *deadline* is the moment
//! it starts to play: `max(played_until, now)`. When the queue runs dry the estimate lapses and
//! the next frame starts a new run at the current tick, so a gap never turns into latency.
//!
//! A trailing partial frame is padded with silence when nothing new was queued in the pass and
//! the platform is about to run dry, or when the call ends: callpipe never sends a frame of
//! another size. `notify` markers sit at sample positions and are released right after the frame
//! that completes the audio queued before them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::bounded::GrowOnce;
use crate::call::Marker;
use crate::protocol::{FRAME_DURATION, SampleRate};

/// Most `notify` markers waiting in the queue at once; more are released immediately.
pub const MAX_PENDING_MARKERS: usize = 64;

/// Markers the queue, and the session's lists of markers, have room for at first: what a call
/// without `notify` markers needs. Each grows once, to its bound, when it first fills.
pub(super) const MARKERS_TO_START: usize = 4;

/// What the pacer lets out.
#[derive(Debug, PartialEq)]
pub enum Released<'a> {
    /// One exact frame, starting to play at `deadline`.
    Frame {
        /// When the platform should start playing it.
        deadline: Instant,
        /// Exactly one frame of samples, in two parts (the queue is a ring): the frame is
        /// `samples.0` followed by `samples.1`.
        samples: (&'a [i16], &'a [i16]),
    },
    /// A `notify` whose audio has all been released.
    Notify(Marker),
}

/// The outbound queue and pacer of one call.
#[derive(Debug)]
pub struct Outbound {
    frame_samples: usize,
    lookahead: Duration,
    /// The most samples it queues.
    max_samples: usize,
    samples: VecDeque<i16>,
    /// Samples ever appended (including padding): the position of the queue's tail.
    appended: u64,
    /// Samples ever released or dropped: the position of the queue's head.
    head: u64,
    markers: VecDeque<(u64, Marker)>,
    played_until: Option<Instant>,
    dropped_samples: u64,
    padded_frames: u64,
}

impl Outbound {
    /// A queue of at most `capacity_frames` frames at `rate`, keeping up to `lookahead_frames`
    /// frames (at least 1) ahead at the platform.
    pub fn new(rate: SampleRate, capacity_frames: usize, lookahead_frames: u32) -> Outbound {
        Outbound::starting_with(rate, capacity_frames, lookahead_frames, capacity_frames)
    }

    /// The same, with room for `start_frames` at first: it doubles, up to its capacity, each
    /// time more is queued than it has held (for a pipeline that never queues audio itself,
    /// whose passes add a frame each: more than one when a visit runs several passes, as a
    /// catch-up does).
    pub fn starting_with(rate: SampleRate, capacity_frames: usize, lookahead_frames: u32, start_frames: usize) -> Outbound {
        let frame_samples = rate.frame_samples();
        let max_samples = frame_samples * capacity_frames.max(1);
        Outbound {
            frame_samples,
            lookahead: FRAME_DURATION * lookahead_frames.max(1),
            max_samples,
            samples: VecDeque::with_capacity(max_samples.min(frame_samples.saturating_mul(start_frames.max(1)))),
            appended: 0,
            head: 0,
            markers: VecDeque::with_capacity(MARKERS_TO_START),
            played_until: None,
            dropped_samples: 0,
            padded_frames: 0,
        }
    }

    /// Samples the queue can still take.
    pub fn room(&self) -> usize {
        self.max_samples - self.samples.len()
    }

    /// Samples waiting, including a partial frame.
    pub fn queued(&self) -> usize {
        self.samples.len()
    }

    /// Samples dropped because the queue was full.
    pub fn dropped_samples(&self) -> u64 {
        self.dropped_samples
    }

    /// Partial frames completed with silence.
    pub fn padded_frames(&self) -> u64 {
        self.padded_frames
    }

    /// When the platform is estimated to run out of audio, if it has any.
    pub fn played_until(&self) -> Option<Instant> {
        self.played_until
    }

    /// Appends samples; returns how many fit. The rest are dropped and counted.
    pub fn append(&mut self, samples: &[i16]) -> usize {
        let n = samples.len().min(self.room());
        self.samples.room_doubling(n, self.max_samples);
        self.samples.extend(&samples[..n]);
        self.appended += n as u64;
        self.dropped_samples += (samples.len() - n) as u64;
        n
    }

    /// Places a `notify` marker after everything appended so far. Returns false when too many
    /// markers are waiting; the caller then releases it at once.
    pub fn mark(&mut self, marker: Marker) -> bool {
        if self.markers.len() == MAX_PENDING_MARKERS {
            return false;
        }
        self.markers.room_for_one(MAX_PENDING_MARKERS);
        self.markers.push_back((self.appended, marker));
        true
    }

    /// Drops every queued sample (a `clear`): the platform will drop what it holds, so the
    /// playout estimate lapses too. Markers stay, and are released at the next [`release`]
    /// since no audio is ahead of them any more. Returns the samples dropped.
    ///
    /// [`release`]: Outbound::release
    pub fn clear(&mut self) -> usize {
        let dropped = self.samples.len();
        self.samples.clear();
        self.head = self.appended;
        self.played_until = None;
        dropped
    }

    /// Releases what the pacer allows at tick `now`. `fresh` says whether anything was appended
    /// in this pass; `finishing` pads and releases a trailing partial frame regardless.
    pub fn release(&mut self, now: Instant, fresh: bool, finishing: bool, mut emit: impl FnMut(Released<'_>)) {
        if self.played_until.is_some_and(|t| t <= now) {
            self.played_until = None;
        }
        loop {
            self.release_markers(&mut emit);
            let start = self.played_until.unwrap_or(now);
            if start >= now + self.lookahead {
                return;
            }
            let waiting = self.samples.len();
            if waiting < self.frame_samples {
                let about_to_run_dry = start <= now + FRAME_DURATION;
                let pad = waiting > 0 && (finishing || (!fresh && about_to_run_dry));
                if !pad {
                    return;
                }
                let missing = self.frame_samples - waiting;
                self.samples.room_doubling(missing, self.max_samples);
                self.samples.extend(std::iter::repeat_n(0, missing));
                self.appended += missing as u64;
                self.padded_frames += 1;
                // Markers placed after the partial audio now sit inside this frame's span and
                // are released right after it.
            }
            self.head += self.frame_samples as u64;
            self.played_until = Some(start + FRAME_DURATION);
            emit(Released::Frame { deadline: start, samples: super::front_slices(&self.samples, self.frame_samples) });
            self.samples.drain(..self.frame_samples);
        }
    }

    fn release_markers(&mut self, emit: &mut impl FnMut(Released<'_>)) {
        while let Some(&(position, marker)) = self.markers.front() {
            if position > self.head {
                return;
            }
            self.markers.pop_front();
            emit(Released::Notify(marker));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS20: Duration = FRAME_DURATION;

    fn collect(out: &mut Outbound, now: Instant, fresh: bool) -> Vec<(Option<Duration>, Option<u64>, i16)> {
        let mut got = Vec::new();
        out.release(now, fresh, false, |r| match r {
            Released::Frame { deadline, samples: (a, b) } => {
                assert_eq!(a.len() + b.len(), 160);
                got.push((Some(deadline - now), None, a.first().or(b.first()).copied().unwrap()));
            }
            Released::Notify(m) => got.push((None, Some(m.0), 0)),
        });
        got
    }

    #[test]
    fn a_burst_is_paced_with_the_lookahead() {
        let t0 = Instant::now();
        let mut out = Outbound::new(SampleRate::Hz8000, 100, 3);
        for i in 0..10 {
            out.append(&[i; 160]);
        }
        // Three frames may be ahead at the platform: deadlines now, +20, +40.
        let first = collect(&mut out, t0, true);
        assert_eq!(first.iter().map(|f| f.0.unwrap()).collect::<Vec<_>>(), [Duration::ZERO, MS20, MS20 * 2]);
        // Each later tick lets exactly one more out, with its deadline 40 ms ahead.
        for tick in 1..=7u32 {
            let now = t0 + MS20 * tick;
            let got = collect(&mut out, now, false);
            assert_eq!(got, [(Some(MS20 * 2), None, (tick + 2) as i16)], "tick {tick}");
        }
        assert_eq!(out.queued(), 0);
        assert!(collect(&mut out, t0 + MS20 * 8, false).is_empty());
    }

    #[test]
    fn a_gap_restarts_on_the_current_tick_instead_of_adding_latency() {
        let t0 = Instant::now();
        let mut out = Outbound::new(SampleRate::Hz8000, 100, 3);
        out.append(&[1; 160]);
        assert_eq!(collect(&mut out, t0, true)[0].0, Some(Duration::ZERO));
        // Nothing for five ticks, then one frame: it plays at once, not 100 ms "late".
        let later = t0 + MS20 * 6;
        out.append(&[2; 160]);
        assert_eq!(collect(&mut out, later, true), [(Some(Duration::ZERO), None, 2)]);
    }

    #[test]
    fn a_partial_frame_waits_while_fresh_and_is_padded_when_the_stream_stops() {
        let t0 = Instant::now();
        let mut out = Outbound::new(SampleRate::Hz8000, 100, 1);
        out.append(&[7; 250]);
        let got = collect(&mut out, t0, true);
        assert_eq!(got.len(), 1);
        assert_eq!(out.queued(), 90);
        // Next tick, nothing new and the platform runs dry: pad the 90 samples.
        let mut frames = Vec::new();
        out.release(t0 + MS20, false, false, |r| {
            if let Released::Frame { samples: (a, b), .. } = r {
                frames.push([a, b].concat());
            }
        });
        assert_eq!(frames.len(), 1);
        assert!(frames[0][..90].iter().all(|s| *s == 7));
        assert!(frames[0][90..].iter().all(|s| *s == 0));
        assert_eq!(out.padded_frames(), 1);
    }

    #[test]
    fn notify_follows_the_audio_queued_before_it() {
        let t0 = Instant::now();
        let mut out = Outbound::new(SampleRate::Hz8000, 100, 1);
        out.append(&[1; 320]);
        assert!(out.mark(Marker(9)));
        out.append(&[2; 160]);
        let tick = |n: u32| t0 + MS20 * n;
        assert_eq!(collect(&mut out, tick(0), true), [(Some(Duration::ZERO), None, 1)]);
        assert_eq!(collect(&mut out, tick(1), false), [(Some(Duration::ZERO), None, 1), (None, Some(9), 0)]);
        assert_eq!(collect(&mut out, tick(2), false), [(Some(Duration::ZERO), None, 2)]);
    }

    #[test]
    fn clear_drops_the_queue_and_releases_waiting_markers() {
        let t0 = Instant::now();
        let mut out = Outbound::new(SampleRate::Hz8000, 100, 1);
        out.append(&[1; 1600]);
        out.mark(Marker(4));
        collect(&mut out, t0, true);
        assert_eq!(out.clear(), 1440);
        assert_eq!(out.played_until(), None);
        assert_eq!(collect(&mut out, t0 + MS20, false), [(None, Some(4), 0)]);
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut out = Outbound::new(SampleRate::Hz8000, 2, 1);
        let room = out.room();
        assert_eq!(out.append(&vec![0; room + 5]), room);
        assert_eq!(out.dropped_samples(), 5);
    }
}
