//! A member as the rest of the server sees it: its state (flags the control API sets, counters
//! the media thread keeps), the mixer's ends of its rings, and the steps from a prepared member
//! to an admitted one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use ringbuf::{HeapCons, HeapProd};

use super::{ConferenceSettings, ConferenceState, Recording, Role};
use crate::call::CallId;

/// One member as the control API and the mixer see it: flags the API sets and counters the
/// member's pass and the mixer keep (all atomics; the media thread never locks).
#[derive(Debug)]
pub struct MemberState {
    /// The member's call id.
    pub call_id: CallId,
    /// The member's call rate.
    pub rate: u32,
    /// When it joined.
    pub joined: SystemTime,
    pub(super) muted: AtomicBool,
    pub(super) listen_only: AtomicBool,
    pub(super) left: AtomicBool,
    /// Frames the member could not hand to the mixer (its ring was full).
    pub dropped_up: AtomicU64,
    /// Passes in which no mixed frame was waiting for the member.
    pub missing_down: AtomicU64,
    /// Frames the mixer skipped to keep the member's delay at one frame (after a pass that ran
    /// twice to make up a backlog).
    pub skipped: AtomicU64,
}

impl MemberState {
    pub(super) fn new(call_id: CallId, rate: u32, role: Role) -> MemberState {
        MemberState {
            call_id,
            rate,
            joined: SystemTime::now(),
            muted: AtomicBool::new(false),
            listen_only: AtomicBool::new(role == Role::Listener),
            left: AtomicBool::new(false),
            dropped_up: AtomicU64::new(0),
            missing_down: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// Whether the others hear it now.
    pub fn speaking(&self) -> bool {
        !self.muted.load(Ordering::Relaxed) && !self.listen_only.load(Ordering::Relaxed)
    }

    /// Whether it is muted.
    pub fn muted(&self) -> bool {
        self.muted.load(Ordering::Relaxed)
    }

    /// Mutes or unmutes it (from its next pass).
    pub fn set_muted(&self, on: bool) {
        self.muted.store(on, Ordering::Relaxed);
    }

    /// Its role now.
    pub fn role(&self) -> Role {
        if self.listen_only.load(Ordering::Relaxed) { Role::Listener } else { Role::Speaker }
    }

    /// Makes it listen-only, or a speaker again (from its next pass).
    pub fn set_role(&self, role: Role) {
        self.listen_only.store(role == Role::Listener, Ordering::Relaxed);
    }

    /// Whether its call has ended.
    pub fn has_left(&self) -> bool {
        self.left.load(Ordering::Acquire)
    }
}

/// The mixer's side of one member: the far ends of its rings.
pub struct MixerMember {
    /// The member.
    pub state: Arc<MemberState>,
    pub(super) up: HeapCons<i16>,
    pub(super) down: HeapProd<i16>,
    /// The member's track, when the conference records tracks.
    pub(super) track: Option<Recording>,
}

impl std::fmt::Debug for MixerMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MixerMember").field("call_id", &self.state.call_id).finish_non_exhaustive()
    }
}

/// A member on its way to its conference: what [`Processor::take_conference_join`](crate::processor::Processor::take_conference_join) hands the
/// server after preparation. [`Conferences::admit`](super::Conferences::admit) turns it into an [`Admitted`].
#[derive(Debug)]
pub struct Join {
    /// The filled-in conference name.
    pub name: String,
    /// The settings the member's route asks for.
    pub settings: ConferenceSettings,
    /// The mixer's side of the member.
    pub member: MixerMember,
}

/// A member admitted to a conference: it goes to the conference's media thread with its call.
#[derive(Debug)]
pub struct Admitted {
    /// The conference.
    pub conference: Arc<ConferenceState>,
    /// The mixer's side of the member (with its track, when the conference records tracks).
    pub member: MixerMember,
    /// When the member made the conference: its mixed recording, for the new mixer.
    pub mixed: Option<Recording>,
}
