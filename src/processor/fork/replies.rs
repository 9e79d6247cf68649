//! The media thread's side of a fork's replies: the task's events and commands applied in
//! order, and the target's audio mixed into the outbound frame one frame per pass, with the
//! `notify` markers asked for once the audio before them has played.

use ringbuf::HeapCons;
use ringbuf::traits::*;

use super::{Fork, MAX_PENDING_NOTIFIES};
use crate::call::{BargeCause, BargeIn, Interrupted};
use crate::processor::{Context, Event};
use crate::services::fork::Reply;

/// Skips the reply audio before sample `upto` of what the task pushed; `popped` counts the
/// samples taken from the ring so far.
fn skip_to(reply_audio: &mut HeapCons<i16>, popped: &mut u64, upto: u64) {
    let stale = upto.saturating_sub(*popped);
    *popped += reply_audio.skip(usize::try_from(stale).unwrap_or(usize::MAX)) as u64;
}

impl Fork {
    /// Applies the task's events and commands, in order, as far as this pass has room.
    pub(super) fn take_replies(&mut self, cx: &mut Context<'_>) {
        let Some(side) = self.side.as_mut() else { return };
        while let Some(reply) = side.replies.try_peek() {
            if matches!(reply, Reply::Event(_)) && cx.events_room() == 0 {
                return;
            }
            let Some(reply) = side.replies.try_pop() else { return };
            match reply {
                Reply::Event(event) => cx.emit(event),
                // The target's clear: its audio so far and the markers waiting for it go, and
                // the call's queue and the platform's buffer are cleared.
                Reply::Clear { upto } => {
                    skip_to(&mut side.reply_audio, &mut self.popped, upto);
                    self.n_pending = 0;
                    self.last_partial = 0;
                    cx.clear();
                }
                // After a barge-in: the audio the task had in hand then goes too (the clear
                // was done at the barge-in).
                Reply::Drop { upto } => {
                    skip_to(&mut side.reply_audio, &mut self.popped, upto);
                    self.last_partial = 0;
                }
                Reply::Notify { marker, at } => {
                    if at <= self.popped {
                        cx.notify(marker);
                    } else if self.n_pending < MAX_PENDING_NOTIFIES {
                        self.pending_notifies[self.n_pending] = (marker, at);
                        self.n_pending += 1;
                    } else {
                        cx.notify(marker);
                    }
                }
                Reply::Hangup => cx.hang_up(),
            }
        }
    }

    /// The caller interrupted: when reply audio is playing, it is dropped (what the ring holds),
    /// the call's queue and the platform's buffer are cleared, and a `barge_in` event says how
    /// much of the reply had played.
    pub(super) fn barge_in(&mut self, cause: BargeCause, cx: &mut Context<'_>) {
        let Some(side) = self.side.as_mut() else { return };
        let waiting = side.reply_audio.occupied_len();
        if self.reply_played == 0 && waiting == 0 {
            return;
        }
        self.popped += side.reply_audio.skip(waiting) as u64;
        let _ = side.notes.try_push(crate::services::fork::Note::BargeIn(cause));
        self.last_partial = 0;
        cx.clear();
        let played_ms = self.reply_played * 1000 / u64::from(cx.rate().hz());
        self.reply_played = 0;
        cx.emit(Event::BargeIn(BargeIn { interrupted: Interrupted::Fork { name: self.label.clone() }, cause, played_ms }));
    }

    /// Mixes one frame of the target's audio into the outbound frame.
    pub(super) fn play_replies(&mut self, cx: &mut Context<'_>) {
        let Some(side) = self.side.as_mut() else { return };
        let frame = self.reply_frame.len();
        let mut available = side.reply_audio.occupied_len();
        if self.config.live && available > super::config::LIVE_REPLY_FRAMES * frame {
            // Live audio arrived late: the newest frames are kept, the rest skipped.
            let stale = available - (super::config::LIVE_REPLY_FRAMES - 1) * frame;
            let skipped = side.reply_audio.skip(stale);
            self.popped += skipped as u64;
            available -= skipped;
        }
        // A partial frame waits one pass for the rest of it.
        let take = if available >= frame || (available > 0 && available == self.last_partial) { available.min(frame) } else { 0 };
        if available == 0 {
            self.reply_played = 0;
        }
        self.last_partial = if take == 0 { available } else { 0 };
        if take > 0 {
            self.reply_frame.fill(0);
            let n = side.reply_audio.pop_slice(&mut self.reply_frame[..take]);
            self.popped += n as u64;
            self.reply_played += n as u64;
            cx.mix_output(&self.reply_frame);
        }
        let mut i = 0;
        while i < self.n_pending {
            let (marker, at) = self.pending_notifies[i];
            if at <= self.popped {
                cx.notify(marker);
                self.n_pending -= 1;
                self.pending_notifies[i] = self.pending_notifies[self.n_pending];
            } else {
                i += 1;
            }
        }
    }
}
