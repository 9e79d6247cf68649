//! One media thread: the calls it hosts, each visited when it has something to do.
//!
//! The thread owns its calls' sockets (each call's [`Endpoint`]), watched edge-triggered in the
//! thread's own poller. It waits in the poller until the absolute instant of the next 1 ms slot
//! that has something due (a slot with nothing due is not woken for: a thread whose calls are
//! served by their frames sleeps between them); a socket that becomes readable meanwhile is visited
//! at once, stamped with the instant the thread woke. A busy thread (128 calls or more) collects
//! the sockets that become readable after such a visit for a quarter of a slot instead (so it wakes
//! a few times a slot, not once per frame). Socket work never holds up a slot: it stops when the
//! slot's instant comes, and what is left is visited after the slot's due calls. At a visit the
//! endpoint reads the frames and hands them to the session, the session runs a pass for each frame
//! of the caller's timeline that is ready, and what the pacer releases goes back out through the
//! endpoint in one write (more only when a late visit releases more than a frame). A frame's pass
//! therefore runs within a slot of its arrival, at once when the thread is idle, on the thread that
//! read it.
//!
//! At each slot the thread visits the calls that are due: those marked ready by their call task
//! (a control command, a hang-up; one bit each in a [`ReadyMap`]) and those whose next deadline
//! (a wall tick, the end of a late frame's wait for what follows it, pause silence, an edge
//! limit) falls in the slot of a 32 ms deadline wheel, which also visits every call at least
//! once a turn. What other threads hand this one (a call, a command, a ready mark) rings its
//! [`Doorbell`], which ends a wait past the next slot: it is taken at the next slot, as if the
//! thread had woken for every slot.
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
//! An endpoint is dropped in [`Worker::drop_endpoint`] only, which deletes its socket from the
//! poller first (the count of watched sockets stays true).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use super::clock::{Clock, grid_instant};
use super::link::ReadyMap;
use super::poller::{Doorbell, Poller};
use super::sends::{Outgoing, Sends};
use crate::processor::Mixer;
use crate::protocol::FRAME_DURATION;

/// Width of one slot of the wheel.
pub const SLOT: Duration = Duration::from_millis(1);

/// Slots in one 20 ms cycle.
pub const SLOTS: usize = 20;

const _: () = assert!(SLOT.as_nanos() * SLOTS as u128 == FRAME_DURATION.as_nanos());

/// Slots of the deadline wheel: a call is visited at least this often (ms), whatever its
/// deadline says.
const WHEEL: usize = 32;

/// Calls a media thread can mark ready through its [`ReadyMap`]; calls beyond are visited every
/// slot.
const READY_CAPACITY: usize = 1 << 16;

/// Calls from which a thread collects the sockets that become readable after a visit for
/// [`COLLECT_WINDOW`] instead of waking for each (about 6 frames a slot, at 20 ms frames). Below
/// it, each frame is served as it arrives. At 250 calls a thread (`benches/peer_compare.sh 500
/// 20 3`, BENCHMARKS.md) collecting took the thread from 0.87 wake-ups per frame to 0.08 and its
/// CPU from 1.02 times the minimal echo's to 0.78, for 0.04 ms more round trip at p99.
const BATCH_FROM: usize = 128;

/// How long a busy thread collects the sockets that become readable after a visit before it
/// visits them. At 500 calls a thread (`benches/peer_compare.sh 1000 20 3`, BENCHMARKS.md) it
/// cost the same CPU as collecting to the end of the 1 ms slot and halved the round trip's
/// p99; 100 µs cost more CPU for little less delay.
const COLLECT_WINDOW: Duration = Duration::from_micros(250);

/// Sockets one wait takes from the poller (the rest stay ready in the poller for the next).
const IO_BATCH: usize = 128;

/// Poller keys at and above this are closing connections (below: live calls by index).
const CLOSING_KEY: usize = 1 << 40;

pub(crate) struct Worker<C: Clock> {
    pub clock: C,
    pub commands: Receiver<Command>,
    pub relay: RelayFeed,
    pub load: Arc<AtomicUsize>,
    pub stats: Arc<MediaStats>,
    pub max_catchup: Duration,
    /// Boxed: a slot of the list is a pointer, whatever the capacity it has grown to.
    calls: Vec<Option<Box<MediaCall>>>,
    free: Vec<usize>,
    /// Calls by the slot of their next deadline. A call's entry moves when its deadline does; an
    /// entry left behind (its call gone, or visited after its slot had passed) is dropped when
    /// its slot runs.
    wheel: Vec<Vec<Listed>>,
    /// The first slot with something due, as known while waiting for it (visits during the
    /// wait can bring it sooner).
    soonest: u64,
    /// Rung by the threads that hand this one calls, commands and ready marks.
    doorbell: Arc<Doorbell>,
    /// The doorbell's knocks when the thread last looked at what it was handed.
    seen_knocks: u64,
    /// Calls their call tasks have handed something since the last slot.
    ready: Arc<ReadyMap>,
    /// Indices taken from `ready` (kept to reuse its allocation).
    ready_now: Vec<usize>,
    /// Calls due in the slots being run (kept to reuse its allocation).
    visit_now: Vec<usize>,
    mixers: Vec<Mixer>,
    /// The cycle the mixers last ran in.
    mixed_cycle: u64,
    epoch: Instant,
    next: u64,
    /// The calls' sockets, edge-triggered.
    poller: Poller,
    /// Sockets in the poller (live and closing).
    watched: usize,
    /// Keys taken from the poller, visited in order: those from `io_next` on are still to be
    /// visited (a slot that comes first interrupts the socket work).
    io_keys: Vec<usize>,
    io_next: usize,
    closing: Vec<Option<Closing>>,
    closing_free: Vec<usize>,
    /// The thread's batched sends (`[media] io = "io_uring"`); `None`: each visit writes.
    sends: Option<Sends>,
    /// Calls whose endpoints left bytes to the thread's next batched send.
    to_send: Vec<usize>,
    /// The batch being sent (kept to reuse its allocation).
    outgoing: Vec<Outgoing>,
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
        let doorbell = Arc::new(Doorbell::new()?);
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
            soonest: 0,
            ready: Arc::new(ReadyMap::new(READY_CAPACITY, doorbell.clone())),
            ready_now: Vec::new(),
            visit_now: Vec::new(),
            mixers: Vec::new(),
            mixed_cycle: u64::MAX,
            epoch,
            next: 0,
            poller: Poller::new(IO_BATCH, doorbell.clone())?,
            doorbell,
            seen_knocks: 0,
            watched: 0,
            io_keys: Vec::with_capacity(IO_BATCH),
            io_next: 0,
            closing: Vec::new(),
            closing_free: Vec::new(),
            sends: None,
            to_send: Vec::new(),
            outgoing: Vec::new(),
        })
    }

    /// Sends through io_uring when `io` says so and the kernel allows it; otherwise each visit
    /// writes its socket (see [`MediaIo`](super::MediaIo)).
    pub fn with_io(mut self, io: super::MediaIo) -> Self {
        if io == super::MediaIo::IoUring {
            match Sends::new() {
                Ok(sends) => self.sends = Some(sends),
                Err(e) => tracing::warn!(error = %e, "io_uring is not available: a media thread writes its sockets in each visit"),
            }
        }
        self
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

    /// The thread that runs this worker: what rings its doorbell ends a wait that would go past
    /// its next slot.
    pub fn doorbell(&self) -> Arc<Doorbell> {
        self.doorbell.clone()
    }

    /// Waits for the next slot with something due, visiting the sockets that become readable
    /// meanwhile, then visits every call due by then. Slots with nothing due are not woken for
    /// (with sockets to watch; without, every slot is).
    fn run_next_slot(&mut self) {
        let k = self.next;
        let target = if self.watched > 0 {
            self.soonest = self.busy_slot(k);
            self.wait_io();
            self.soonest
        } else {
            self.clock.sleep_until(grid_instant(self.epoch, SLOT, k));
            k
        };
        self.stats.slots.fetch_add(1, Ordering::Relaxed);
        let scheduled = grid_instant(self.epoch, SLOT, target);
        let now = self.clock.now();
        let late = now.saturating_duration_since(scheduled);
        let current = self.slot_at(now).max(target);
        // What was handed to the thread up to here is taken below (ready marks) or after the
        // slot (commands); a ring after this keeps the next wait from going past a slot.
        self.seen_knocks = self.doorbell.knocks();
        if late > self.max_catchup {
            let skipped_cycles = (current - target) / SLOTS as u64;
            self.stats.skipped_ticks.fetch_add(skipped_cycles * self.active() as u64, Ordering::Relaxed);
        } else {
            self.stats.tick_lateness.record(late);
        }
        // What the slot holds first (its wall ticks are what the clock is for), then the sockets
        // that became ready since the thread last looked, until the next slot.
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
        if current - target >= WHEEL as u64 {
            // Later than the wheel reaches: everyone (their ready marks with them).
            self.ready.drain(|_| {});
            for index in 0..self.calls.len() {
                woken |= self.visit(index, now, current);
            }
        } else {
            // The calls whose deadline has come (all of them taken from the wheel first, so that
            // a visit's new entry is never swept up with a slot drained after it), then those
            // their call tasks marked ready.
            let mut visit = std::mem::take(&mut self.visit_now);
            self.take_due(k, current, &mut visit);
            for &index in &visit {
                woken |= self.visit(index, now, current);
            }
            visit.clear();
            self.visit_now = visit;
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
        self.send_queued();
        if self.watched > 0 {
            self.drain_io(grid_instant(self.epoch, SLOT, current + 1));
        }
        let now = self.clock.now();
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

    /// Visits one call: its socket, its due passes, its end. Returns whether its call task was
    /// queued for a wake-up.
    fn visit(&mut self, index: usize, now: Instant, current: u64) -> bool {
        let visited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.visit_call(index, now, current)));
        visited.unwrap_or_else(|_| {
            // A processor (or callpipe) has a bug: this call ends with 1011, the others go on.
            tracing::error!(index, "a call's visit panicked: closing it with 1011");
            self.fail(index);
            true
        })
    }

    fn visit_call(&mut self, index: usize, now: Instant, current: u64) -> bool {
        let Some(call) = self.calls.get_mut(index).and_then(Option::as_mut) else { return false };
        if !call.watched {
            call.endpoint.readable(false);
        }
        let woke = step(&mut call.session, &mut call.end, call.endpoint.as_mut(), now);
        let link = &call.end.link;
        let closed = link.peer_closed.load(Ordering::Acquire);
        let hangup = link.hangup.load(Ordering::Acquire);
        if closed || hangup {
            call.session.finish(now, hangup && !closed);
            transmit(&mut call.session, &mut call.end, call.endpoint.as_mut(), now);
            hand_over_last_events(&mut call.session, &mut call.end);
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
        if call.endpoint.batched().is_some() {
            // The thread's next batched send takes it (an endpoint leaves its sends only while
            // the thread's ring works); whether to watch for writability is known after that.
            if !call.send_queued {
                call.send_queued = true;
                self.to_send.push(index);
            }
        } else {
            call.watch_writes(&self.poller, index);
        }
        let deadline = match (call.session.next_deadline(), call.endpoint.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.schedule(index, current, deadline);
        woke
    }
}

mod calls;
mod io;
mod members;
mod step;
mod wheel;

use calls::{Closing, MediaCall};
pub(crate) use calls::{Command, RelayFeed};
pub use calls::{MediaStats, NewCall};
use wheel::Listed;

pub use step::step;
use step::{hand_over_last_events, transmit, wake};

#[cfg(test)]
mod tests;
