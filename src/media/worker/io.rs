//! A media thread's sockets: waiting in the poller for the next slot, visiting the sockets that
//! become ready meanwhile, and the batched sends (io_uring).

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{BATCH_FROM, CLOSING_KEY, COLLECT_WINDOW, SLOT, Worker};
use crate::media::clock::{Clock, grid_instant};
use crate::media::poller::HANGUP;
use crate::media::sends::{Outgoing, SEND_BATCH};

impl<C: Clock> Worker<C> {
    /// Waits for the slot `self.soonest`, visiting sockets meanwhile: first the ones left over
    /// from the last slot, then each call whose socket becomes ready, at once. A busy thread
    /// ([`BATCH_FROM`] calls or more) collects the sockets that become ready after such a visit
    /// for [`COLLECT_WINDOW`], so that it wakes a few times a slot instead of once per frame.
    /// A visit can bring the slot sooner (a deadline it sets), and so can a ring of the
    /// doorbell (the next slot then takes what was handed to the thread). A wait past the next
    /// slot parks the thread so that a ring can end it. No socket's visit starts at or after
    /// the slot's instant: the slot comes first.
    pub(super) fn wait_io(&mut self) {
        let mut parked = false;
        let mut first = true;
        loop {
            if self.doorbell.knocks() != self.seen_knocks {
                // Something was handed to the thread (or it marked a call itself): the next slot
                // takes it, or, when it was there before the wait began, the slot the thread is
                // about to run (the same slot unless the thread is running late).
                let next = self.slot_at(self.clock.now()) + 1;
                self.soonest = self.soonest.min(if first { self.next.min(next) } else { next });
            }
            first = false;
            let until = grid_instant(self.epoch, SLOT, self.soonest);
            if !self.visit_pending(until) {
                break;
            }
            let now = self.clock.now();
            if now >= until {
                break;
            }
            let next = self.slot_at(now) + 1;
            if self.soonest > next && !parked {
                parked = self.doorbell.park(self.seen_knocks);
                if !parked {
                    self.soonest = next;
                    continue;
                }
            }
            let ready = self.take_ready(Some(until - now));
            if ready > 0 && self.active() >= BATCH_FROM {
                if !self.visit_pending(grid_instant(self.epoch, SLOT, self.soonest)) {
                    break;
                }
                // What becomes ready meanwhile is collected for a while, never past the slot
                // (which those visits may have brought sooner).
                let until = grid_instant(self.epoch, SLOT, self.soonest);
                self.clock.sleep_until((self.clock.now() + COLLECT_WINDOW).min(until));
                if self.clock.now() < until {
                    self.take_ready(Some(Duration::ZERO));
                }
            }
        }
        if parked {
            self.doorbell.unpark();
        }
    }

    /// Visits the calls whose sockets are ready, until none is left or the instant `until`
    /// comes (what is left waits in `io_keys` for the next chance).
    pub(super) fn drain_io(&mut self, until: Instant) {
        while self.visit_pending(until) && self.take_ready(Some(Duration::ZERO)) > 0 {}
    }

    /// Takes the sockets that are ready (at most `IO_BATCH`) from the poller, waiting up to
    /// `timeout` for the first, into the pending list (which must be empty). Returns how many.
    fn take_ready(&mut self, timeout: Option<Duration>) -> usize {
        debug_assert!(self.io_next >= self.io_keys.len());
        self.io_keys.clear();
        self.io_next = 0;
        match self.poller.wait(timeout, &mut self.io_keys) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "a media thread's poller failed");
                0
            }
        }
    }

    /// Sends what the visits since the last call left to the thread (io_uring), a batch of up
    /// to [`SEND_BATCH`] sockets per system call, and hands each endpoint its result. A call
    /// whose socket did not take everything is then watched for writability; one whose
    /// connection failed is visited at the next slot, which finishes it.
    pub(super) fn send_queued(&mut self) {
        if self.to_send.is_empty() {
            return;
        }
        let now = self.clock.now();
        let mut start = 0;
        while start < self.to_send.len() && self.sends.is_some() {
            let end = (start + SEND_BATCH as usize).min(self.to_send.len());
            self.outgoing.clear();
            for &index in &self.to_send[start..end] {
                if let Some(call) = self.calls.get(index).and_then(Option::as_ref)
                    && let Some((socket, bytes)) = call.endpoint.batched()
                {
                    self.outgoing.push(Outgoing::new(socket.as_raw_fd(), bytes, index as u64));
                }
            }
            let Worker { sends, calls, outgoing, .. } = self;
            if let Some(sends) = sends.as_mut() {
                let done = |key: u64, result| {
                    if let Some(call) = calls.get_mut(key as usize).and_then(Option::as_mut) {
                        call.endpoint.sent(result, &call.end.link, now);
                    }
                };
                // SAFETY: each entry points into its endpoint's buffer, which nothing touches
                // until its send has completed (`done` changes only the endpoint whose send
                // completed), and every send completes before `send_all` returns.
                #[allow(unsafe_code)]
                let sent = unsafe { sends.send_all(outgoing, done) };
                match sent {
                    Ok(calls) => {
                        self.stats.batched_sends.fetch_add(self.outgoing.len() as u64, Ordering::Relaxed);
                        self.stats.batch_submits.fetch_add(calls as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        // The ring is given up (see `Sends::send_all`); what it did not send
                        // stays with each endpoint, which writes it from its next visit on.
                        tracing::warn!(error = %e, "a media thread's batched send failed: its sockets are written in their visits");
                        self.sends = None;
                        for call in self.calls.iter_mut().flatten() {
                            call.endpoint.batch_sends(false);
                        }
                    }
                }
            }
            start = end;
        }
        for i in 0..self.to_send.len() {
            let index = self.to_send[i];
            let Some(call) = self.calls.get_mut(index).and_then(Option::as_mut) else { continue };
            call.send_queued = false;
            if call.end.link.peer_closed.load(Ordering::Acquire) {
                self.ready.set(index);
            }
            call.watch_writes(&self.poller, index);
        }
        self.to_send.clear();
    }

    /// Visits the pending ready sockets in order, stopping before a visit would start at or
    /// after `until`. Returns whether none is left.
    fn visit_pending(&mut self, until: Instant) -> bool {
        let mut woken = false;
        while let Some(&reported) = self.io_keys.get(self.io_next) {
            let (key, closed) = (reported & !HANGUP, reported & HANGUP != 0);
            let now = self.clock.now();
            if now >= until {
                break;
            }
            self.io_next += 1;
            let current = self.slot_at(now).max(self.next.saturating_sub(1));
            if key >= CLOSING_KEY {
                self.linger(key - CLOSING_KEY, now);
            } else {
                if let Some(call) = self.calls.get_mut(key).and_then(Option::as_mut) {
                    call.endpoint.readable(closed);
                }
                woken |= self.visit(key, now, current);
            }
        }
        self.send_queued();
        if woken {
            self.relay.waker.wake();
        }
        self.io_next >= self.io_keys.len()
    }
}
