//! A global allocator that counts allocations (and frees, and reallocations), for the
//! zero-allocation tests: per thread while that thread watches ([`allocations_during`]), and
//! across every thread of the process while [`watch_all`] is on.
//!
//! To find what allocated, run the test with `ALLOC_TRACE=1`: every allocation counted is then
//! printed to stderr with the project's frames of its backtrace (the printing's
//! own allocations are not counted).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Forwards to the system allocator, counting. Install it with `#[global_allocator]`.
pub struct Counting;

thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    /// Per thread: tests run in parallel, and one test's allocations must not count in another's.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

static WATCHING_ALL: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS_ALL: AtomicUsize = AtomicUsize::new(0);
/// `ALLOC_TRACE` is set (read by `watch_all` before it watches: reading it allocates).
static TRACING: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// This thread is printing a trace: its own allocations are neither counted nor traced.
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if WATCHING_ALL.load(Ordering::Relaxed) && !IN_TRACE.with(Cell::get) {
        ALLOCATIONS_ALL.fetch_add(1, Ordering::Relaxed);
        if TRACING.load(Ordering::Relaxed) {
            IN_TRACE.with(|t| t.set(true));
            trace();
            IN_TRACE.with(|t| t.set(false));
        }
    }
    if WATCHING.with(Cell::get) && !IN_TRACE.with(Cell::get) {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        if TRACING.load(Ordering::Relaxed) {
            IN_TRACE.with(|t| t.set(true));
            trace();
            IN_TRACE.with(|t| t.set(false));
        }
    }
}

/// Prints where this allocation came from: the backtrace's frames in the project, or all of it
/// when none is (a runtime's own work). The thread is not named: asking for the current thread
/// inside an allocator is not safe on every supported toolchain.
fn trace() {
    use std::io::Write;
    let backtrace = std::backtrace::Backtrace::force_capture().to_string();
    let ours: Vec<&str> = backtrace.lines().filter(|l| l.contains("callpipe::")).collect();
    let shown = if ours.is_empty() { backtrace } else { ours.join("\n") };
    let _ = writeln!(std::io::stderr(), "allocation counted:\n{shown}");
}

// SAFETY: every method forwards to the system allocator unchanged; counting has no effect on
// the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations (and frees) made by this thread while `f` runs.
#[allow(dead_code)]
pub fn allocations_during(f: impl FnOnce()) -> usize {
    TRACING.store(std::env::var_os("ALLOC_TRACE").is_some(), Ordering::SeqCst);
    let before = ALLOCATIONS.with(Cell::get);
    WATCHING.with(|w| w.set(true));
    f();
    WATCHING.with(|w| w.set(false));
    ALLOCATIONS.with(Cell::get) - before
}

/// Allocations (and frees) made by any thread of the process while `f` runs.
#[allow(dead_code)]
pub fn watch_all<R>(f: impl FnOnce() -> R) -> (usize, R) {
    TRACING.store(std::env::var_os("ALLOC_TRACE").is_some(), Ordering::SeqCst);
    let before = ALLOCATIONS_ALL.load(Ordering::SeqCst);
    WATCHING_ALL.store(true, Ordering::SeqCst);
    let result = f();
    WATCHING_ALL.store(false, Ordering::SeqCst);
    (ALLOCATIONS_ALL.load(Ordering::SeqCst) - before, result)
}
