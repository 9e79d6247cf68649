//! What a call's media thread shares with the call's task on the runtime.
//!
//! The call's socket, audio and platform events belong to its media thread (see
//! [`Endpoint`](super::Endpoint)). What crosses threads is rare: the control API's commands in,
//! the processors' events out, each in a single-producer/single-consumer ring (the `ringbuf`
//! crate) where full is a counted drop, never a wait; and the [`CallLink`]'s flags, counters and
//! the call task's waker.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use atomic_waker::AtomicWaker;
use ringbuf::traits::Split;
use ringbuf::{HeapCons, HeapProd, HeapRb};

use super::poller::Doorbell;
use crate::processor::Event;
use crate::session::{Control, SessionStats};

/// Control commands waiting for the media thread, per call (the media thread takes them all at
/// each visit; more wait in the call's command channel, and beyond that the API answers 503).
pub const CONTROL_RING: usize = 4;

/// What both sides of a call share: flags, counters and the call task's waker.
#[derive(Debug)]
pub struct CallLink {
    /// Woken by the media thread (through the relay) when the call task has something to do:
    /// processor events to publish, the call's end.
    pub waker: AtomicWaker,
    /// Set by the endpoint when the peer has closed, left or been refused: the media thread
    /// finishes the call.
    pub peer_closed: AtomicBool,
    /// Set when callpipe hangs up (the control API, a limit, a processor, shutdown): the media
    /// thread finishes the call, sends its last partial frame and closes.
    pub hangup: AtomicBool,
    /// Why callpipe hangs up: a [`Hangup`] as `u8`, stored before `hangup` is set.
    pub hangup_reason: AtomicU8,
    /// Set by the media thread once the session has finished and its final counters are here.
    pub media_done: AtomicBool,
    /// The close code the call ended with (0 until the endpoint has closed).
    pub close_code: AtomicU16,
    /// Counters the media thread publishes.
    pub stats: LinkStats,
    /// The events a finished call's session still held when the event ring was full: handed
    /// over once, at the end (set before `media_done`), for the call task to publish after the
    /// ring's.
    pub last_events: std::sync::Mutex<Vec<Event>>,
    /// Where the call task marks the call ready for its media thread (set when the call
    /// joins one).
    ready: OnceLock<(Arc<ReadyMap>, usize)>,
}

/// One bit per call of a media thread: set when the call task has handed its call something (a
/// command, a hang-up), taken by the thread at its next 1 ms slot (setting it rings the
/// thread's doorbell, which ends a wait that would go past that slot).
/// Between those a call is visited only when its own next deadline falls due.
#[derive(Debug)]
pub struct ReadyMap {
    words: Box<[AtomicU64]>,
    doorbell: Arc<Doorbell>,
}

impl ReadyMap {
    /// Room for calls `0..capacity`, ringing `doorbell` at each mark.
    pub(crate) fn new(capacity: usize, doorbell: Arc<Doorbell>) -> ReadyMap {
        ReadyMap { words: (0..capacity.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(), doorbell }
    }

    /// Calls that fit.
    pub fn capacity(&self) -> usize {
        self.words.len() * 64
    }

    /// Marks call `index` ready.
    pub fn set(&self, index: usize) {
        if let Some(word) = self.words.get(index / 64) {
            word.fetch_or(1 << (index % 64), Ordering::Release);
            self.doorbell.ring();
        }
    }

    /// Takes every mark, calling `f` with each ready call's index.
    pub fn drain(&self, mut f: impl FnMut(usize)) {
        for (w, word) in self.words.iter().enumerate() {
            if word.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let mut bits = word.swap(0, Ordering::Acquire);
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                f(w * 64 + bit);
            }
        }
    }
}

impl Default for CallLink {
    fn default() -> CallLink {
        CallLink {
            waker: AtomicWaker::new(),
            peer_closed: AtomicBool::new(false),
            hangup: AtomicBool::new(false),
            hangup_reason: AtomicU8::new(NO_HANGUP),
            media_done: AtomicBool::new(false),
            close_code: AtomicU16::new(0),
            stats: LinkStats::default(),
            last_events: std::sync::Mutex::new(Vec::new()),
            ready: OnceLock::new(),
        }
    }
}

impl CallLink {
    /// Tells the media thread that the call has something new (audio, an event, a command, its
    /// end): it is visited at the thread's next 1 ms slot.
    pub fn notify_media(&self) {
        if let Some((map, index)) = self.ready.get() {
            map.set(*index);
        }
    }

    /// Where [`notify_media`](CallLink::notify_media) marks the call: set once, by the media
    /// thread that takes it.
    pub fn set_ready_map(&self, map: Arc<ReadyMap>, index: usize) {
        let _ = self.ready.set((map, index));
    }

    /// Whether the media thread has finished with the call.
    pub fn is_media_done(&self) -> bool {
        self.media_done.load(Ordering::Acquire)
    }

    /// Asks the media thread to finish the call because callpipe hangs up, and wakes the
    /// call task. The first reason given wins.
    pub fn hang_up(&self, reason: Hangup) {
        let _ = self.hangup_reason.compare_exchange(NO_HANGUP, reason as u8, Ordering::AcqRel, Ordering::Acquire);
        self.hangup.store(true, Ordering::Release);
        self.notify_media();
        self.waker.wake();
    }

    /// The media thread has lost the call (a bug panicked in its visit): the call ends with 1011
    /// and its task is told.
    pub fn fail(&self) {
        let _ = self.close_code.compare_exchange(0, 1011, Ordering::AcqRel, Ordering::Acquire);
        self.media_done.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Why callpipe hangs up, once [`hang_up`](CallLink::hang_up) has been called.
    pub fn hangup_reason(&self) -> Hangup {
        Hangup::from_u8(self.hangup_reason.load(Ordering::Acquire))
    }
}

/// `hangup_reason` before any hang-up.
const NO_HANGUP: u8 = u8::MAX;

/// Why callpipe ends a call itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Hangup {
    /// The server is shutting down (close 1001).
    Shutdown = 0,
    /// The control API asked (close 1000).
    Api = 1,
    /// The call reached the maximum duration (close 1000).
    MaxDuration = 2,
    /// A processor asked, e.g. a `fork` target's `hangup` command (close 1000).
    Processor = 3,
}

impl Hangup {
    fn from_u8(value: u8) -> Hangup {
        match value {
            1 => Hangup::Api,
            2 => Hangup::MaxDuration,
            3 => Hangup::Processor,
            _ => Hangup::Shutdown,
        }
    }
}

/// A session's counters, published by the media thread with relaxed stores.
#[derive(Debug, Default)]
pub struct LinkStats {
    passes: AtomicU64,
    input_missing: AtomicU64,
    wall_only: AtomicU64,
    skipped_ticks: AtomicU64,
    frames_released: AtomicU64,
    dropped_in: AtomicU64,
    catchups: AtomicU64,
    dropped_out: AtomicU64,
    padded_frames: AtomicU64,
    clears: AtomicU64,
    notifies: AtomicU64,
    dropped_requests: AtomicU64,
    unmatched_acks: AtomicU64,
    players_active: AtomicU64,
    /// Kept for the metric of the same name: 0 since the media thread reads the socket itself (a
    /// session without room leaves the bytes in the socket).
    pub ring_overrun_in_bytes: AtomicU64,
    /// Frames dropped because the peer left too many unread (the endpoint's send buffer was
    /// full).
    pub ring_overrun_out: AtomicU64,
    /// Processor events dropped because the event ring was full.
    pub events_dropped: AtomicU64,
    /// Audio frames received from the caller (counted by the endpoint).
    pub frames_in: AtomicU64,
    /// Audio frames sent to the caller (counted by the endpoint).
    pub frames_out: AtomicU64,
    /// Frames sent more than the late threshold after their playout deadline.
    pub late_frames: AtomicU64,
    /// Caller frames of the wrong size.
    pub wrong_size: AtomicU64,
}

impl LinkStats {
    /// Publishes a session's counters.
    pub fn publish(&self, s: &SessionStats) {
        let r = Ordering::Relaxed;
        self.passes.store(s.passes, r);
        self.input_missing.store(s.input_missing, r);
        self.wall_only.store(s.wall_only, r);
        self.skipped_ticks.store(s.skipped_ticks, r);
        self.frames_released.store(s.frames_released, r);
        self.dropped_in.store(s.dropped_in, r);
        self.catchups.store(s.catchups, r);
        self.dropped_out.store(s.dropped_out, r);
        self.padded_frames.store(s.padded_frames, r);
        self.clears.store(s.clears, r);
        self.notifies.store(s.notifies, r);
        self.dropped_requests.store(s.dropped_requests, r);
        self.unmatched_acks.store(s.unmatched_acks, r);
        self.players_active.store(s.players_active, r);
    }

    /// The last published counters.
    pub fn session(&self) -> SessionStats {
        let r = Ordering::Relaxed;
        SessionStats {
            passes: self.passes.load(r),
            input_missing: self.input_missing.load(r),
            wall_only: self.wall_only.load(r),
            skipped_ticks: self.skipped_ticks.load(r),
            frames_released: self.frames_released.load(r),
            dropped_in: self.dropped_in.load(r),
            catchups: self.catchups.load(r),
            dropped_out: self.dropped_out.load(r),
            padded_frames: self.padded_frames.load(r),
            clears: self.clears.load(r),
            notifies: self.notifies.load(r),
            dropped_requests: self.dropped_requests.load(r),
            unmatched_acks: self.unmatched_acks.load(r),
            players_active: self.players_active.load(r),
        }
    }
}

/// The call task's ends of a call's rings.
pub struct ConnEnd {
    /// The shared state.
    pub link: Arc<CallLink>,
    /// Control API commands, to the media thread.
    pub control_in: HeapProd<Control>,
    /// Processor events, from the media thread.
    pub events_out: HeapCons<Event>,
}

/// The media thread's ends of a call's rings.
pub struct MediaEnd {
    /// The shared state.
    pub link: Arc<CallLink>,
    /// Control API commands.
    pub control_in: HeapCons<Control>,
    /// Processor events.
    pub events_out: HeapProd<Event>,
}

/// Processor events waiting for the call task, per call (more wait in the session, which bounds
/// them, until the task has emptied the ring).
pub const EVENT_RING: usize = 8;

/// Makes a call's rings and link.
pub fn call_rings() -> (ConnEnd, MediaEnd) {
    let link = Arc::new(CallLink::default());
    let (control_p, control_c) = HeapRb::<Control>::new(CONTROL_RING).split();
    let (events_out_p, events_out_c) = HeapRb::<Event>::new(EVENT_RING).split();
    (
        ConnEnd { link: link.clone(), control_in: control_p, events_out: events_out_c },
        MediaEnd { link, control_in: control_c, events_out: events_out_p },
    )
}
