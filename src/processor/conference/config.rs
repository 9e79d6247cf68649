//! The `conference` parameters: the member's role, and the settings the first member's route
//! sets for the whole conference; the rules for a conference's name.

use std::path::PathBuf;

use crate::processor::record::RecordFormat;

/// The longest conference name.
pub const MAX_NAME_LEN: usize = 64;

/// A member's part in the conference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Heard by the others (the default).
    #[default]
    Speaker,
    /// Hears the conference; the others do not hear it.
    Listener,
}

impl Role {
    /// Parses `"speaker"` or `"listener"`.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "speaker" => Some(Role::Speaker),
            "listener" => Some(Role::Listener),
            _ => None,
        }
    }

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Speaker => "speaker",
            Role::Listener => "listener",
        }
    }
}

/// What the conference records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConferenceRecording {
    /// Nothing (the default).
    #[default]
    Off,
    /// One file: the sum of every member.
    Mixed,
    /// One file per member: what it contributed.
    Tracks,
    /// Both.
    Both,
}

impl ConferenceRecording {
    /// Parses `"off"`, `"mixed"`, `"tracks"` or `"both"`.
    pub fn parse(text: &str) -> Option<ConferenceRecording> {
        match text {
            "off" => Some(ConferenceRecording::Off),
            "mixed" => Some(ConferenceRecording::Mixed),
            "tracks" => Some(ConferenceRecording::Tracks),
            "both" => Some(ConferenceRecording::Both),
            _ => None,
        }
    }

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConferenceRecording::Off => "off",
            ConferenceRecording::Mixed => "mixed",
            ConferenceRecording::Tracks => "tracks",
            ConferenceRecording::Both => "both",
        }
    }

    pub(super) fn mixed(self) -> bool {
        matches!(self, ConferenceRecording::Mixed | ConferenceRecording::Both)
    }

    pub(super) fn tracks(self) -> bool {
        matches!(self, ConferenceRecording::Tracks | ConferenceRecording::Both)
    }
}

/// What the first member's route sets for the whole conference; later members' routes must
/// agree (or their calls are refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConferenceSettings {
    /// The rate the conference mixes at: 8000, 16000, 24000 or 48000. Default 16000.
    pub rate: u32,
    /// Automatic gain on each listener's mix. Default off.
    pub agc: bool,
    /// What to record. Default nothing.
    pub record: ConferenceRecording,
    /// Where recordings go (required when recording).
    pub record_dir: Option<PathBuf>,
    /// The recordings' format. Default WAV.
    pub format: RecordFormat,
    /// The most members at once; more are refused. Default 200.
    pub max_members: usize,
    /// Where the finished recordings (mix and tracks) are uploaded, if anywhere.
    pub upload: Option<crate::call::UploadTarget>,
}

impl Default for ConferenceSettings {
    fn default() -> ConferenceSettings {
        ConferenceSettings {
            rate: 16000,
            agc: false,
            record: ConferenceRecording::Off,
            record_dir: None,
            format: RecordFormat::Wav,
            max_members: 200,
            upload: None,
        }
    }
}

/// The `conference` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConferenceConfig {
    /// The conference's name: a template with `{call_id}`, `{path}` and `{header:NAME}` (the
    /// metadata's headers), e.g. `"{header:room}"`. Filled, it must be 1 to 64
    /// characters of `[A-Za-z0-9._-]`, or the call is refused.
    pub name: String,
    /// This member's role. Default speaker.
    pub role: Role,
    /// The conference's settings.
    pub settings: ConferenceSettings,
}

impl ConferenceConfig {
    /// A speaker joining `name` with the default settings.
    pub fn new(name: impl Into<String>) -> ConferenceConfig {
        ConferenceConfig { name: name.into(), role: Role::Speaker, settings: ConferenceSettings::default() }
    }
}

/// Why a conference name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Empty, or longer than the limit.
    #[error("the conference name must be 1 to {MAX_NAME_LEN} characters, not {0}")]
    Length(usize),
    /// A character that cannot go into a file name or a URL.
    #[error("the conference name {0:?} may only hold A-Z, a-z, 0-9, '.', '_' and '-'")]
    Character(String),
}

/// Whether a filled-in conference name is usable (it goes into file names and URLs).
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(NameError::Length(name.len()));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err(NameError::Character(name.to_owned()));
    }
    Ok(())
}
