//! A media thread's deadline wheel: which slot each call is listed for, which slot comes next
//! with something due, and the calls a slot's run takes.

use std::time::Instant;

use super::{READY_CAPACITY, SLOT, SLOTS, WHEEL, Worker};
use crate::media::clock::Clock;
use crate::protocol::FRAME_DURATION;

/// A call's entry on the wheel: its index and the slot it was listed for, in 32 bits each (the
/// wheel keeps room for every call in each of its lists). Entries are taken or dropped within a
/// few turns of the wheel, so the slot's low 32 bits tell its slot from any other.
#[derive(Clone, Copy, Debug)]
pub(super) struct Listed {
    index: u32,
    slot: u32,
}

impl Listed {
    fn new(index: usize, slot: u64) -> Listed {
        debug_assert!(u32::try_from(index).is_ok(), "a thread holds fewer than 2^32 calls");
        Listed { index: index as u32, slot: slot as u32 }
    }

    pub(super) fn index(self) -> usize {
        self.index as usize
    }

    fn is_for(self, slot: u64) -> bool {
        self.slot == slot as u32
    }
}

/// The wheel's list for `slot`.
pub(super) fn wheel_pos(slot: u64) -> usize {
    (slot % WHEEL as u64) as usize
}

impl<C: Clock> Worker<C> {
    /// Puts a call in the wheel's slot for `deadline` (at the latest a wheel's turn away).
    pub(super) fn schedule(&mut self, index: usize, current: u64, deadline: Option<Instant>) {
        let latest = current + WHEEL as u64 - 1;
        let slot = match deadline {
            // The first slot at or after the deadline.
            Some(d) => {
                let nanos = d.saturating_duration_since(self.epoch).as_nanos();
                u64::try_from(nanos.div_ceil(SLOT.as_nanos())).unwrap_or(u64::MAX)
            }
            None => latest,
        }
        .clamp(current + 1, latest);
        self.soonest = self.soonest.min(slot);
        let Worker { calls, wheel, .. } = self;
        if let Some(call) = calls[index].as_mut() {
            if call.due_slot > current {
                if call.due_slot == slot {
                    return;
                }
                // Its entry moves with the deadline, so that a call is listed once (no list
                // outgrows the room made for every call) and the thread does not wake for a
                // deadline that has moved on: a caller frame that arrives in time moves the
                // call's wall tick a frame later at each visit (a search of one list).
                let listed = &mut wheel[wheel_pos(call.due_slot)];
                if let Some(at) = listed.iter().position(|listed| listed.index() == index) {
                    listed.swap_remove(at);
                }
            }
            call.due_slot = slot;
            wheel[wheel_pos(slot)].push(Listed::new(index, slot));
        }
    }

    /// Moves the calls due in the slots `from..=to` off the wheel into `visit` (all of them
    /// first, so that a visit's new entry is never swept up with a slot drained after it).
    /// Entries left behind by a call that has gone, or that moved, are dropped.
    pub(super) fn take_due(&mut self, from: u64, to: u64, visit: &mut Vec<usize>) {
        for s in from..=to {
            let pos = wheel_pos(s);
            let mut due = std::mem::take(&mut self.wheel[pos]);
            let calls = &self.calls;
            due.retain(|listed| match calls.get(listed.index()).and_then(Option::as_ref) {
                Some(c) if c.due_slot == s => {
                    visit.push(listed.index());
                    false
                }
                // Due at a later turn of the wheel (scheduled while the thread was late).
                Some(c) => c.due_slot > s && wheel_pos(c.due_slot) == pos,
                None => false,
            });
            self.wheel[pos] = due;
        }
    }

    /// The first slot from `k` with something due: a call's deadline on the wheel, or the next
    /// cycle's first slot when mixers or closing connections need it; `k` itself when sockets
    /// are left over or calls beyond the ready map's reach are visited every slot. At most a
    /// wheel's turn away, the latest any call can be listed for. (What was handed to the thread
    /// is looked at by the wait itself, [`Worker::wait_io`], before and after each visit.)
    pub(super) fn busy_slot(&self, k: u64) -> u64 {
        if self.io_next < self.io_keys.len() || self.calls.len() > READY_CAPACITY {
            return k;
        }
        let mut last = k + WHEEL as u64 - 1;
        if !self.mixers.is_empty() || self.closing_count() > 0 {
            last = last.min(k.div_ceil(SLOTS as u64) * SLOTS as u64);
        }
        (k..last).find(|&s| self.wheel[wheel_pos(s)].iter().any(|listed| listed.is_for(s))).unwrap_or(last)
    }

    pub(super) fn active(&self) -> usize {
        self.calls.len() - self.free.len()
    }

    pub(super) fn closing_count(&self) -> usize {
        self.closing.len() - self.closing_free.len()
    }

    pub(super) fn slot_at(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos() / SLOT.as_nanos()).unwrap_or(u64::MAX)
    }

    pub(super) fn max_catchup_cycles(&self) -> u64 {
        (self.max_catchup.as_nanos() / FRAME_DURATION.as_nanos()) as u64
    }
}
