use std::sync::Mutex;
use std::sync::mpsc::channel;

use ringbuf::HeapRb;
use ringbuf::traits::Split;

use super::wheel::wheel_pos;
use super::*;
use crate::media::Script;
use crate::media::link::CallLink;
use crate::media::link::{ConnEnd, call_rings};
use crate::processor::{CallInfo, Echo, Pipeline};
use crate::protocol::{MAX_FRAME_BYTES, Metadata, SampleRate};
use crate::session::Session;
use crate::session::SessionConfig;
use atomic_waker::AtomicWaker;

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
    let mut worker =
        Worker::new(clock.clone(), rx, relay, Arc::new(AtomicUsize::new(0)), Arc::new(MediaStats::default()), Duration::from_millis(200))
            .unwrap();
    let rate = SampleRate::Hz8000;
    let call = CallInfo { id: "w".into(), path: "/echo".into(), metadata: Metadata::new(rate) };
    let session = Session::new(
        rate,
        &call,
        Pipeline::new(vec![Box::new(Echo::new(0).unwrap())]),
        SessionConfig::default(),
        &crate::services::Services::new(),
    )
    .unwrap();
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
fn a_late_wake_up_never_drops_a_call_from_the_wheel() {
    // Whatever the thread's lateness, a call with nothing arriving keeps its wall ticks: the
    // entry a visit makes for its next deadline survives the slots drained after it.
    for late_ms in 1..=40u64 {
        let (mut worker, clock, conn, _script) = worker_with_call();
        let start = clock.now();
        while clock.now() < start + FRAME_DURATION * 5 {
            worker.run_next_slot();
        }
        clock.advance(Duration::from_millis(late_ms));
        worker.run_next_slot();
        let before = passes(&conn);
        let from = clock.now();
        while clock.now() < from + FRAME_DURATION * 10 {
            worker.run_next_slot();
        }
        let ticked = passes(&conn) - before;
        assert!((9..=11).contains(&ticked), "{late_ms} ms late: {ticked} passes in the next 200 ms");
    }
}

/// A processor with a bug: it panics at its fifth pass.
struct Buggy;

impl crate::processor::Processor for Buggy {
    fn name(&self) -> &'static str {
        "buggy"
    }

    fn process(&mut self, cx: &mut crate::processor::Context<'_>) {
        assert!(cx.position() < 5, "a bug at the fifth pass");
    }

    fn timeline(&self) -> crate::processor::Timeline {
        crate::processor::Timeline::Wall
    }
}

#[test]
fn a_call_whose_visit_panics_ends_with_1011_and_the_others_go_on() {
    let (mut worker, clock, conn, _script) = worker_with_call();
    let rate = SampleRate::Hz8000;
    let call = CallInfo { id: "b".into(), path: "/buggy".into(), metadata: Metadata::new(rate) };
    let session =
        Session::new(rate, &call, Pipeline::new(vec![Box::new(Buggy)]), SessionConfig::default(), &crate::services::Services::new())
            .unwrap();
    let (buggy, media) = call_rings();
    worker.add(NewCall::new(session, media, Script::default().endpoint()));
    let start = clock.now();
    while clock.now() < start + FRAME_DURATION * 20 {
        worker.run_next_slot();
    }
    assert!(buggy.link.is_media_done());
    assert_eq!(buggy.link.close_code.load(Ordering::Acquire), 1011);
    assert_eq!(worker.active(), 1, "the other call is still there");
    assert!(passes(&conn) >= 19, "and still ticking: {}", passes(&conn));
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
        let call = CallInfo { id: format!("w{i}").into(), path: "/conf".into(), metadata: Metadata::new(rate) };
        let conference = Conference::new(ConferenceConfig { settings: settings.clone(), ..ConferenceConfig::new("wheel") }).unwrap();
        let mut session = Session::new(
            rate,
            &call,
            Pipeline::new(vec![Box::new(conference)]),
            SessionConfig::default(),
            &crate::services::Services::new(),
        )
        .unwrap();
        let join = session.take_conference_joins().pop().expect("prepared by the session");
        let (admitted, _membership) = hub.admit(join, None, std::time::SystemTime::now()).unwrap();
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
        .map(|(i, hz)| noise(100 + i as u64, (*hz / 50) as usize * passes, 2000).chunks((*hz / 50) as usize).map(<[i16]>::to_vec).collect())
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

/// Emits `n` events as the call ends.
struct Farewell(usize);

impl crate::processor::Processor for Farewell {
    fn name(&self) -> &'static str {
        "farewell"
    }

    fn process(&mut self, _: &mut crate::processor::Context<'_>) {}

    fn finish(&mut self, cx: &mut crate::processor::Context<'_>) {
        for i in 0..self.0 {
            cx.emit(crate::processor::Event::custom("farewell", i));
        }
    }
}

#[test]
fn events_at_a_calls_end_beyond_the_ring_reach_its_task() {
    use ringbuf::traits::Consumer;
    let (mut worker, _clock, _conn, _script) = worker_with_call();
    let rate = SampleRate::Hz8000;
    let call = CallInfo { id: "f".into(), path: "/farewell".into(), metadata: Metadata::new(rate) };
    let pipeline = Pipeline::new(vec![Box::new(Farewell(30))]);
    let session = Session::new(rate, &call, pipeline, SessionConfig::default(), &crate::services::Services::new()).unwrap();
    let (mut conn, media) = call_rings();
    worker.add(NewCall::new(session, media, Script::default().endpoint()));
    for _ in 0..5 {
        worker.run_next_slot();
    }
    conn.link.peer_closed.store(true, Ordering::Release);
    conn.link.notify_media();
    worker.run_next_slot();
    assert!(conn.link.is_media_done());
    // As the call task takes them: the ring's first, then what was handed over at the end.
    let mut got: Vec<String> = Vec::new();
    while let Some(event) = conn.events_out.try_pop() {
        got.push(format!("{event:?}"));
    }
    let from_ring = got.len();
    got.extend(conn.link.last_events.lock().unwrap().iter().map(|e| format!("{e:?}")));
    assert_eq!(from_ring, crate::media::EVENT_RING, "the ring was full");
    assert_eq!(got.len(), 30, "every event of the end: {got:?}");
    for (i, event) in got.iter().enumerate() {
        assert!(event.contains(&format!("Number({i})")), "in order: {event} at {i}");
    }
    assert_eq!(conn.link.stats.events_dropped.load(Ordering::Relaxed), 0);
}

#[test]
fn a_call_task_is_woken_when_its_commands_are_taken() {
    use ringbuf::traits::{Observer, Producer};
    let (mut worker, _clock, mut conn, _script) = worker_with_call();
    for _ in 0..5 {
        worker.run_next_slot();
    }
    let woken = worker.relay.ring.occupied_len();
    // A full control ring: the task holds the next command until it is woken.
    for _ in 0..crate::media::CONTROL_RING {
        assert!(conn.control_in.try_push(crate::session::Control::Mute(true)).is_ok());
    }
    conn.link.notify_media();
    worker.run_next_slot();
    assert!(conn.control_in.is_empty(), "the media thread took them");
    assert_eq!(worker.relay.ring.occupied_len(), woken + 1, "and woke the task, which has room again");
}

#[test]
fn a_call_is_listed_once_on_the_wheel_however_its_deadline_moves() {
    let (mut worker, clock, _conn, _script) = worker_with_call();
    let current = worker.slot_at(clock.now());
    let at = |slot: u64| worker.epoch + SLOT * u32::try_from(slot).unwrap();
    let (first, second, third) = (at(current + 15), at(current + 5), at(current + 10));
    let listed = |worker: &Worker<FakeClock>| worker.wheel.iter().flatten().filter(|listed| listed.index() == 0).count();
    worker.schedule(0, current, Some(first));
    // A frame held for its burst window brings the deadline closer...
    worker.schedule(0, current, Some(second));
    assert_eq!(listed(&worker), 1);
    // ...its slot takes it off the wheel for a visit, which puts it back at its wall tick,
    // and another frame brings that closer.
    worker.wheel[wheel_pos(current + 5)].retain(|listed| listed.index() != 0);
    worker.schedule(0, current + 6, Some(first));
    worker.schedule(0, current + 6, Some(third));
    assert_eq!(listed(&worker), 1);
    // A later deadline moves the entry too: the thread does not wake for the one that has gone.
    worker.schedule(0, current + 6, Some(first));
    assert_eq!(listed(&worker), 1);
    assert_eq!(worker.calls[0].as_ref().unwrap().due_slot, current + 15);
    assert!(worker.wheel[wheel_pos(current + 10)].is_empty());
}
