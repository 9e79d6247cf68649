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

/// The caller-timeline rules of one call. Every field has a safe default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineConfig {
    /// Lateness that is only network jitter: a frame up to this late never ends a pause.
    /// Default 100 ms.
    pub jitter: Duration,
    /// How long past its due instant a missing frame is waited for before silence passes run
    /// (the platform is taken to have paused). Default 1 s: a 300 ms TCP stall (or a 900 ms
    /// one) loses nothing and adds no silence.
    pub max_wait: Duration,
    /// A frame later than this (after the rules above) is dropped and counted. Default 5 s.
    pub max_backlog: Duration,
}

impl Default for TimelineConfig {
    fn default() -> TimelineConfig {
        TimelineConfig { jitter: Duration::from_millis(100), max_wait: Duration::from_secs(1), max_backlog: Duration::from_secs(5) }
    }
}

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
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const F: Duration = FRAME_DURATION;
    const NONE: [i16; 0] = [];

    fn frame(value: i16) -> Vec<u8> {
        std::iter::repeat_n(value.to_le_bytes(), 160).flatten().collect()
    }

    fn buffer() -> InboundBuffer {
        InboundBuffer::new(SampleRate::Hz8000, 64, TimelineConfig::default())
    }

    /// Polls at `now` until the timeline waits: each frame's first sample, 0 for pause silence
    /// (the test frames are never 0).
    fn drain(b: &mut InboundBuffer, now: Instant) -> Vec<i16> {
        let mut out = [0i16; 160];
        let mut got = Vec::new();
        loop {
            match b.poll(now, &mut out) {
                Next::Frame => {
                    assert!(out[0] != 0);
                    got.push(out[0]);
                }
                Next::Pause => {
                    assert!(out.iter().all(|s| *s == 0));
                    got.push(0);
                }
                Next::Wait => return got,
            }
        }
    }

    /// Frames 1..=`count`, each due and arriving a frame apart from `t0`, each taken at once.
    fn on_time(b: &mut InboundBuffer, t0: Instant, count: i16) {
        for i in 0..count {
            let at = t0 + F * i as u32;
            b.push(&frame(i + 1), at);
            assert_eq!(drain(b, at), [i + 1]);
        }
    }

    #[test]
    fn reframes_odd_sizes_without_losing_a_sample() {
        let mut b = buffer();
        let t0 = Instant::now();
        let stream: Vec<u8> = (1..=480i16).flat_map(|s| s.to_le_bytes()).collect();
        b.push(&stream[..1], t0);
        b.push(&stream[1..8], t0);
        b.push(&stream[8..341], t0);
        let mut out = [0i16; 160];
        assert_eq!(b.poll(t0, &mut out), Next::Frame);
        assert_eq!((out[0], out[159]), (1, 160));
        assert_eq!(b.poll(t0, &mut out), Next::Wait, "only 21 bytes of the second frame so far");
        b.push(&stream[341..], t0 + F);
        assert_eq!(b.poll(t0 + F, &mut out), Next::Frame);
        assert_eq!((out[0], out[159]), (161, 320));
        assert_eq!(b.poll(t0 + F, &mut out), Next::Frame);
        assert_eq!((out[0], out[159]), (321, 480));
        assert_eq!(b.len_bytes(), 0);
    }

    #[test]
    fn a_frame_goes_through_when_it_arrives_and_a_late_one_is_waited_for() {
        let mut b = buffer();
        let t0 = Instant::now();
        b.push(&frame(1), t0);
        assert_eq!(drain(&mut b, t0), [1]);
        // Frame 2 is 60 ms late: nothing runs in its place meanwhile.
        for ms in [20, 40, 60, 79] {
            assert_eq!(drain(&mut b, t0 + ms * MS), NONE, "no silence at {ms} ms");
        }
        b.push(&frame(2), t0 + 80 * MS);
        assert_eq!(drain(&mut b, t0 + 80 * MS), [2], "jitter within 100 ms goes through at once");
        b.push(&frame(3), t0 + 80 * MS);
        assert_eq!(drain(&mut b, t0 + 80 * MS), [3], "and so does the frame that came with it");
        assert_eq!((b.frames(), b.pause_frames(), b.dropped_frames()), (3, 0, 0));
    }

    #[test]
    fn the_backlog_of_a_stall_goes_through_at_once_with_no_silence() {
        let mut b = buffer();
        let t0 = Instant::now();
        on_time(&mut b, t0, 5);
        // A 300 ms stall: frames 6..=20 were due at 100..=380 ms and all arrive at 400 ms.
        let at = t0 + 400 * MS;
        assert_eq!(drain(&mut b, at - MS), NONE);
        for i in 5..20 {
            b.push(&frame(i + 1), at);
        }
        assert_eq!(drain(&mut b, at), (6..=20).collect::<Vec<i16>>(), "caught up at once");
        assert_eq!(b.stalls(), 1);
        // Then on time again.
        b.push(&frame(21), t0 + F * 20);
        assert_eq!(drain(&mut b, t0 + F * 20), [21]);
        assert_eq!(b.pause_frames(), 0);
    }

    #[test]
    fn frames_that_come_together_are_a_burst_and_paced_ones_are_not() {
        let mut b = InboundBuffer::new(SampleRate::Hz8000, 400, TimelineConfig::default());
        let t0 = Instant::now();
        let mut out = [0i16; 160];
        let mut bursts = |b: &mut InboundBuffer, now: Instant| {
            let mut seen = Vec::new();
            while b.poll(now, &mut out) != Next::Wait {
                seen.push(b.in_burst());
            }
            seen
        };
        for i in 0..3 {
            b.push(&frame(i + 1), t0 + F * i as u32 + MS * (3 * i as u32));
            assert_eq!(bursts(&mut b, t0 + F * i as u32 + 9 * MS), [false], "paced, with jitter");
        }
        // A 300 ms stall's backlog: the first frame of it ends a gap, the rest came with it.
        let at = t0 + 360 * MS;
        for i in 3..18 {
            b.push(&frame(i + 1), at);
        }
        let seen = bursts(&mut b, at);
        assert_eq!(seen.len(), 15);
        let run = BURST_RUN as usize;
        assert!(seen[..run].iter().all(|&burst| !burst), "the first frames of a run are not yet a burst: {seen:?}");
        assert!(seen[run..].iter().all(|&burst| burst), "{seen:?}");
        // A 3 s one, longer than `max_wait`: pause silence (never a burst) while it lasts, then
        // its backlog, a burst from its ninth frame.
        let silent = bursts(&mut b, at + 3 * F + Duration::from_secs(2));
        assert!(!silent.is_empty() && silent.iter().all(|&burst| !burst), "{silent:?}");
        let at = at + Duration::from_secs(3);
        for i in 18..168 {
            b.push(&frame(i + 1), at);
        }
        let seen = bursts(&mut b, at);
        assert_eq!(seen.iter().filter(|&&burst| burst).count(), 150 - BURST_RUN as usize, "all of the backlog from its ninth frame");
        // A sender of 40 ms messages pairs its frames: never a burst.
        let mut b = buffer();
        for k in 0..10u32 {
            let sent = t0 + 2 * F * k;
            b.push(&[frame(1), frame(2)].concat(), sent);
            assert_eq!(bursts(&mut b, sent), [false, false]);
        }
    }

    #[test]
    fn a_stall_whose_backlog_arrives_in_pieces_loses_nothing() {
        let mut b = buffer();
        let t0 = Instant::now();
        b.push(&frame(1), t0);
        drain(&mut b, t0);
        // 200 ms of nothing, then the backlog in two pieces 3 ms apart.
        let at = t0 + 220 * MS;
        b.push(&frame(2), at);
        assert_eq!(drain(&mut b, at), NONE, "a lone late frame waits for its backlog");
        for i in 3..=5 {
            b.push(&frame(i), at + 3 * MS);
        }
        assert_eq!(drain(&mut b, at + 3 * MS), NONE, "still later than the jitter allowance");
        for i in 6..=12 {
            b.push(&frame(i), at + 4 * MS);
        }
        assert_eq!(drain(&mut b, at + 4 * MS), (2..=12).collect::<Vec<i16>>());
        assert_eq!(b.pause_frames(), 0);
    }

    #[test]
    fn a_pause_becomes_silence_of_its_length_before_the_frame_that_ends_it() {
        let mut b = buffer();
        let t0 = Instant::now();
        on_time(&mut b, t0, 3);
        // The platform stops for 500 ms (frames due at 60..=540 ms never come), then sends
        // frame 4 at 560 ms and the next one a frame later: no burst.
        let resumed = t0 + 560 * MS;
        b.push(&frame(4), resumed);
        assert_eq!(drain(&mut b, resumed), NONE, "held while a backlog may follow");
        assert_eq!(drain(&mut b, resumed + 19 * MS), NONE, "held until the sender's next frame shows its pace");
        b.push(&frame(5), resumed + F);
        let got = drain(&mut b, resumed + F);
        assert_eq!(got.len(), 27);
        assert!(got[..25].iter().all(|s| *s == 0), "500 ms of silence");
        assert_eq!(got[25..], [4, 5]);
        b.push(&frame(6), resumed + 2 * F);
        assert_eq!(drain(&mut b, resumed + 2 * F), [6], "back on the timeline: no more holding");
        assert_eq!((b.pause_frames(), b.stalls(), b.frames()), (25, 0, 6));
    }

    #[test]
    fn a_stall_that_holds_the_end_of_the_stream_adds_no_silence() {
        let mut b = buffer();
        let t0 = Instant::now();
        on_time(&mut b, t0, 5);
        // The last 15 frames (due at 100..=380 ms) are stalled and arrive together at 700 ms:
        // nothing newer follows to show the stall up.
        let at = t0 + 700 * MS;
        for i in 5..20 {
            b.push(&frame(i + 1), at);
        }
        assert_eq!(drain(&mut b, at + BURST_WINDOW), NONE, "what follows them would tell");
        let decided = at + F + TimelineConfig::default().jitter;
        assert_eq!(b.next_deadline(), Some(decided));
        assert_eq!(drain(&mut b, decided - MS), NONE);
        assert_eq!(drain(&mut b, decided), (6..=20).collect::<Vec<i16>>(), "a stall: no silence");
        assert_eq!((b.pause_frames(), b.stalls(), b.frames()), (0, 1, 20));
        // A pause after it is a pause again.
        let resumed = decided + 300 * MS;
        b.push(&frame(21), resumed);
        b.push(&frame(22), resumed + F);
        let got = drain(&mut b, resumed + F);
        assert_eq!(got[got.len() - 2..], [21, 22]);
        assert!(got.len() > 2 && got[..got.len() - 2].iter().all(|s| *s == 0), "{got:?}");
    }

    #[test]
    fn a_stall_that_holds_only_the_last_frame_adds_no_silence() {
        let mut b = buffer();
        let t0 = Instant::now();
        on_time(&mut b, t0, 5);
        // The last frame, due at 100 ms, comes alone 300 ms late, and nothing after it.
        let at = t0 + 400 * MS;
        b.push(&frame(6), at);
        let decided = at + F + TimelineConfig::default().jitter;
        assert_eq!(drain(&mut b, decided - MS), NONE);
        assert_eq!(drain(&mut b, decided), [6]);
        assert_eq!((b.pause_frames(), b.frames()), (0, 6));
    }

    #[test]
    fn a_pause_whose_first_frames_come_bunched_is_still_a_pause() {
        let mut b = buffer();
        let t0 = Instant::now();
        on_time(&mut b, t0, 3);
        // 500 ms of pause (frames due at 60..=540 ms never come); the sender resumes at 560 ms,
        // its first frame held up by the network so the second comes with it, then one a frame.
        let resumed = t0 + 580 * MS;
        b.push(&frame(4), resumed);
        b.push(&frame(5), resumed + 2 * MS);
        assert_eq!(drain(&mut b, resumed + BURST_WINDOW), NONE, "bunched: what follows tells");
        b.push(&frame(6), resumed + F);
        let got = drain(&mut b, resumed + F);
        assert_eq!(got.len(), 28, "{got:?}");
        assert!(got[..25].iter().all(|s| *s == 0), "500 ms of silence");
        assert_eq!(got[25..], [4, 5, 6]);
        assert_eq!((b.pause_frames(), b.stalls()), (25, 0));
    }

    #[test]
    fn a_pause_ended_by_messages_of_two_frames_is_still_a_pause() {
        // Frames completed by one message share its arrival: the pause shows when the next
        // message comes 40 ms later, as late.
        let mut b = buffer();
        let t0 = Instant::now();
        let pair = |a: i16| [frame(a), frame(a + 1)].concat();
        for k in 0..2u32 {
            b.push(&pair(1 + 2 * k as i16), t0 + 2 * F * k);
            assert_eq!(drain(&mut b, t0 + 2 * F * k).len(), 2);
        }
        // 500 ms of pause (frames due at 80..=560 ms never come), then a pair every 40 ms.
        let resumed = t0 + 580 * MS;
        b.push(&pair(5), resumed);
        assert_eq!(drain(&mut b, resumed + BURST_WINDOW), NONE, "what follows tells");
        b.push(&pair(7), resumed + 2 * F);
        let got = drain(&mut b, resumed + 2 * F);
        assert!(got.len() > 4, "{got:?}");
        let silence = got.len() - 4;
        assert!((24..=25).contains(&silence) && got[..silence].iter().all(|s| *s == 0), "the pause, within a frame: {got:?}");
        assert_eq!(got[silence..], [5, 6, 7, 8]);
        assert_eq!(b.stalls(), 0);
    }

    #[test]
    fn a_sender_that_waits_for_each_answer_is_held_once_after_a_gap() {
        let mut b = buffer();
        let t0 = Instant::now();
        on_time(&mut b, t0, 3);
        // 200 ms of nothing, then one frame, and the sender waits for its answer before the
        // next: nothing follows it for a frame and the jitter allowance.
        let at = t0 + 260 * MS;
        b.push(&frame(4), at);
        let decided = at + F + TimelineConfig::default().jitter;
        assert_eq!(drain(&mut b, decided - MS), NONE);
        assert_eq!(drain(&mut b, decided), [4], "no silence");
        // The answers come back at once from here on.
        for (i, value) in (5..10).enumerate() {
            let sent = decided + MS * (1 + 3 * i as u32);
            b.push(&frame(value), sent);
            assert_eq!(drain(&mut b, sent), [value]);
        }
        assert_eq!(b.pause_frames(), 0);
    }

    #[test]
    fn a_long_pause_is_filled_while_it_lasts_and_call_time_stays_right() {
        let mut b = buffer();
        let t0 = Instant::now();
        b.push(&frame(1), t0);
        drain(&mut b, t0);
        // Due at 20 ms; nothing until 1020 ms, then silence up to the present, then one a
        // frame.
        assert_eq!(drain(&mut b, t0 + 1019 * MS), NONE);
        let filled = drain(&mut b, t0 + 1020 * MS);
        assert_eq!(filled.len(), 50, "due 20..=1000 ms: ({filled:?})");
        assert!(filled.iter().all(|s| *s == 0));
        assert_eq!(drain(&mut b, t0 + 1039 * MS), [0]);
        assert_eq!(drain(&mut b, t0 + 1040 * MS), NONE);
        // The platform resumes at 2000 ms: 99 frames of call time were missing in all.
        let mut ms = 1041;
        while ms < 2000 {
            drain(&mut b, t0 + ms * MS);
            ms += 1;
        }
        let resumed = t0 + 2000 * MS;
        b.push(&frame(2), resumed);
        let mut got = drain(&mut b, resumed);
        got.extend(drain(&mut b, resumed + BURST_WINDOW));
        assert_eq!(got.last(), Some(&2));
        assert_eq!(b.pause_frames(), 99, "silence fills the pause exactly");
        assert_eq!(b.next_due(), Some(t0 + F * 101));
    }

    #[test]
    fn a_call_whose_caller_is_silent_from_the_start_keeps_call_time() {
        let mut b = buffer();
        let t0 = Instant::now();
        b.start(t0);
        assert_eq!(drain(&mut b, t0 + 999 * MS), NONE, "the first frame may take up to a second");
        let filled = drain(&mut b, t0 + 1000 * MS);
        assert_eq!(filled.len(), 50, "then the call's first second is silence");
        b.push(&frame(1), t0 + 1005 * MS);
        assert_eq!(drain(&mut b, t0 + 1005 * MS), [1]);
        // A first frame within the wait starts the timeline itself: no silence before it.
        let mut b = buffer();
        b.start(t0);
        b.push(&frame(1), t0 + 400 * MS);
        assert_eq!(drain(&mut b, t0 + 400 * MS), [1]);
        b.push(&frame(2), t0 + 420 * MS);
        assert_eq!(drain(&mut b, t0 + 420 * MS), [2]);
        assert_eq!(b.pause_frames(), 0);
    }

    #[test]
    fn a_frame_later_than_the_hard_bound_is_dropped_and_counted() {
        let config =
            TimelineConfig { max_wait: Duration::from_secs(3600), max_backlog: Duration::from_secs(2), ..TimelineConfig::default() };
        let mut b = InboundBuffer::new(SampleRate::Hz8000, 300, config);
        let t0 = Instant::now();
        b.push(&frame(1), t0);
        drain(&mut b, t0);
        // A 3 s stall, then its whole backlog (150 frames) at once.
        let at = t0 + 3020 * MS;
        for i in 0..150 {
            b.push(&frame(i + 2), at);
        }
        let got = drain(&mut b, at);
        assert_eq!(b.dropped_frames(), 50, "the frames more than 2 s late");
        assert_eq!(got, (52..=151).collect::<Vec<i16>>(), "the rest in order");
        assert_eq!(b.pause_frames(), 0);
    }

    #[test]
    fn a_sender_faster_than_real_time_is_followed_not_cut() {
        let mut b = buffer();
        let t0 = Instant::now();
        let mut got = Vec::new();
        for i in 0..500u32 {
            let at = t0 + 19 * MS * i;
            b.push(&frame(i as i16 + 1), at);
            got.extend(drain(&mut b, at));
        }
        assert_eq!(got, (1..=500).collect::<Vec<i16>>());
        assert_eq!((b.dropped_frames(), b.pause_frames()), (0, 0));
    }

    #[test]
    fn it_starts_with_three_frames_grows_to_its_capacity_and_counts_overflow() {
        let mut b = InboundBuffer::new(SampleRate::Hz8000, 8, TimelineConfig::default());
        assert!(b.bytes.capacity() < 4 * 320, "room for three frames to start with");
        let capacity = 8 * 320;
        assert_eq!(b.room(), capacity);
        b.push(&vec![1u8; capacity + 100], Instant::now());
        assert_eq!(b.len_bytes(), capacity);
        assert_eq!(b.overflow_bytes(), 100);
        assert_eq!(b.room(), 0);
        assert_eq!(b.backlog(), 8);
    }

    /// A backlog building frame by frame (a media thread held up while frames keep coming)
    /// grows the buffer by doubling, its bytes and its arrival times together, a few times,
    /// up to its capacity and never past it.
    #[test]
    fn a_growing_backlog_doubles_the_buffer_up_to_its_capacity() {
        let t0 = Instant::now();
        let mut b = InboundBuffer::new(SampleRate::Hz16000, 50, TimelineConfig::default());
        let mut sizes = vec![(b.bytes.capacity(), b.arrivals.capacity())];
        for i in 0..60u32 {
            b.push(&vec![0u8; 640], t0 + F * i);
            let now = (b.bytes.capacity(), b.arrivals.capacity());
            if sizes.last() != Some(&now) {
                sizes.push(now);
            }
        }
        assert_eq!(b.backlog(), 50);
        // 3, 6, 12, 24, 48, 50 frames.
        assert_eq!(sizes.len(), 6, "the capacities went {sizes:?}");
        for pair in sizes.windows(2).take(4) {
            assert!(pair[1].0 >= 2 * pair[0].0 && pair[1].1 >= pair[1].0 / 640, "the capacities went {sizes:?}");
        }
        let last = sizes[sizes.len() - 1];
        assert!(last.0 >= 50 * 640 && last.0 < 51 * 640 && last.1 >= 50);
    }
}
