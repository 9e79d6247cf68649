//! The recording file formats: WAV, and Ogg/Opus in builds with the `opus` feature.

/// The default file name template for WAV.
pub const DEFAULT_TEMPLATE: &str = "{call_id}-{start}.wav";

/// The default file name template for Opus.
pub const DEFAULT_OPUS_TEMPLATE: &str = "{call_id}-{start}.opus";

/// The default Opus bitrate per channel, in bits per second: speech at any of the call rates
/// (24 kb/s mono, 48 kb/s stereo).
pub const DEFAULT_OPUS_BITRATE_PER_CHANNEL: u32 = 24_000;

/// The Opus bitrates accepted, in bits per second for the whole stream.
pub const OPUS_BITRATES: std::ops::RangeInclusive<u32> = 6_000..=256_000;

/// The error for an Opus recording in a build without the `opus` feature.
pub const OPUS_FEATURE_MISSING: &str = "callpipe was built without the `opus` feature; rebuild with --features opus";

/// The file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordFormat {
    /// 16-bit PCM WAV at the call's rate.
    #[default]
    Wav,
    /// Ogg/Opus at the call's rate (builds with the `opus` feature only).
    Opus,
}

impl RecordFormat {
    /// Parses `"wav"` or `"opus"`.
    pub fn parse(text: &str) -> Option<RecordFormat> {
        match text {
            "wav" => Some(RecordFormat::Wav),
            "opus" => Some(RecordFormat::Opus),
            _ => None,
        }
    }

    /// The configuration name, which is also the file extension.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordFormat::Wav => "wav",
            RecordFormat::Opus => "opus",
        }
    }

    /// The format a file name template's extension names: `.opus` is Opus, anything else WAV.
    pub fn from_template(template: &str) -> RecordFormat {
        if template.ends_with(".opus") { RecordFormat::Opus } else { RecordFormat::Wav }
    }

    /// The default file name template.
    pub fn default_template(self) -> &'static str {
        match self {
            RecordFormat::Wav => DEFAULT_TEMPLATE,
            RecordFormat::Opus => DEFAULT_OPUS_TEMPLATE,
        }
    }

    /// Whether this build can write the format (Opus needs the `opus` feature).
    pub fn is_available(self) -> bool {
        self == RecordFormat::Wav || cfg!(feature = "opus")
    }
}
