//! Media threads: each owns the sockets and sessions of its calls.
//!
//! ```text
//!   media thread (std::thread, one per core)
//!  ┌───────────────────────────────────────────────────────────────────────────────┐
//!  │ wait in the poller until the next 1 ms slot with something due (a ready        │
//!  │   socket wakes it; so does the doorbell, rung by what other threads hand it)   │
//!  │   ready socket ─► Endpoint::receive: read, parse, frames ─► Session::handle_audio
//!  │                   platform events ─► Session::handle_platform                  │
//!  │   Session::handle_tick(now): a pass per caller frame ready, a wall-only pass   │
//!  │                              per late tick                                     │
//!  │   Session::poll_transmit ─► Endpoint::send (framed) ─► Endpoint::flush: 1 write │
//!  │ at the slot: the calls due in the wheel (wall ticks, held frames, limits), the │
//!  │   calls their task marked ready (a command), the mixers once a cycle, closing  │
//!  │   connections' linger                                                          │
//!  └──────────────▲───────────────────────────────┬────────────────────────────────┘
//!                 │ control ring (API commands)    │ events ring, one wake per slot
//!  ┌──────────────┴───────────────────────────────▼────────────────────────────────┐
//!  │ the call's task on the runtime: commands in, events out, the call's report     │
//!  └───────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! After admission the server hands each call to the least-loaded thread as a [`NewCall`]: the
//! prepared [`Session`](crate::session::Session), the thread's ends of two
//! single-producer/single-consumer rings, and the call's [`Endpoint`]: the socket and its
//! protocol, which only this thread reads and writes from then on. A frame is read, passed and
//! answered in one visit on one thread. The session's buffers bound what is read: a session
//! without room leaves the bytes in the socket (TCP holds them; nothing is dropped). What
//! crosses to the runtime is rare: the control API's commands in, the processors' events out
//! (the thread wakes the call's task through the relay once per slot for all the calls that
//! emitted some), and the call's end. See [`Endpoint`] for the contract, [`Script`] for an
//! endpoint without a socket (tests, and processors' authors).
//!
//! With [`MediaIo::IoUring`] the flush does not write: the thread sends what its visits framed
//! for every visited call at once, in one io_uring submission at the end of the slot's visits
//! (and of each batch of ready sockets), and hands each endpoint its result (`sends.rs`). Reads
//! go through the poller in both modes.

mod clock;
mod endpoint;
mod link;
mod poller;
mod script;
mod sends;
mod worker;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use atomic_waker::AtomicWaker;
use ringbuf::traits::{Consumer, Split};
use ringbuf::{HeapCons, HeapRb};

pub use clock::{Clock, SystemClock, grid_instant};
pub use endpoint::Endpoint;
pub use link::{CONTROL_RING, CallLink, ConnEnd, EVENT_RING, Hangup, LinkStats, MediaEnd, ReadyMap, call_rings};
pub use script::{Script, ScriptState};
pub use worker::{MediaStats, NewCall, SLOT, SLOTS, step};

use worker::{Command, RelayFeed, Worker};

/// Media thread settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaConfig {
    /// Media threads; 0 means one per core.
    pub threads: usize,
    /// How the threads write their calls' sockets.
    pub io: MediaIo,
    /// How far a thread may fall behind and still make up every missed tick. Default 200 ms.
    pub max_catchup: Duration,
    /// Calls one thread can have waiting for a wake-up in one slot. Default 4096.
    pub relay_capacity: usize,
}

impl Default for MediaConfig {
    fn default() -> MediaConfig {
        MediaConfig { threads: 0, io: MediaIo::Epoll, max_catchup: Duration::from_millis(200), relay_capacity: 4096 }
    }
}

/// How the media threads write their calls' sockets (`[media] io`). Reads always go through
/// the thread's epoll set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaIo {
    /// Each visit writes its call's socket (one `sendto` per visit that has something to send).
    #[default]
    Epoll,
    /// The writes of a batch of visits go out in one io_uring submission (`media/sends.rs`);
    /// TLS calls still write in their visits. Falls back to `Epoll` where the kernel refuses
    /// io_uring.
    IoUring,
}

struct ThreadHandle {
    commands: Sender<Command>,
    doorbell: Arc<poller::Doorbell>,
    relay: Arc<AtomicWaker>,
    load: Arc<AtomicUsize>,
    join: Option<JoinHandle<()>>,
}

/// The fixed pool of media threads.
pub struct MediaPool {
    threads: Vec<ThreadHandle>,
    stats: Arc<MediaStats>,
    stopped: Arc<AtomicBool>,
}

impl MediaPool {
    /// Starts the threads. Each comes with a [`Relay`] future that the caller must spawn on its
    /// async runtime: it wakes the call tasks of the calls that emitted events.
    pub fn start(config: MediaConfig) -> std::io::Result<(MediaPool, Vec<Relay>)> {
        let count = match config.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let stats = Arc::new(MediaStats::default());
        let stopped = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(count);
        let mut relays = Vec::with_capacity(count);
        for i in 0..count {
            let (tx, rx) = channel();
            let (ring_p, ring_c) = HeapRb::<Arc<CallLink>>::new(config.relay_capacity.max(1)).split();
            let waker = Arc::new(AtomicWaker::new());
            let load = Arc::new(AtomicUsize::new(0));
            let worker = Worker::new(
                SystemClock,
                rx,
                RelayFeed { ring: ring_p, waker: waker.clone() },
                load.clone(),
                stats.clone(),
                config.max_catchup,
            )?
            .with_io(config.io);
            let doorbell = worker.doorbell();
            let join = std::thread::Builder::new().name(format!("callpipe-media-{i}")).spawn(move || {
                // The noise suppressor's FFT plans are per thread: made here, not in a call's pass.
                crate::processor::Denoise::prime_thread();
                worker.run()
            })?;
            threads.push(ThreadHandle { commands: tx, doorbell, relay: waker.clone(), load, join: Some(join) });
            relays.push(Relay { ring: ring_c, waker, stopped: stopped.clone() });
        }
        Ok((MediaPool { threads, stats, stopped }, relays))
    }

    /// The number of media threads.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Counters shared by the threads.
    pub fn stats(&self) -> &Arc<MediaStats> {
        &self.stats
    }

    /// Hands a call to the least-loaded thread, or, for a conference member, to the thread of
    /// its conference (placed with its first member). Gives the call back if no thread is
    /// running (or the conference's has stopped).
    pub fn add(&self, call: NewCall) -> Result<(), Box<NewCall>> {
        let mut call = Box::new(call);
        let conference = call.conference.as_ref().map(|a| a.conference.clone());
        // Held while placing, so that two first members agree on the thread.
        let mut home = conference.as_ref().map(|c| c.home().lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        let mut order: Vec<(usize, &ThreadHandle)> = self.threads.iter().enumerate().collect();
        match home.as_deref().copied().flatten() {
            Some(pinned) => order.retain(|(i, _)| *i == pinned),
            None => order.sort_by_key(|(_, t)| t.load.load(Ordering::Relaxed)),
        }
        for (i, thread) in order {
            match thread.commands.send(Command::Add(call)) {
                Ok(()) => {
                    thread.doorbell.ring();
                    if let Some(home) = home.as_deref_mut() {
                        *home = Some(i);
                    }
                    return Ok(());
                }
                Err(err) => {
                    let Command::Add(back) = err.0 else { unreachable!("only Add was sent") };
                    call = back;
                }
            }
        }
        Err(call)
    }

    /// Stops every thread, finishing the calls still on them, and waits for them.
    pub fn shutdown(&mut self) {
        for thread in &self.threads {
            let _ = thread.commands.send(Command::Shutdown);
            thread.doorbell.ring();
        }
        let me = std::thread::current().id();
        for thread in &mut self.threads {
            // A pool dropped on one of its own threads (the last owner of the server's state
            // was a call that thread just closed) cannot wait for itself: that thread ends by
            // itself once it returns.
            if let Some(join) = thread.join.take_if(|j| j.thread().id() != me) {
                let _ = join.join();
            }
        }
        self.stopped.store(true, Ordering::Release);
        for thread in &self.threads {
            thread.relay.wake();
        }
    }
}

impl Drop for MediaPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Wakes the connection tasks of the calls a media thread has just served. Spawn it on the
/// runtime that runs the connection tasks; it ends when the pool shuts down.
pub struct Relay {
    ring: HeapCons<Arc<CallLink>>,
    waker: Arc<AtomicWaker>,
    stopped: Arc<AtomicBool>,
}

impl Future for Relay {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.waker.register(cx.waker());
        while let Some(link) = self.ring.try_pop() {
            link.waker.wake();
        }
        if self.stopped.load(Ordering::Acquire) { Poll::Ready(()) } else { Poll::Pending }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::{CallInfo, Conference, ConferenceConfig, Conferences, Echo, Pipeline};
    use crate::protocol::{Metadata, SampleRate};
    use crate::session::{Session, SessionConfig};

    fn call(id: &str, conference: bool, hub: &Conferences) -> NewCall {
        let rate = SampleRate::Hz16000;
        let info = CallInfo { id: id.into(), path: "/t".into(), metadata: Metadata::new(rate) };
        let stage: Box<dyn crate::processor::Processor> =
            if conference { Box::new(Conference::new(ConferenceConfig::new("pinned")).unwrap()) } else { Box::new(Echo::new(0).unwrap()) };
        let mut session =
            Session::new(rate, &info, Pipeline::new(vec![stage]), SessionConfig::default(), &crate::services::Services::new()).unwrap();
        let admitted = session.take_conference_joins().pop().map(|join| hub.admit(join, None, std::time::SystemTime::now()).unwrap().0);
        let (_conn, end) = call_rings();
        NewCall { session, end, endpoint: crate::media::Script::default().endpoint(), conference: admitted }
    }

    #[test]
    fn a_conferences_members_all_go_to_its_first_members_thread() {
        let (mut pool, _relays) = MediaPool::start(MediaConfig { threads: 2, ..MediaConfig::default() }).unwrap();
        let hub = Conferences::new();
        let total = |pool: &MediaPool| pool.threads.iter().map(|t| t.load.load(Ordering::Relaxed)).sum::<usize>();
        let settle = |pool: &MediaPool, calls: usize| {
            // A thread counts a call once it has taken it from its queue.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while total(pool) < calls {
                assert!(std::time::Instant::now() < deadline);
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        assert!(pool.add(call("plain", false, &hub)).is_ok());
        settle(&pool, 1);
        for i in 0..4 {
            assert!(pool.add(call(&format!("member-{i}"), true, &hub)).is_ok());
        }
        settle(&pool, 5);
        let mut loads: Vec<usize> = pool.threads.iter().map(|t| t.load.load(Ordering::Relaxed)).collect();
        loads.sort();
        // Least-loaded placement alone would have balanced 5 calls as 2 and 3.
        assert_eq!(loads, [1, 4], "the members share one thread");
        let home = hub.get("pinned").unwrap().home().lock().unwrap().expect("placed");
        assert_eq!(pool.threads[home].load.load(Ordering::Relaxed), 4);
        pool.shutdown();
    }
}
