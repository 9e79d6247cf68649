//! How events move through a session: the processors' and the session's own wait a pass for the
//! other processors to see them, then go out through [`Session::poll_event`]; the platform's
//! reach the processors only. Every buffer here is bounded: a full one drops and counts. (The
//! timing is in the [module docs](super#events).)

use std::collections::VecDeque;

use super::{Session, SessionStats};
use crate::bounded::GrowOnce;
use crate::processor::{EVENTS_TO_START, Event};

/// Events kept for the next pass (platform events and processors' emitted events).
const MAX_PENDING_EVENTS: usize = 64;

impl Session {
    /// The next event the processors emitted.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events_out.pop_front()
    }

    /// An event for the call's event stream only (the processors do not see it), behind those
    /// already waiting to go out: the connection's own notes, such as a `notify` the platform
    /// has played. A full queue drops and counts it.
    pub fn publish_event(&mut self, event: Event) {
        publish(&mut self.events_out, &mut self.stats, event);
    }

    /// An event of the session's own: to the processors at the next pass, and out.
    pub(super) fn emit_own(&mut self, event: Event) {
        if self.events_out.len() < MAX_PENDING_EVENTS {
            self.events_out.room_for_one_from(EVENTS_TO_START, MAX_PENDING_EVENTS);
            self.events_out.push_back(event.clone());
        } else {
            self.stats.dropped_requests += 1;
        }
        self.push_event(None, event);
    }

    pub(super) fn push_event(&mut self, origin: Option<usize>, event: Event) {
        if self.events_next.len() < MAX_PENDING_EVENTS {
            self.events_next.room_for_one_from(EVENTS_TO_START, MAX_PENDING_EVENTS);
            self.events_next.push((origin, event));
        } else {
            self.stats.dropped_requests += 1;
        }
    }

    /// Moves the events the processors have just seen out of `events_now`: the processors'
    /// own go out (through [`poll_event`](Session::poll_event)), the platform's and the
    /// session's (which went out when they arrived, or never go out) end here.
    pub(super) fn publish_seen_events(&mut self) {
        let Session { events_now, events_out, stats, .. } = self;
        for (origin, event) in events_now.drain(..) {
            if origin.is_some() {
                publish(events_out, stats, event);
            }
        }
    }

    /// At the end of the call: the processors' events no pass will show them go out now.
    pub(super) fn publish_pending_events(&mut self) {
        std::mem::swap(&mut self.events_now, &mut self.events_next);
        self.publish_seen_events();
    }

    /// Takes the events the processors emitted in this pass. Moved, never copied: each event
    /// waits in `events_next` for the other processors, and goes out after they have seen it
    /// (see `publish_seen_events`).
    pub(super) fn take_requested_events(&mut self) {
        let Session { requests, events_next, events_out, stats, .. } = self;
        for (origin, event) in requests.events.drain(..) {
            if events_next.len() < MAX_PENDING_EVENTS {
                events_next.room_for_one_from(EVENTS_TO_START, MAX_PENDING_EVENTS);
                events_next.push((origin, event));
            } else {
                // No room for the processors: it goes out at once, unseen.
                stats.dropped_requests += 1;
                publish(events_out, stats, event);
            }
        }
    }
}

/// Queues `event` for [`Session::poll_event`]; when that queue is full it is dropped here and
/// counted (the one case in which the media thread frees an event's data).
fn publish(events_out: &mut VecDeque<Event>, stats: &mut SessionStats, event: Event) {
    if events_out.len() < MAX_PENDING_EVENTS {
        events_out.room_for_one_from(EVENTS_TO_START, MAX_PENDING_EVENTS);
        events_out.push_back(event);
    } else {
        stats.dropped_requests += 1;
    }
}
