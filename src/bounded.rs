//! Buffers that start small and grow to their bound.
//!
//! A call's buffers for rare things (events, `notify` markers) are sized for a call that has
//! few, or none at all (events: a call that has none allocates nothing), and grow to their bound
//! the first time they fill. They then never grow again, so a media thread allocates at most
//! twice per buffer and call (its first entry, its first burst), and a call's steady state stays
//! free of allocations however its bursts vary in size (the doubling a `Vec` does on its own
//! would allocate again at each larger burst).
//!
//! A call's audio buffers, whose need follows its network (a jittery one bunches a few frames,
//! a stall brings many), double instead, up to their bound: a few frames of bunching cost a few
//! frames, and a buffer grows at most ceil(log2(bound / start)) times in a call.

use std::collections::VecDeque;

/// See the [module docs](self).
pub(crate) trait GrowOnce {
    /// Entries held.
    fn entries(&self) -> usize;

    /// Entries there is room for without growing.
    fn allocated(&self) -> usize;

    /// Grows the room to at least `entries() + more`, exactly.
    fn allocate_more(&mut self, more: usize);

    /// Makes room for one more entry when there are fewer than `bound`: the first time the
    /// buffer is full, it grows to hold `bound`.
    fn room_for_one(&mut self, bound: usize) {
        self.room_for(1, bound);
    }

    /// [`room_for_one`](Self::room_for_one) for a buffer that starts with no room at all: the
    /// first entry makes room for `first` (at most `bound`), and the first time those are full
    /// the buffer grows to hold `bound`.
    fn room_for_one_from(&mut self, first: usize, bound: usize) {
        if self.allocated() == 0 && bound > 0 {
            self.allocate_more(first.clamp(1, bound));
        } else {
            self.room_for_one(bound);
        }
    }

    /// Makes room for `n` more entries, as far as `bound`: the first time they do not fit, the
    /// buffer grows to hold `bound` (or `n` more, if that is more: a caller that may exceed the
    /// bound has checked it).
    fn room_for(&mut self, n: usize, bound: usize) {
        let held = self.entries();
        if held + n > self.allocated() && held < bound {
            self.allocate_more(bound.max(held + n) - held);
        }
    }

    /// Makes room for `n` more entries by doubling, as far as `bound` (or `n` more, if that is
    /// more: a caller that may exceed the bound has checked it).
    fn room_doubling(&mut self, n: usize, bound: usize) {
        let held = self.entries();
        if held + n > self.allocated() {
            let to = (2 * self.allocated()).max(held + n).min(bound.max(held + n));
            self.allocate_more(to - held);
        }
    }
}

/// The primitives of [`GrowOnce`] for a standard collection with `len`, `capacity` and
/// `reserve_exact`.
macro_rules! grow_once_for {
    ($($collection:ident),*) => {$(
        impl<T> GrowOnce for $collection<T> {
            fn entries(&self) -> usize {
                self.len()
            }

            fn allocated(&self) -> usize {
                self.capacity()
            }

            fn allocate_more(&mut self, more: usize) {
                self.reserve_exact(more);
            }
        }
    )*};
}

grow_once_for!(Vec, VecDeque);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_growth_reaches_the_bound_and_there_is_no_other() {
        let mut v: Vec<u32> = Vec::with_capacity(2);
        for i in 0..2 {
            v.room_for_one(64);
            v.push(i);
        }
        assert_eq!(v.capacity(), 2, "no growth while there is room");
        v.room_for_one(64);
        let grown = v.capacity();
        assert!(grown >= 64);
        for i in 2..64 {
            v.room_for_one(64);
            v.push(i);
        }
        assert_eq!(v.capacity(), grown, "grown once");
        let mut q: VecDeque<u32> = VecDeque::with_capacity(1);
        q.push_back(0);
        q.room_for_one(8);
        assert!(q.capacity() >= 8);
        // At the bound, nothing more is made: the caller drops and counts.
        let mut full: Vec<u8> = Vec::with_capacity(4);
        full.extend([0; 4]);
        full.room_for_one(4);
        assert_eq!(full.capacity(), 4);
        // A buffer that starts empty: room for 4 at the first entry, then the bound.
        let mut events: Vec<u32> = Vec::new();
        let mut capacities = vec![events.capacity()];
        for i in 0..64 {
            events.room_for_one_from(4, 64);
            events.push(i);
            if capacities.last() != Some(&events.capacity()) {
                capacities.push(events.capacity());
            }
        }
        assert_eq!(capacities.len(), 3, "{capacities:?}");
        assert!(capacities[1] >= 4 && capacities[1] < 8 && capacities[2] >= 64, "{capacities:?}");
        // Room for several at once: a frame of samples.
        let mut samples: VecDeque<i16> = VecDeque::with_capacity(320);
        samples.extend([0; 300]);
        samples.room_for(160, 1600);
        assert!(samples.capacity() >= 1600, "grown to the bound, not doubled");
        let grown = samples.capacity();
        samples.extend([0; 1300]);
        samples.room_for(0, 1600);
        assert_eq!(samples.capacity(), grown);
        // Doubling: 320, 640, 1280, then the bound.
        let mut audio: VecDeque<i16> = VecDeque::with_capacity(320);
        let mut capacities = vec![audio.capacity()];
        for _ in 0..10 {
            // Callers stay within the bound (the rest is dropped and counted).
            if audio.len() + 320 <= 1600 {
                audio.room_doubling(320, 1600);
                audio.extend([0; 320]);
            }
            if capacities.last() != Some(&audio.capacity()) {
                capacities.push(audio.capacity());
            }
        }
        assert_eq!(capacities.len(), 4, "{capacities:?}");
        assert!(capacities[1] >= 640 && capacities[2] >= 1280 && capacities[3] >= 1600, "{capacities:?}");
        assert!(capacities[3] < 1600 + 320, "{capacities:?}");
    }
}
