//! The caller's timeline: every frame the platform delivers goes through the pipeline exactly
//! once, in order, when it arrives; silence is added only where the platform really paused.
//!
//! TCP loses nothing and reorders nothing, so lateness is never loss: a frame that arrives late
//! is processed late, and the backlog after a network stall is caught up at once (one pass per
//! frame, back to back). Silence enters the caller's timeline only for a *pause*: the platform
//! stopped sending, then resumed at real-time pace. The two are told apart by what arrives
//! after the gap (the rule, with its numbers, is in [`TimelineConfig`]):
//!
//! * Each frame has a *due* instant on the caller's timeline: `anchor + n × 20 ms`, where `n`
//!   counts the frames (and pause silence) so far and `anchor` is set by the earliest arrivals
//!   (a frame that arrives before its due instant moves the anchor back to it). A frame's
//!   *lateness* is its arrival minus its due instant.
//! * Lateness up to `jitter` is network jitter: the frame goes through at once.
//! * Beyond that, the frame ended a gap. After a **stall** the backlog follows it at once, and
//!   the newest frame that has arrived is within `jitter` of its due instant again: every frame
//!   goes through, no silence. After a **pause** the frames resume one every 20 ms and stay just
//!   as late: once a frame has come on its own, [`BURST_WINDOW`] or more after the one before it
//!   (a paced sender's next frame), and the newest frame is still later than `jitter`, the gap
//!   was a pause, and its length (that lateness, rounded to frames) goes into the timeline as
//!   silence *before* the frames. When nothing at all follows the late frames for a frame and
//!   `jitter`, they were a stall that held the end of the stream (or the sender waits for each
//!   frame's answer): they go through, no silence, and the timeline restarts from the present.
//! * While nothing arrives at all for `max_wait` past the due instant, the pause is taken as
//!   such while it lasts: silence passes fill the gap up to the present and then follow the
//!   clock, so processors keep call time through a long hold. A stall longer than `max_wait`
//!   therefore puts silence before its backlog (nothing is dropped, the timeline is longer).
//! * Only a frame later than `max_backlog` (seconds, after everything above) is dropped, and
//!   counted: the one way caller audio is ever lost here.
//!
//! Bytes are kept as bytes, so a sample split across two WebSocket messages loses nothing. The
//! buffer is sized once; what does not fit stays with the caller (the media thread moves no
//! more into it than [`InboundBuffer::room`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::TimelineConfig;
use crate::protocol::{FRAME_DURATION, MAX_FRAME_BYTES, SampleRate, decode_l16};

/// Frames of room an inbound buffer starts with: what a clean network needs (a frame, or a late
/// frame and the one that shows whether it ended a pause, beside a partial frame).
pub const INBOUND_TO_START: usize = 3;

/// Frames that arrive within this of each other came *together* (a stall's backlog, one
/// message of several frames); a paced sender's next frame comes a whole frame later. Half a
/// frame. A frame that ended a gap is held at least this long for a stall's backlog to follow.
pub const BURST_WINDOW: Duration = Duration::from_millis(10);

/// Frames in a row that came together before a pass counts as a [burst](InboundBuffer::in_burst):
/// 160 ms. Jitter bunches a few frames and a sender of 40 ms messages pairs them; neither is a
/// backlog running faster than real time.
pub const BURST_RUN: u32 = 8;

/// What the caller's timeline holds next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A frame of the caller's audio, decoded into the buffer given to [`InboundBuffer::poll`].
    Frame,
    /// One frame of pause silence (the buffer is zeroed).
    Pause,
    /// Nothing yet: wait for more audio (or for time to pass).
    Wait,
}

/// The inbound re-framer and caller timeline of one call: every frame once, in order, when it
/// arrives; silence only for a pause; a drop only past `max_backlog`. See `docs/media.md`.
#[derive(Debug)]
pub struct InboundBuffer {
    frame_bytes: usize,
    /// The most whole frames it holds.
    max_frames: usize,
    config: TimelineConfig,
    bytes: VecDeque<u8>,
    /// Arrival instants of the whole frames waiting in `bytes`, oldest first.
    arrivals: VecDeque<Instant>,
    /// `due(0)`: due instants are `anchor + n × 20 ms`.
    anchor: Option<Instant>,
    /// Frames on the timeline so far: caller frames, pause silence and dropped frames.
    n: u64,
    /// Silence frames decided and not yet taken.
    silence_owed: u64,
    /// Filling a pause while it lasts (nothing has arrived for `max_wait`).
    pausing: bool,
    /// Taking the backlog of a stall.
    catching_up: bool,
    /// When the frame taken last arrived.
    last_arrival: Option<Instant>,
    /// Frames taken in a row, each within [`BURST_WINDOW`] of the one before it.
    run: u32,
    frames: u64,
    pause_frames: u64,
    stalls: u64,
    dropped_frames: u64,
    overflow_bytes: u64,
}

impl InboundBuffer {
    /// A buffer for `rate` holding at most `capacity_frames` frames (at least 2). It starts
    /// with room for three frames (`INBOUND_TO_START`), what a call on a clean network needs, and
    /// doubles, up to the capacity, each time jitter or a burst brings more than it has held.
    pub fn new(rate: SampleRate, capacity_frames: usize, config: TimelineConfig) -> InboundBuffer {
        let frame_bytes = rate.frame_bytes();
        let frames = capacity_frames.max(2);
        InboundBuffer {
            frame_bytes,
            max_frames: frames,
            config,
            bytes: VecDeque::with_capacity(frame_bytes * frames.min(INBOUND_TO_START)),
            // One arrival per whole frame held: it grows with `bytes`, so that a backlog never
            // grows it frame by frame.
            arrivals: VecDeque::with_capacity(frames.min(INBOUND_TO_START)),
            anchor: None,
            n: 0,
            silence_owed: 0,
            pausing: false,
            catching_up: false,
            last_arrival: None,
            run: 0,
            frames: 0,
            pause_frames: 0,
            stalls: 0,
            dropped_frames: 0,
            overflow_bytes: 0,
        }
    }

    /// Bytes the buffer can still take.
    pub fn room(&self) -> usize {
        self.frame_bytes * self.max_frames - self.bytes.len()
    }

    /// Appends bytes received by `now` (any length). Each frame they complete arrived at `now`.
    /// What does not fit is dropped and counted (the media thread never gives more than
    /// [`room`](InboundBuffer::room)); the buffer never grows past its capacity.
    pub fn push(&mut self, data: &[u8], now: Instant) {
        let n = data.len().min(self.room());
        let before = self.bytes.len() / self.frame_bytes;
        if self.bytes.len() + n > self.bytes.capacity() {
            // A larger bunch than any before: at least double (a few times per call at most,
            // and never past the capacity), so that a network's usual bunching costs what it
            // needs and not a stall's worst case.
            let needed = (self.bytes.len() + n).div_ceil(self.frame_bytes);
            let frames = needed.max(2 * self.bytes.capacity() / self.frame_bytes).min(self.max_frames);
            self.bytes.reserve_exact(self.frame_bytes * frames - self.bytes.len());
            self.arrivals.reserve_exact(frames.saturating_sub(self.arrivals.len()));
        }
        self.bytes.extend(&data[..n]);
        self.overflow_bytes += (data.len() - n) as u64;
        for _ in before..self.bytes.len() / self.frame_bytes {
            if self.arrivals.len() <= self.max_frames {
                self.arrivals.push_back(now);
            }
        }
    }

    /// Whole frames waiting.
    pub fn backlog(&self) -> usize {
        self.bytes.len() / self.frame_bytes
    }

    /// Bytes waiting, including a partial frame.
    pub fn len_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Caller frames taken so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Frames of pause silence put into the timeline.
    pub fn pause_frames(&self) -> u64 {
        self.pause_frames
    }

    /// Gaps that turned out to be stalls (their backlog followed and went through).
    pub fn stalls(&self) -> u64 {
        self.stalls
    }

    /// Whether the frame taken last is part of a burst: it and the [`BURST_RUN`] frames before
    /// it each arrived within [`BURST_WINDOW`] of the one before (the backlog of a stall, or
    /// frames that waited for a media thread held up), so its pass runs faster than real time.
    /// Pause silence ends a burst.
    pub fn in_burst(&self) -> bool {
        self.run >= BURST_RUN
    }

    /// Frames dropped for being later than `max_backlog`.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames
    }

    /// Bytes dropped because the buffer was full.
    pub fn overflow_bytes(&self) -> u64 {
        self.overflow_bytes
    }

    /// When the timeline next changes if nothing arrives: the end of a held frame's burst
    /// window, the next frame of a pause being filled, or the end of the wait before a pause.
    pub fn next_deadline(&self) -> Option<Instant> {
        if let Some(&arrived) = self.arrivals.front() {
            let window = arrived + BURST_WINDOW;
            return Some(match self.arrivals.back() {
                Some(&newest) if self.undecided() => window.max(newest + FRAME_DURATION + self.config.jitter),
                _ => window,
            });
        }
        let due = self.next_due()?;
        Some(if self.pausing { due + Duration::from_micros(1) } else { due + self.config.max_wait })
    }

    /// Starts the call's timeline at `now` (later calls do nothing): if no audio arrives for
    /// `max_wait`, the start of the call is a pause like any other and is filled with silence.
    /// The first frame, if it comes sooner, starts the timeline itself.
    pub fn start(&mut self, now: Instant) {
        self.anchor.get_or_insert(now);
    }

    /// The due instant of the next frame on the caller's timeline, once the call has started.
    pub fn next_due(&self) -> Option<Instant> {
        self.anchor.map(|anchor| anchor + frames(self.n))
    }

    /// What comes next on the caller's timeline at `now`. For [`Next::Frame`] the frame is
    /// decoded into `out` (one frame long); for [`Next::Pause`] `out` is zeroed.
    pub fn poll(&mut self, now: Instant, out: &mut [i16]) -> Next {
        loop {
            if self.silence_owed > 0 {
                self.silence_owed -= 1;
                return self.pause(out);
            }
            let Some(&arrived) = self.arrivals.front() else {
                return self.poll_idle(now, out);
            };
            let anchor = match self.anchor {
                // The caller's first frame starts its timeline, unless a pause at the start of
                // the call has already been filled (then it follows that silence).
                Some(anchor) if self.frames > 0 || self.pause_frames > 0 => anchor,
                _ => {
                    self.anchor = Some(arrived);
                    return self.take(out);
                }
            };
            let due = anchor + frames(self.n);
            if arrived <= due {
                // Early (or exactly on time): the earliest arrivals set the timeline.
                self.anchor = Some(arrived.checked_sub(frames(self.n)).unwrap_or(anchor));
                self.catching_up = false;
                return self.take(out);
            }
            let late = arrived - due;
            if late <= self.config.jitter {
                self.catching_up = false;
                return self.take(out);
            }
            // This frame ended a gap. A stall's backlog brings the newest frame back on time.
            let newest = self.arrivals.len() as u64 - 1;
            let newest_late = self.arrivals.back().map_or(late, |a| a.saturating_duration_since(anchor + frames(self.n + newest)));
            let full = self.room() < self.frame_bytes;
            // A stall's backlog: the newest frame is back on time, or the buffer is full, or
            // the backlog is being taken already.
            let stall = newest_late <= self.config.jitter || full || self.catching_up;
            if !stall && self.nothing_followed(now) {
                // Nothing newer follows them: a stall that held the end of the stream, or a
                // sender that waits for each frame's answer. They go through now, with no
                // silence, and the timeline restarts from the present (the newest is due now),
                // so that such a sender's next frame is not held again.
                self.anchor = Some(now.checked_sub(frames(self.n + newest)).unwrap_or(anchor));
                if !self.pausing {
                    self.stalls += 1;
                }
                self.catching_up = true;
                return self.take(out);
            }
            if stall {
                if !self.catching_up && !self.pausing {
                    self.stalls += 1;
                }
                self.catching_up = true;
                if late > self.config.max_backlog {
                    self.drop_front();
                    continue;
                }
                return self.take(out);
            }
            if now < arrived + BURST_WINDOW || self.undecided() {
                // A backlog may follow; or the newest frame is still late and came alone or with
                // others: a pause (then the sender's next frame comes a frame later, as late), or
                // a stall that held the end of the stream (then nothing comes). What follows
                // tells (see `nothing_followed`).
                return Next::Wait;
            }
            // A pause: its length, to the nearest frame, goes in before the frame.
            let owed = (newest_late + FRAME_DURATION / 2).as_nanos() / FRAME_DURATION.as_nanos();
            let owed = u64::try_from(owed).unwrap_or(u64::MAX);
            self.pausing = false;
            if owed == 0 {
                return self.take(out);
            }
            self.silence_owed = owed;
        }
    }

    /// Whether what follows the late frames held still has to tell a pause from a stall: they
    /// all came together, or the newest came within [`BURST_WINDOW`] of the last one before
    /// it; not a frame or more later, as a paced sender's next message would.
    fn undecided(&self) -> bool {
        // Frames completed by one message share its arrival: compare with the last one that
        // arrived before the newest.
        let Some(&newest) = self.arrivals.back() else { return false };
        self.arrivals.iter().rev().find(|&&a| a < newest).is_none_or(|&before| newest < before + BURST_WINDOW)
    }

    /// Late frames came after a gap and nothing has followed them for a frame and the jitter
    /// allowance: the sender is not paced behind them (a pause's resumed frames would keep
    /// coming), so they are a stall's backlog with nothing newer, the end of the stream. They
    /// go through with no silence before them.
    fn nothing_followed(&self, now: Instant) -> bool {
        self.undecided() && self.arrivals.back().is_some_and(|&newest| now >= newest + FRAME_DURATION + self.config.jitter)
    }

    /// No frame is waiting: fill a pause that has lasted `max_wait`, and keep filling it.
    fn poll_idle(&mut self, now: Instant, out: &mut [i16]) -> Next {
        let Some(due) = self.next_due() else { return Next::Wait };
        if !self.pausing && now >= due + self.config.max_wait {
            self.pausing = true;
        }
        // Silence up to the present: the frame that ends the pause is then on time.
        if self.pausing && due < now {
            return self.pause(out);
        }
        Next::Wait
    }

    fn pause(&mut self, out: &mut [i16]) -> Next {
        out.fill(0);
        self.run = 0;
        self.n += 1;
        self.pause_frames += 1;
        Next::Pause
    }

    fn take(&mut self, out: &mut [i16]) -> Next {
        let mut frame = [0u8; MAX_FRAME_BYTES];
        let frame = &mut frame[..self.frame_bytes];
        super::pop_front_into(&mut self.bytes, frame);
        let arrived = self.pop_arrival();
        let together = matches!((arrived, self.last_arrival), (Some(now), Some(before)) if now < before + BURST_WINDOW);
        self.run = if together { self.run.saturating_add(1) } else { 0 };
        self.last_arrival = arrived.or(self.last_arrival);
        decode_l16(frame, out);
        self.n += 1;
        self.frames += 1;
        self.pausing = false;
        Next::Frame
    }

    fn drop_front(&mut self) {
        self.bytes.drain(..self.frame_bytes);
        self.pop_arrival();
        self.n += 1;
        self.dropped_frames += 1;
    }

    /// The front frame's arrival, which leaves with it. When no frame is left, a stall's
    /// backlog is through: what comes next is judged afresh.
    fn pop_arrival(&mut self) -> Option<Instant> {
        let arrived = self.arrivals.pop_front();
        if self.arrivals.is_empty() {
            self.catching_up = false;
        }
        arrived
    }

    /// Takes the next whole frame whatever its timing (the call is ending: nothing is lost).
    pub fn take_remaining(&mut self, out: &mut [i16]) -> bool {
        if self.backlog() == 0 {
            return false;
        }
        self.take(out);
        true
    }
}

/// `n` frames of time.
fn frames(n: u64) -> Duration {
    FRAME_DURATION.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests;
