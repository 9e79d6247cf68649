//! The media path's steady state allocates nothing: a counting global allocator watches the
//! exact per-call step a media thread runs (rings in, one tick, rings out), plus the connection
//! side's ring operations, over thousands of ticks with DTMF, clear and notify traffic.
//!
//! The counting allocator is the crate's only `unsafe` code (the library itself forbids it).
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use callpipe::media::{OutItem, RingSizes, call_rings, step};
use callpipe::processor::{CallInfo, Context, Echo, Event, Pipeline, Processor};
use callpipe::protocol::{DtmfDigit, FRAME_DURATION, MAX_FRAME_BYTES, Metadata, SampleRate};
use callpipe::session::{InboundEvent, Session, SessionConfig};
use ringbuf::traits::{Consumer, Producer};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: every method forwards to the system allocator unchanged; counting has no effect on
// the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if WATCHING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if WATCHING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if WATCHING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations (and frees) made by this thread while `f` runs.
fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    WATCHING.with(|w| w.set(true));
    f();
    WATCHING.with(|w| w.set(false));
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

/// Queues a prompt every 50 passes with a notify after it, mixes a tone into every frame, and
/// barges in on DTMF: exercises every request a processor can make.
struct Busy;

impl Processor for Busy {
    fn name(&self) -> &'static str {
        "busy"
    }

    fn process(&mut self, cx: &mut Context<'_>) {
        if cx.position() % 50 == 0 {
            let prompt = [300i16; 480];
            let n = cx.rate().frame_samples();
            cx.enqueue_output(&prompt[..n]);
            cx.enqueue_output(&prompt[..n / 2]);
            cx.notify(cx.position());
        }
        let tone = [100i16; 480];
        let n = cx.rate().frame_samples();
        cx.mix_output(&tone[..n]);
    }

    fn handle_event(&mut self, event: &Event, cx: &mut Context<'_>) {
        if let Event::Dtmf { .. } = event {
            cx.clear();
            cx.emit(Event::Dtmf { digit: DtmfDigit::Pound, duration_ms: None, source: callpipe::processor::DtmfSource::Inband });
        }
    }
}

/// Allocations over 10,000 steady-state ticks, and the session's counters at the end.
fn steady_state_allocations(rate: SampleRate, stages: Vec<Box<dyn Processor>>) -> (usize, callpipe::session::SessionStats) {
    let call = CallInfo { id: "a".into(), path: "/echo".into(), metadata: Metadata::new(rate) };
    let config = SessionConfig::default();
    let mut session = Session::new(rate, &call, Pipeline::new(stages), config).unwrap();
    let (mut conn, mut media) =
        call_rings(RingSizes::for_frames(rate.frame_bytes(), config.inbound_buffer_frames, config.lookahead_frames as usize));
    let frame: Vec<u8> = (0..rate.frame_bytes()).map(|i| i as u8).collect();
    let mut out = [0u8; MAX_FRAME_BYTES];
    let t0 = Instant::now();
    let mut tick = |n: u32| {
        // Connection side: a frame in (sometimes an odd size), a DTMF now and then.
        let cut = if n % 7 == 0 { frame.len() - 3 } else { frame.len() };
        conn.audio_in.push_slice(&frame[..cut]);
        if n % 97 == 0 {
            let _ = conn.events_in.try_push(InboundEvent::Dtmf { digit: DtmfDigit::Digit(1), duration_ms: Some(100) });
        }
        if n % 53 == 0 {
            let _ = conn.events_in.try_push(InboundEvent::Cleared);
            let _ = conn.events_in.try_push(InboundEvent::NotifyPlayed { marker: u64::from(n.saturating_sub(3)) });
        }
        // Media thread.
        step(&mut session, &mut media, t0 + FRAME_DURATION * n);
        // Connection side: everything released goes to the socket.
        while let Some(item) = conn.items_out.try_pop() {
            if let OutItem::Audio { .. } = item {
                assert_eq!(conn.audio_out.pop_slice(&mut out[..rate.frame_bytes()]), rate.frame_bytes());
            }
        }
        // Processor events are rare and leave on the connection side, which may allocate.
        while conn.events_out.try_pop().is_some() {}
    };
    for n in 0..200 {
        tick(n);
    }
    let allocations = allocations_during(|| {
        for n in 200..10_200 {
            tick(n);
        }
    });
    (allocations, session.stats())
}

#[test]
fn the_echo_path_never_allocates() {
    for rate in SampleRate::ALL {
        let (allocations, stats) = steady_state_allocations(rate, vec![Box::new(Echo::new(0).unwrap())]);
        assert_eq!(allocations, 0, "{rate}");
        assert!(stats.frames_released >= 10_000, "{stats:?}");
        let (allocations, stats) = steady_state_allocations(rate, vec![Box::new(Echo::new(120).unwrap())]);
        assert_eq!(allocations, 0, "{rate} delayed");
        assert!(stats.frames_released >= 9_900, "{stats:?}");
    }
}

#[test]
fn clear_notify_mixing_and_events_never_allocate() {
    for rate in SampleRate::ALL {
        let stages: Vec<Box<dyn Processor>> = vec![Box::new(Echo::new(0).unwrap()), Box::new(Busy)];
        let (allocations, stats) = steady_state_allocations(rate, stages);
        assert_eq!(allocations, 0, "{rate}");
        assert!(stats.clears >= 100 && stats.notifies >= 100, "the traffic really ran: {stats:?}");
    }
}

#[test]
fn the_counter_sees_allocations() {
    // The test above would pass vacuously if the allocator were not counting.
    assert!(allocations_during(|| drop(std::hint::black_box(vec![1u8; 64]))) >= 1);
}
