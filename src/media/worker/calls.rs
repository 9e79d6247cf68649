//! What a media thread holds: the calls handed to it, its commands, its counters, and the
//! connections it keeps while they close.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};

use atomic_waker::AtomicWaker;
use ringbuf::HeapProd;

use crate::media::endpoint::Endpoint;
use crate::media::link::{CallLink, MediaEnd};
use crate::media::poller::Poller;
use crate::processor::Admitted;
use crate::session::Session;
use crate::stats::Histogram;

/// A call handed to a media thread.
pub struct NewCall {
    /// The call's media state, prepared.
    pub session: Session,
    /// The media thread's ends of the call's rings.
    pub end: MediaEnd,
    /// The call's connection: from now on only this thread reads and writes it.
    pub endpoint: Box<dyn Endpoint>,
    /// The conference the call joins, admitted: its member goes to the conference's mixer on
    /// this thread (the pool places the call on the conference's thread).
    pub conference: Option<Admitted>,
}

impl NewCall {
    /// A call that joins no conference.
    pub fn new(session: Session, end: MediaEnd, endpoint: Box<dyn Endpoint>) -> NewCall {
        NewCall { session, end, endpoint, conference: None }
    }
}

/// Messages to a media thread.
pub(crate) enum Command {
    Add(Box<NewCall>),
    Shutdown,
}

/// Counters shared by all media threads.
#[derive(Debug, Default)]
pub struct MediaStats {
    /// How late each slot's processing started after its scheduled instant.
    pub tick_lateness: Histogram,
    /// Ticks given up because a thread fell more than `max_catchup` behind.
    pub skipped_ticks: AtomicU64,
    /// Calls currently on media threads.
    pub calls: AtomicUsize,
    /// Conference mixers currently on media threads.
    pub mixers: AtomicUsize,
    /// Connections closing (their close frame sent, the peer's answer awaited).
    pub closing: AtomicUsize,
    /// Sends made through io_uring (`[media] io = "io_uring"`).
    pub batched_sends: AtomicU64,
    /// The `io_uring_enter` system calls that carried them.
    pub batch_submits: AtomicU64,
    /// Slots the threads ran: each a wake-up for what was due in it (a thread watching sockets
    /// does not wake for a slot with nothing due).
    pub slots: AtomicU64,
}

/// The media thread's side of its relay.
pub(crate) struct RelayFeed {
    pub ring: HeapProd<Arc<CallLink>>,
    pub waker: Arc<AtomicWaker>,
}

pub(super) struct MediaCall {
    pub(super) session: Session,
    pub(super) end: MediaEnd,
    pub(super) endpoint: Box<dyn Endpoint>,
    /// Whether the socket is watched for writability too.
    pub(super) writable: bool,
    /// Whether the socket is in the poller (if not, every visit reads it).
    pub(super) watched: bool,
    /// Whether the call is in the list of sends the thread makes next (io_uring).
    pub(super) send_queued: bool,
    /// The slot it is due in next (entries of other slots are stale).
    pub(super) due_slot: u64,
}

/// A finished call's connection, lingering until the peer has its close frame.
pub(super) struct Closing {
    pub(super) endpoint: Box<dyn Endpoint>,
    pub(super) writable: bool,
}

impl MediaCall {
    /// Watches the socket (under `key`) for writability while bytes wait for it, and only then.
    pub(super) fn watch_writes(&mut self, poller: &Poller, key: usize) {
        let want = self.endpoint.wants_write();
        if want != self.writable
            && let Some(socket) = self.endpoint.socket()
            && poller.modify(socket, key, want).is_ok()
        {
            self.writable = want;
        }
    }
}
