//! An endpoint without a socket, for tests: a [`Script`] says what the platform delivers, and
//! keeps what callpipe sends back.
//!
//! A test (or a processor's author) makes a [`Script`], hands [`Script::endpoint`] to a media
//! thread or to [`step`](super::step) with a session, queues caller audio and platform events,
//! and reads back the frames the session released. Queuing and reading allocate nothing once the
//! script's buffers have their capacity, so the zero-allocation tests run through it.

use std::collections::VecDeque;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::endpoint::Endpoint;
use super::link::{CallLink, MediaEnd};
use crate::session::{InboundEvent, Session, Transmit};

/// What the scripted platform delivers and what it received (see [`Script`]).
#[derive(Debug, Default)]
pub struct ScriptState {
    /// Caller audio waiting to be delivered at the next visit.
    pub inbound: VecDeque<u8>,
    /// Platform events waiting to be delivered at the next visit.
    pub events: VecDeque<InboundEvent>,
    /// The platform has hung up: the next visit ends the call (close code 1000).
    pub closed: bool,
    /// Audio bytes callpipe sent, in order.
    pub sent: VecDeque<u8>,
    /// Audio frames callpipe sent.
    pub frames_sent: u64,
    /// `clear` actions callpipe sent.
    pub clears: u64,
    /// `notify` markers callpipe sent, in order.
    pub notifies: Vec<crate::call::Marker>,
}

/// A scripted platform, shared between a test and its endpoint: queue caller audio and platform
/// events with [`deliver`](Script::deliver) and [`deliver_event`](Script::deliver_event), hand
/// [`endpoint`](Script::endpoint) to [`step`](crate::media::step) (or a media thread) with a
/// session, and read back what callpipe sent with [`take_sent`](Script::take_sent).
#[derive(Debug, Clone, Default)]
pub struct Script(Arc<Mutex<ScriptState>>);

impl Script {
    /// A script whose audio buffers hold `bytes` before they grow.
    pub fn with_capacity(bytes: usize) -> Script {
        let state = ScriptState {
            inbound: VecDeque::with_capacity(bytes),
            sent: VecDeque::with_capacity(bytes),
            events: VecDeque::with_capacity(16),
            notifies: Vec::with_capacity(16),
            ..ScriptState::default()
        };
        Script(Arc::new(Mutex::new(state)))
    }

    /// The script's state, locked.
    pub fn lock(&self) -> MutexGuard<'_, ScriptState> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues caller audio.
    pub fn deliver(&self, bytes: &[u8]) {
        self.lock().inbound.extend(bytes);
    }

    /// Queues a platform event.
    pub fn deliver_event(&self, event: InboundEvent) {
        self.lock().events.push_back(event);
    }

    /// Moves the audio sent so far into `out` (as much as fits); returns the bytes moved.
    pub fn take_sent(&self, out: &mut [u8]) -> usize {
        let mut state = self.lock();
        let n = out.len().min(state.sent.len());
        for (o, b) in out.iter_mut().zip(state.sent.drain(..n)) {
            *o = b;
        }
        n
    }

    /// The endpoint to hand a media thread.
    pub fn endpoint(&self) -> Box<dyn Endpoint> {
        Box::new(ScriptedEndpoint(self.clone()))
    }
}

struct ScriptedEndpoint(Script);

impl Endpoint for ScriptedEndpoint {
    fn socket(&self) -> Option<&TcpStream> {
        None
    }

    fn receive(&mut self, session: &mut Session, end: &mut MediaEnd, now: Instant) {
        let mut state = self.0.lock();
        while let Some(event) = state.events.pop_front() {
            session.handle_platform(event);
        }
        while !state.inbound.is_empty() {
            if session.inbound_room() == 0 {
                session.handle_tick(now);
                if session.inbound_room() == 0 {
                    break;
                }
            }
            let (front, _) = state.inbound.as_slices();
            let n = front.len().min(session.inbound_room());
            session.handle_audio(&front[..n], now);
            state.inbound.drain(..n);
        }
        if state.closed {
            end.link.peer_closed.store(true, Ordering::Release);
        }
    }

    fn send(&mut self, transmit: Transmit, frame: &[u8], _link: &CallLink, _now: Instant) {
        let mut state = self.0.lock();
        match transmit {
            Transmit::Audio { len, .. } => {
                state.sent.extend(&frame[..len]);
                state.frames_sent += 1;
            }
            Transmit::Clear => state.clears += 1,
            Transmit::Notify { marker } => state.notifies.push(marker),
        }
    }

    fn flush(&mut self, _link: &CallLink, _now: Instant) {}

    fn wants_write(&self) -> bool {
        false
    }

    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    fn close(&mut self, link: &CallLink, _now: Instant) {
        link.close_code.store(1000, Ordering::Release);
    }

    fn linger(&mut self, _now: Instant) -> bool {
        true
    }
}
