//! A call's connection, owned by its media thread.
//!
//! After admission the server hands a call's socket to the media thread that runs its session,
//! as an [`Endpoint`]. The thread watches the socket in its own poller, and when it is readable
//! (or a deadline falls due) asks the endpoint to read: the endpoint parses the frames and hands
//! the caller's audio and the platform's events straight to the session, running the session's
//! passes itself when a burst is larger than the session's buffer. What the passes release goes
//! back to the endpoint, which frames it into one buffer and writes it with one call per visit
//! (a late visit that releases more than the buffer holds writes it as it fills).
//! No other thread touches the frames: there is no hop and no task per frame.
//!
//! The endpoint decides the protocol (limits, close codes) and tells the thread through the
//! call's [`CallLink`]: `peer_closed` when the peer closed or was refused, a hang-up when a limit
//! ends the call. Once the session has finished, the thread calls [`Endpoint::close`] and keeps
//! the endpoint, lingering, until [`Endpoint::linger`] says the socket may go.

use std::io;
use std::net::TcpStream;
use std::time::Instant;

use super::link::{CallLink, MediaEnd};
use crate::session::{Session, Transmit};

/// A call's connection as its media thread drives it: the socket it watches, what it reads into
/// the session, what it sends, how it closes. See [`crate::media`] for the thread around it.
pub trait Endpoint: Send {
    /// The socket the thread watches (edge-triggered, for reading, and for writing while
    /// [`wants_write`](Endpoint::wants_write)). `None`: nothing to watch; the endpoint is
    /// visited at its deadlines and the session's (a scripted endpoint in a test).
    fn socket(&self) -> Option<&TcpStream>;

    /// The thread's poller has reported the socket ready: the next [`receive`](Endpoint::receive)
    /// must read it. Between reports an endpoint that has read its socket dry need not try
    /// again (edge-triggered: data arriving later raises a new report), so that a visit at a
    /// deadline costs no system call. `closed`: the peer has closed or reset the connection,
    /// and no further report will come, so the socket must be read to its end (past a short
    /// read). Endpoints without a socket ignore it.
    fn readable(&mut self, closed: bool) {
        let _ = closed;
    }

    /// Reads everything the socket has (as long as the session has room) into the session, at
    /// `now`, and applies the call's limits. Ends the call through `end.link` when the peer
    /// closes, breaks the protocol or reaches a limit; events for the call task (rare) go into
    /// `end.events_out`, and the endpoint wakes the task itself.
    fn receive(&mut self, session: &mut Session, end: &mut MediaEnd, now: Instant);

    /// Queues what the session released: a frame (its bytes are the first `len` of `frame`),
    /// or an action. A frame that does not fit the queue without growing it may write what
    /// the queue holds first, whatever the mode: no batched send is in flight during a visit.
    fn send(&mut self, transmit: Transmit, frame: &[u8], link: &CallLink, now: Instant);

    /// Writes what is queued, as far as the socket takes it.
    fn flush(&mut self, link: &CallLink, now: Instant);

    /// Whether bytes wait for the socket to become writable.
    fn wants_write(&self) -> bool;

    /// `on`: the thread sends for the endpoint (`[media] io = "io_uring"`): from now on
    /// [`flush`](Endpoint::flush) leaves what it can to the thread, which takes it through
    /// [`batched`](Endpoint::batched) and reports through [`sent`](Endpoint::sent). An endpoint
    /// that cannot (TLS, none) keeps writing in `flush`. `off`: `flush` writes again.
    fn batch_sends(&mut self, on: bool) {
        let _ = on;
    }

    /// What the endpoint leaves to the thread's batched send: its socket and the bytes that
    /// wait for it. `None`: nothing (or it writes itself).
    fn batched(&self) -> Option<(&TcpStream, &[u8])> {
        None
    }

    /// The thread's batched send of what [`batched`](Endpoint::batched) gave ended with
    /// `result`: the bytes the socket took, `WouldBlock` when its buffer was full, or the
    /// connection's error.
    fn sent(&mut self, result: io::Result<usize>, link: &CallLink, now: Instant) {
        let _ = (result, link, now);
    }

    /// When the endpoint next needs a visit though nothing arrives (a limit, the write
    /// timeout, the end of the linger).
    fn next_deadline(&self) -> Option<Instant>;

    /// The session has finished: queues the close frame the call's end calls for and starts
    /// lingering. Stores the close code in the link.
    fn close(&mut self, link: &CallLink, now: Instant);

    /// While closing: writes what is left, reads and discards the peer's input. Returns true
    /// once the socket may be closed (the peer's close frame or end of stream, or the linger's
    /// time is up).
    fn linger(&mut self, now: Instant) -> bool;
}
