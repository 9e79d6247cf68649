//! A driver thread: the calls it serves, their sockets in one poller, and the 1 ms slot wheel
//! that sends each call's frames on time.
//!
//! `polling` makes registering a socket unsafe because the socket must be deleted from the
//! poller before it is closed. `Driver::remove` is the only place a registered socket is
//! dropped, and it deletes it first; `Driver::add`, where it is registered, holds the
//! emulator's one `unsafe` block.
//!
//! What the driver does with a call's socket (reading and parsing, the call's tick, writing)
//! is in `io`.

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use polling::{Event, Events, PollMode, Poller};

use super::{NewCall, Progress, random_u64};
use crate::client::metrics::{Metrics, record};
use crate::client::network::{Delayed, Schedule};
use crate::client::platform::{CallPlan, CallReport, PlatformCall};
use crate::client::wire::{self, Opcode, Parser, Role};

mod io;

use io::next_mask;

/// Slot width of the drivers' wheel.
const SLOT: Duration = Duration::from_millis(1);
const SLOTS: usize = 20;
/// How long a closing call waits for the server's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Bytes a call may have waiting for a socket the server does not read before its new frames
/// are dropped (and counted) instead of queued: memory stays bounded whatever the server does.
const MAX_SEND_BACKLOG: usize = 64 * 1024;

/// The slot a new call sends in: the one with the fewest calls among the `count` slots from
/// `next` on (the soonest of those). A platform's calls start at independent instants, so
/// their frames are spread over the 20 ms; calls started on a regular ramp are not (500 calls
/// over 5 s start 10 ms apart and would all send in two slots), and the bursts that made would
/// be the client's, not the server's: they held up the client's own sends and reads, and that
/// went into every round trip it measured (BENCHMARKS.md, the minimal-echo comparison).
fn least_loaded(slots: &[Vec<usize>], next: usize, count: usize) -> usize {
    (0..count.clamp(1, slots.len())).map(|i| (next + i) % slots.len()).min_by_key(|&slot| slots[slot].len()).unwrap_or(next)
}

/// One call on a driver: its socket, its state machine and what waits to be written.
struct Conn {
    index: usize,
    stream: TcpStream,
    call: PlatformCall,
    parser: Parser,
    out: Vec<u8>,
    rng: u64,
    writable_interest: bool,
    closing_since: Option<Instant>,
    peer_gone: bool,
    slot: usize,
    /// The impaired network's schedule, when the plan impairs it.
    schedule: Option<Schedule>,
    /// Messages the impaired network still holds back.
    delayed: Delayed,
    /// One message, encoded, on its way into `delayed`.
    scratch: Vec<u8>,
}

/// One driver thread's calls and wheel.
pub(super) struct Driver {
    poller: Arc<Poller>,
    incoming: Receiver<NewCall>,
    plan: Arc<CallPlan>,
    epoch: Instant,
    expected: usize,
    handed: usize,
    max_message: usize,
    progress: Arc<Progress>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    slots: Vec<Vec<usize>>,
    next_slot: u64,
    metrics: Metrics,
    reports: Vec<(usize, CallReport)>,
    closing: Vec<usize>,
}

impl Driver {
    pub(super) fn new(
        poller: Arc<Poller>,
        incoming: Receiver<NewCall>,
        plan: Arc<CallPlan>,
        epoch: Instant,
        expected: usize,
        max_message: usize,
        progress: Arc<Progress>,
    ) -> Driver {
        Driver {
            poller,
            incoming,
            plan,
            epoch,
            expected,
            handed: 0,
            max_message,
            progress,
            conns: Vec::new(),
            free: Vec::new(),
            slots: vec![Vec::new(); SLOTS],
            next_slot: 0,
            metrics: Metrics::new(),
            reports: Vec::new(),
            closing: Vec::new(),
        }
    }

    fn active(&self) -> usize {
        self.conns.len() - self.free.len()
    }

    pub(super) fn run(mut self) -> (Vec<(usize, CallReport)>, Metrics) {
        let mut events = Events::new();
        loop {
            self.accept_new();
            if self.handed >= self.expected && self.active() == 0 {
                return (self.reports, self.metrics);
            }
            // Sleep to the next slot that has calls in it (every slot while an impaired network
            // holds messages back).
            let mut due = self.next_slot;
            let holding = self.conns.iter().flatten().any(|c| !c.delayed.is_empty());
            while !holding && self.slots[Self::cycle_pos(due)].is_empty() && due < self.next_slot + SLOTS as u64 {
                due += 1;
            }
            let slot_at = self.slot_start(due);
            events.clear();
            if self.active() == 0 {
                let _ = self.poller.wait(&mut events, Some(Duration::from_millis(50)));
            } else {
                let _ = self.poller.wait_deadline(&mut events, slot_at);
            }
            // Arrivals are stamped with the wake-up instant; sends go first so that reading a
            // burst of replies never delays a frame that is due.
            let now = Instant::now();
            self.run_due_slots();
            for event in events.iter() {
                self.handle_ready(event.key, event.writable, now);
            }
        }
    }

    fn accept_new(&mut self) {
        loop {
            match self.incoming.try_recv() {
                Ok(NewCall::Connected { index, stream, leftover, connect_time }) => {
                    self.handed += 1;
                    record(&mut self.metrics.connect, connect_time);
                    self.add(index, stream, leftover);
                }
                Ok(NewCall::Failed { index, error }) => {
                    self.handed += 1;
                    self.reports.push((index, CallReport { error: Some(error), ..CallReport::default() }));
                    self.progress.ended.fetch_add(1, Ordering::Relaxed);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }

    fn add(&mut self, index: usize, stream: TcpStream, leftover: Vec<u8>) {
        let key = self.free.pop().unwrap_or(self.conns.len());
        // SAFETY: the stream is owned by the `Conn` stored under `key`, and `remove` deletes it
        // from the poller before dropping it.
        #[allow(unsafe_code)]
        let registered = unsafe { self.poller.add_with_mode(&stream, Event::readable(key), PollMode::Edge) };
        if let Err(e) = registered {
            self.reports.push((index, CallReport { error: Some(format!("poller: {e}")), ..CallReport::default() }));
            self.progress.ended.fetch_add(1, Ordering::Relaxed);
            if key < self.conns.len() {
                self.free.push(key);
            }
            return;
        }
        let now = Instant::now();
        let mut parser = Parser::new(Role::Client, 16 * 1024, self.max_message);
        parser.push(&leftover);
        let call = PlatformCall::new(self.plan.clone(), self.epoch);
        // The wheel runs slots from `next_slot` on: one whose turn is at or before now (the
        // driver woke late) would tick the call at an instant before it was added.
        let now_slot = self.slot_of(now);
        let passed = usize::try_from((now_slot + 1).saturating_sub(self.next_slot)).unwrap_or(SLOTS);
        let slot = least_loaded(&self.slots, Self::cycle_pos(now_slot + 1), SLOTS.saturating_sub(passed));
        let mut conn = Conn {
            index,
            stream,
            call,
            parser,
            out: Vec::with_capacity(2048),
            rng: random_u64() | 1,
            writable_interest: false,
            closing_since: None,
            peer_gone: false,
            slot,
            schedule: self.plan.network.is_active().then(|| Schedule::new(self.plan.network, now, random_u64())),
            delayed: Delayed::default(),
            scratch: Vec::new(),
        };
        let metadata = conn.call.metadata();
        let mask = next_mask(&mut conn.rng);
        wire::encode(Opcode::Text, metadata.as_bytes(), Some(mask), &mut conn.out);
        if key == self.conns.len() {
            self.conns.push(Some(conn));
        } else {
            self.conns[key] = Some(conn);
        }
        self.slots[slot].push(key);
        self.flush(key);
        // Anything that came with the upgrade response.
        self.read_messages(key, now);
    }

    /// The slot (counted from the epoch) that the instant `t` falls in.
    fn slot_of(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos() / SLOT.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Where slot `n` falls in the 20-slot cycle: the index of its calls in `slots`.
    fn cycle_pos(n: u64) -> usize {
        (n % SLOTS as u64) as usize
    }

    /// The instant slot `n` begins.
    fn slot_start(&self, n: u64) -> Instant {
        self.epoch + SLOT * u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn run_due_slots(&mut self) {
        let now = Instant::now();
        let current = self.slot_of(now);
        if current > self.next_slot + 200 {
            // More than 200 ms behind: the machine is saturated. Skip rather than burst; the
            // send lateness histogram shows it.
            self.next_slot = current;
        }
        while self.next_slot <= current {
            let scheduled = self.slot_start(self.next_slot);
            let slot = Self::cycle_pos(self.next_slot);
            for i in 0..self.slots[slot].len() {
                let key = self.slots[slot][i];
                self.tick(key, scheduled);
            }
            if slot == 0 {
                let second = scheduled.saturating_duration_since(self.epoch).as_secs() as usize;
                let active = self.active() as u64;
                let window = self.metrics.window(second);
                window.calls = window.calls.max(active);
            }
            self.next_slot += 1;
        }
        self.release_delayed(now);
        self.reap(Instant::now());
    }

    /// Starts the close wait once the call is done.
    fn after_io(&mut self, key: usize, now: Instant) {
        if let Some(conn) = self.conns.get_mut(key).and_then(Option::as_mut)
            && conn.call.is_done()
            && conn.closing_since.is_none()
        {
            conn.closing_since = Some(now);
            self.closing.push(key);
        }
    }

    /// Removes calls that are done once the server has answered the close (or after a wait).
    fn reap(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.closing.len() {
            let key = self.closing[i];
            let finished = match self.conns.get(key).and_then(Option::as_ref) {
                Some(conn) => {
                    (conn.peer_gone && conn.out.is_empty())
                        || conn.closing_since.is_some_and(|t| now.saturating_duration_since(t) >= CLOSE_WAIT)
                }
                None => true,
            };
            if finished {
                self.closing.swap_remove(i);
                self.remove(key);
            } else {
                i += 1;
            }
        }
    }

    fn remove(&mut self, key: usize) {
        if let Some(conn) = self.conns[key].take() {
            let _ = self.poller.delete(&conn.stream);
            self.slots[conn.slot].retain(|k| *k != key);
            let report = conn.call.finish();
            record(&mut self.metrics.jitter, Duration::from_secs_f64(report.jitter_ms / 1000.0));
            self.reports.push((conn.index, report));
            self.free.push(key);
            self.progress.ended.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_started_in_step_with_the_frame_are_spread_over_the_slots() {
        // 500 calls over a 5 s ramp start 10 ms apart: by their start instant they would all
        // fall in slots 0 and 10.
        let mut slots = vec![Vec::new(); SLOTS];
        for call in 0..500 {
            let next = (call * 10) % SLOTS;
            let slot = least_loaded(&slots, next, SLOTS);
            slots[slot].push(call);
        }
        assert!(slots.iter().all(|s| s.len() == 25), "{:?}", slots.iter().map(Vec::len).collect::<Vec<_>>());
    }

    #[test]
    fn a_call_sends_in_the_next_slot_when_the_slots_are_even() {
        let mut slots = vec![Vec::new(); SLOTS];
        assert_eq!(least_loaded(&slots, 7, SLOTS), 7);
        slots[7].push(0);
        assert_eq!(least_loaded(&slots, 7, SLOTS), 8);
        assert_eq!(least_loaded(&slots, 19, SLOTS), 19);
        slots[19].push(1);
        assert_eq!(least_loaded(&slots, 19, SLOTS), 0);
    }

    #[test]
    fn a_slot_whose_turn_has_passed_is_not_chosen() {
        // Every slot has a call but 5 and 6, and the wheel has already passed them: a driver
        // that woke 2 ms late looks at the 18 slots from 7 on only.
        let mut slots = vec![vec![0]; SLOTS];
        slots[5].clear();
        slots[6].clear();
        assert_eq!(least_loaded(&slots, 7, SLOTS - 2), 7);
        assert_eq!(least_loaded(&slots, 7, SLOTS), 5);
        // More than a cycle late: the next slot, as before.
        assert_eq!(least_loaded(&slots, 7, 0), 7);
    }
}
