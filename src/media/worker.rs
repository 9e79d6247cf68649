//! One media thread: the calls it hosts, each visited when it has something to do.
//!
//! The thread owns its calls' sockets (each call's [`Endpoint`]), watched edge-triggered in the
//! thread's own poller. It waits in the poller until the absolute instant of the next 1 ms slot;
//! the first socket to become readable before it is visited at once, stamped with the instant
//! the thread woke, and those that become readable later in the slot are collected at the slot
//! (so a busy thread wakes twice a slot, not once per frame). At a visit the endpoint reads the
//! frames and hands them to the session, the session runs a pass for each frame of the caller's
//! timeline that is ready, and what the pacer releases goes back out through the endpoint in
//! one write. A frame's pass therefore runs within a slot of its arrival, at once when the
//! thread is idle, on the thread that read it.
//!
//! At each slot the thread also visits the calls that are due: those marked ready by their call
//! task (a control command, a hang-up; one bit each in a [`ReadyMap`]) and those whose next
//! deadline (a wall tick, the end of a held frame's burst window, pause silence, an edge limit)
//! falls in the slot of a 32 ms deadline wheel, which also visits every call at least once a
//! turn.
//!
//! If the thread wakes late, the visit makes up everything at once: each session runs every
//! wall tick it missed (up to its `max_catchup`) and every frame that arrived meanwhile.
//!
//! The thread also runs the [`Mixer`] of every conference whose members it hosts (the pool puts
//! all of a conference's members on one thread): once per 20 ms cycle, at the first visit of
//! the cycle, before any call. Conference members follow the wall clock, and each passes once
//! between two mixes, so each hears the others with exactly one frame of delay. With no calls
//! left it keeps ticking its mixers each cycle until they end (finalizing their recordings).
//!
//! When a call ends, its endpoint sends the close frame and stays on the thread, lingering (its
//! input read and discarded) until the peer has answered or a timeout, so that the peer reads
//! the close code (RFC 6455 section 7.1.1). Only then is the socket deleted from the poller and
//! closed.
//!
//! `polling` makes registering a socket `unsafe` because the socket must leave the poller
//! before it is closed: an endpoint is dropped in [`Worker::drop_endpoint`] only, which deletes
//! its socket first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use polling::{Event as Readiness, Events, PollMode, Poller};
use ringbuf::HeapProd;
use ringbuf::traits::{Consumer, Producer};

use super::clock::{Clock, grid_instant};
use super::endpoint::Endpoint;
use super::link::{CallLink, MediaEnd, ReadyMap};
use crate::processor::{Admitted, Mixer};
use crate::protocol::{FRAME_DURATION, MAX_FRAME_BYTES};
use crate::session::Session;
use crate::stats::Histogram;

/// Width of one slot of the wheel.
pub const SLOT: Duration = Duration::from_millis(1);

/// Slots in one 20 ms cycle.
pub const SLOTS: usize = 20;

const _: () = assert!(SLOT.as_nanos() * SLOTS as u128 == FRAME_DURATION.as_nanos());

/// A call handed to a media thread.
pub struct NewCall {
    /// The call's media state, prepared.
    pub session: Session,
    /// The media thread's ends of the call's rings.
    pub end: MediaEnd,
    /// The call's connection: from now on only this thread reads and writes it.
    pub endpoint: Box<dyn Endpoint>,
    /// The conference the call joins, admitted: its member goes to the conference's mixer on
    /// this thread (the pool places the call on the conference's thread).
    pub conference: Option<Admitted>,
}

impl NewCall {
    /// A call that joins no conference.
    pub fn new(session: Session, end: MediaEnd, endpoint: Box<dyn Endpoint>) -> NewCall {
        NewCall { session, end, endpoint, conference: None }
    }
}

/// Messages to a media thread.
pub(crate) enum Command {
    Add(Box<NewCall>),
    Shutdown,
}

/// Counters shared by all media threads.
#[derive(Debug, Default)]
pub struct MediaStats {
    /// How late each slot's processing started after its scheduled instant.
    pub tick_lateness: Histogram,
    /// Ticks given up because a thread fell more than `max_catchup` behind.
    pub skipped_ticks: AtomicU64,
    /// Calls currently on media threads.
    pub calls: AtomicUsize,
    /// Conference mixers currently on media threads.
    pub mixers: AtomicUsize,
    /// Connections closing (their close frame sent, the peer's answer awaited).
    pub closing: AtomicUsize,
}

/// The media thread's side of its relay.
pub(crate) struct RelayFeed {
    pub ring: HeapProd<Arc<CallLink>>,
    pub waker: Arc<AtomicWaker>,
}

struct MediaCall {
    session: Session,
    end: MediaEnd,
    endpoint: Box<dyn Endpoint>,
    /// Whether the socket is watched for writability too.
    writable: bool,
    /// The slot it is due in next (entries of other slots are stale).
    due_slot: u64,
}

/// A finished call's connection, lingering until the peer has its close frame.
struct Closing {
    endpoint: Box<dyn Endpoint>,
    writable: bool,
}

/// Slots of the deadline wheel: a call is visited at least this often (ms), whatever its
/// deadline says.
const WHEEL: usize = 32;

/// Calls a media thread can mark ready through its [`ReadyMap`]; calls beyond are visited every
/// slot.
const READY_CAPACITY: usize = 1 << 16;

/// Poller keys at and above this are closing connections (below: live calls by index).
const CLOSING_KEY: usize = 1 << 40;

pub(crate) struct Worker<C: Clock> {
    pub clock: C,
    pub commands: Receiver<Command>,
    pub relay: RelayFeed,
    pub load: Arc<AtomicUsize>,
    pub stats: Arc<MediaStats>,
    pub max_catchup: Duration,
    calls: Vec<Option<MediaCall>>,
    free: Vec<usize>,
    /// Calls by the slot of their next deadline.
    wheel: Vec<Vec<usize>>,
    /// Calls their call tasks have handed something since the last slot.
    ready: Arc<ReadyMap>,
    /// Indices taken from `ready` (kept to reuse its allocation).
    ready_now: Vec<usize>,
    mixers: Vec<Mixer>,
    /// The cycle the mixers last ran in.
    mixed_cycle: u64,
    epoch: Instant,
    next: u64,
    /// The calls' sockets, edge-triggered.
    poller: Poller,
    /// Sockets in the poller (live and closing).
    watched: usize,
    io_events: Events,
    /// Keys taken from `io_events` (kept to reuse its allocation).
    io_keys: Vec<usize>,
    closing: Vec<Option<Closing>>,
    closing_free: Vec<usize>,
}

impl<C: Clock> Worker<C> {
    pub fn new(
        clock: C,
        commands: Receiver<Command>,
        relay: RelayFeed,
        load: Arc<AtomicUsize>,
        stats: Arc<MediaStats>,
        max_catchup: Duration,
    ) -> std::io::Result<Self> {
        let epoch = clock.now();
        Ok(Worker {
            clock,
            commands,
            relay,
            load,
            stats,
            max_catchup,
            calls: Vec::new(),
            free: Vec::new(),
            wheel: vec![Vec::new(); WHEEL],
            ready: Arc::new(ReadyMap::new(READY_CAPACITY)),
            ready_now: Vec::new(),
            mixers: Vec::new(),
            mixed_cycle: u64::MAX,
            epoch,
            next: 0,
            poller: Poller::new()?,
            watched: 0,
            io_events: Events::new(),
            io_keys: Vec::new(),
            closing: Vec::new(),
            closing_free: Vec::new(),
        })
    }

    pub fn run(mut self) {
        loop {
            if self.active() == 0 && self.closing_count() == 0 {
                let command = if self.mixers.is_empty() {
                    self.commands.recv().map_err(|_| RecvTimeoutError::Disconnected)
                } else {
                    // No calls, but mixers that must see their members leave and end.
                    self.commands.recv_timeout(FRAME_DURATION)
                };
                match command {
                    Ok(Command::Add(call)) => {
                        self.next = self.slot_at(self.clock.now()) + 1;
                        self.add(*call);
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        self.run_mixers();
                        continue;
                    }
                    Ok(Command::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                        self.finish_all();
                        return;
                    }
                }
            }
            loop {
                match self.commands.try_recv() {
                    Ok(Command::Add(call)) => self.add(*call),
                    Ok(Command::Shutdown) | Err(TryRecvError::Disconnected) => {
                        self.finish_all();
                        return;
                    }
                    Err(TryRecvError::Empty) => break,
                }
            }
            self.run_next_slot();
        }
    }

    fn active(&self) -> usize {
        self.calls.len() - self.free.len()
    }

    fn closing_count(&self) -> usize {
        self.closing.len() - self.closing_free.len()
    }

    fn slot_at(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos() / SLOT.as_nanos()).unwrap_or(u64::MAX)
    }

    fn add(&mut self, call: NewCall) {
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
        if let Some(socket) = call.endpoint.socket() {
            // SAFETY: the socket belongs to the endpoint, which leaves this thread only through
            // `drop_endpoint`, and that deletes the socket from the poller first.
            #[allow(unsafe_code)]
            let added = unsafe { self.poller.add_with_mode(socket, Readiness::readable(index), PollMode::Edge) };
            match added {
                Ok(()) => self.watched += 1,
                Err(e) => {
                    // The call still runs on its deadlines; the endpoint finds the socket's data
                    // at each visit (at least once a wheel's turn).
                    tracing::warn!(error = %e, "a media thread could not watch a call's socket");
                }
            }
        }
        let entry = MediaCall { session, end: call.end, endpoint: call.endpoint, writable: false, due_slot: 0 };
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
    }

    /// Waits for the next slot, visiting the sockets that become readable meanwhile, then
    /// visits every call due in the slot.
    fn run_next_slot(&mut self) {
        let k = self.next;
        let scheduled = grid_instant(self.epoch, SLOT, k);
        if self.watched > 0 {
            self.wait_io(scheduled);
        } else {
            self.clock.sleep_until(scheduled);
        }
        let now = self.clock.now();
        let late = now.saturating_duration_since(scheduled);
        let current = self.slot_at(now).max(k);
        if late > self.max_catchup {
            let skipped_cycles = (current - k) / SLOTS as u64;
            self.stats.skipped_ticks.fetch_add(skipped_cycles * self.active() as u64, Ordering::Relaxed);
        } else {
            self.stats.tick_lateness.record(late);
        }
        // Once per cycle, before the members' passes; cycles missed by a late wake-up are made
        // up (within the catch-up bound), each before the passes of its own tick.
        let cycle = current / SLOTS as u64;
        if self.mixed_cycle == u64::MAX || cycle > self.mixed_cycle + self.max_catchup_cycles() {
            self.mixed_cycle = cycle.saturating_sub(1);
        }
        let new_cycle = self.mixed_cycle < cycle;
        while self.mixed_cycle < cycle {
            self.mixed_cycle += 1;
            self.run_mixers();
        }
        let mut woken = false;
        if current - k >= WHEEL as u64 {
            // Later than the wheel reaches: everyone.
            for index in 0..self.calls.len() {
                woken |= self.visit(index, now, current);
            }
        } else {
            // The calls whose deadline has come, then those their call tasks marked ready.
            for s in k..=current {
                let mut due = std::mem::take(&mut self.wheel[(s % WHEEL as u64) as usize]);
                for &index in &due {
                    if self.calls[index].as_ref().is_some_and(|c| c.due_slot == s) {
                        woken |= self.visit(index, now, current);
                    }
                }
                due.clear();
                // Give the allocation back unless the visits filled the slot again.
                let slot = &mut self.wheel[(s % WHEEL as u64) as usize];
                if slot.is_empty() {
                    *slot = due;
                }
            }
            let mut ready = std::mem::take(&mut self.ready_now);
            self.ready.drain(|index| ready.push(index));
            for &index in &ready {
                woken |= self.visit(index, now, current);
            }
            ready.clear();
            self.ready_now = ready;
            for index in READY_CAPACITY..self.calls.len() {
                woken |= self.visit(index, now, current);
            }
        }
        if new_cycle {
            // Closing connections whose linger is up go, once a cycle.
            for i in 0..self.closing.len() {
                self.linger(i, now);
            }
        }
        if woken {
            self.relay.waker.wake();
        }
        self.next = current + 1;
    }

    /// Waits for the slot at `until`. The first socket to become ready before it wakes the
    /// thread, and its call (with any other ready by then) is visited at once; sockets that
    /// become ready after that wait for the slot, where they are collected without waiting.
    /// A lightly loaded thread thus serves each frame as it arrives, and a busy one wakes at
    /// most twice a slot instead of once per frame.
    fn wait_io(&mut self, until: Instant) {
        let now = self.clock.now();
        if now < until && self.poll_io(Some(until - now)) {
            self.clock.sleep_until(until);
        }
        self.poll_io(Some(Duration::ZERO));
    }

    /// Visits the calls whose sockets are ready, waiting up to `timeout` for the first.
    /// Returns whether there were any.
    fn poll_io(&mut self, timeout: Option<Duration>) -> bool {
        self.io_events.clear();
        if let Err(e) = self.poller.wait(&mut self.io_events, timeout)
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            tracing::warn!(error = %e, "a media thread's poller failed");
            return false;
        }
        let mut keys = std::mem::take(&mut self.io_keys);
        keys.extend(self.io_events.iter().map(|e| e.key));
        let any = !keys.is_empty();
        let now = self.clock.now();
        let current = self.slot_at(now).max(self.next.saturating_sub(1));
        let mut woken = false;
        for &key in &keys {
            if key >= CLOSING_KEY {
                self.linger(key - CLOSING_KEY, now);
            } else {
                woken |= self.visit(key, now, current);
            }
        }
        keys.clear();
        self.io_keys = keys;
        if woken {
            self.relay.waker.wake();
        }
        any
    }

    /// Puts a call in the wheel's slot for `deadline` (at the latest a wheel's turn away).
    fn schedule(&mut self, index: usize, current: u64, deadline: Option<Instant>) {
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
        if let Some(call) = self.calls[index].as_mut() {
            if call.due_slot > current && call.due_slot <= slot {
                // Already due as soon as this or sooner: a visit before a deadline is harmless,
                // and an entry per visit would fill the wheel with stale ones.
                return;
            }
            call.due_slot = slot;
            self.wheel[(slot % WHEEL as u64) as usize].push(index);
        }
    }

    fn max_catchup_cycles(&self) -> u64 {
        (self.max_catchup.as_nanos() / FRAME_DURATION.as_nanos()) as u64
    }

    /// Visits one call: its socket, its due passes, its end. Returns whether its call task was
    /// queued for a wake-up.
    fn visit(&mut self, index: usize, now: Instant, current: u64) -> bool {
        let Some(call) = self.calls.get_mut(index).and_then(Option::as_mut) else { return false };
        let woke = step(&mut call.session, &mut call.end, call.endpoint.as_mut(), now);
        let link = &call.end.link;
        let closed = link.peer_closed.load(Ordering::Acquire);
        let hangup = link.hangup.load(Ordering::Acquire);
        if closed || hangup {
            call.session.finish(now, hangup && !closed);
            transmit(&mut call.session, &mut call.end, call.endpoint.as_mut(), now);
            call.endpoint.close(&call.end.link, now);
            call.end.link.stats.publish(&call.session.stats());
            call.end.link.media_done.store(true, Ordering::Release);
            wake(&mut self.relay, &call.end.link);
            self.retire(index, now);
            return true;
        }
        if woke {
            wake(&mut self.relay, &call.end.link);
        }
        let want = call.endpoint.wants_write();
        if want != call.writable
            && let Some(socket) = call.endpoint.socket()
        {
            let interest = if want { Readiness::all(index) } else { Readiness::readable(index) };
            if self.poller.modify_with_mode(socket, interest, PollMode::Edge).is_ok() {
                call.writable = want;
            }
        }
        let deadline = match (call.session.next_deadline(), call.endpoint.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.schedule(index, current, deadline);
        woke
    }

    /// Takes a finished call off the thread; its connection stays, lingering, until the peer
    /// has the close frame.
    fn retire(&mut self, index: usize, now: Instant) {
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
            let interest = if closing.endpoint.wants_write() { Readiness::all(key) } else { Readiness::readable(key) };
            closing.writable = closing.endpoint.wants_write();
            let _ = self.poller.modify_with_mode(socket, interest, PollMode::Edge);
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
    fn linger(&mut self, slot: usize, now: Instant) {
        let Some(closing) = self.closing.get_mut(slot).and_then(Option::as_mut) else { return };
        if !closing.endpoint.linger(now) {
            let want = closing.endpoint.wants_write();
            if want != closing.writable
                && let Some(socket) = closing.endpoint.socket()
            {
                let key = CLOSING_KEY + slot;
                let interest = if want { Readiness::all(key) } else { Readiness::readable(key) };
                if self.poller.modify_with_mode(socket, interest, PollMode::Edge).is_ok() {
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
    fn drop_endpoint(&mut self, endpoint: Box<dyn Endpoint>) {
        if let Some(socket) = endpoint.socket()
            && self.poller.delete(socket).is_ok()
        {
            self.watched -= 1;
        }
        drop(endpoint);
    }

    /// One cycle of every conference on this thread; ended conferences go.
    fn run_mixers(&mut self) {
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

    /// The pool is stopping: every call finishes now, its close frame written if the socket
    /// takes it, and every connection closes.
    fn finish_all(&mut self) {
        let now = self.clock.now();
        for index in 0..self.calls.len() {
            if let Some(mut call) = self.calls[index].take() {
                call.session.finish(now, false);
                transmit(&mut call.session, &mut call.end, call.endpoint.as_mut(), now);
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
}

/// One call's work for one visit, exactly as a media thread runs it: what the endpoint reads
/// into the session, control commands, the passes that are due, what they released out through
/// the endpoint, one write. Returns whether processor events went to the call task (which is
/// then woken). Allocation-free (see `tests/no_alloc.rs`).
pub fn step(session: &mut Session, end: &mut MediaEnd, endpoint: &mut dyn Endpoint, now: Instant) -> bool {
    endpoint.receive(session, end, now);
    // Commands sent just before the end still apply (a stream started then ends with reason
    // `hangup`, and says so).
    while let Some(command) = end.control_in.try_pop() {
        session.handle_control(command);
    }
    let passes = session.passes();
    session.handle_tick(now);
    let events = transmit(session, end, endpoint, now);
    endpoint.flush(&end.link, now);
    if session.passes() != passes || events {
        end.link.stats.publish(&session.stats());
    }
    if session.hangup_requested() && !end.link.hangup.load(Ordering::Acquire) {
        // A processor asked (e.g. a fork target's `hangup` command): the next visit finishes
        // the call, as after the control API's hang-up.
        end.link.hang_up(super::link::Hangup::Processor);
    }
    events
}

/// Hands everything the session released to the endpoint, and the processors' events to the
/// call task's ring. Returns whether there were events.
fn transmit(session: &mut Session, end: &mut MediaEnd, endpoint: &mut dyn Endpoint, now: Instant) -> bool {
    let mut frame = [0u8; MAX_FRAME_BYTES];
    while let Some(transmit) = session.poll_transmit(&mut frame) {
        endpoint.send(transmit, &frame, &end.link, now);
    }
    let mut events = false;
    while let Some(event) = session.poll_event() {
        events = true;
        if end.events_out.try_push(event).is_err() {
            end.link.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    events
}

/// Queues a call's task for the relay to wake; wakes it directly if the relay's ring is full.
fn wake(relay: &mut RelayFeed, link: &Arc<CallLink>) {
    if let Err(link) = relay.ring.try_push(link.clone()) {
        link.waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::mpsc::channel;

    use ringbuf::HeapRb;
    use ringbuf::traits::Split;

    use super::*;
    use crate::media::Script;
    use crate::media::link::{ConnEnd, call_rings};
    use crate::processor::{CallInfo, Echo, Pipeline};
    use crate::protocol::{Metadata, SampleRate};
    use crate::session::SessionConfig;

    /// A clock that only moves when told to, or when slept on.
    #[derive(Clone)]
    struct FakeClock(Arc<Mutex<Instant>>);

    impl FakeClock {
        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }

        fn sleep_until(&self, deadline: Instant) {
            let mut now = self.0.lock().unwrap();
            *now = (*now).max(deadline);
        }
    }

    fn worker_with_call() -> (Worker<FakeClock>, FakeClock, ConnEnd, Script) {
        let clock = FakeClock(Arc::new(Mutex::new(Instant::now())));
        let (_tx, rx) = channel();
        let (ring, _relay) = HeapRb::<Arc<CallLink>>::new(16).split();
        let relay = RelayFeed { ring, waker: Arc::new(AtomicWaker::new()) };
        let mut worker = Worker::new(
            clock.clone(),
            rx,
            relay,
            Arc::new(AtomicUsize::new(0)),
            Arc::new(MediaStats::default()),
            Duration::from_millis(200),
        )
        .unwrap();
        let rate = SampleRate::Hz8000;
        let call = CallInfo { id: "w".into(), path: "/echo".into(), metadata: Metadata::new(rate) };
        let session = Session::new(rate, &call, Pipeline::new(vec![Box::new(Echo::new(0).unwrap())]), SessionConfig::default()).unwrap();
        let (conn, media) = call_rings();
        let script = Script::with_capacity(4096);
        worker.next = worker.slot_at(clock.now()) + 1;
        worker.add(NewCall::new(session, media, script.endpoint()));
        (worker, clock, conn, script)
    }

    fn passes(conn: &ConnEnd) -> u64 {
        conn.link.stats.session().passes
    }

    fn sent(script: &Script) -> Vec<i16> {
        let mut frames = Vec::new();
        let mut frame = [0u8; 320];
        while script.take_sent(&mut frame) == 320 {
            frames.push(i16::from_le_bytes([frame[0], frame[1]]));
        }
        frames
    }

    fn frame(value: i16) -> Vec<u8> {
        std::iter::repeat_n(value.to_le_bytes(), 160).flatten().collect()
    }

    #[test]
    fn a_frame_goes_through_within_a_slot_of_its_arrival_and_late_ones_are_not_replaced() {
        let (mut worker, clock, conn, script) = worker_with_call();
        let start = clock.now();
        for i in 0..100i16 {
            // Frames arrive 0.4 ms into a slot; each is echoed at the next visit.
            clock.advance(Duration::from_micros(400));
            if i != 50 {
                script.deliver(&frame(i + 1));
                conn.link.notify_media();
            }
            worker.run_next_slot();
            let arrived = clock.now();
            if i == 50 {
                // Frame 51 is 15 ms late: no silence is echoed in its place, and it is sent
                // when it comes.
                for _ in 0..15 {
                    worker.run_next_slot();
                    assert_eq!(sent(&script), [] as [i16; 0]);
                }
                script.deliver(&frame(51));
                conn.link.notify_media();
                worker.run_next_slot();
                assert_eq!(sent(&script), [51]);
            } else {
                assert_eq!(sent(&script), [i + 1], "frame {i}");
                assert!(clock.now() - arrived < SLOT);
            }
            while clock.now() < start + FRAME_DURATION * (i as u32 + 1) {
                worker.run_next_slot();
            }
        }
        let stats = conn.link.stats.session();
        assert_eq!((stats.input_missing, stats.dropped_in), (0, 0));
        assert_eq!(worker.stats.tick_lateness.max_us(), 0);
    }

    #[test]
    fn missed_wall_ticks_are_made_up_and_a_stall_beyond_the_limit_skips_them() {
        let (mut worker, clock, conn, _script) = worker_with_call();
        let start = clock.now();
        while clock.now() < start + FRAME_DURATION * 10 {
            worker.run_next_slot();
        }
        assert_eq!(passes(&conn), 10, "no audio: one wall tick per 20 ms");
        // The thread wakes 100 ms late: the five ticks it missed run at once.
        clock.advance(Duration::from_millis(100));
        let stalled_at = clock.now();
        worker.run_next_slot();
        assert_eq!(passes(&conn), 15, "missed ticks are made up");
        assert_eq!(clock.now(), stalled_at, "made up without sleeping");
        assert_eq!(conn.link.stats.session().skipped_ticks, 0);
        // A whole second: the wall clock's ticks are skipped on purpose, and counted; the
        // caller's timeline, silent since the call started, gets its silence whole.
        clock.advance(Duration::from_secs(1));
        worker.run_next_slot();
        let stats = conn.link.stats.session();
        assert!((49..=50).contains(&stats.skipped_ticks), "{stats:?}");
        assert!(stats.passes - stats.input_missing <= 17, "no burst of 50 wall ticks: {stats:?}");
        assert!((64..=66).contains(&stats.input_missing), "1.3 s of pause silence: {stats:?}");
    }

    #[test]
    fn fifty_members_on_the_slot_wheel_hear_the_others_one_frame_later() {
        use crate::processor::conference::tests::{expected_outputs, noise, rate_of};
        use crate::processor::{Conference, ConferenceConfig, ConferenceSettings, Conferences};
        use crate::protocol::{decode_l16, encode_l16};

        let clock = FakeClock(Arc::new(Mutex::new(Instant::now())));
        let (_tx, rx) = channel();
        let (ring, _relay) = HeapRb::<Arc<CallLink>>::new(64).split();
        let relay = RelayFeed { ring, waker: Arc::new(AtomicWaker::new()) };
        let stats = Arc::new(MediaStats::default());
        let mut worker =
            Worker::new(clock.clone(), rx, relay, Arc::new(AtomicUsize::new(0)), stats.clone(), Duration::from_millis(200)).unwrap();
        // Start on a cycle boundary, so that every member's first pass falls in the first cycle.
        worker.next = (worker.slot_at(clock.now()) / SLOTS as u64 + 1) * SLOTS as u64;
        let hub = Conferences::new();
        let settings = ConferenceSettings::default();
        let rates: Vec<u32> = (0..50).map(|i| [8000, 16000, 24000][i % 3]).collect();
        let mut conns = Vec::new();
        for (i, hz) in rates.iter().enumerate() {
            let rate = rate_of(*hz);
            let call = CallInfo { id: format!("w{i}"), path: "/conf".into(), metadata: Metadata::new(rate) };
            let conference = Conference::new(ConferenceConfig { settings: settings.clone(), ..ConferenceConfig::new("wheel") }).unwrap();
            let mut session = Session::new(rate, &call, Pipeline::new(vec![Box::new(conference)]), SessionConfig::default()).unwrap();
            let join = session.take_conference_joins().pop().expect("prepared by the session");
            let (admitted, _membership) = hub.admit(join, None).unwrap();
            let (conn, media) = call_rings();
            let script = Script::with_capacity(8192);
            worker.add(NewCall { session, end: media, endpoint: script.endpoint(), conference: Some(admitted) });
            conns.push((conn, script));
        }
        assert_eq!(stats.mixers.load(Ordering::Relaxed), 1, "one mixer for the conference");

        let passes = 40;
        let inputs: Vec<Vec<Vec<i16>>> = rates
            .iter()
            .enumerate()
            .map(|(i, hz)| {
                noise(100 + i as u64, (*hz / 50) as usize * passes, 2000).chunks((*hz / 50) as usize).map(<[i16]>::to_vec).collect()
            })
            .collect();
        let mut heard: Vec<Vec<i16>> = vec![Vec::new(); rates.len()];
        let mut bytes = [0u8; 2 * MAX_FRAME_BYTES];
        let mut pcm = [0i16; MAX_FRAME_BYTES];
        for p in 0..passes {
            for ((conn, script), frames) in conns.iter_mut().zip(&inputs) {
                let n = encode_l16(&frames[p], &mut bytes);
                script.deliver(&bytes[..n]);
                conn.link.notify_media();
            }
            for _ in 0..SLOTS {
                worker.run_next_slot();
            }
            for ((_, script), out) in conns.iter_mut().zip(&mut heard) {
                loop {
                    let n = script.take_sent(&mut bytes);
                    if n == 0 {
                        break;
                    }
                    let samples = decode_l16(&bytes[..n], &mut pcm);
                    out.extend_from_slice(&pcm[..samples]);
                }
            }
        }
        let expected = expected_outputs(&rates, settings.rate, &inputs, &[true; 50]);
        for (i, (out, frames)) in heard.iter().zip(&expected).enumerate() {
            let expected: Vec<i16> = frames.concat();
            let frame = (rates[i] / 50) as usize;
            assert!(out.len() >= (passes - 3) * frame, "member {i}: {} samples released", out.len());
            assert!(out[..] == expected[..out.len()], "member {i} at {} Hz hears exactly the others, one frame later", rates[i]);
            assert!(out.iter().any(|s| *s != 0));
            assert_eq!(conns[i].0.link.stats.session().input_missing, 0);
        }
    }

    #[test]
    fn a_closed_call_is_finished_and_removed() {
        let (mut worker, _clock, conn, _script) = worker_with_call();
        for _ in 0..20 {
            worker.run_next_slot();
        }
        worker.run_next_slot();
        conn.link.peer_closed.store(true, Ordering::Release);
        conn.link.notify_media();
        worker.run_next_slot();
        assert!(conn.link.is_media_done());
        assert_eq!(worker.active(), 0);
        assert_eq!(worker.load.load(Ordering::Relaxed), 0);
    }
}
