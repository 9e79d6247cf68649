//! A server's processor times: one histogram of nanoseconds per processor type, which every
//! pipeline of that server records into (see `processor/timing.rs`) and `/metrics` reads.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::stats::Histogram;

/// A server's processor times, one histogram of nanoseconds per processor type.
#[derive(Debug, Default)]
pub struct Timings {
    by_type: Mutex<BTreeMap<&'static str, Arc<Histogram>>>,
}

impl Timings {
    /// The histogram of processor type `name`, registered on first use. Takes a lock: call it
    /// when building a pipeline, never per frame.
    pub fn histogram(&self, name: &'static str) -> Arc<Histogram> {
        // A panic while the lock was held cannot leave the map half-changed (an insert either
        // happened or not), so a poisoned lock is used as is.
        let mut by_type = self.by_type.lock().unwrap_or_else(PoisonError::into_inner);
        by_type.entry(name).or_default().clone()
    }

    /// Every registered type with its histogram, by name.
    pub fn snapshot(&self) -> Vec<(&'static str, Arc<Histogram>)> {
        let by_type = self.by_type.lock().unwrap_or_else(PoisonError::into_inner);
        by_type.iter().map(|(name, histogram)| (*name, histogram.clone())).collect()
    }
}
