//! A media thread's calls coming and going: taking a call (and watching its socket), waiting in
//! the poller, placing a call in the deadline wheel, closing connections, the conferences'
//! mixers, the end of the pool.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::sync::Arc;

use super::step::{hand_over_last_events, transmit};
use super::{BATCH_FROM, CLOSING_KEY, Closing, Listed, MediaCall, NewCall, READY_CAPACITY, SLOT, SLOTS, WHEEL, Worker};
use crate::media::clock::{Clock, grid_instant};
use crate::media::endpoint::Endpoint;
use crate::media::poller::HANGUP;
use crate::media::sends::{Outgoing, SEND_BATCH};
use crate::processor::{Admitted, Mixer};
use crate::protocol::FRAME_DURATION;

impl<C: Clock> Worker<C> {
    /// Waits for the slot `self.soonest`, visiting sockets meanwhile: first the ones left over
    /// from the last slot, then each call whose socket becomes ready, at once. A busy thread
    /// ([`BATCH_FROM`] calls or more) collects the sockets that become ready after such a visit at
    /// the end of its slot, so that it wakes at most twice a slot instead of once per frame.
    /// A visit can bring the slot sooner (a deadline it sets), and so can a ring of the
    /// doorbell (the next slot then takes what was handed to the thread). A wait past the next
    /// slot parks the thread so that a ring can end it. No socket's visit starts at or after
    /// the slot's instant: the slot comes first.
    pub(super) fn wait_io(&mut self) {
        let mut parked = false;
        loop {
            if self.doorbell.knocks() != self.seen_knocks {
                // Something was handed to the thread (or it marked a call itself): the next slot
                // takes it.
                self.soonest = self.soonest.min(self.slot_at(self.clock.now()) + 1);
            }
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
                let until = grid_instant(self.epoch, SLOT, self.soonest);
                if !self.visit_pending(until) {
                    break;
                }
                // What becomes ready during the rest of the slot waits for its end.
                let end = grid_instant(self.epoch, SLOT, self.slot_at(self.clock.now()) + 1);
                self.clock.sleep_until(end.min(until));
                if self.clock.now() < until {
                    self.take_ready(Some(Duration::ZERO));
                }
            }
        }
        if parked {
            self.doorbell.unpark();
        }
    }

    /// The first slot from `k` with something due: a call's deadline on the wheel, or the next
    /// cycle's first slot when mixers or closing connections need it; `k` itself when sockets
    /// are left over, something was handed to the thread since it last looked, or calls beyond
    /// the ready map's reach are visited every slot. At most a wheel's turn away, the latest
    /// any call can be listed for.
    pub(super) fn busy_slot(&self, k: u64) -> u64 {
        if self.io_next < self.io_keys.len() || self.calls.len() > READY_CAPACITY || self.doorbell.knocks() != self.seen_knocks {
            return k;
        }
        let mut last = k + WHEEL as u64 - 1;
        if !self.mixers.is_empty() || self.closing_count() > 0 {
            last = last.min(k.div_ceil(SLOTS as u64) * SLOTS as u64);
        }
        (k..last).find(|&s| self.wheel[(s % WHEEL as u64) as usize].iter().any(|listed| listed.is_for(s))).unwrap_or(last)
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
                let listed = &mut wheel[(call.due_slot % WHEEL as u64) as usize];
                if let Some(at) = listed.iter().position(|listed| listed.index() == index) {
                    listed.swap_remove(at);
                }
            }
            call.due_slot = slot;
            wheel[(slot % WHEEL as u64) as usize].push(Listed::new(index, slot));
        }
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

impl<C: Clock> Drop for Worker<C> {
    /// Only calls still here when the thread unwinds (a panic outside any call's visit): their
    /// tasks hear 1011 instead of waiting forever.
    fn drop(&mut self) {
        for call in self.calls.iter().flatten() {
            call.end.link.fail();
        }
    }
}
