//! The emulator's I/O: a few driver threads, each serving many calls from one poller, on the
//! same 1 ms slot wheel as callpipe's media threads.
//!
//! A driver sleeps in `epoll` until the next slot's absolute instant (the `polling` crate
//! programs a timerfd, so the wake-up is sub-millisecond), handling readable sockets as they
//! come with their arrival time, then sends the frames of every call in the due slot. Sockets
//! are non-blocking and edge-triggered; frames are encoded by [`wire`] into a
//! per-call buffer and written with one `write` each. Connections are opened by a few
//! connector threads, so that a slow upgrade never delays another call's frames.
//!
//! This is the crate's one module with `unsafe`: `polling` makes registering a socket unsafe
//! because the socket must be deleted from the poller before it is closed. `Driver::remove`
//! is the only place a registered socket is dropped, and it deletes it first.
#![allow(unsafe_code)]

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError, channel};
use std::time::{Duration, Instant, SystemTime};

use polling::{Event, Events, PollMode, Poller};

use super::ClientError;
use super::metrics::{Metrics, record};
use super::network::{Delayed, Schedule};
use super::platform::{CallPlan, CallReport, Out, PlatformCall};
use super::wire::{self, Message, Opcode, Parser, Role};

/// Slot width of the drivers' wheel.
const SLOT: Duration = Duration::from_millis(1);
const SLOTS: usize = 20;
/// How long a closing call waits for the server's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Bytes a call may have waiting for a socket the server does not read before its new frames
/// are dropped (and counted) instead of queued: memory stays bounded whatever the server does.
const MAX_SEND_BACKLOG: usize = 64 * 1024;
/// The kernel send buffer of each call. A real-time stream needs a few frames in flight, not
/// the megabytes TCP autotuning would allow: with this, a server that stops reading shows up
/// as unsent frames within seconds instead of as latency hidden in the kernel.
const SEND_BUFFER: usize = 32 * 1024;

/// Where to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` for the Host header.
    pub host: String,
    /// The resolved address.
    pub addr: SocketAddr,
    /// Path and query of the WebSocket URL.
    pub path_and_query: String,
}

impl Target {
    /// Parses a `ws://host:port/path?query` URL. `wss://` is not supported by the emulator.
    pub fn parse(url: &str) -> Result<Target, ClientError> {
        let rest = url.strip_prefix("ws://").ok_or_else(|| ClientError::Url(format!("{url}: only ws:// URLs are supported")))?;
        let (host, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        if host.is_empty() {
            return Err(ClientError::Url(format!("{url}: no host")));
        }
        let with_port =
            if host.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) { host.to_owned() } else { format!("{host}:80") };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| ClientError::Url(format!("{url}: {e}")))?
            .next()
            .ok_or_else(|| ClientError::Url(format!("{url}: no address")))?;
        Ok(Target { host: host.to_owned(), addr, path_and_query: path })
    }
}

/// How many calls, how fast, on how many threads.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Concurrent calls.
    pub calls: usize,
    /// Calls start evenly spread over this time.
    pub ramp: Duration,
    /// Driver threads.
    pub threads: usize,
    /// Limit for a TCP connect plus upgrade.
    pub connect_timeout: Duration,
    /// Largest message accepted from the server.
    pub max_message: usize,
}

/// Live counters, for a progress line.
#[derive(Debug, Default)]
pub struct Progress {
    /// Calls whose upgrade completed.
    pub connected: AtomicU64,
    /// Calls that could not connect.
    pub failed: AtomicU64,
    /// Calls that have ended.
    pub ended: AtomicU64,
    /// Frames sent.
    pub sent: AtomicU64,
    /// Binary messages received.
    pub received: AtomicU64,
}

/// Everything a run produced.
#[derive(Debug)]
pub struct RunResult {
    /// One report per call, in call order.
    pub reports: Vec<CallReport>,
    /// All histograms, merged.
    pub metrics: Metrics,
    /// The run's start (tag timestamps and windows count from it).
    pub epoch: Instant,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// Runs `config.calls` calls of `plan` against `target`, blocking until all have ended.
pub fn run(target: &Target, plan: Arc<CallPlan>, config: &RunConfig, progress: Arc<Progress>) -> Result<RunResult, ClientError> {
    let epoch = Instant::now();
    let threads = config.threads.clamp(1, config.calls.max(1));
    let mut drivers = Vec::with_capacity(threads);
    let mut senders = Vec::with_capacity(threads);
    let mut pollers = Vec::with_capacity(threads);
    for t in 0..threads {
        let (tx, rx) = channel();
        let poller = Arc::new(Poller::new().map_err(ClientError::Io)?);
        let expected = (0..config.calls).filter(|i| i % threads == t).count();
        let driver = Driver::new(poller.clone(), rx, plan.clone(), epoch, expected, config.max_message, progress.clone());
        drivers
            .push(std::thread::Builder::new().name(format!("callpipe-driver-{t}")).spawn(move || driver.run()).map_err(ClientError::Io)?);
        senders.push(tx);
        pollers.push(poller);
    }
    let connectors = config.calls.clamp(1, 8);
    let stop = Arc::new(AtomicBool::new(false));
    let mut connector_threads = Vec::new();
    for c in 0..connectors {
        let (target, plan, config, senders, pollers, progress, stop) =
            (target.clone(), plan.clone(), config.clone(), senders.clone(), pollers.clone(), progress.clone(), stop.clone());
        connector_threads.push(std::thread::spawn(move || {
            for index in (c..config.calls).step_by(connectors) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let at = epoch + config.ramp.mul_f64(index as f64 / config.calls.max(1) as f64);
                if let Some(wait) = at.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let driver = index % senders.len();
                let started = Instant::now();
                let item = match connect(&target, &plan, config.connect_timeout) {
                    Ok((stream, leftover)) => {
                        progress.connected.fetch_add(1, Ordering::Relaxed);
                        NewCall::Connected { index, stream, leftover, connect_time: started.elapsed() }
                    }
                    Err(e) => {
                        progress.failed.fetch_add(1, Ordering::Relaxed);
                        NewCall::Failed { index, error: e.to_string() }
                    }
                };
                let _ = senders[driver].send(item);
                let _ = pollers[driver].notify();
            }
        }));
    }
    for c in connector_threads {
        let _ = c.join();
    }
    let mut reports: Vec<Option<CallReport>> = vec![None; config.calls];
    let mut metrics = Metrics::new();
    for d in drivers {
        let (driver_reports, driver_metrics) = d.join().map_err(|_| ClientError::Io(io::Error::other("a driver thread panicked")))?;
        for (index, report) in driver_reports {
            if let Some(slot) = reports.get_mut(index) {
                *slot = Some(report);
            }
        }
        metrics.merge(&driver_metrics);
    }
    stop.store(true, Ordering::Relaxed);
    let reports =
        reports.into_iter().map(|r| r.unwrap_or_else(|| CallReport { error: Some("never ran".into()), ..CallReport::default() })).collect();
    Ok(RunResult { reports, metrics, epoch, elapsed: epoch.elapsed() })
}

/// Opens the TCP connection and performs the upgrade, blocking with a timeout.
fn connect(target: &Target, plan: &CallPlan, timeout: Duration) -> Result<(TcpStream, Vec<u8>), ClientError> {
    let deadline = Instant::now() + timeout;
    let mut stream =
        TcpStream::connect_timeout(&target.addr, timeout).map_err(|source| ClientError::Connect { addr: target.addr, source })?;
    stream.set_nodelay(true).map_err(ClientError::Io)?;
    socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER).map_err(ClientError::Io)?;
    let key_bytes: [u8; 16] = std::array::from_fn(|i| (random_u64() >> (i % 8 * 8)) as u8);
    let mut headers = Cow::Borrowed(&plan.upgrade_headers[..]);
    if let Some(jwt) = &plan.jwt {
        headers.to_mut().push(("Authorization".into(), jwt.authorization(SystemTime::now())));
    }
    let (request, key) = wire::upgrade_request(&target.host, &target.path_and_query, &headers, key_bytes);
    stream.set_write_timeout(Some(timeout)).map_err(ClientError::Io)?;
    stream.write_all(request.as_bytes()).map_err(ClientError::Io)?;
    let mut response = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .ok_or_else(|| ClientError::Wire(wire::WireError::Handshake("timed out".into())))?;
        stream.set_read_timeout(Some(left)).map_err(ClientError::Io)?;
        let n = stream.read(&mut buf).map_err(ClientError::Io)?;
        if n == 0 {
            return Err(ClientError::Wire(wire::WireError::Handshake("connection closed during the upgrade".into())));
        }
        response.extend_from_slice(&buf[..n]);
        if let Some(end) = wire::parse_upgrade_response(&response, &key).map_err(ClientError::Wire)? {
            stream.set_nonblocking(true).map_err(ClientError::Io)?;
            return Ok((stream, response.split_off(end)));
        }
    }
}

enum NewCall {
    Connected { index: usize, stream: TcpStream, leftover: Vec<u8>, connect_time: Duration },
    Failed { index: usize, error: String },
}

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

struct Driver {
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
    fn new(
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

    fn run(mut self) -> (Vec<(usize, CallReport)>, Metrics) {
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
            while !holding && self.slots[(due % SLOTS as u64) as usize].is_empty() && due < self.next_slot + SLOTS as u64 {
                due += 1;
            }
            let slot_at = self.epoch + SLOT * u32::try_from(due).unwrap_or(u32::MAX);
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
        let slot = ((now + SLOT).saturating_duration_since(self.epoch).as_nanos() / SLOT.as_nanos()) as usize % SLOTS;
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

    fn handle_ready(&mut self, key: usize, writable: bool, now: Instant) {
        if writable {
            self.flush(key);
        }
        loop {
            let Some(conn) = self.conns.get_mut(key).and_then(Option::as_mut) else { return };
            let space = conn.parser.buffer_mut();
            if space.is_empty() {
                // The parser grows its buffer for any message within the limit, so this does not
                // happen; a read into nothing would look like the end of the stream.
                break;
            }
            match conn.stream.read(space) {
                Ok(0) => {
                    conn.peer_gone = true;
                    conn.call.handle_lost("connection closed by the server without a close frame");
                    break;
                }
                Ok(n) => {
                    conn.parser.filled(n);
                    self.read_messages(key, now);
                    if self.conns.get(key).and_then(Option::as_ref).is_none_or(|c| c.peer_gone) {
                        break;
                    }
                    // Edge-triggered: read until the socket says it would block, even after a
                    // short read. A server's FIN that arrived with its last bytes raises no
                    // further event, and only the next read (returning 0) finds it.
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    conn.peer_gone = true;
                    conn.call.handle_lost(&e.to_string());
                    break;
                }
            }
        }
        self.after_io(key, now);
    }

    /// Hands every whole message in the parser to the call.
    fn read_messages(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key).and_then(Option::as_mut) else { return };
        let Conn { call, parser, out, rng, peer_gone, .. } = conn;
        loop {
            match parser.next() {
                Ok(Some(message)) => {
                    match &message {
                        Message::Binary(_) => {
                            self.progress.received.fetch_add(1, Ordering::Relaxed);
                        }
                        Message::Ping(payload) => {
                            let mask = next_mask(rng);
                            wire::encode(Opcode::Pong, payload, Some(mask), out);
                        }
                        Message::Close(code) => {
                            *peer_gone = true;
                            if !call.is_done() {
                                let mask = next_mask(rng);
                                wire::encode_close(code.unwrap_or(1000), "", Some(mask), out);
                            }
                        }
                        _ => {}
                    }
                    let mut emit = |o: Out<'_>| encode_out(o, out, rng);
                    call.handle_message(now, message, &mut self.metrics, &mut emit);
                }
                Ok(None) => break,
                Err(e) => {
                    *peer_gone = true;
                    call.handle_lost(&format!("invalid data from the server: {e}"));
                    break;
                }
            }
        }
        self.flush(key);
        self.after_io(key, now);
    }

    fn run_due_slots(&mut self) {
        let now = Instant::now();
        let current = (now.saturating_duration_since(self.epoch).as_nanos() / SLOT.as_nanos()) as u64;
        if current > self.next_slot + 200 {
            // More than 200 ms behind: the machine is saturated. Skip rather than burst; the
            // send lateness histogram shows it.
            self.next_slot = current;
        }
        while self.next_slot <= current {
            let scheduled = self.epoch + SLOT * u32::try_from(self.next_slot).unwrap_or(u32::MAX);
            let slot = (self.next_slot % SLOTS as u64) as usize;
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

    /// Moves what the impaired network lets through by `now` into the sockets.
    fn release_delayed(&mut self, now: Instant) {
        for key in 0..self.conns.len() {
            let Some(conn) = self.conns[key].as_mut() else { continue };
            if !conn.delayed.is_empty() && conn.delayed.release(now, &mut conn.out) > 0 {
                self.flush(key);
            }
        }
    }

    fn tick(&mut self, key: usize, scheduled: Instant) {
        let Some(conn) = self.conns.get_mut(key).and_then(Option::as_mut) else { return };
        if conn.closing_since.is_some() {
            return;
        }
        let now = Instant::now();
        let Conn { call, out, rng, schedule, delayed, scratch, .. } = conn;
        let before = call.report().frames_sent;
        let mut unsent = 0;
        let mut emit = |o: Out<'_>| {
            if out.len() > MAX_SEND_BACKLOG && matches!(o, Out::Binary(_)) {
                unsent += 1;
            } else if let Some(schedule) = schedule.as_mut() {
                // Through the impaired network: held back, in order, never lost.
                scratch.clear();
                encode_out(o, scratch, rng);
                delayed.push(scratch, schedule.release_at(now));
            } else {
                encode_out(o, out, rng);
            }
        };
        call.handle_tick(scheduled, now, &mut self.metrics, &mut emit);
        call.note_unsent(unsent);
        let sent = call.report().frames_sent - before;
        self.progress.sent.fetch_add(sent, Ordering::Relaxed);
        self.flush(key);
        self.after_io(key, now);
    }

    /// Writes pending bytes; asks for writability while some remain.
    fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key).and_then(Option::as_mut) else { return };
        let mut written = 0;
        while written < conn.out.len() {
            match conn.stream.write(&conn.out[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    conn.call.handle_lost(&e.to_string());
                    conn.out.clear();
                    return;
                }
            }
        }
        conn.out.drain(..written);
        let want = !conn.out.is_empty();
        if want != conn.writable_interest {
            conn.writable_interest = want;
            let interest = if want { Event::all(key) } else { Event::readable(key) };
            let _ = self.poller.modify_with_mode(&conn.stream, interest, PollMode::Edge);
        }
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

fn encode_out(o: Out<'_>, out: &mut Vec<u8>, rng: &mut u64) {
    let mask = next_mask(rng);
    match o {
        Out::Text(text) => wire::encode(Opcode::Text, text.as_bytes(), Some(mask), out),
        Out::Binary(bytes) => wire::encode(Opcode::Binary, bytes, Some(mask), out),
        Out::Close(code) => wire::encode_close(code, "", Some(mask), out),
    }
}

/// A masking key from a xorshift generator: masking only has to be unpredictable to
/// intermediaries, not cryptographically strong, and this is on the per-frame path.
fn next_mask(state: &mut u64) -> [u8; 4] {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    (x as u32).to_le_bytes()
}

/// A seed for keys and masks: std's per-process random hasher keys, mixed with the time.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = Target::parse("ws://127.0.0.1:8080/echo?call_id=7").unwrap();
        assert_eq!((t.host.as_str(), t.path_and_query.as_str()), ("127.0.0.1:8080", "/echo?call_id=7"));
        assert_eq!(t.addr.port(), 8080);
        assert_eq!(Target::parse("ws://127.0.0.1:9").unwrap().path_and_query, "/");
        assert_eq!(Target::parse("ws://127.0.0.1:9?x=1").unwrap().path_and_query, "/?x=1");
        assert!(Target::parse("wss://127.0.0.1:9/").is_err());
        assert!(Target::parse("ws:///x").is_err());
    }

    #[test]
    fn masks_vary() {
        let mut s = 12345;
        let a = next_mask(&mut s);
        let b = next_mask(&mut s);
        assert_ne!(a, b);
    }
}
