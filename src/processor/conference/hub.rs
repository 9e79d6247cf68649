//! A server's conferences by name: admission, the media thread each one lives on, and what the
//! control API shows and changes. Locked only when a member joins or leaves and when the API
//! asks; never on a media thread.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, SystemTime};

use super::{Admitted, ConferenceSettings, Join, MemberState, Role};
use crate::call::CallId;
use crate::processor::record::{DEFAULT_OPUS_BITRATE_PER_CHANNEL, RecordingOutcome};
use crate::processor::template::{sanitize, utc_stamp};
use crate::services::recorder::{FileSpec, Recorder, Recording};

/// Why a member could not join.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The conference has `max_members` members already.
    #[error("conference {name} is full ({max} members)")]
    Full {
        /// The conference.
        name: String,
        /// Its limit.
        max: usize,
    },
    /// The member's route asks for other settings than the conference runs with.
    #[error("conference {name} runs with other settings ({running}) than this route asks for ({asked})")]
    Settings {
        /// The conference.
        name: String,
        /// Its settings.
        running: String,
        /// The route's.
        asked: String,
    },
    /// A recording could not be opened.
    #[error("conference {name}: {error}")]
    Recording {
        /// The conference.
        name: String,
        /// What failed.
        error: String,
    },
}

/// Counters over every conference of a server.
#[derive(Debug, Default)]
pub struct ConferenceStats {
    /// Conferences started.
    pub started: AtomicU64,
    /// Members admitted.
    pub joined: AtomicU64,
    /// Members refused (full, or settings that disagree).
    pub refused: AtomicU64,
}

/// One conference, shared by the hub, its mixer and the control API.
#[derive(Debug)]
pub struct ConferenceState {
    name: String,
    settings: ConferenceSettings,
    started: SystemTime,
    /// The media thread its members and mixer live on, once placed.
    home: Mutex<Option<usize>>,
    members: Mutex<Vec<Arc<MemberState>>>,
    joined_total: AtomicU64,
    closed: AtomicBool,
    mixed: Mutex<Option<(PathBuf, mpsc::Receiver<RecordingOutcome>)>>,
    event_url: Option<String>,
}

impl ConferenceState {
    /// The conference's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its settings.
    pub fn settings(&self) -> &ConferenceSettings {
        &self.settings
    }

    /// When its first member joined.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// The media thread it lives on: the media pool places it there with its first member and
    /// puts every later member on the same thread.
    pub fn home(&self) -> &Mutex<Option<usize>> {
        &self.home
    }

    /// Whether its last member has left: this instance takes no more members, and its mixer
    /// ends.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The route `event_url` of the member that started it, for the conference's own events.
    pub fn event_url(&self) -> Option<&str> {
        self.event_url.as_deref()
    }

    /// Members now.
    pub fn members(&self) -> Vec<Arc<MemberState>> {
        lock(&self.members).clone()
    }

    /// Members that ever joined.
    pub fn joined_total(&self) -> u64 {
        self.joined_total.load(Ordering::Relaxed)
    }

    /// The mixed recording's file, if it records one.
    pub fn mixed_path(&self) -> Option<PathBuf> {
        lock(&self.mixed).as_ref().map(|(path, _)| path.clone())
    }

    /// Waits up to `timeout` for the mixed recording to be finalized (after the conference has
    /// closed and its mixer ended), and says how it went. Blocking: call it off the runtime.
    pub fn wait_for_mixed(&self, timeout: Duration) -> Option<RecordingOutcome> {
        let guard = lock(&self.mixed);
        let (_, outcomes) = guard.as_ref()?;
        outcomes.recv_timeout(timeout).ok()
    }

    /// A summary for the control API.
    pub fn summary(&self) -> ConferenceSummary {
        ConferenceSummary {
            name: self.name.clone(),
            rate: self.settings.rate,
            agc: self.settings.agc,
            record: self.settings.record.as_str(),
            started: self.started,
            members: lock(&self.members).iter().map(|m| MemberView::of(m)).collect(),
            joined_total: self.joined_total(),
            recording: self.mixed_path(),
        }
    }
}

/// A conference as the control API shows it.
#[derive(Debug, Clone)]
pub struct ConferenceSummary {
    /// Its name.
    pub name: String,
    /// Its mixing rate.
    pub rate: u32,
    /// Whether the AGC is on.
    pub agc: bool,
    /// What it records.
    pub record: &'static str,
    /// When it started.
    pub started: SystemTime,
    /// Its members now.
    pub members: Vec<MemberView>,
    /// Members that ever joined.
    pub joined_total: u64,
    /// Its mixed recording, if any.
    pub recording: Option<PathBuf>,
}

/// A member as the control API shows it.
#[derive(Debug, Clone)]
pub struct MemberView {
    /// Its call id.
    pub call_id: CallId,
    /// Its call's rate.
    pub rate: u32,
    /// Speaker or listener now.
    pub role: Role,
    /// Whether it is muted.
    pub muted: bool,
    /// When it joined.
    pub joined: SystemTime,
    /// Frames it could not hand to the mixer, passes it had no mix, frames skipped to keep
    /// its delay.
    pub dropped_up: u64,
    /// See `dropped_up`.
    pub missing_down: u64,
    /// See `dropped_up`.
    pub skipped: u64,
}

impl MemberView {
    fn of(m: &MemberState) -> MemberView {
        MemberView {
            call_id: m.call_id.clone(),
            rate: m.rate,
            role: m.role(),
            muted: m.muted(),
            joined: m.joined,
            dropped_up: m.dropped_up.load(Ordering::Relaxed),
            missing_down: m.missing_down.load(Ordering::Relaxed),
            skipped: m.skipped.load(Ordering::Relaxed),
        }
    }
}

/// A member admitted by [`Conferences::admit`], with what its call's connection needs later.
#[derive(Debug)]
pub struct Membership {
    /// The conference.
    pub conference: Arc<ConferenceState>,
    /// The member.
    pub member: Arc<MemberState>,
    /// Whether this member started the conference.
    pub started: bool,
    /// The member's track, when the conference records tracks: its file, its start on the
    /// conference's timeline, and the writer's report once it is final.
    pub track: Option<(PathBuf, Duration, mpsc::Receiver<RecordingOutcome>)>,
}

/// A server's conferences (see `src/processor/conference/hub.rs`).
#[derive(Debug, Default)]
pub struct Conferences {
    live: Mutex<HashMap<String, Arc<ConferenceState>>>,
    /// Where the mixed files and the members' tracks are written.
    recorder: Recorder,
    /// Counters.
    pub stats: ConferenceStats,
}

impl Conferences {
    /// No conferences, recording (when a conference records) with a recorder of their own.
    pub fn new() -> Conferences {
        Conferences::default()
    }

    /// No conferences, recording with `recorder` (the server's).
    pub fn with_recorder(recorder: Recorder) -> Conferences {
        Conferences { recorder, ..Conferences::default() }
    }

    /// Opens a mono recording of a conference for the mixer, with the channel its outcome
    /// comes on.
    fn open(
        &self,
        path: PathBuf,
        settings: &ConferenceSettings,
        name: &str,
    ) -> Result<(Recording, mpsc::Receiver<RecordingOutcome>), JoinError> {
        let (tx, rx) = mpsc::channel();
        let spec =
            FileSpec { path, format: settings.format, channels: 1, rate: settings.rate, opus_bitrate: DEFAULT_OPUS_BITRATE_PER_CHANNEL };
        let recording =
            self.recorder.open(spec, tx).map_err(|error| JoinError::Recording { name: name.to_owned(), error: error.to_string() })?;
        Ok((recording, rx))
    }

    /// Admits a prepared member to the conference it names at `now`, starting the conference
    /// (and its mixed recording) when it is the first. Opens files: call it off the async
    /// runtime. `event_url` is the member's route's, used for the conference's events when it
    /// starts it.
    pub fn admit(&self, join: Join, event_url: Option<&str>, now: SystemTime) -> Result<(Admitted, Membership), JoinError> {
        let Join { name, settings, mut member } = join;
        let mut live = lock(&self.live);
        let (conference, started, mixed) = match live.get(&name) {
            Some(existing) => {
                if existing.settings != settings {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(JoinError::Settings { name, running: describe(&existing.settings), asked: describe(&settings) });
                }
                (existing.clone(), false, None)
            }
            None => {
                let started = now;
                let (recording, mixed_state) = match (&settings.record_dir, settings.record.mixed()) {
                    (Some(dir), true) => {
                        let path = dir.join(format!("{name}-{}.{}", utc_stamp(started), settings.format.as_str()));
                        let (recording, outcomes) = self.open(path.clone(), &settings, &name)?;
                        (Some(recording), Some((path, outcomes)))
                    }
                    _ => (None, None),
                };
                let conference = Arc::new(ConferenceState {
                    name: name.clone(),
                    settings: settings.clone(),
                    started,
                    home: Mutex::new(None),
                    members: Mutex::new(Vec::new()),
                    joined_total: AtomicU64::new(0),
                    closed: AtomicBool::new(false),
                    mixed: Mutex::new(mixed_state),
                    event_url: event_url.map(str::to_owned),
                });
                live.insert(name.clone(), conference.clone());
                self.stats.started.fetch_add(1, Ordering::Relaxed);
                (conference, true, recording)
            }
        };
        let mut members = lock(&conference.members);
        if members.len() >= settings.max_members {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(JoinError::Full { name, max: settings.max_members });
        }
        let track = if settings.record.tracks()
            && let Some(dir) = &settings.record_dir
        {
            let file = format!("{name}-{}-{}.{}", sanitize(&member.state.call_id), utc_stamp(now), settings.format.as_str());
            let (track, outcomes) = self.open(dir.join(&file), &settings, &name)?;
            let offset = now.duration_since(conference.started).unwrap_or_default();
            let path = track.path().to_owned();
            member.track = Some(track);
            Some((path, offset, outcomes))
        } else {
            None
        };
        members.push(member.state.clone());
        drop(members);
        conference.joined_total.fetch_add(1, Ordering::Relaxed);
        self.stats.joined.fetch_add(1, Ordering::Relaxed);
        let membership = Membership { conference: conference.clone(), member: member.state.clone(), started, track };
        Ok((Admitted { conference, member, mixed }, membership))
    }

    /// Takes a member out after its call has ended. Returns the conference when that was its last
    /// member: it is closed then (a new member with the same name starts a new one).
    pub fn leave(&self, membership: &Membership) -> Option<Arc<ConferenceState>> {
        let mut live = lock(&self.live);
        let conference = &membership.conference;
        let mut members = lock(&conference.members);
        members.retain(|m| !Arc::ptr_eq(m, &membership.member));
        if !members.is_empty() {
            return None;
        }
        drop(members);
        conference.closed.store(true, Ordering::Release);
        if live.get(conference.name()).is_some_and(|c| Arc::ptr_eq(c, conference)) {
            live.remove(conference.name());
        }
        Some(conference.clone())
    }

    /// The conference named `name`, if it is live.
    pub fn get(&self, name: &str) -> Option<Arc<ConferenceState>> {
        lock(&self.live).get(name).cloned()
    }

    /// Every live conference, by name.
    pub fn list(&self) -> Vec<Arc<ConferenceState>> {
        let mut all: Vec<_> = lock(&self.live).values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Live conferences and their members, for metrics.
    pub fn counts(&self) -> (usize, usize) {
        let live = lock(&self.live);
        (live.len(), live.values().map(|c| lock(&c.members).len()).sum())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn describe(s: &ConferenceSettings) -> String {
    format!(
        "rate {}, agc {}, record {}{}, max_members {}",
        s.rate,
        s.agc,
        s.record.as_str(),
        s.record_dir.as_ref().map(|d| format!(" in {}", d.display())).unwrap_or_default(),
        s.max_members
    )
}
