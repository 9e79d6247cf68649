//! The rings between a fork's stage on the media thread and its task on the fork runtime, and
//! what travels in them besides audio.
//!
//! ```text
//!  media thread (MediaEnd)                        fork task (TaskEnd)
//!  caller audio at the fork's rate -> audio ─────>  frames of `frame_ms` to the target
//!  mixed into the call  <────────── reply_audio <─  the target's audio at the call's rate
//!  emit, clear, notify, hang up <────── replies <─  text replies, connection events
//!  the caller's DTMF, notifies played -> notes ──>  text messages to the target
//! ```
//!
//! Every ring is fixed-capacity and single-producer/single-consumer: neither side waits for
//! the other, and a full ring drops (audio, counted) or is retried later (events).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ringbuf::{HeapCons, HeapProd, HeapRb, traits::*};

use crate::call::{Event, Marker};

/// Capacity of the ring of replies (events and commands) to the media thread.
const REPLY_RING: usize = 64;

/// Capacity of the ring of notes to the task.
const NOTE_RING: usize = 32;

/// What the task hands to the media thread, besides audio.
#[derive(Debug)]
pub enum Reply {
    /// A ready-made event, moved into the call's events.
    Event(Event),
    /// Barge-in: drop the reply audio pushed before sample number `upto`, then clear.
    Clear {
        /// Reply samples pushed before the command.
        upto: u64,
    },
    /// After the caller barged in: drop the reply audio pushed before sample number `upto`
    /// (the call has cleared already).
    Drop {
        /// Reply samples pushed when the task learned of the barge-in.
        upto: u64,
    },
    /// Ask for `marker` once the reply audio up to sample number `at` has been mixed.
    Notify {
        /// The call's notify marker.
        marker: Marker,
        /// Reply samples pushed before it.
        at: u64,
    },
    /// Hang up the call.
    Hangup,
}

/// What the media thread tells the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// The caller pressed a key.
    Dtmf(char),
    /// The reply audio before this notify marker has played.
    Played(Marker),
    /// The caller started or stopped speaking.
    Speech(crate::call::Speech),
    /// The caller barged in on the reply audio: what the task still holds of it is dropped.
    BargeIn(crate::call::BargeCause),
}

/// Flags and counts both ends read.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// The call has ended: send what is left, close and end.
    pub(super) stop: AtomicBool,
    /// The target closed cleanly: stop pushing audio.
    pub(super) done: AtomicBool,
    /// Frames dropped because the audio ring was full.
    pub(super) dropped: AtomicU64,
}

/// The media thread's end of a fork.
pub struct MediaEnd {
    /// The caller's audio (interleaved with the outbound frame when the fork sends both).
    pub audio: HeapProd<i16>,
    /// The target's audio at the call's rate.
    pub reply_audio: HeapCons<i16>,
    /// Events and commands, in order.
    pub replies: HeapCons<Reply>,
    /// DTMF and notifies for the target.
    pub notes: HeapProd<Note>,
    /// This fork's notify markers are `marker_base + n`, for `n` below 2²⁴.
    pub marker_base: Marker,
    shared: Arc<Shared>,
}

impl MediaEnd {
    /// Ends the fork: the task sends the whole frames left, closes and ends. A flag, nothing
    /// else.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
    }

    /// Whether the target closed cleanly (no more audio is wanted).
    pub fn target_done(&self) -> bool {
        self.shared.done.load(Ordering::Acquire)
    }

    /// Counts a frame dropped because the audio ring was full.
    pub fn count_drop(&self) {
        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Frames dropped so far because the audio ring was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Whether `marker` is one of this fork's.
    pub fn owns_marker(&self, marker: Marker) -> bool {
        marker.in_range_of(self.marker_base)
    }
}

impl std::fmt::Debug for MediaEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaEnd").field("marker_base", &self.marker_base).field("dropped", &self.dropped()).finish_non_exhaustive()
    }
}

/// The task's end of a fork.
pub(super) struct TaskEnd {
    pub(super) audio: HeapCons<i16>,
    pub(super) reply_audio: HeapProd<i16>,
    pub(super) replies: HeapProd<Reply>,
    pub(super) notes: HeapCons<Note>,
    pub(super) shared: Arc<Shared>,
}

/// The two ends, with `audio` samples of room toward the task and `reply_audio` back.
pub(super) fn rings(audio: usize, reply_audio: usize, marker_base: Marker) -> (MediaEnd, TaskEnd) {
    let (audio_in, audio_out) = HeapRb::<i16>::new(audio).split();
    let (reply_audio_in, reply_audio_out) = HeapRb::<i16>::new(reply_audio).split();
    let (replies_in, replies_out) = HeapRb::<Reply>::new(REPLY_RING).split();
    let (notes_in, notes_out) = HeapRb::<Note>::new(NOTE_RING).split();
    let shared = Arc::<Shared>::default();
    let media = MediaEnd {
        audio: audio_in,
        reply_audio: reply_audio_out,
        replies: replies_out,
        notes: notes_in,
        marker_base,
        shared: shared.clone(),
    };
    let task = TaskEnd { audio: audio_out, reply_audio: reply_audio_in, replies: replies_in, notes: notes_out, shared };
    (media, task)
}
