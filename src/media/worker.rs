//! One media thread: the calls it hosts, each visited when it has something to do.
//!
//! The thread sleeps to the absolute instant of the next 1 ms slot, then visits the calls that
//! are due: those whose connection marked them ready (a frame, an event, a command or the end
//! arrived; one bit each in a [`ReadyMap`]) and those whose session's next deadline (a wall
//! tick, the end of a held frame's burst window, pause silence) falls in this slot of a 32 ms
//! deadline wheel, which also visits every call at least once a turn. At a visit the caller's
//! bytes go into the session, which runs a pass for each frame of the caller's timeline that is
//! ready (so a frame goes through within a slot of its arrival) and a wall-only pass for each
//! 20 ms tick whose frame is late; what the pacer releases goes into the call's rings, and the
//! relay is woken once for all the calls that have something to send.
//!
//! If the thread wakes late, the visit makes up everything at once: each session runs every
//! wall tick it missed (up to its `max_catchup`) and every frame that arrived meanwhile.
//!
//! The thread also runs the [`Mixer`] of every conference whose members it hosts (the pool puts
//! all of a conference's members on one thread): once per 20 ms cycle, at the first visit of
//! the cycle, before any call. Conference members follow the wall clock, and each passes once
//! between two mixes, so each hears the others with exactly one frame of delay. With no calls
//! left it keeps ticking its mixers each cycle until they end (finalizing their recordings).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use ringbuf::HeapProd;
use ringbuf::traits::{Consumer, Observer, Producer};

use super::clock::{Clock, grid_instant};
use super::link::{CallLink, MediaEnd, OutItem, ReadyMap};
use crate::processor::{Admitted, Mixer};
use crate::protocol::{FRAME_DURATION, MAX_FRAME_BYTES};
use crate::session::{Session, Transmit};
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
    /// The conference the call joins, admitted: its member goes to the conference's mixer on
    /// this thread (the pool places the call on the conference's thread).
    pub conference: Option<Admitted>,
}

impl NewCall {
    /// A call that joins no conference.
    pub fn new(session: Session, end: MediaEnd) -> NewCall {
        NewCall { session, end, conference: None }
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
}

/// The media thread's side of its relay.
pub(crate) struct RelayFeed {
    pub ring: HeapProd<Arc<CallLink>>,
    pub waker: Arc<AtomicWaker>,
}

struct MediaCall {
    session: Session,
    end: MediaEnd,
    /// The slot it is due in next (entries of other slots are stale).
    due_slot: u64,
}

/// Slots of the deadline wheel: a call is visited at least this often (ms), whatever its
/// deadline says.
const WHEEL: usize = 32;

/// Calls a media thread can mark ready through its [`ReadyMap`]; calls beyond are visited every
/// slot.
const READY_CAPACITY: usize = 1 << 16;

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
    /// Calls their connections have handed something since the last slot.
    ready: Arc<ReadyMap>,
    /// Indices taken from `ready` (kept to reuse its allocation).
    ready_now: Vec<usize>,
    mixers: Vec<Mixer>,
    /// The cycle the mixers last ran in.
    mixed_cycle: u64,
    epoch: Instant,
    next: u64,
}

impl<C: Clock> Worker<C> {
    pub fn new(
        clock: C,
        commands: Receiver<Command>,
        relay: RelayFeed,
        load: Arc<AtomicUsize>,
        stats: Arc<MediaStats>,
        max_catchup: Duration,
    ) -> Self {
        let epoch = clock.now();
        Worker {
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
        }
    }

    pub fn run(mut self) {
        loop {
            if self.active() == 0 {
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
        let entry = MediaCall { session, end: call.end, due_slot: 0 };
        let index = match self.free.pop() {
            Some(i) => {
                self.calls[i] = Some(entry);
                i
            }
            None => {
                self.calls.push(Some(entry));
                self.calls.len() - 1
            }
        };
        if let Some(call) = self.calls[index].as_ref() {
            call.end.link.set_ready_map(self.ready.clone(), index);
        }
        // Visited at the next slot, then at its deadlines.
        self.ready.set(index);
        self.load.fetch_add(1, Ordering::Relaxed);
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Sleeps to the next slot and visits every call.
    fn run_next_slot(&mut self) {
        let k = self.next;
        let scheduled = grid_instant(self.epoch, SLOT, k);
        self.clock.sleep_until(scheduled);
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
            // The calls whose deadline has come, then those their connections marked ready.
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
        if woken {
            self.relay.waker.wake();
        }
        self.next = current + 1;
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
            call.due_slot = slot;
            self.wheel[(slot % WHEEL as u64) as usize].push(index);
        }
    }

    fn max_catchup_cycles(&self) -> u64 {
        (self.max_catchup.as_nanos() / FRAME_DURATION.as_nanos()) as u64
    }

    /// Visits one call: its arrivals, its due passes, its end. Returns whether its connection
    /// task was queued for a wake-up.
    fn visit(&mut self, index: usize, now: Instant, current: u64) -> bool {
        let Some(call) = self.calls[index].as_mut() else { return false };
        let link = &call.end.link;
        let closed = link.peer_closed.load(Ordering::Acquire);
        let hangup = link.hangup.load(Ordering::Acquire);
        if closed || hangup {
            // What arrived before the end still goes through, and commands sent just before
            // it still apply (a stream started then ends with reason `hangup`, and says so).
            take_audio(&mut call.session, &mut call.end, now);
            while let Some(command) = call.end.control_in.try_pop() {
                call.session.handle_control(command);
            }
            call.session.finish(now, hangup && !closed);
            flush(&mut call.session, &mut call.end);
            call.end.link.stats.publish(&call.session.stats());
            call.end.link.media_done.store(true, Ordering::Release);
            wake(&mut self.relay, &call.end.link);
            self.remove(index);
            return true;
        }
        let sent = step(&mut call.session, &mut call.end, now);
        if sent {
            wake(&mut self.relay, &call.end.link);
        }
        let deadline = call.session.next_deadline();
        self.schedule(index, current, deadline);
        sent
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

    fn remove(&mut self, index: usize) {
        if self.calls[index].take().is_some() {
            self.free.push(index);
            self.load.fetch_sub(1, Ordering::Relaxed);
            self.stats.calls.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn finish_all(&mut self) {
        let now = self.clock.now();
        for index in 0..self.calls.len() {
            if let Some(call) = self.calls[index].as_mut() {
                take_audio(&mut call.session, &mut call.end, now);
                call.session.finish(now, false);
                call.end.link.stats.publish(&call.session.stats());
                call.end.link.media_done.store(true, Ordering::Release);
                call.end.link.waker.wake();
            }
            self.remove(index);
        }
        self.stats.mixers.fetch_sub(self.mixers.len(), Ordering::Relaxed);
        self.mixers.clear();
    }
}

/// One call's work for one visit, exactly as a media thread runs it: platform events, control
/// commands and the caller's audio from the rings into the session, the passes that are due,
/// and everything released back into the rings. Returns whether anything was released or
/// emitted (the connection task then has something to send). Allocation-free (see
/// `tests/no_alloc.rs`).
pub fn step(session: &mut Session, end: &mut MediaEnd, now: Instant) -> bool {
    while let Some(event) = end.events_in.try_pop() {
        session.handle_platform(event);
    }
    while let Some(command) = end.control_in.try_pop() {
        session.handle_control(command);
    }
    let passes = session.passes();
    loop {
        let taken = take_audio(session, end, now);
        session.handle_tick(now);
        // A burst larger than the session's buffer: what it took has gone through, take more.
        if taken == 0 || end.audio_in.is_empty() {
            break;
        }
    }
    let sent = flush(session, end);
    if session.passes() != passes || sent {
        end.link.stats.publish(&session.stats());
    }
    if session.hangup_requested() && !end.link.hangup.load(Ordering::Acquire) {
        // A processor asked (e.g. a fork target's `hangup` command): the next visit finishes
        // the call, as after the control API's hang-up.
        end.link.hang_up(super::link::Hangup::Processor);
    }
    sent
}

/// Moves the caller's bytes from the ring into the session, as many as it has room for (the
/// rest waits in the ring, and behind it in the socket: nothing is dropped). Wakes the
/// connection task if it was waiting for room. Returns the bytes moved.
fn take_audio(session: &mut Session, end: &mut MediaEnd, now: Instant) -> usize {
    let mut bytes = [0u8; 2 * MAX_FRAME_BYTES];
    let mut taken = 0;
    loop {
        let room = session.inbound_room().min(bytes.len());
        let n = end.audio_in.pop_slice(&mut bytes[..room]);
        if n == 0 {
            break;
        }
        session.handle_audio(&bytes[..n], now);
        taken += n;
    }
    if taken > 0 && end.link.inbound_waiting.swap(false, Ordering::AcqRel) {
        end.link.waker.wake();
    }
    taken
}

/// Moves everything the session released into the call's outbound rings. Returns whether
/// anything was moved.
fn flush(session: &mut Session, end: &mut MediaEnd) -> bool {
    let mut frame = [0u8; MAX_FRAME_BYTES];
    let mut moved = false;
    while let Some(transmit) = session.poll_transmit(&mut frame) {
        moved = true;
        let item = match transmit {
            Transmit::Audio { released, deadline, len } => {
                if end.audio_out.vacant_len() < len || end.items_out.is_full() {
                    end.link.stats.ring_overrun_out.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                end.audio_out.push_slice(&frame[..len]);
                OutItem::Audio { released, deadline }
            }
            Transmit::Clear => OutItem::Clear,
            Transmit::Notify { marker } => OutItem::Notify(marker),
        };
        if end.items_out.try_push(item).is_err() {
            end.link.stats.ring_overrun_out.fetch_add(1, Ordering::Relaxed);
        }
    }
    while let Some(event) = session.poll_event() {
        moved = true;
        if end.events_out.try_push(event).is_err() {
            end.link.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    moved
}

/// Queues a call's connection task for the relay to wake; wakes it directly if the relay's ring
/// is full.
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
    use crate::media::link::{ConnEnd, RingSizes, call_rings};
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

    fn worker_with_call() -> (Worker<FakeClock>, FakeClock, ConnEnd) {
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
        );
        let rate = SampleRate::Hz8000;
        let call = CallInfo { id: "w".into(), path: "/echo".into(), metadata: Metadata::new(rate) };
        let session = Session::new(rate, &call, Pipeline::new(vec![Box::new(Echo::new(0).unwrap())]), SessionConfig::default()).unwrap();
        let (conn, media) = call_rings(RingSizes::for_frames(rate.frame_bytes(), 16, 3));
        worker.next = worker.slot_at(clock.now()) + 1;
        worker.add(NewCall::new(session, media));
        (worker, clock, conn)
    }

    fn passes(conn: &ConnEnd) -> u64 {
        conn.link.stats.session().passes
    }

    fn sent(conn: &mut ConnEnd) -> Vec<i16> {
        let mut frames = Vec::new();
        while conn.items_out.try_pop().is_some() {
            let mut frame = [0u8; 320];
            assert_eq!(conn.audio_out.pop_slice(&mut frame), 320);
            frames.push(i16::from_le_bytes([frame[0], frame[1]]));
        }
        frames
    }

    fn frame(value: i16) -> Vec<u8> {
        std::iter::repeat_n(value.to_le_bytes(), 160).flatten().collect()
    }

    #[test]
    fn a_frame_goes_through_within_a_slot_of_its_arrival_and_late_ones_are_not_replaced() {
        let (mut worker, clock, mut conn) = worker_with_call();
        let start = clock.now();
        for i in 0..100i16 {
            // Frames arrive 0.4 ms into a slot; each is echoed at the next visit.
            clock.advance(Duration::from_micros(400));
            if i != 50 {
                assert_eq!(conn.audio_in.push_slice(&frame(i + 1)), 320);
                conn.link.notify_media();
            }
            worker.run_next_slot();
            let arrived = clock.now();
            if i == 50 {
                // Frame 51 is 15 ms late: no silence is echoed in its place, and it is sent
                // when it comes.
                for _ in 0..15 {
                    worker.run_next_slot();
                    assert_eq!(sent(&mut conn), [] as [i16; 0]);
                }
                assert_eq!(conn.audio_in.push_slice(&frame(51)), 320);
                conn.link.notify_media();
                worker.run_next_slot();
                assert_eq!(sent(&mut conn), [51]);
            } else {
                assert_eq!(sent(&mut conn), [i + 1], "frame {i}");
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
        let (mut worker, clock, conn) = worker_with_call();
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
        let mut worker = Worker::new(clock.clone(), rx, relay, Arc::new(AtomicUsize::new(0)), stats.clone(), Duration::from_millis(200));
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
            let (conn, media) = call_rings(RingSizes::for_frames(rate.frame_bytes(), 16, 3));
            worker.add(NewCall { session, end: media, conference: Some(admitted) });
            conns.push(conn);
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
            for (conn, frames) in conns.iter_mut().zip(&inputs) {
                let n = encode_l16(&frames[p], &mut bytes);
                assert_eq!(conn.audio_in.push_slice(&bytes[..n]), n);
                conn.link.notify_media();
            }
            for _ in 0..SLOTS {
                worker.run_next_slot();
            }
            for (conn, out) in conns.iter_mut().zip(&mut heard) {
                while conn.items_out.try_pop().is_some() {}
                loop {
                    let n = conn.audio_out.pop_slice(&mut bytes);
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
            assert_eq!(conns[i].link.stats.session().input_missing, 0);
        }
    }

    #[test]
    fn a_closed_call_is_finished_and_removed() {
        let (mut worker, _clock, conn) = worker_with_call();
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
