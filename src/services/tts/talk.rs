//! A talk's audio between the synthesis thread and the media thread: the thread publishes the
//! speech in chunks as it synthesizes it ([`TalkShared`]), and the media thread plays them
//! ([`TalkAudio`]) as they come, without waiting for the rest.
//!
//! The chunks live in a fixed array of write-once slots, allocated with the talk off the media
//! thread: the thread fills slot `n`, then counts it published (release); the player reads the
//! count (acquire) and plays the slots below it. Slots are kept, so loops and restarts replay
//! them. The synthesis thread holds a reference to every talk until it is the last holder, so
//! the memory is always freed there, never on a media thread.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::audio::{Blend, Played};

/// Slots per talk. The thread's chunks grow from 60 ms to 2 s, so this holds over ten minutes
/// of speech, far more than a talk's longest text (1,500 characters) makes; the last slot takes
/// whatever is left.
pub const MAX_CHUNKS: usize = 384;

/// The talk's chunks and its state, shared by the synthesis thread and the player.
#[derive(Debug)]
pub struct TalkShared {
    slots: Box<[OnceLock<Arc<[i16]>>]>,
    published: AtomicUsize,
    /// Every chunk is published (or synthesis failed).
    complete: AtomicBool,
    failed: AtomicBool,
    cancelled: AtomicBool,
}

impl TalkShared {
    /// An empty talk.
    pub fn new() -> Arc<TalkShared> {
        Arc::new(TalkShared {
            slots: (0..MAX_CHUNKS).map(|_| OnceLock::new()).collect(),
            published: AtomicUsize::new(0),
            complete: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
        })
    }

    /// Publishes the next chunk; false when every slot is taken (see [`MAX_CHUNKS`]).
    pub fn publish(&self, chunk: Arc<[i16]>) -> bool {
        let n = self.published.load(Ordering::Relaxed);
        let Some(slot) = self.slots.get(n) else { return false };
        if slot.set(chunk).is_err() {
            return false;
        }
        self.published.store(n + 1, Ordering::Release);
        true
    }

    /// Chunks published so far.
    pub fn published(&self) -> usize {
        self.published.load(Ordering::Acquire)
    }

    /// Whether only the last slot is left.
    pub fn last_slot(&self) -> bool {
        self.published.load(Ordering::Relaxed) + 1 >= MAX_CHUNKS
    }

    /// No more chunks will come; `failed` when synthesis failed.
    pub fn complete(&self, failed: bool) {
        self.failed.store(failed, Ordering::Relaxed);
        self.complete.store(true, Ordering::Release);
    }

    /// Whether every chunk is published.
    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    /// Whether synthesis failed.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Asks the thread to stop synthesizing: nobody will play the rest.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Whether [`cancel`](TalkShared::cancel) was called.
    pub fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    fn chunk(&self, n: usize) -> Option<&[i16]> {
        self.slots.get(n).and_then(OnceLock::get).map(|c| &c[..])
    }
}

/// Plays a talk's chunks into call frames as they are published: loops, gain, restart, and
/// how much has played. Reading and dropping it never allocates or frees (the synthesis thread
/// owns the last reference).
#[derive(Debug, Clone)]
pub struct TalkAudio {
    shared: Arc<TalkShared>,
    loops: u32,
    plays_left: Option<u32>,
    gain: f32,
    chunk: usize,
    offset: usize,
    played: u64,
    /// Samples of silence played because synthesis had not caught up.
    starved: u64,
}

/// Two players are equal when they play the same talk from the same place.
impl PartialEq for TalkAudio {
    fn eq(&self, other: &TalkAudio) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
            && (self.loops, self.plays_left, self.chunk, self.offset, self.played)
                == (other.loops, other.plays_left, other.chunk, other.offset, other.played)
            && self.gain == other.gain
    }
}

impl TalkAudio {
    /// Plays `shared` `loops` times (0: until stopped) at linear `gain`.
    pub fn new(shared: Arc<TalkShared>, loops: u32, gain: f32) -> TalkAudio {
        TalkAudio { shared, loops, plays_left: (loops > 0).then_some(loops), gain, chunk: 0, offset: 0, played: 0, starved: 0 }
    }

    /// The shared chunks.
    pub fn shared(&self) -> &Arc<TalkShared> {
        &self.shared
    }

    /// Starts over from the beginning, with all the plays again.
    pub fn restart(&mut self) {
        self.chunk = 0;
        self.offset = 0;
        self.plays_left = (self.loops > 0).then_some(self.loops);
        self.played = 0;
    }

    /// Samples played since the start (or the last restart).
    pub fn played(&self) -> u64 {
        self.played
    }

    /// Whether the first chunk has arrived.
    pub fn started(&self) -> bool {
        self.shared.published() > 0
    }

    /// Samples of silence played while waiting for synthesis.
    pub fn starved(&self) -> u64 {
        self.starved
    }

    /// Writes the next frame into `out`, blended as `blend` says. Before the first chunk and
    /// whenever synthesis is behind, nothing is written (the frame's samples count as starved
    /// once speech has begun). `ended` when the last play ended (or synthesis failed or made
    /// nothing).
    pub fn play_into(&mut self, out: &mut [i16], blend: Blend) -> Played {
        let mut filled = 0;
        while filled < out.len() {
            let complete = self.shared.is_complete();
            let published = self.shared.published();
            if let Some(chunk) = self.shared.chunk(self.chunk).filter(|_| self.chunk < published) {
                let take = (out.len() - filled).min(chunk.len() - self.offset);
                let (dst, src) = (&mut out[filled..filled + take], &chunk[self.offset..self.offset + take]);
                for (d, s) in dst.iter_mut().zip(src) {
                    let s = if self.gain == 1.0 { *s } else { (f32::from(*s) * self.gain).round().clamp(-32768.0, 32767.0) as i16 };
                    *d = if blend == Blend::Mix { d.saturating_add(s) } else { s };
                }
                filled += take;
                self.offset += take;
                self.played += take as u64;
                if self.offset == chunk.len() {
                    self.chunk += 1;
                    self.offset = 0;
                }
                continue;
            }
            if !complete {
                if self.played > 0 {
                    self.starved += (out.len() - filled) as u64;
                }
                break;
            }
            // Every chunk has played: one play is over.
            let left = self.plays_left.map(|n| n.saturating_sub(1));
            if published == 0 || self.shared.failed() || left == Some(0) {
                if blend == Blend::Replace {
                    out[filled..].fill(0);
                }
                return Played { samples: filled, ended: true };
            }
            self.plays_left = left;
            self.chunk = 0;
            self.offset = 0;
        }
        if blend == Blend::Replace {
            out[filled..].fill(0);
        }
        Played { samples: filled, ended: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_play_as_they_are_published_then_loop_and_end() {
        let shared = TalkShared::new();
        let mut talk = TalkAudio::new(shared.clone(), 2, 1.0);
        let mut out = [0i16; 4];
        assert_eq!(talk.play_into(&mut out, Blend::Replace), Played { samples: 0, ended: false }, "nothing yet");
        shared.publish(vec![1, 2, 3].into());
        assert_eq!(talk.play_into(&mut out, Blend::Replace), Played { samples: 3, ended: false });
        assert_eq!(out, [1, 2, 3, 0]);
        assert_eq!(talk.starved(), 1, "synthesis is behind by a sample");
        shared.publish(vec![4, 5].into());
        shared.complete(false);
        assert_eq!(talk.play_into(&mut out, Blend::Replace), Played { samples: 4, ended: false });
        assert_eq!(out, [4, 5, 1, 2], "the second play follows at once");
        assert_eq!(talk.play_into(&mut out, Blend::Replace), Played { samples: 3, ended: true });
        assert_eq!(out, [3, 4, 5, 0]);
        assert_eq!(talk.played(), 10);
        talk.restart();
        let mut mixed = [10i16; 4];
        assert_eq!(talk.play_into(&mut mixed, Blend::Mix).samples, 4);
        assert_eq!(mixed, [11, 12, 13, 14]);
    }

    #[test]
    fn a_failed_or_empty_talk_ends_at_once_and_slots_are_bounded() {
        let shared = TalkShared::new();
        shared.complete(true);
        let mut out = [0i16; 4];
        assert!(TalkAudio::new(shared, 0, 1.0).play_into(&mut out, Blend::Mix).ended);
        let shared = TalkShared::new();
        for _ in 0..MAX_CHUNKS {
            assert!(shared.publish(vec![1].into()));
        }
        assert!(!shared.publish(vec![1].into()));
    }
}
