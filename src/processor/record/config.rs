//! The `record` parameters: which audio, where, in which format.

use std::path::PathBuf;

use crate::processor::ProcessorError;
use crate::processor::template::Piece;
use crate::services::recorder::{DEFAULT_OPUS_BITRATE_PER_CHANNEL, DEFAULT_TEMPLATE, OPUS_BITRATES, OPUS_FEATURE_MISSING, RecordFormat};

/// Which audio goes into the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordChannels {
    /// Mono: the caller's audio.
    Caller,
    /// Mono: what callpipe sends (as written by earlier processors).
    Outbound,
    /// Two channels: left the caller, right what callpipe sends.
    Stereo,
    /// Mono: the saturating sum of the caller and what callpipe sends.
    Mixed,
}

impl RecordChannels {
    /// Parses `"caller"`, `"outbound"`, `"stereo"` or `"mixed"`.
    pub fn parse(text: &str) -> Option<RecordChannels> {
        match text {
            "caller" => Some(RecordChannels::Caller),
            "outbound" => Some(RecordChannels::Outbound),
            "stereo" => Some(RecordChannels::Stereo),
            "mixed" => Some(RecordChannels::Mixed),
            _ => None,
        }
    }

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordChannels::Caller => "caller",
            RecordChannels::Outbound => "outbound",
            RecordChannels::Stereo => "stereo",
            RecordChannels::Mixed => "mixed",
        }
    }

    /// Channels in the file.
    pub fn count(self) -> u16 {
        if self == RecordChannels::Stereo { 2 } else { 1 }
    }
}

/// The `record` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordConfig {
    /// The directory for recordings, created if missing.
    pub dir: PathBuf,
    /// The file name: literal `[A-Za-z0-9._-]` and the placeholders `{call_id}`, `{path}`,
    /// `{start}` (UTC, `YYYYMMDDTHHMMSSZ`), `{rate}` and `{header:NAME}`. Each placeholder's value
    /// is sanitized to `[A-Za-z0-9._-]` (anything else becomes `_`).
    pub template: String,
    /// Which audio to record.
    pub channels: RecordChannels,
    /// The file format; the template must end in its extension.
    pub format: RecordFormat,
    /// The Opus bitrate in bits per second, from 6,000 to 256,000; `None` for 24,000 per channel
    /// (48,000 for stereo). Only for [`RecordFormat::Opus`].
    pub bitrate: Option<u32>,
    /// Where each finished file is uploaded, if anywhere.
    pub upload: Option<crate::call::UploadTarget>,
}

impl RecordConfig {
    /// A WAV recorder's configuration writing into `dir`, with the defaults: the template
    /// `"{call_id}-{start}.wav"`, stereo.
    pub fn new(dir: impl Into<PathBuf>) -> RecordConfig {
        RecordConfig {
            dir: dir.into(),
            template: DEFAULT_TEMPLATE.into(),
            channels: RecordChannels::Stereo,
            format: RecordFormat::Wav,
            bitrate: None,
            upload: None,
        }
    }

    /// The Opus bitrate in use: the configured one or the default for the channel count.
    pub fn opus_bitrate(&self) -> u32 {
        self.bitrate.unwrap_or(DEFAULT_OPUS_BITRATE_PER_CHANNEL * u32::from(self.channels.count()))
    }

    /// Checks that the format is available in this build, that the parsed template ends in
    /// its extension, and the bitrate.
    pub(super) fn check_format(&self, template: &[Piece]) -> Result<(), ProcessorError> {
        let format = self.format;
        let error = |message: String| ProcessorError::Config { processor: "record".into(), message };
        if !format.is_available() {
            return Err(error(OPUS_FEATURE_MISSING.into()));
        }
        let extension = format!(".{}", format.as_str());
        if !matches!(template.last(), Some(Piece::Literal(end)) if end.ends_with(&extension)) {
            return Err(error(format!(
                "template {:?} must end in `{extension}` for format = \"{}\" (e.g. {:?})",
                self.template,
                format.as_str(),
                format.default_template()
            )));
        }
        match (format, self.bitrate) {
            (RecordFormat::Wav, Some(_)) => Err(error("`bitrate` applies to format = \"opus\" only".into())),
            (RecordFormat::Opus, Some(bits)) if !OPUS_BITRATES.contains(&bits) => Err(error(format!(
                "`bitrate` must be between {} and {} bits per second, not {bits}",
                OPUS_BITRATES.start(),
                OPUS_BITRATES.end()
            ))),
            _ => Ok(()),
        }
    }
}
