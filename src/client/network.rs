//! The internet between the platform and the application, played by the emulator: each
//! message the platform sends can be held back by random jitter and by periodic stalls, in
//! order, the way TCP over a bad route delivers (late, never lost, never reordered).
//!
//! Socket-free: [`Impairment`] decides when each message may leave, [`Delayed`] holds encoded
//! bytes until then. The engine moves what is due into the socket's buffer once a millisecond.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How the platform's sending side is impaired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Impairment {
    /// Each message is held back by a uniform 0..=`jitter` (order kept: never before the one
    /// sent before it).
    pub jitter: Duration,
    /// A stall every this long (from the call's start); `None` for no stalls.
    pub stall_every: Option<Duration>,
    /// How long each stall lasts: what is sent meanwhile leaves together at its end.
    pub stall: Duration,
}

impl Impairment {
    /// Whether anything is held back at all.
    pub fn is_active(&self) -> bool {
        !self.jitter.is_zero() || (self.stall_every.is_some() && !self.stall.is_zero())
    }
}

/// The send schedule of one call's messages under an [`Impairment`].
#[derive(Debug)]
pub struct Schedule {
    impairment: Impairment,
    start: Instant,
    last: Instant,
    rng: u64,
}

impl Schedule {
    /// A schedule for a call that starts at `start`; `seed` drives the jitter (not 0).
    pub fn new(impairment: Impairment, start: Instant, seed: u64) -> Schedule {
        Schedule { impairment, start, last: start, rng: seed | 1 }
    }

    /// When a message the platform sends at `sent` leaves: after its jitter, after the
    /// message before it, and at the end of a stall it falls into.
    pub fn release_at(&mut self, sent: Instant) -> Instant {
        let jitter = self.impairment.jitter.as_micros() as u64;
        let delay = if jitter == 0 { 0 } else { self.next_u64() % (jitter + 1) };
        let mut at = (sent + Duration::from_micros(delay)).max(self.last);
        if let Some(every) = self.impairment.stall_every.filter(|e| !e.is_zero()) {
            let since = at.saturating_duration_since(self.start);
            let k = since.as_nanos() / every.as_nanos();
            if k >= 1 {
                let stall_start = self.start + every.saturating_mul(k as u32);
                if at < stall_start + self.impairment.stall {
                    at = stall_start + self.impairment.stall;
                }
            }
        }
        self.last = at;
        at
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

/// Encoded bytes held back until their release instants, in order.
#[derive(Debug, Default)]
pub struct Delayed {
    bytes: Vec<u8>,
    /// (release instant, end offset in `bytes`) per message.
    marks: VecDeque<(Instant, usize)>,
}

impl Delayed {
    /// Holds the bytes of one message until `at`.
    pub fn push(&mut self, message: &[u8], at: Instant) {
        self.bytes.extend_from_slice(message);
        self.marks.push_back((at, self.bytes.len()));
    }

    /// Whether anything is held.
    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }

    /// Moves every message due by `now` to the end of `out`. Returns how many moved.
    pub fn release(&mut self, now: Instant, out: &mut Vec<u8>) -> usize {
        let mut end = 0;
        let mut moved = 0;
        while let Some(&(at, offset)) = self.marks.front() {
            if at > now {
                break;
            }
            end = offset;
            moved += 1;
            self.marks.pop_front();
        }
        if end > 0 {
            out.extend_from_slice(&self.bytes[..end]);
            self.bytes.drain(..end);
            for mark in &mut self.marks {
                mark.1 -= end;
            }
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn jitter_delays_within_its_bound_and_keeps_order() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Impairment { jitter: 60 * MS, ..Impairment::default() }, t0, 7);
        let mut last = t0;
        let mut delays = Vec::new();
        for n in 0..5000u32 {
            let sent = t0 + 20 * MS * n;
            let at = s.release_at(sent);
            assert!(at >= sent && at >= last, "frame {n}");
            assert!(at <= sent + 60 * MS);
            delays.push((at - sent).as_micros());
            last = at;
        }
        let late = delays.iter().filter(|d| **d > 40_000).count();
        assert!(late > 500, "the delays spread over the range: {late} over 40 ms");
    }

    #[test]
    fn a_stall_holds_what_is_sent_during_it_and_releases_it_together() {
        let t0 = Instant::now();
        let impairment = Impairment { stall_every: Some(Duration::from_secs(5)), stall: 300 * MS, ..Impairment::default() };
        let mut s = Schedule::new(impairment, t0, 1);
        let release: Vec<Instant> = (0..300u32).map(|n| s.release_at(t0 + 20 * MS * n)).collect();
        // Frames sent in 5.000..5.300 s leave at 5.300 s; the others at once.
        for (n, at) in release.iter().enumerate() {
            let sent = t0 + 20 * MS * n as u32;
            if (250..265).contains(&n) {
                assert_eq!(*at, t0 + 5300 * MS, "frame {n}");
            } else {
                assert_eq!(*at, sent, "frame {n}");
            }
        }
    }

    #[test]
    fn held_bytes_leave_in_order_when_due() {
        let t0 = Instant::now();
        let mut d = Delayed::default();
        d.push(b"ab", t0 + 5 * MS);
        d.push(b"cde", t0 + 5 * MS);
        d.push(b"f", t0 + 9 * MS);
        let mut out = Vec::new();
        assert_eq!(d.release(t0 + 4 * MS, &mut out), 0);
        assert_eq!(d.release(t0 + 5 * MS, &mut out), 2);
        assert_eq!(out, b"abcde");
        assert_eq!(d.release(t0 + 10 * MS, &mut out), 1);
        assert_eq!(out, b"abcdef");
        assert!(d.is_empty());
    }
}
