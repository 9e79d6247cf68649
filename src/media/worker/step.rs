//! One call's visit: what a media thread does with a call when it is due.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use ringbuf::traits::{Consumer, Observer, Producer};

use super::RelayFeed;
use crate::media::endpoint::Endpoint;
use crate::media::link::{CallLink, MediaEnd};
use crate::protocol::MAX_FRAME_BYTES;
use crate::session::Session;

/// One call's work for one visit, exactly as a media thread runs it: what the endpoint reads into
/// the session, control commands, the passes that are due, what they released out through the
/// endpoint, one write (more when a late visit releases several frames). Returns whether the call
/// task is to be woken: processor events went to it, or commands were taken from its control ring.
/// Allocation-free (see `tests/no_alloc.rs`).
pub fn step(session: &mut Session, end: &mut MediaEnd, endpoint: &mut dyn Endpoint, now: Instant) -> bool {
    endpoint.receive(session, end, now);
    // Commands sent just before the end still apply (a stream started then ends with reason
    // `hangup`, and says so).
    let mut commands = false;
    while let Some(command) = end.control_in.try_pop() {
        commands = true;
        session.handle_control(command);
    }
    let passes = session.passes();
    session.handle_tick(now);
    let events = transmit(session, end, endpoint, now);
    endpoint.flush(&end.link, now);
    if session.passes() != passes || events {
        end.link.stats.publish(&session.stats());
    }
    if session.hangup_requested() && !end.link.hangup.load(Ordering::Acquire) {
        // A processor asked (e.g. a fork target's `hangup` command): the next visit finishes
        // the call, as after the control API's hang-up.
        end.link.hang_up(crate::media::link::Hangup::Processor);
    }
    // A call task whose control ring was full holds a command until it has room: the commands
    // taken now made room, so it is woken too (commands are rare).
    events || commands
}

/// Hands everything the session released to the endpoint, and the processors' events to the
/// call task's ring, as many as it has room for: the rest wait in the session (which bounds
/// them) for the next visit, by when the woken task has emptied the ring. Returns whether
/// events went to the ring.
pub(super) fn transmit(session: &mut Session, end: &mut MediaEnd, endpoint: &mut dyn Endpoint, now: Instant) -> bool {
    FRAME.with_borrow_mut(|frame| {
        while let Some(transmit) = session.poll_transmit(frame) {
            endpoint.send(transmit, frame, &end.link, now);
        }
    });
    let mut events = false;
    while !end.events_out.is_full() {
        let Some(event) = session.poll_event() else { break };
        events = true;
        if end.events_out.try_push(event).is_err() {
            end.link.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    events
}

thread_local! {
    /// Where a released frame is encoded before the endpoint frames it: one per thread, so
    /// that a visit neither zeroes a frame on its stack nor allocates.
    static FRAME: std::cell::RefCell<[u8; MAX_FRAME_BYTES]> = const { std::cell::RefCell::new([0; MAX_FRAME_BYTES]) };
}

/// At a call's end: the events its session still holds (the ring was full) go to the link,
/// for the call task to publish after the ring's. The call is over, so this may allocate, as
/// freeing its buffers does.
pub(super) fn hand_over_last_events(session: &mut Session, end: &mut MediaEnd) {
    let mut rest = Vec::new();
    while let Some(event) = session.poll_event() {
        rest.push(event);
    }
    if !rest.is_empty()
        && let Ok(mut last) = end.link.last_events.lock()
    {
        last.extend(rest);
    }
}

/// Queues a call's task for the relay to wake; wakes it directly if the relay's ring is full.
pub(super) fn wake(relay: &mut RelayFeed, link: &Arc<CallLink>) {
    if let Err(link) = relay.ring.try_push(link.clone()) {
        link.waker.wake();
    }
}
