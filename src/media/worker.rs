//! One media thread: a wheel of 1 ms slots over the 20 ms cycle, each call in one slot.
//!
//! The thread sleeps to the absolute instant of the next occupied slot, runs one pass for every
//! call in it with that slot's *scheduled* instant as `now`, pushes the results into the calls'
//! rings, and wakes the relay once for the whole slot. Calls are spread over the slots so that
//! their work (and their sends) are spread over the cycle instead of bunching on one instant.
//!
//! If the thread wakes late it runs every slot it missed, back to back, each with its own
//! scheduled instant: missed ticks are made up. Beyond `max_catchup` it jumps to the present and
//! counts the skipped ticks; the calls' jitter policies then drop the stale audio on purpose.
//!
//! The thread also runs the [`Mixer`] of every conference whose members it hosts (the pool puts
//! all of a conference's members on one thread): once per cycle, at the first occupied slot of
//! the cycle, before any call of that slot. Between two mixes every member passes once, so each
//! hears the others with exactly one frame of delay. With no calls left it keeps ticking its
//! mixers each cycle until they end (finalizing their recordings).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use ringbuf::HeapProd;
use ringbuf::traits::{Consumer, Observer, Producer};

use super::clock::{Clock, grid_instant};
use super::link::{CallLink, MediaEnd, OutItem};
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
    /// Whether the call's slot has been placed after its arrivals.
    aligned: bool,
}

/// What became of a call after its tick.
enum AfterTick {
    Keep,
    Move(usize),
    Remove,
}

pub(crate) struct Worker<C: Clock> {
    pub clock: C,
    pub commands: Receiver<Command>,
    pub relay: RelayFeed,
    pub load: Arc<AtomicUsize>,
    pub stats: Arc<MediaStats>,
    pub max_catchup: Duration,
    calls: Vec<Option<MediaCall>>,
    free: Vec<usize>,
    slots: Vec<Vec<usize>>,
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
            slots: vec![Vec::new(); SLOTS],
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
        // The least-populated slot spreads the calls' work over the cycle.
        let slot = (0..SLOTS).min_by_key(|s| (self.slots[*s].len(), (*s + SLOTS - (self.next as usize % SLOTS)) % SLOTS)).unwrap_or(0);
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
        let entry = MediaCall { session: call.session, end: call.end, aligned: false };
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
        self.slots[slot].push(index);
        self.load.fetch_add(1, Ordering::Relaxed);
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
    }

    fn run_next_slot(&mut self) {
        let mut k = self.next;
        let mut steps = 0;
        while self.slots[(k % SLOTS as u64) as usize].is_empty() {
            k += 1;
            steps += 1;
            if steps > SLOTS {
                self.next = k;
                return;
            }
        }
        let scheduled = grid_instant(self.epoch, SLOT, k);
        self.clock.sleep_until(scheduled);
        let now = self.clock.now();
        let late = now.saturating_duration_since(scheduled);
        if late > self.max_catchup {
            let resume = self.slot_at(now);
            let skipped_cycles = (resume - k) / SLOTS as u64;
            self.stats.skipped_ticks.fetch_add(skipped_cycles * self.active() as u64, Ordering::Relaxed);
            self.next = resume;
            return;
        }
        self.stats.tick_lateness.record(late);
        if k / SLOTS as u64 != self.mixed_cycle {
            self.mixed_cycle = k / SLOTS as u64;
            self.run_mixers();
        }
        let slot = (k % SLOTS as u64) as usize;
        let mut i = 0;
        while i < self.slots[slot].len() {
            let index = self.slots[slot][i];
            match self.tick_call(index, scheduled) {
                AfterTick::Keep => i += 1,
                AfterTick::Move(to) => {
                    self.slots[slot].swap_remove(i);
                    self.slots[to].push(index);
                }
                AfterTick::Remove => {
                    self.slots[slot].swap_remove(i);
                    self.remove(index);
                }
            }
        }
        self.relay.waker.wake();
        self.next = k + 1;
    }

    /// Runs one pass of a call.
    fn tick_call(&mut self, index: usize, now: Instant) -> AfterTick {
        let epoch = self.epoch;
        let Some(call) = self.calls[index].as_mut() else {
            return AfterTick::Remove;
        };
        let link = &call.end.link;
        let closed = link.peer_closed.load(Ordering::Acquire);
        let hangup = link.hangup.load(Ordering::Acquire);
        if closed || hangup {
            // Commands sent just before the end still apply (a stream started then ends with
            // reason `hangup`, and says so).
            while let Some(command) = call.end.control_in.try_pop() {
                call.session.handle_control(command);
            }
            call.session.finish(now, hangup && !closed);
            flush(&mut call.session, &mut call.end);
            call.end.link.stats.publish(&call.session.stats());
            call.end.link.media_done.store(true, Ordering::Release);
            wake(&mut self.relay, &call.end.link);
            return AfterTick::Remove;
        }
        step(&mut call.session, &mut call.end, now);
        wake(&mut self.relay, &call.end.link);
        if !call.aligned
            && let Some(first) = call.end.link.first_audio()
        {
            // Tick half a frame after the caller's frames arrive, so that arrival jitter of up
            // to ±10 ms neither starves a pass nor leaves a frame waiting a whole tick. This
            // happens once per call, when its audio starts.
            call.aligned = true;
            let slot = ((first + FRAME_DURATION / 2).saturating_duration_since(epoch).as_nanos() / SLOT.as_nanos()) as usize % SLOTS;
            return AfterTick::Move(slot);
        }
        AfterTick::Keep
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
                call.session.finish(now, false);
                call.end.link.stats.publish(&call.session.stats());
                call.end.link.media_done.store(true, Ordering::Release);
                call.end.link.waker.wake();
            }
            self.remove(index);
        }
        for slot in &mut self.slots {
            slot.clear();
        }
        self.stats.mixers.fetch_sub(self.mixers.len(), Ordering::Relaxed);
        self.mixers.clear();
    }
}

/// One call's steady-state work for one tick, exactly as a media thread runs it: platform
/// events and caller audio from the rings into the session, one tick, and everything released
/// back into the rings. Allocation-free (see `tests/no_alloc.rs`).
pub fn step(session: &mut Session, end: &mut MediaEnd, now: Instant) {
    while let Some(event) = end.events_in.try_pop() {
        session.handle_platform(event);
    }
    while let Some(command) = end.control_in.try_pop() {
        session.handle_control(command);
    }
    let mut bytes = [0u8; 2 * MAX_FRAME_BYTES];
    loop {
        let n = end.audio_in.pop_slice(&mut bytes);
        if n == 0 {
            break;
        }
        session.handle_audio(&bytes[..n]);
    }
    session.handle_tick(now);
    flush(session, end);
    end.link.stats.publish(&session.stats());
    if session.hangup_requested() && !end.link.hangup.load(Ordering::Acquire) {
        // A processor asked (e.g. a fork target's `hangup` command): the next tick finishes the
        // call, as after the control API's hang-up.
        end.link.hang_up(super::link::Hangup::Processor);
    }
}

/// Moves everything the session released into the call's outbound rings.
fn flush(session: &mut Session, end: &mut MediaEnd) {
    let mut frame = [0u8; MAX_FRAME_BYTES];
    while let Some(transmit) = session.poll_transmit(&mut frame) {
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
        if end.events_out.try_push(event).is_err() {
            end.link.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
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

    #[test]
    fn ticks_land_on_the_grid_and_missed_ones_are_made_up() {
        let (mut worker, clock, conn) = worker_with_call();
        let start = clock.now();
        for _ in 0..10 {
            worker.run_next_slot();
        }
        assert_eq!(passes(&conn), 10);
        // Ten ticks, one cycle apart, on time: the clock only moved by sleeping to them.
        let elapsed = clock.now() - start;
        assert!(elapsed > FRAME_DURATION * 9 && elapsed <= FRAME_DURATION * 10, "{elapsed:?}");
        assert_eq!(worker.stats.tick_lateness.max_us(), 0);

        // A 100 ms stall: the next five ticks run back to back, each at its own instant.
        clock.advance(Duration::from_millis(100));
        let stalled_at = clock.now();
        for _ in 0..5 {
            worker.run_next_slot();
        }
        assert_eq!(passes(&conn), 15, "missed ticks are made up");
        assert_eq!(clock.now(), stalled_at, "made up without sleeping");
        assert!(worker.stats.tick_lateness.max_us() >= 80_000);
        worker.run_next_slot();
        assert!(clock.now() > stalled_at, "then back on the grid, sleeping again");
        assert_eq!(worker.stats.skipped_ticks.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_stall_beyond_the_catch_up_limit_skips_ticks_on_purpose() {
        let (mut worker, clock, conn) = worker_with_call();
        worker.run_next_slot();
        assert_eq!(passes(&conn), 1);
        clock.advance(Duration::from_secs(1));
        worker.run_next_slot();
        assert_eq!(passes(&conn), 1, "no burst of 50 passes");
        let skipped = worker.stats.skipped_ticks.load(Ordering::Relaxed);
        assert!((49..=50).contains(&skipped), "{skipped}");
        worker.run_next_slot();
        assert_eq!(passes(&conn), 2, "and then ticks resume on the grid");
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
        assert!(worker.slots.iter().all(|s| !s.is_empty()), "the members are spread over every slot");

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
        worker.run_next_slot();
        conn.link.peer_closed.store(true, Ordering::Release);
        worker.run_next_slot();
        assert!(conn.link.is_media_done());
        assert_eq!(worker.active(), 0);
        assert_eq!(worker.load.load(Ordering::Relaxed), 0);
    }
}
