//! The call's side of its connection: the protocol rules applied to each message, the
//! framed output, the counters. No socket here: the endpoint owns that.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::json;
use tracing::debug;

use super::Ending;
use crate::media::{CallLink, MediaEnd};
use crate::processor::Event;
use crate::protocol::ws::{self, Message, Opcode};
use crate::protocol::{AppAction, NOTIFY_MARKER_KEY};
use crate::server::LATE_THRESHOLD_US;
use crate::server::Shared;
use crate::server::calls::LiveCall;
use crate::server::edge::{CallEdge, Text};
use crate::session::{InboundEvent, Session, Transmit};

/// Everything but the byte stream: the protocol rules, the output buffer, the counters.
pub(super) struct CallSide {
    pub(super) shared: Arc<Shared>,
    pub(super) call: Arc<LiveCall>,
    pub(super) edge: CallEdge,
    pub(super) frame_bytes: usize,
    /// Framed output not yet taken by the socket.
    pub(super) out: Vec<u8>,
    /// The most `out` holds before frames are dropped (the peer is not reading).
    pub(super) max_out: usize,
    /// A binary message's bytes the session had no room for yet.
    pub(super) stash: Vec<u8>,
    /// Since when the socket has refused our writes.
    pub(super) blocked_since: Option<Instant>,
    pub(super) ending: Option<Ending>,
}

impl CallSide {
    /// Gives the session a message's bytes, as many as it has room for; the rest waits in the
    /// stash (a message larger than the room, only under the lenient frame policy).
    fn deliver(&mut self, bytes: &[u8], session: &mut Session, now: Instant) {
        let n = session.inbound_room().min(bytes.len());
        session.handle_audio(&bytes[..n], now);
        self.stash.extend_from_slice(&bytes[n..]);
    }

    /// Makes room in the session for a frame: feeds it what waits in the stash, running its
    /// passes when it is full. Returns false when it has no room even so (frames are held for
    /// a burst window): the rest waits, and the next visit comes at the session's deadline.
    pub(super) fn make_room(&mut self, session: &mut Session, now: Instant) -> bool {
        while !self.stash.is_empty() {
            if session.inbound_room() == 0 {
                session.handle_tick(now);
                if session.inbound_room() == 0 {
                    return false;
                }
            }
            let n = session.inbound_room().min(self.stash.len());
            session.handle_audio(&self.stash[..n], now);
            self.stash.drain(..n);
        }
        if session.inbound_room() < self.frame_bytes {
            session.handle_tick(now);
        }
        session.inbound_room() >= self.frame_bytes
    }

    /// Whether `out` has room, without growing, for an audio frame of `len` bytes.
    pub(super) fn has_room(&self, len: usize) -> bool {
        self.out.len() + len + ws::MAX_HEADER <= self.out.capacity()
    }

    /// One message from the peer. Returns why the call ends, if it does.
    pub(super) fn handle(&mut self, message: Message<'_>, session: &mut Session, end: &mut MediaEnd, now: Instant) -> Option<Ending> {
        let stats = &self.shared.stats;
        match message {
            Message::Binary(bytes) => {
                end.link.stats.frames_in.fetch_add(1, Ordering::Relaxed);
                stats.frames_in.fetch_add(1, Ordering::Relaxed);
                let audio = match self.edge.handle_binary(now, bytes) {
                    Ok(audio) => audio,
                    Err(rejection) => {
                        self.count_wrong_size(&end.link);
                        return Some(Ending::Reject(rejection));
                    }
                };
                if audio.wrong_size {
                    self.count_wrong_size(&end.link);
                }
                if let Some(byte) = audio.completes {
                    self.deliver(&[byte], session, now);
                }
                self.deliver(audio.samples, session, now);
            }
            Message::Text(text) => match self.edge.handle_text(now, text) {
                Ok(text) => self.handle_text(text, session),
                Err(rejection) => {
                    stats.closed_text_flood.fetch_add(1, Ordering::Relaxed);
                    return Some(Ending::Reject(rejection));
                }
            },
            Message::Close(code) => return Some(Ending::PeerClosed(code)),
            Message::Ping(payload) => {
                if let Err(rejection) = self.edge.handle_ping(now) {
                    stats.closed_text_flood.fetch_add(1, Ordering::Relaxed);
                    return Some(Ending::Reject(rejection));
                }
                // A peer that does not read gets no more pongs than the buffer's bound allows
                // (RFC 6455 section 5.5.3: answering only the latest ping is enough).
                if self.out.len() + payload.len() + ws::MAX_HEADER <= self.max_out {
                    ws::encode(Opcode::Pong, payload, None, &mut self.out);
                }
            }
            Message::Pong => {}
        }
        None
    }

    pub(super) fn count_wrong_size(&self, link: &CallLink) {
        link.stats.wrong_size.fetch_add(1, Ordering::Relaxed);
        self.shared.stats.wrong_size.fetch_add(1, Ordering::Relaxed);
    }

    /// Acts on a platform text message as the edge read it.
    pub(super) fn handle_text(&mut self, text: Text, session: &mut Session) {
        let (inbound, note) = match text {
            Text::Event(event) => (event, None),
            Text::ApiNotifyPlayed(marker) => {
                let note = self
                    .call
                    .pending_notifies()
                    .remove(&marker)
                    .map(|payload| Event::custom("notify", json!({ "source": "api", "payload": payload })));
                (InboundEvent::NotifyPlayed { marker }, note)
            }
            Text::ProcessorNotifyPlayed(marker) => {
                (InboundEvent::NotifyPlayed { marker }, Some(Event::custom("notify", json!({ "source": "processor", "marker": marker.0 }))))
            }
            Text::Ignored { bad, why } => {
                if bad {
                    self.shared.stats.bad_text.fetch_add(1, Ordering::Relaxed);
                }
                debug!(why, "ignoring a text message");
                return;
            }
        };
        if let Some(note) = note {
            // Behind the events already waiting, and bounded with them: the visit hands it on.
            session.publish_event(note);
        }
        session.handle_platform(inbound);
    }

    /// Frames what the session released into `out`.
    pub(super) fn send(&mut self, transmit: Transmit, frame: &[u8], link: &CallLink, now: Instant) {
        let stats = &self.shared.stats;
        match transmit {
            Transmit::Audio { released, deadline, len } => {
                if self.out.len() + len + ws::MAX_HEADER > self.max_out {
                    link.stats.ring_overrun_out.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                ws::encode(Opcode::Binary, &frame[..len], None, &mut self.out);
                stats.send_lateness.record(now.saturating_duration_since(released));
                if now.saturating_duration_since(deadline).as_micros() > u128::from(LATE_THRESHOLD_US) {
                    link.stats.late_frames.fetch_add(1, Ordering::Relaxed);
                    stats.late_frames.fetch_add(1, Ordering::Relaxed);
                }
                link.stats.frames_out.fetch_add(1, Ordering::Relaxed);
                stats.frames_out.fetch_add(1, Ordering::Relaxed);
            }
            Transmit::Clear => ws::encode(Opcode::Text, AppAction::Clear.to_json().as_bytes(), None, &mut self.out),
            Transmit::Notify { marker } => {
                let action = AppAction::Notify { payload: json!({ NOTIFY_MARKER_KEY: marker.0 }) };
                ws::encode(Opcode::Text, action.to_json().as_bytes(), None, &mut self.out);
            }
        }
    }
}
