//! A driver's work on one call's socket: reading and parsing what the server sends (answering
//! pings and closes), the call's tick and its frames (through the impaired network when the
//! plan has one, dropped and counted past the send backlog), and writing what is pending.

use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::time::Instant;

use polling::{Event, PollMode};

use super::{Conn, Driver, MAX_SEND_BACKLOG};
use crate::client::platform::Out;
use crate::client::wire::{self, Message, Opcode};

impl Driver {
    pub(super) fn handle_ready(&mut self, key: usize, writable: bool, now: Instant) {
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
    pub(super) fn read_messages(&mut self, key: usize, now: Instant) {
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

    /// Moves what the impaired network lets through by `now` into the sockets.
    pub(super) fn release_delayed(&mut self, now: Instant) {
        for key in 0..self.conns.len() {
            let Some(conn) = self.conns[key].as_mut() else { continue };
            if !conn.delayed.is_empty() && conn.delayed.release(now, &mut conn.out) > 0 {
                self.flush(key);
            }
        }
    }

    pub(super) fn tick(&mut self, key: usize, scheduled: Instant) {
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
    pub(super) fn flush(&mut self, key: usize) {
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
pub(super) fn next_mask(state: &mut u64) -> [u8; 4] {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    (x as u32).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_vary() {
        let mut s = 12345;
        let a = next_mask(&mut s);
        let b = next_mask(&mut s);
        assert_ne!(a, b);
    }
}
