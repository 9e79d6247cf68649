//! A media thread's calls coming and going: taking a call (and watching its socket), retiring
//! one and keeping its connection while it closes, a call whose visit panicked, the
//! conferences' mixers, the end of the pool.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::step::{hand_over_last_events, transmit};
use super::{CLOSING_KEY, Closing, MediaCall, NewCall, SLOT, SLOTS, Worker};
use crate::media::clock::{Clock, grid_instant};
use crate::media::endpoint::Endpoint;
use crate::media::sends::SEND_BATCH;
use crate::processor::{Admitted, Mixer};

impl<C: Clock> Worker<C> {
    /// Takes a finished call off the thread; its connection stays, lingering, until the peer
    /// has the close frame.
    pub(super) fn retire(&mut self, index: usize, now: Instant) {
        let Some(call) = self.calls[index].take() else { return };
        self.free.push(index);
        self.load.fetch_sub(1, Ordering::Relaxed);
        self.stats.calls.fetch_sub(1, Ordering::Relaxed);
        let mut closing = Closing { endpoint: call.endpoint, writable: call.writable };
        if closing.endpoint.linger(now) {
            self.drop_endpoint(closing.endpoint);
            return;
        }
        let slot = self.closing_free.pop().unwrap_or(self.closing.len());
        if let Some(socket) = closing.endpoint.socket() {
            let key = CLOSING_KEY + slot;
            closing.writable = closing.endpoint.wants_write();
            let _ = self.poller.modify(socket, key, closing.writable);
        }
        if slot == self.closing.len() {
            self.closing.push(Some(closing));
        } else {
            self.closing[slot] = Some(closing);
        }
        self.stats.closing.fetch_add(1, Ordering::Relaxed);
    }

    /// A closing connection's turn: reads and discards, writes what is left; drops it once it
    /// is done.
    pub(super) fn linger(&mut self, slot: usize, now: Instant) {
        let Some(closing) = self.closing.get_mut(slot).and_then(Option::as_mut) else { return };
        if !closing.endpoint.linger(now) {
            let want = closing.endpoint.wants_write();
            if want != closing.writable
                && let Some(socket) = closing.endpoint.socket()
            {
                let key = CLOSING_KEY + slot;
                if self.poller.modify(socket, key, want).is_ok() {
                    closing.writable = want;
                }
            }
            return;
        }
        if let Some(closing) = self.closing[slot].take() {
            self.closing_free.push(slot);
            self.stats.closing.fetch_sub(1, Ordering::Relaxed);
            self.drop_endpoint(closing.endpoint);
        }
    }

    /// The one place an endpoint is dropped: its socket leaves the poller first.
    pub(super) fn drop_endpoint(&mut self, endpoint: Box<dyn Endpoint>) {
        if let Some(socket) = endpoint.socket()
            && self.poller.delete(socket).is_ok()
        {
            self.watched -= 1;
        }
        drop(endpoint);
    }

    /// The pool is stopping: every call finishes now, its close frame written if the socket
    /// takes it, and every connection closes.
    pub(super) fn finish_all(&mut self) {
        let now = self.clock.now();
        for index in 0..self.calls.len() {
            if let Some(mut call) = self.calls[index].take() {
                call.session.finish(now, false);
                transmit(&mut call.session, &mut call.end, call.endpoint.as_mut(), now);
                hand_over_last_events(&mut call.session, &mut call.end);
                call.endpoint.close(&call.end.link, now);
                call.endpoint.linger(now);
                call.end.link.stats.publish(&call.session.stats());
                call.end.link.media_done.store(true, Ordering::Release);
                call.end.link.waker.wake();
                self.free.push(index);
                self.load.fetch_sub(1, Ordering::Relaxed);
                self.stats.calls.fetch_sub(1, Ordering::Relaxed);
                self.drop_endpoint(call.endpoint);
            }
        }
        for slot in 0..self.closing.len() {
            if let Some(closing) = self.closing[slot].take() {
                self.stats.closing.fetch_sub(1, Ordering::Relaxed);
                self.drop_endpoint(closing.endpoint);
            }
        }
        self.stats.mixers.fetch_sub(self.mixers.len(), Ordering::Relaxed);
        self.mixers.clear();
    }

    pub(super) fn add(&mut self, call: NewCall) {
        let mut session = call.session;
        if call.conference.is_some() {
            // A member's wall ticks fall right after its mixer's, once a cycle.
            let cycle = self.slot_at(self.clock.now()) / SLOTS as u64 + 1;
            session.pin_wall_grid(grid_instant(self.epoch, SLOT, cycle * SLOTS as u64));
        }
        if let Some(Admitted { conference, member, mixed }) = call.conference {
            match self.mixers.iter_mut().find(|m| Arc::ptr_eq(m.conference(), &conference)) {
                Some(mixer) => {
                    if let Some(mixed) = mixed {
                        // The conference's first member arrived after a later one.
                        mixer.set_recording(mixed);
                    }
                    mixer.add(member);
                }
                None => {
                    let mut mixer = Mixer::new(conference, mixed);
                    mixer.add(member);
                    self.mixers.push(mixer);
                    self.stats.mixers.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let index = self.free.pop().unwrap_or(self.calls.len());
        let mut watched = false;
        if let Some(socket) = call.endpoint.socket() {
            match self.poller.add(socket, index, false) {
                Ok(()) => {
                    self.watched += 1;
                    watched = true;
                }
                Err(e) => {
                    // The call still runs on its deadlines; the endpoint finds the socket's data
                    // at each visit (at least once a wheel's turn).
                    tracing::warn!(error = %e, "a media thread could not watch a call's socket");
                }
            }
        }
        let mut endpoint = call.endpoint;
        if self.sends.is_some() {
            endpoint.batch_sends(true);
        }
        let entry = Box::new(MediaCall { session, end: call.end, endpoint, writable: false, watched, send_queued: false, due_slot: 0 });
        entry.end.link.set_ready_map(self.ready.clone(), index);
        if index == self.calls.len() {
            self.calls.push(Some(entry));
        } else {
            self.calls[index] = Some(entry);
        }
        // Visited at the next slot (what came with the upgrade is read then), then as it needs.
        self.ready.set(index);
        self.load.fetch_add(1, Ordering::Relaxed);
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        // Room for every call in each of the thread's scheduling lists, made now (a call joining
        // allocates anyway) so that no slot's visits ever grow one.
        let calls = self.active();
        for list in &mut self.wheel {
            list.reserve(calls.saturating_sub(list.len()));
        }
        for list in [&mut self.visit_now, &mut self.ready_now, &mut self.to_send] {
            list.reserve(calls.saturating_sub(list.len()));
        }
        if self.sends.is_some() {
            self.outgoing.reserve(calls.min(SEND_BATCH as usize).saturating_sub(self.outgoing.len()));
        }
    }

    /// One cycle of every conference on this thread; ended conferences go.
    pub(super) fn run_mixers(&mut self) {
        let mut i = 0;
        while i < self.mixers.len() {
            self.mixers[i].mix();
            if self.mixers[i].is_done() {
                // Drops the mixed recording's producer: the writer finalizes the file.
                self.mixers.swap_remove(i);
                self.stats.mixers.fetch_sub(1, Ordering::Relaxed);
            } else {
                i += 1;
            }
        }
    }

    /// Ends a call whose visit panicked: its task hears 1011, its socket closes.
    pub(super) fn fail(&mut self, index: usize) {
        let Some(call) = self.calls.get_mut(index).and_then(Option::take) else { return };
        self.free.push(index);
        self.load.fetch_sub(1, Ordering::Relaxed);
        self.stats.calls.fetch_sub(1, Ordering::Relaxed);
        call.end.link.fail();
        self.drop_endpoint(call.endpoint);
    }
}

impl<C: Clock> Drop for Worker<C> {
    /// Only calls still here when the thread unwinds (a panic outside any call's visit): their
    /// tasks hear 1011 instead of waiting forever.
    fn drop(&mut self) {
        for call in self.calls.iter().flatten() {
            call.end.link.fail();
        }
    }
}
