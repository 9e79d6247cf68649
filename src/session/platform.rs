//! The exchange with the platform: what the session sends (released frames, `clear`,
//! `notify`, in order, through [`Session::poll_transmit`]) and what the platform reports back
//! ([`InboundEvent`]: keys, and the acknowledgements of our `clear` and `notify`, matched here).

use std::time::Instant;

use super::{MAX_PENDING_MARKERS, Released, Session, pop_front_into};
use crate::bounded::GrowOnce;
use crate::call::Marker;
use crate::processor::{DtmfSource, Event};
use crate::protocol::{DtmfDigit, MAX_FRAME_BYTES, encode_l16};

/// An event from the platform, in the form the media thread takes (no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundEvent {
    /// `websocket:dtmf`.
    Dtmf {
        /// The key.
        digit: DtmfDigit,
        /// Its duration, when the platform gave one.
        duration_ms: Option<u32>,
    },
    /// `websocket:cleared`.
    Cleared,
    /// `websocket:notify` carrying one of our markers.
    NotifyPlayed {
        /// The marker.
        marker: Marker,
    },
}

/// Something to send to the platform, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmit {
    /// One frame, encoded into the caller's buffer; it starts to play at `deadline`.
    Audio {
        /// The tick (on the call's 20 ms grid) at which the pacer let it leave: it should be on
        /// the wire right after this instant.
        released: Instant,
        /// When the platform should start playing it; at or after `released`, by up to the
        /// look-ahead.
        deadline: Instant,
        /// Bytes written into the buffer: always exactly one frame.
        len: usize,
    },
    /// `{"action":"clear"}`.
    Clear,
    /// `{"action":"notify","payload":{"callpipe_marker":N}}`.
    Notify {
        /// The marker.
        marker: Marker,
    },
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Pending {
    Audio { released: Instant, deadline: Instant },
    Clear,
    Notify(Marker),
}

impl Session {
    /// A platform event; processors see it at the next pass. A platform keypress also goes out
    /// at once (through [`poll_event`](Session::poll_event)), for the call's event stream.
    pub fn handle_platform(&mut self, event: InboundEvent) {
        let event = match event {
            InboundEvent::Dtmf { digit, duration_ms } => {
                let event = Event::Dtmf { digit, start_ms: None, duration_ms, source: DtmfSource::Platform };
                self.emit_own(event);
                return;
            }
            InboundEvent::Cleared => {
                if self.awaiting_clears == 0 {
                    self.stats.unmatched_acks += 1;
                    return;
                }
                self.awaiting_clears -= 1;
                Event::Cleared
            }
            InboundEvent::NotifyPlayed { marker } => match self.awaiting_notify.iter().position(|m| *m == marker) {
                Some(i) => {
                    self.awaiting_notify.remove(i);
                    Event::NotifyPlayed { marker }
                }
                None => {
                    self.stats.unmatched_acks += 1;
                    return;
                }
            },
        };
        self.push_event(None, event);
    }

    /// The next thing to send, in order. Audio is encoded into `frame`, which must hold a frame.
    pub fn poll_transmit(&mut self, frame: &mut [u8; MAX_FRAME_BYTES]) -> Option<Transmit> {
        match self.transmit.pop_front()? {
            Pending::Audio { released, deadline } => {
                let samples = self.rate.frame_samples();
                let mut pcm = [0i16; crate::protocol::MAX_FRAME_SAMPLES];
                pop_front_into(&mut self.released, &mut pcm[..samples]);
                let len = encode_l16(&pcm[..samples], frame);
                Some(Transmit::Audio { released, deadline, len })
            }
            Pending::Clear => Some(Transmit::Clear),
            Pending::Notify(marker) => Some(Transmit::Notify { marker }),
        }
    }

    pub(super) fn release(&mut self, now: Instant, fresh: bool, finishing: bool) {
        let Session { outbound, transmit, transmit_limit, released, released_limit, stats, .. } = self;
        let mut notifies = [Marker(0); MAX_PENDING_MARKERS];
        let mut n_notifies = 0;
        outbound.release(now, fresh, finishing, |r| match r {
            Released::Frame { deadline, samples: (a, b) } => {
                if transmit.len() < *transmit_limit && released.len() + a.len() + b.len() <= *released_limit {
                    released.room_doubling(a.len() + b.len(), *released_limit);
                    released.extend(a.iter().chain(b));
                    transmit.room_for_one(*transmit_limit);
                    transmit.push_back(Pending::Audio { released: now, deadline });
                    stats.frames_released += 1;
                } else {
                    stats.dropped_out += 1;
                }
            }
            Released::Notify(marker) => {
                if transmit.len() < *transmit_limit && n_notifies < notifies.len() {
                    transmit.room_for_one(*transmit_limit);
                    transmit.push_back(Pending::Notify(marker));
                    notifies[n_notifies] = marker;
                    n_notifies += 1;
                } else {
                    stats.dropped_requests += 1;
                }
            }
        });
        for marker in &notifies[..n_notifies] {
            self.await_notify(*marker);
        }
    }

    /// Drops the audio queued here and asks the platform to drop its buffer.
    pub(super) fn clear_outbound(&mut self) {
        self.outbound.clear();
        self.push_transmit(Pending::Clear);
        self.awaiting_clears += 1;
        self.stats.clears += 1;
    }

    pub(super) fn send_notify(&mut self, marker: Marker) {
        self.push_transmit(Pending::Notify(marker));
        self.await_notify(marker);
    }

    pub(super) fn await_notify(&mut self, marker: Marker) {
        if self.awaiting_notify.len() == MAX_PENDING_MARKERS {
            self.awaiting_notify.pop_front();
            self.stats.dropped_requests += 1;
        }
        self.awaiting_notify.room_for_one(MAX_PENDING_MARKERS);
        self.awaiting_notify.push_back(marker);
        self.stats.notifies += 1;
    }

    pub(super) fn push_transmit(&mut self, pending: Pending) {
        if self.transmit.len() < self.transmit_limit {
            self.transmit.room_for_one(self.transmit_limit);
            self.transmit.push_back(pending);
        } else {
            self.stats.dropped_requests += 1;
        }
    }
}
