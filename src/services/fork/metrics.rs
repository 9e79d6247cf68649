//! Counters per fork `name`, for the metrics endpoint.
//!
//! A server's [`super::ForkNet`] holds a [`ForkCounters`] per fork name (the `name` parameter,
//! or the URL's host): every fork of that name, in every call and route, adds to the same
//! counters. The registry's lock is taken only when a fork is prepared (off the media thread)
//! and when a report reads it ([`super::ForkNet::totals`]). The counters are atomics, updated with relaxed adds
//! by the forks' tasks on the fork runtime: the media thread never touches them (the frames it
//! drops on a full ring are counted by the task, from the fork's own drop counter).
//!
//! Names come from the configuration, so the number of series is bounded by it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Why a fork's connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Disconnect {
    /// The target closed with 1000: the fork stops for the rest of the call.
    TargetClosed,
    /// The connection failed or the target closed with another code: the fork reconnects.
    Error,
    /// The call ended and the fork closed.
    CallEnded,
}

/// The counters of the forks of one name. Updated by the forks' tasks.
#[derive(Debug, Default)]
pub struct ForkCounters {
    connects: AtomicU64,
    connect_failures: AtomicU64,
    disconnects_target_closed: AtomicU64,
    disconnects_error: AtomicU64,
    disconnects_call_ended: AtomicU64,
    frames_sent: AtomicU64,
    bytes_sent: AtomicU64,
    frames_dropped: AtomicU64,
    text_replies: AtomicU64,
    binary_replies: AtomicU64,
    reply_audio_dropped_us: AtomicU64,
}

/// The values of one name's [`ForkCounters`] at one moment (each read on its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForkTotals {
    /// Upgrades that succeeded.
    pub connects: u64,
    /// Connection attempts that failed (TCP, TLS, the upgrade, or the connect timeout).
    pub connect_failures: u64,
    /// Connections the target closed with 1000.
    pub disconnects_target_closed: u64,
    /// Connections lost: an error, or a close with another code.
    pub disconnects_error: u64,
    /// Connections the fork closed because the call ended.
    pub disconnects_call_ended: u64,
    /// Binary messages sent (each `frame_ms` of audio).
    pub frames_sent: u64,
    /// Bytes of those messages' payloads (L16 samples or Opus packets).
    pub bytes_sent: u64,
    /// Frames of 20 ms dropped because the fork's ring was full.
    pub frames_dropped: u64,
    /// Text messages received from targets.
    pub text_replies: u64,
    /// Binary messages received from targets.
    pub binary_replies: u64,
    /// Reply audio dropped because more than the backlog's 60 s waited, in microseconds.
    pub reply_audio_dropped_us: u64,
}

impl ForkCounters {
    pub(super) fn connected(&self) {
        self.connects.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn connect_failed(&self) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn disconnected(&self, why: Disconnect) {
        let counter = match why {
            Disconnect::TargetClosed => &self.disconnects_target_closed,
            Disconnect::Error => &self.disconnects_error,
            Disconnect::CallEnded => &self.disconnects_call_ended,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn sent(&self, bytes: usize) {
        self.frames_sent.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(super) fn dropped(&self, frames: u64) {
        self.frames_dropped.fetch_add(frames, Ordering::Relaxed);
    }

    pub(super) fn reply(&self, binary: bool) {
        let counter = if binary { &self.binary_replies } else { &self.text_replies };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `samples` of reply audio at `rate` Hz dropped.
    pub(super) fn reply_audio_dropped(&self, samples: usize, rate: u32) {
        if samples > 0 {
            let us = samples as u64 * 1_000_000 / u64::from(rate.max(1));
            self.reply_audio_dropped_us.fetch_add(us, Ordering::Relaxed);
        }
    }

    /// The current values.
    pub fn totals(&self) -> ForkTotals {
        let r = Ordering::Relaxed;
        ForkTotals {
            connects: self.connects.load(r),
            connect_failures: self.connect_failures.load(r),
            disconnects_target_closed: self.disconnects_target_closed.load(r),
            disconnects_error: self.disconnects_error.load(r),
            disconnects_call_ended: self.disconnects_call_ended.load(r),
            frames_sent: self.frames_sent.load(r),
            bytes_sent: self.bytes_sent.load(r),
            frames_dropped: self.frames_dropped.load(r),
            text_replies: self.text_replies.load(r),
            binary_replies: self.binary_replies.load(r),
            reply_audio_dropped_us: self.reply_audio_dropped_us.load(r),
        }
    }
}

/// Counters by fork name.
#[derive(Debug, Default)]
pub(super) struct Registry {
    names: Mutex<BTreeMap<String, Arc<ForkCounters>>>,
}

impl Registry {
    /// The counters of forks named `name`, registered on first use. Takes a lock: call it when
    /// preparing a fork, never per frame.
    pub(super) fn counters(&self, name: &str) -> Arc<ForkCounters> {
        // A panic while the lock was held cannot leave the map half-changed (an insert either
        // happened or not), so a poisoned lock is used as is.
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(counters) = names.get(name) {
            return counters.clone();
        }
        let counters = Arc::new(ForkCounters::default());
        names.insert(name.to_owned(), counters.clone());
        counters
    }

    /// Every fork name with its counters' values, by name.
    pub(super) fn totals(&self) -> Vec<(String, ForkTotals)> {
        let names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        names.iter().map(|(name, counters)| (name.clone(), counters.totals())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_set_of_counters_per_name() {
        let registry = Registry::default();
        let a = registry.counters("metrics-test-a");
        let again = registry.counters("metrics-test-a");
        assert!(Arc::ptr_eq(&a, &again));
        a.connected();
        again.sent(320);
        again.sent(320);
        a.disconnected(Disconnect::Error);
        a.disconnected(Disconnect::TargetClosed);
        a.reply(true);
        a.reply(false);
        a.reply(false);
        a.dropped(3);
        a.reply_audio_dropped(8000, 16_000);
        registry.counters("metrics-test-b").connect_failed();
        let totals: BTreeMap<String, ForkTotals> = registry.totals().into_iter().collect();
        let a = totals["metrics-test-a"];
        assert_eq!(
            a,
            ForkTotals {
                connects: 1,
                connect_failures: 0,
                disconnects_target_closed: 1,
                disconnects_error: 1,
                disconnects_call_ended: 0,
                frames_sent: 2,
                bytes_sent: 640,
                frames_dropped: 3,
                text_replies: 2,
                binary_replies: 1,
                reply_audio_dropped_us: 500_000,
            }
        );
        assert_eq!(totals["metrics-test-b"].connect_failures, 1);
    }
}
