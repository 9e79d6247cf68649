//! The close handshake of a call's socket: our close frame (the code the call's end calls for,
//! or the peer's echoed), then lingering: the peer's input read and discarded until its close
//! frame, the end of its stream or [`LINGER`], so that the kernel never resets a socket with
//! unread input and the peer reads the close code (RFC 6455 section 7.1.1).

use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::info;

use super::{Ending, SocketEndpoint};
use crate::media::{CallLink, Hangup};
use crate::protocol::ws::{self, Message};
use crate::session::CloseCode;

/// How long, after our close frame, the peer's input is read and discarded while its own close
/// frame is awaited (RFC 6455 section 7.1.1).
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// The close handshake in progress.
#[derive(Debug)]
pub(super) struct Closing {
    pub(super) until: Instant,
    /// The peer has closed (its close frame or the end of its stream): nothing more to read.
    peer_done: bool,
    /// The stream can no longer be parsed: input is discarded unparsed.
    raw: bool,
}

impl SocketEndpoint {
    /// The session has finished: queues the close frame the call's end calls for, stores the
    /// close code in the link, and starts lingering.
    pub(super) fn start_closing(&mut self, link: &CallLink, now: Instant) {
        let stats = &self.side.shared.stats;
        let id = &self.side.call.id;
        let (code, frame, peer_done): (u16, Option<(u16, String)>, bool) = match self.side.ending.take() {
            Some(Ending::PeerClosed(code)) => {
                // Answer the peer's close frame with one of ours (RFC 6455 section 5.5.1): its
                // code echoed, none if it gave none, 1002 if its code may not be sent.
                let answer = match code {
                    None => Some((0, String::new())),
                    Some(c) if sendable_close_code(c) => Some((c, String::new())),
                    Some(_) => Some((1002, "invalid close code".to_owned())),
                };
                (code.unwrap_or(1005), answer, true)
            }
            Some(Ending::PeerEnded) => (1006, None, true),
            Some(Ending::PeerLost) => (1006, None, true),
            Some(Ending::Reject(rejection)) => {
                stats.count_close(rejection.code);
                info!(id = id.as_str(), close = rejection.code.code(), reason = %rejection.reason, "closing call");
                (rejection.code.code(), Some((rejection.code.code(), rejection.reason)), false)
            }
            None => {
                let (code, reason) = match link.hangup_reason() {
                    Hangup::Shutdown => (CloseCode::Away, "callpipe is shutting down"),
                    Hangup::Api => (CloseCode::Normal, "hung up through the control API"),
                    Hangup::MaxDuration => (CloseCode::Normal, "maximum call duration reached"),
                    Hangup::Processor => (CloseCode::Normal, "hung up by a processor"),
                };
                (code.code(), Some((code.code(), reason.to_owned())), false)
            }
        };
        link.close_code.store(code, Ordering::Release);
        match frame {
            Some((0, _)) => ws::encode(ws::Opcode::Close, &[], None, &mut self.side.out),
            Some((code, reason)) => ws::encode_close(code, &reason, None, &mut self.side.out),
            None => {}
        }
        self.closing = Some(Closing { until: now + LINGER, peer_done, raw: false });
        if self.write_out(now).is_err()
            && let Some(closing) = &mut self.closing
        {
            closing.peer_done = true;
            closing.until = now;
        }
    }

    /// While closing: writes what is left, reads and discards the peer's input. True once the
    /// socket may go.
    pub(super) fn linger_once(&mut self, now: Instant) -> bool {
        let Some(closing) = self.closing.as_mut() else { return true };
        let mut failed = false;
        let mut sink = [0u8; 2048];
        while !closing.peer_done {
            if !closing.raw {
                // What is already buffered first: it may hold the peer's close frame.
                loop {
                    match self.parser.next() {
                        Ok(Some(Message::Close(_))) => {
                            closing.peer_done = true;
                            break;
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => {
                            closing.raw = true;
                            break;
                        }
                    }
                }
                if closing.peer_done {
                    break;
                }
            }
            let read = if closing.raw {
                self.transport.read(&mut sink)
            } else {
                let space = self.parser.buffer_mut();
                if space.is_empty() {
                    // A whole largest message waits unparsed: read on without parsing.
                    closing.raw = true;
                    continue;
                }
                self.transport.read(space).inspect(|&n| self.parser.filled(n))
            };
            match read {
                Ok(0) => closing.peer_done = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        let until = closing.until;
        let peer_done = closing.peer_done;
        if failed || self.write_out(now).is_err() {
            return true;
        }
        let written = self.side.out.is_empty() && !self.transport.has_pending();
        if (peer_done && written) || now >= until {
            self.transport.close();
            return true;
        }
        false
    }
}

/// Whether a close code may go on the wire (RFC 6455 section 7.4): 1000-1003, 1007-1014, and
/// the registered and private ranges 3000-4999.
fn sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}
