//! A call's socket on its media thread: frames in to the session, frames out to the peer, the
//! close handshake.
//!
//! [`SocketEndpoint`] is what `admission` hands the media thread with the call's session. At a
//! visit it reads what the socket has, parses it (the framing is [`crate::protocol::ws`]) and
//! applies the call's protocol rules ([`CallEdge`]): audio goes straight into the session, as much
//! as the session has room for (the rest waits in the socket: TCP holds it, nothing is dropped);
//! platform events become the session's events; a peer's close, a protocol error, a text flood or
//! the idle limit end the call. What the session releases is framed into one buffer of a frame,
//! written once per visit (a late visit that releases several frames writes the buffer each time it
//! is full rather than growing it). When the peer stops reading, the buffer holds a few frames'
//! worth (the look-ahead) and further frames are counted and dropped; after the write timeout the
//! call is closed with 1008.
//!
//! At the end the endpoint sends the close frame and lingers: it reads and discards the peer's
//! input until the peer's own close frame, the end of the stream or [`LINGER`], so that the
//! kernel never resets a socket with unread input and the peer reads the close code.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::{debug, info};

mod closing;
mod side;

use closing::Closing;
pub(super) use closing::LINGER;
use side::CallSide;

use super::calls::LiveCall;
use super::edge::{CallEdge, Limit};
use super::transport::Transport;
use super::{ConnectionGuard, Shared};
use crate::media::{CallLink, Endpoint, Hangup, MediaEnd};
use crate::protocol::ws::{self, Parser, WireError};
use crate::session::{CloseCode, Rejection, Session, Transmit};

/// Why the call's connection ended on this side.
#[derive(Debug)]
enum Ending {
    /// The peer sent a close frame, with its code when it had one.
    PeerClosed(Option<u16>),
    /// The peer ended the stream without a close frame.
    PeerEnded,
    /// The socket failed (reset, broken pipe).
    PeerLost,
    /// callpipe closes the call because of the peer's input or a limit.
    Reject(Rejection),
}

/// A call's connection on its media thread. See the [module docs](self).
pub(super) struct SocketEndpoint {
    transport: Transport,
    parser: Parser,
    side: CallSide,
    closing: Option<Closing>,
    /// The socket may hold bytes not read yet (false once a read found it dry, true again when
    /// the poller reports it).
    unread: bool,
    /// The poller has reported the peer's end: read to it, past short reads.
    peer_ending: bool,
    /// The media thread sends what a live call's visits framed (io_uring); `flush` leaves it.
    batched: bool,
    /// Keeps the server's count of open connections until the socket closes.
    _connection: ConnectionGuard,
}

impl SocketEndpoint {
    /// The endpoint of `call` over `transport`, with what the parser already holds.
    pub fn new(transport: Transport, parser: Parser, shared: Arc<Shared>, call: Arc<LiveCall>, connection: ConnectionGuard) -> Self {
        let config = &shared.config;
        let frame_bytes = call.rate.frame_bytes();
        let framed = frame_bytes + ws::MAX_HEADER;
        let limits = super::edge::EdgeLimits {
            frame_policy: config.server.frame_policy,
            max_text_per_second: config.server.max_text_per_second,
            idle_timeout: config.server.idle_timeout,
            max_duration: config.server.max_duration,
        };
        let side = CallSide {
            edge: CallEdge::new(call.rate, limits, call.started),
            frame_bytes,
            out: Vec::with_capacity(framed),
            max_out: framed * (config.session.lookahead_frames as usize * 2 + 2),
            stash: Vec::new(),
            blocked_since: None,
            ending: None,
            shared,
            call,
        };
        SocketEndpoint { transport, parser, side, closing: None, unread: true, peer_ending: false, batched: false, _connection: connection }
    }

    /// Ends the call from this side: the media thread finishes it at this visit.
    fn end(&mut self, ending: Ending, link: &CallLink) {
        if self.side.ending.is_none() {
            self.side.ending = Some(ending);
            link.peer_closed.store(true, Ordering::Release);
        }
    }

    /// Reads until the socket would block (or the session is full), handing whole messages on.
    fn read(&mut self, session: &mut Session, end: &mut MediaEnd, now: Instant) {
        loop {
            if !self.hand_on(session, end, now) || !self.unread {
                return;
            }
            let space = self.parser.buffer_mut();
            let asked = space.len();
            match self.transport.read(space) {
                Ok(0) => {
                    self.end(Ending::PeerEnded, &end.link);
                    return;
                }
                Ok(n) => {
                    self.parser.filled(n);
                    if !self.peer_ending && !self.transport.may_have_more(n, asked) {
                        // Parse what came, then stop: more arriving raises a new edge.
                        self.unread = false;
                        self.hand_on(session, end, now);
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.unread = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.lost(&e, &end.link);
                    return;
                }
            }
        }
    }

    /// Hands on the whole messages the parser holds. Returns true when it needs more bytes;
    /// false when the call has ended or the session has no room (the rest waits).
    fn hand_on(&mut self, session: &mut Session, end: &mut MediaEnd, now: Instant) -> bool {
        while self.side.make_room(session, now) {
            match self.parser.next() {
                Ok(Some(message)) => {
                    if let Some(ending) = self.side.handle(message, session, end, now) {
                        self.end(ending, &end.link);
                        return false;
                    }
                }
                Ok(None) => return true,
                Err(e) => {
                    self.end(Ending::Reject(rejection_for(&e)), &end.link);
                    return false;
                }
            }
        }
        false
    }

    /// Writes `out` as far as the socket takes it; returns the connection's error.
    fn write_out(&mut self, now: Instant) -> io::Result<()> {
        while !self.side.out.is_empty() {
            let result = self.transport.write(&self.side.out);
            if !took(&mut self.side.out, result)? {
                break;
            }
        }
        self.transport.flush()?;
        self.note_blocked(now);
        Ok(())
    }

    /// Writes `out` as far as the socket takes it; a failed connection ends the call.
    fn write_or_end(&mut self, link: &CallLink, now: Instant) {
        if let Err(e) = self.write_out(now) {
            self.lost(&e, link);
        }
    }

    /// The connection failed (`e`, from a read or a write): the call ends, its peer lost.
    fn lost(&mut self, e: &io::Error, link: &CallLink) {
        debug!(id = self.side.call.id.as_str(), error = %e, "connection lost");
        self.end(Ending::PeerLost, link);
    }

    /// Starts (or ends) the write timeout's count by whether bytes still wait for the socket.
    fn note_blocked(&mut self, now: Instant) {
        if self.side.out.is_empty() && !self.transport.has_pending() {
            self.side.blocked_since = None;
        } else {
            self.side.blocked_since.get_or_insert(now);
        }
    }

    /// Whether the thread sends for this endpoint now: a live call on a plain socket.
    fn leaves_sends(&self) -> bool {
        self.batched && self.closing.is_none() && matches!(self.transport, Transport::Plain(_))
    }
}

/// Takes the result of one write of `out`: drops what the socket took and says whether to write
/// again (`true`: part of it is left, or a signal interrupted the write; `false`: all of it
/// went, or the socket's buffer is full). A socket that takes nothing of a non-empty `out`, or
/// fails, has lost the connection.
fn took(out: &mut Vec<u8>, result: io::Result<usize>) -> io::Result<bool> {
    match result {
        Ok(0) if !out.is_empty() => Err(io::ErrorKind::WriteZero.into()),
        Ok(n) => {
            out.drain(..n.min(out.len()));
            Ok(!out.is_empty())
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

impl Endpoint for SocketEndpoint {
    fn socket(&self) -> Option<&std::net::TcpStream> {
        Some(self.transport.socket())
    }

    fn readable(&mut self, closed: bool) {
        self.unread = true;
        self.peer_ending |= closed;
    }

    fn receive(&mut self, session: &mut Session, end: &mut MediaEnd, now: Instant) {
        if self.closing.is_some() || self.side.ending.is_some() {
            return;
        }
        if end.link.hangup.load(Ordering::Acquire) {
            self.side.edge.handle_hangup();
        }
        match self.side.edge.poll_limit(now) {
            Some(Limit::Idle(rejection)) => {
                self.side.shared.stats.closed_idle.fetch_add(1, Ordering::Relaxed);
                self.end(Ending::Reject(rejection), &end.link);
                return;
            }
            Some(Limit::MaxDuration) => {
                self.side.shared.stats.hangups_max_duration.fetch_add(1, Ordering::Relaxed);
                let max_s = self.side.shared.config.server.max_duration.unwrap_or_default().as_secs();
                info!(id = self.side.call.id.as_str(), max_s, "hanging up: maximum call duration");
                end.link.hang_up(Hangup::MaxDuration);
            }
            None => {}
        }
        let write_timeout = self.side.shared.config.server.write_timeout;
        if let Some(since) = self.side.blocked_since
            && now.saturating_duration_since(since) >= write_timeout
        {
            let reason = format!("peer left our frames unread for {} ms", write_timeout.as_millis());
            self.end(Ending::Reject(Rejection::new(CloseCode::Policy, reason)), &end.link);
            return;
        }
        self.read(session, end, now);
    }

    fn send(&mut self, transmit: Transmit, frame: &[u8], link: &CallLink, now: Instant) {
        if self.closing.is_some() || self.side.ending.is_some() {
            // The peer has gone or is being refused: what the session releases now is not sent.
            return;
        }
        // A late visit releases several frames at once. Rather than growing `out`, what it
        // holds goes to the socket first (no batched send is in flight during a visit), so the
        // media path allocates nothing for as long as the peer reads.
        if let Transmit::Audio { len, .. } = transmit
            && !self.side.out.is_empty()
            && !self.side.has_room(len)
        {
            self.write_or_end(link, now);
            if self.side.ending.is_some() {
                return;
            }
        }
        self.side.send(transmit, frame, link, now);
    }

    fn flush(&mut self, link: &CallLink, now: Instant) {
        if (self.side.out.is_empty() && !self.transport.has_pending()) || self.leaves_sends() {
            return;
        }
        self.write_or_end(link, now);
    }

    fn wants_write(&self) -> bool {
        !self.side.out.is_empty() || self.transport.has_pending()
    }

    fn batch_sends(&mut self, on: bool) {
        self.batched = on;
    }

    fn batched(&self) -> Option<(&std::net::TcpStream, &[u8])> {
        (self.leaves_sends() && !self.side.out.is_empty()).then(|| (self.transport.socket(), self.side.out.as_slice()))
    }

    fn sent(&mut self, result: io::Result<usize>, link: &CallLink, now: Instant) {
        if let Err(e) = took(&mut self.side.out, result) {
            self.lost(&e, link);
        }
        self.note_blocked(now);
    }

    fn next_deadline(&self) -> Option<Instant> {
        if let Some(closing) = &self.closing {
            return Some(closing.until);
        }
        let write = self.side.blocked_since.map(|since| since + self.side.shared.config.server.write_timeout);
        match (self.side.edge.next_deadline(), write) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn close(&mut self, link: &CallLink, now: Instant) {
        self.start_closing(link, now);
    }

    fn linger(&mut self, now: Instant) -> bool {
        self.linger_once(now)
    }
}

/// The close that answers bytes that cannot be parsed.
pub(super) fn rejection_for(error: &WireError) -> Rejection {
    match error {
        WireError::TooBig(_) => Rejection::new(CloseCode::TooBig, error.to_string()),
        _ => Rejection::new(CloseCode::Invalid, error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::took;
    use std::io;

    #[test]
    fn a_write_drops_what_the_socket_took_and_says_whether_to_write_again() {
        let mut out = b"abcdef".to_vec();
        assert!(took(&mut out, Ok(2)).unwrap(), "part taken: write again");
        assert_eq!(out, b"cdef");
        assert!(took(&mut out, Err(io::ErrorKind::Interrupted.into())).unwrap(), "interrupted: write again");
        assert!(!took(&mut out, Err(io::ErrorKind::WouldBlock.into())).unwrap(), "full: wait for writability");
        assert_eq!(out, b"cdef", "nothing dropped while the socket is full");
        assert!(!took(&mut out, Ok(4)).unwrap(), "all taken");
        assert!(out.is_empty());
        assert!(!took(&mut out, Ok(0)).unwrap(), "nothing to write, nothing taken");
    }

    #[test]
    fn a_socket_that_takes_nothing_or_fails_has_lost_the_connection() {
        let mut out = b"abc".to_vec();
        assert_eq!(took(&mut out, Ok(0)).unwrap_err().kind(), io::ErrorKind::WriteZero);
        assert_eq!(took(&mut out, Err(io::ErrorKind::BrokenPipe.into())).unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(out, b"abc");
    }
}
