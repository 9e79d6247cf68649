//! A media thread's readiness poller: its calls' sockets in one epoll set, edge-triggered, a
//! timer for waits that end at an instant finer than a millisecond, and a [`Doorbell`] for other
//! threads to end a long wait.
//!
//! A wait costs one system call, or two when it has a timeout that the armed timer does not
//! already cover: the timer is armed (its expiry is itself an event of the set) and
//! `epoll_wait` blocks until a socket or the timer is ready (and a third, a read, when the
//! doorbell rang). A timer armed for sooner than a wait's timeout, and not yet expired, is kept:
//! that wait may end early, with nothing ready, and the next one arms the timer again. A media
//! thread's deadlines mostly move later (each frame that arrives moves its call's), so this
//! arms the timer about once per expiry instead of before nearly every wait; re-arming it at
//! each wait cost callpipe's `/echo` a fifth of its CPU at 500 calls (BENCHMARKS.md). A
//! general-purpose poller also re-arms a notifier for other threads at every wait (three more
//! calls); here the doorbell costs a system call only when it rings a thread that is parked in a
//! wait past its next slot (see [`Doorbell`]).
//!
//! Arming the timer resets its count of expiries, and epoll re-checks a file's readiness before
//! it reports it, so an expiry that a re-arming replaced is never reported; only the expiry of
//! the timer as armed ends a wait.

use std::cell::Cell;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};
use rustix::event::{EventfdFlags, eventfd};
use rustix::time::{Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create, timerfd_settime};

/// The timer's key in the set (no call's key reaches it).
const TIMER: u64 = u64::MAX;

/// The doorbell's key in the set.
const DOORBELL: u64 = u64::MAX - 1;

/// The most sockets one wait reports.
pub(crate) const MAX_BATCH: usize = 256;

/// Set in a reported key when the peer has closed or reset the connection (or the socket has
/// an error): the socket must then be read to its end, even after a short read, since no
/// further report will come.
pub(crate) const HANGUP: usize = 1 << 62;

/// Lets other threads end a media thread's wait: they ring it after handing the thread
/// something (a call, a command, a ready mark).
///
/// A media thread with nothing due in its next slot waits until the first slot that has
/// something, which can be a wheel's turn away. Before such a wait it *parks*, and only a ring
/// of a parked thread writes to the bell's eventfd (one system call); any other ring is an
/// atomic increment. A ring that comes after the thread last looked at what it was handed, but
/// before it parked, makes parking fail instead, so nothing handed to a thread waits past its
/// next slot.
#[derive(Debug)]
pub(crate) struct Doorbell {
    fd: OwnedFd,
    knocks: AtomicU64,
    parked: AtomicBool,
}

impl Doorbell {
    pub fn new() -> io::Result<Doorbell> {
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Doorbell { fd, knocks: AtomicU64::new(0), parked: AtomicBool::new(false) })
    }

    /// Tells the thread it has been handed something; wakes it if it is parked.
    pub fn ring(&self) {
        self.knocks.fetch_add(1, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) && self.parked.swap(false, Ordering::SeqCst) {
            // Only fails if the count would overflow, which one write per park cannot do.
            let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
        }
    }

    /// How many rings so far: what the thread saw when it last looked at what it was handed.
    pub fn knocks(&self) -> u64 {
        self.knocks.load(Ordering::SeqCst)
    }

    /// Parks the thread for a long wait, unless a ring came since `seen` (then returns false).
    pub fn park(&self, seen: u64) -> bool {
        self.parked.store(true, Ordering::SeqCst);
        if self.knocks.load(Ordering::SeqCst) != seen {
            self.parked.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Ends a park (a ring after it only costs its system call and a spurious wake-up).
    pub fn unpark(&self) {
        self.parked.store(false, Ordering::SeqCst);
    }

    /// Empties the eventfd's count after a ring woke a wait.
    fn clear(&self) {
        let mut count = [0u8; 8];
        let _ = rustix::io::read(&self.fd, &mut count);
    }
}

/// See the [module docs](self).
pub(crate) struct Poller {
    epoll: OwnedFd,
    timer: OwnedFd,
    doorbell: Arc<Doorbell>,
    batch: usize,
    /// When the timer expires, while it is armed and has not been reported expired.
    armed: Cell<Option<Instant>>,
}

impl Poller {
    /// A poller that reports at most `batch` (up to [`MAX_BATCH`]) sockets per wait (the rest
    /// stay ready for the next), and ends a wait when `doorbell` rings while parked.
    pub fn new(batch: usize, doorbell: Arc<Doorbell>) -> io::Result<Poller> {
        let epoll = epoll::create(CreateFlags::CLOEXEC)?;
        let timer = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK)?;
        epoll::add(&epoll, &timer, EventData::new_u64(TIMER), EventFlags::IN | EventFlags::ET)?;
        epoll::add(&epoll, &doorbell.fd, EventData::new_u64(DOORBELL), EventFlags::IN | EventFlags::ET)?;
        Ok(Poller { epoll, timer, doorbell, batch: batch.clamp(1, MAX_BATCH), armed: Cell::new(None) })
    }

    /// Watches `socket` under `key`: readable, and writable too if `write`.
    pub fn add(&self, socket: impl AsFd, key: usize, write: bool) -> io::Result<()> {
        Ok(epoll::add(&self.epoll, socket, EventData::new_u64(key as u64), interest(write))?)
    }

    /// Changes what `socket` is watched for.
    pub fn modify(&self, socket: impl AsFd, key: usize, write: bool) -> io::Result<()> {
        Ok(epoll::modify(&self.epoll, socket, EventData::new_u64(key as u64), interest(write))?)
    }

    /// Stops watching `socket`.
    pub fn delete(&self, socket: impl AsFd) -> io::Result<()> {
        Ok(epoll::delete(&self.epoll, socket)?)
    }

    /// Waits until a socket is ready or `timeout` has passed (`None`: no limit; zero: only
    /// looks), or until the timer expires if it is armed for sooner (see the module docs), and
    /// appends the keys of the ready sockets to `keys`, with [`HANGUP`] set in those whose peer
    /// has closed. Returns how many.
    pub fn wait(&self, timeout: Option<Duration>, keys: &mut Vec<usize>) -> io::Result<usize> {
        let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
        let limit = match timeout {
            Some(t) if t.is_zero() => Some(&zero),
            Some(t) => {
                let now = Instant::now();
                let until = now.checked_add(t);
                match (self.armed.get(), until) {
                    // Armed for sooner, and not yet expired: kept (the wait may end there).
                    (Some(armed), Some(until)) if armed > now && armed <= until => {}
                    _ => {
                        let value = Timespec { tv_sec: t.as_secs().try_into().unwrap_or(i64::MAX), tv_nsec: t.subsec_nanos().into() };
                        timerfd_settime(&self.timer, TimerfdTimerFlags::empty(), &Itimerspec { it_interval: zero, it_value: value })?;
                        self.armed.set(until);
                    }
                }
                None
            }
            None => None,
        };
        // On the stack (the events hold pointers, which would keep the poller on one thread).
        let mut events = [const { MaybeUninit::<Event>::uninit() }; MAX_BATCH];
        let ready = match epoll::wait(&self.epoll, &mut events[..self.batch], limit) {
            Ok((ready, _)) => ready,
            Err(rustix::io::Errno::INTR) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let before = keys.len();
        if ready.iter().any(|e| e.data.u64() == DOORBELL) {
            self.doorbell.clear();
        }
        if ready.iter().any(|e| e.data.u64() == TIMER) {
            self.armed.set(None);
        }
        let closed = EventFlags::HUP | EventFlags::RDHUP | EventFlags::ERR;
        keys.extend(ready.iter().filter(|e| e.data.u64() < DOORBELL).map(|e| {
            // Copied out first: the event is a packed struct.
            let flags = e.flags;
            e.data.u64() as usize | if flags.intersects(closed) { HANGUP } else { 0 }
        }));
        Ok(keys.len() - before)
    }
}

fn interest(write: bool) -> EventFlags {
    let base = EventFlags::IN | EventFlags::RDHUP | EventFlags::ET;
    if write { base | EventFlags::OUT } else { base }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::time::Instant;

    fn poller(batch: usize) -> Poller {
        Poller::new(batch, Arc::new(Doorbell::new().unwrap())).unwrap()
    }

    /// A connected pair over loopback: the client (blocking), and the server's end
    /// (non-blocking, as a media thread holds it).
    pub(crate) fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (client, server)
    }

    #[test]
    fn a_wait_with_a_timeout_ends_at_it_not_before() {
        let poller = poller(8);
        let mut keys = Vec::new();
        for micros in [300, 1_500] {
            let start = Instant::now();
            assert_eq!(poller.wait(Some(Duration::from_micros(micros)), &mut keys).unwrap(), 0);
            assert!(start.elapsed() >= Duration::from_micros(micros), "woke before the timeout");
        }
        assert!(keys.is_empty());
    }

    #[test]
    fn a_readable_socket_is_reported_once_per_arrival() {
        let (mut client, server) = pair();
        let poller = poller(8);
        poller.add(&server, 7, false).unwrap();
        let mut keys = Vec::new();
        assert_eq!(poller.wait(Some(Duration::ZERO), &mut keys).unwrap(), 0);
        client.write_all(b"one").unwrap();
        assert_eq!(poller.wait(Some(Duration::from_secs(5)), &mut keys).unwrap(), 1);
        assert_eq!(keys, [7]);
        // Edge-triggered: not again until more arrives, even though nothing was read.
        assert_eq!(poller.wait(Some(Duration::from_millis(20)), &mut keys).unwrap(), 0);
        client.write_all(b"two").unwrap();
        assert_eq!(poller.wait(Some(Duration::from_secs(5)), &mut keys).unwrap(), 1);
        assert_eq!(keys, [7, 7]);
        poller.delete(&server).unwrap();
        client.write_all(b"three").unwrap();
        assert_eq!(poller.wait(Some(Duration::from_millis(20)), &mut keys).unwrap(), 0);
    }

    #[test]
    fn a_peer_that_closes_is_reported_with_hangup() {
        let (mut client, server) = pair();
        let poller = poller(8);
        poller.add(&server, 3, false).unwrap();
        let mut keys = Vec::new();
        client.write_all(b"half a frame").unwrap();
        assert_eq!(poller.wait(Some(Duration::from_secs(5)), &mut keys).unwrap(), 1);
        assert_eq!(keys, [3], "data alone: no hangup");
        // The data and the end arrive before anyone looks: one report, flagged.
        let (mut client, server) = pair();
        poller.add(&server, 4, false).unwrap();
        client.write_all(b"the rest").unwrap();
        drop(client);
        std::thread::sleep(Duration::from_millis(20));
        keys.clear();
        assert_eq!(poller.wait(Some(Duration::from_secs(5)), &mut keys).unwrap(), 1);
        assert_eq!(keys, [4 | HANGUP]);
    }

    #[test]
    fn an_expiry_left_from_an_earlier_wait_does_not_end_a_later_one() {
        let (mut client, server) = pair();
        let poller = poller(8);
        poller.add(&server, 1, false).unwrap();
        client.write_all(b"x").unwrap();
        // Returns at once for the socket; its timer stays armed and expires meanwhile.
        assert_eq!(poller.wait(Some(Duration::from_millis(1)), &mut Vec::new()).unwrap(), 1);
        std::thread::sleep(Duration::from_millis(5));
        let start = Instant::now();
        assert_eq!(poller.wait(Some(Duration::from_millis(30)), &mut Vec::new()).unwrap(), 0);
        assert!(start.elapsed() >= Duration::from_millis(30), "ended by the earlier wait's expiry");
    }

    #[test]
    fn a_timer_armed_for_sooner_is_kept_and_a_later_one_is_brought_forward() {
        let (mut client, server) = pair();
        let poller = poller(8);
        poller.add(&server, 1, false).unwrap();
        let mut keys = Vec::new();
        // Returns at once for the socket, its timer armed for 500 ms from now.
        client.write_all(b"x").unwrap();
        let start = Instant::now();
        assert_eq!(poller.wait(Some(Duration::from_millis(500)), &mut keys).unwrap(), 1);
        // A longer wait keeps that timer: it ends when the timer expires, with nothing ready.
        assert_eq!(poller.wait(Some(Duration::from_secs(60)), &mut keys).unwrap(), 0);
        let ended = start.elapsed();
        assert!(ended >= Duration::from_millis(500), "ended before the armed timer, at {ended:?}");
        assert!(ended < Duration::from_secs(30), "the armed timer did not end the wait");
        // Expired and reported: the next wait arms its own timeout.
        let start = Instant::now();
        assert_eq!(poller.wait(Some(Duration::from_millis(50)), &mut keys).unwrap(), 0);
        assert!(start.elapsed() >= Duration::from_millis(50));
        // A timer armed for later than a wait's timeout is brought forward to it.
        client.write_all(b"y").unwrap();
        assert_eq!(poller.wait(Some(Duration::from_secs(60)), &mut keys).unwrap(), 1);
        let start = Instant::now();
        assert_eq!(poller.wait(Some(Duration::from_millis(30)), &mut keys).unwrap(), 0);
        let ended = start.elapsed();
        assert!(ended >= Duration::from_millis(30) && ended < Duration::from_secs(30), "ended at {ended:?}");
    }

    #[test]
    fn a_ring_ends_a_parked_wait_and_only_a_parked_one() {
        let bell = Arc::new(Doorbell::new().unwrap());
        let poller = Poller::new(8, bell.clone()).unwrap();
        let mut keys = Vec::new();
        // Parked: a ring from another thread ends a long wait, and reports no socket.
        let seen = bell.knocks();
        assert!(bell.park(seen));
        let ringer = {
            let bell = bell.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                bell.ring();
            })
        };
        let start = Instant::now();
        assert_eq!(poller.wait(Some(Duration::from_secs(10)), &mut keys).unwrap(), 0);
        assert!(start.elapsed() < Duration::from_secs(5), "the ring did not end the wait");
        ringer.join().unwrap();
        assert_ne!(bell.knocks(), seen);
        bell.unpark();
        // Not parked: a ring only counts (no wake-up), and parking after it fails.
        let seen = bell.knocks();
        bell.ring();
        let start = Instant::now();
        assert_eq!(poller.wait(Some(Duration::from_millis(100)), &mut keys).unwrap(), 0);
        assert!(start.elapsed() >= Duration::from_millis(100), "a ring woke a thread that was not parked");
        assert!(!bell.park(seen), "parked past a ring it had not seen");
        // The ring that woke the first wait left nothing behind: the next parked wait runs out.
        let seen = bell.knocks();
        assert!(bell.park(seen));
        let start = Instant::now();
        assert_eq!(poller.wait(Some(Duration::from_millis(100)), &mut keys).unwrap(), 0);
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert!(keys.is_empty());
    }

    #[test]
    fn at_most_a_batch_per_wait_and_the_rest_at_the_next() {
        let pairs: Vec<_> = (0..5).map(|_| pair()).collect();
        let poller = poller(2);
        for (key, (_, server)) in pairs.iter().enumerate() {
            poller.add(server, key, false).unwrap();
        }
        for (client, _) in &pairs {
            (&*client).write_all(b"x").unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        let mut keys = Vec::new();
        while poller.wait(Some(Duration::ZERO), &mut keys).unwrap() > 0 {}
        keys.sort_unstable();
        assert_eq!(keys, [0, 1, 2, 3, 4]);
    }
}
