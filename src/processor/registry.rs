//! Building processors by name from a route's configuration.
//!
//! A route lists processors as TOML tables such as `{ type = "echo", delay_ms = 200 }`. The
//! [`ProcessorRegistry`] maps each `type` to a [`Factory`]; applications embedding callpipe
//! register their own types next to the built-ins. Specs are checked once when the configuration
//! loads, so a bad parameter is a start-up error, not a failed call.

use crate::call::BargeInMode;
use crate::protocol::{DtmfDigit, SampleRate};
use std::collections::BTreeMap;
use std::sync::Arc;

use super::{
    Conference, ConferenceConfig, ConferenceRecording, ConferenceRole, ConferenceSettings, Denoise, DenoiseConfig, DtmfDetect,
    DtmfDetectConfig, DtmfSend, DtmfSendConfig, Echo, Fork, ForkCodec, ForkConfig, ForkReplies, ForkSend, Input, InputConfig, Pipeline,
    Play, PlayConfig, Processor, ProcessorError, Record, RecordChannels, RecordConfig, RecordFormat, Resample, Talk, TalkConfig, Vad,
    VadConfig,
};

/// The type name of the built-in wrapper that runs processors at another rate.
const RESAMPLE: &str = "resample";

/// One processor in a route: its type and the rest of its TOML table as parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorSpec {
    /// The registered type name, e.g. `"echo"`.
    pub kind: String,
    /// Every other key of the table.
    pub params: toml::Table,
}

impl ProcessorSpec {
    /// A spec from a TOML table with a `type` key.
    pub fn from_table(mut table: toml::Table) -> Result<ProcessorSpec, ProcessorError> {
        match table.remove("type") {
            Some(toml::Value::String(kind)) => Ok(ProcessorSpec { kind, params: table }),
            _ => Err(ProcessorError::Config { processor: "?".into(), message: "every processor needs a string `type`".into() }),
        }
    }
}

/// Makes one processor instance from its parameters.
pub type Factory = Arc<dyn Fn(&toml::Table) -> Result<Box<dyn Processor>, ProcessorError> + Send + Sync>;

/// The processor types a server can build.
#[derive(Clone)]
pub struct ProcessorRegistry {
    factories: BTreeMap<String, Factory>,
}

impl ProcessorRegistry {
    /// A registry with no types.
    pub fn empty() -> ProcessorRegistry {
        ProcessorRegistry { factories: BTreeMap::new() }
    }

    /// A registry with callpipe's built-in processors.
    pub fn with_builtins() -> ProcessorRegistry {
        let mut registry = ProcessorRegistry::empty();
        registry.register("echo", |params| {
            let p = Params::new("echo", params);
            p.only(&["delay_ms"])?;
            let delay_ms = p.u32_or("delay_ms", 0)?;
            Ok(Box::new(Echo::new(delay_ms)?))
        });
        registry.register("dtmf_detect", |params| {
            let p = Params::new("dtmf_detect", params);
            p.only(&["min_duration_ms", "merge_window_ms", "mute", "level_floor_dbfs"])?;
            let d = DtmfDetectConfig::default();
            Ok(Box::new(DtmfDetect::new(DtmfDetectConfig {
                min_duration_ms: p.u32_or("min_duration_ms", d.min_duration_ms)?,
                merge_window_ms: p.u32_or("merge_window_ms", d.merge_window_ms)?,
                mute: p.bool_or("mute", d.mute)?,
                level_floor_dbfs: p.f64_or("level_floor_dbfs", d.level_floor_dbfs)?,
            })?))
        });
        registry.register("dtmf_send", |params| {
            let p = Params::new("dtmf_send", params);
            p.only(&["digits", "tone_ms", "gap_ms", "level_dbfs", "start_ms"])?;
            let d = DtmfSendConfig::default();
            let digits = p.str("digits")?.ok_or_else(|| p.error("`digits` is required, e.g. digits = \"1234#\""))?;
            Ok(Box::new(DtmfSend::new(DtmfSendConfig {
                digits: digits.to_owned(),
                tone_ms: p.u32_or("tone_ms", d.tone_ms)?,
                gap_ms: p.u32_or("gap_ms", d.gap_ms)?,
                level_dbfs: p.f64_or("level_dbfs", d.level_dbfs)?,
                start_ms: p.u32_or("start_ms", d.start_ms)?,
            })?))
        });
        registry.register("play", |params| {
            let p = Params::new("play", params);
            p.only(&["file", "loop", "level_db", "start_ms", "barge_in", "on_digit", "on_event"])?;
            let file =
                p.str("file")?.ok_or_else(|| p.error("`file` is required, e.g. file = \"/var/lib/callpipe/prompts/welcome.wav\""))?;
            let d = PlayConfig::new(file);
            Ok(Box::new(Play::new(PlayConfig {
                loops: p.u32_or("loop", d.loops)?,
                level_db: p.f64_or("level_db", d.level_db)?,
                start_ms: p.u32_or("start_ms", d.start_ms)?,
                barge_in: p.barge_in()?,
                on_digit: p.digit("on_digit")?,
                on_event: p.str("on_event")?.map(str::to_owned),
                ..d
            })?))
        });
        registry.register("denoise", |params| {
            let p = Params::new("denoise", params);
            p.only(&["level"])?;
            let d = DenoiseConfig::default();
            Ok(Box::new(Denoise::new(DenoiseConfig { level: p.f64_or("level", d.level)? })?))
        });
        registry.register("input", |params| {
            let p = Params::new("input", params);
            p.only(&["max_digits", "submit_on_hash", "time_out", "on_event", "on_digit"])?;
            let d = InputConfig::default();
            Ok(Box::new(Input::new(InputConfig {
                max_digits: p.u32_or("max_digits", d.max_digits)?,
                submit_on_hash: p.bool_or("submit_on_hash", d.submit_on_hash)?,
                time_out: p.f64_or("time_out", d.time_out)?,
                on_event: p.str("on_event")?.map(str::to_owned),
                on_digit: p.digit("on_digit")?,
            })?))
        });
        registry.register("talk", |params| {
            let p = Params::new("talk", params);
            p.only(&["text", "language", "voice", "level", "loop", "barge_in", "on_digit", "on_event"])?;
            let text = p.str("text")?.ok_or_else(|| p.error("`text` is required, e.g. text = \"Welcome to the service.\""))?;
            let d = TalkConfig::new(text);
            Ok(Box::new(Talk::new(TalkConfig {
                language: p.str("language")?.map_or(d.language.clone(), str::to_owned),
                voice: p.str("voice")?.map(str::to_owned),
                level: p.f64_or("level", d.level)?,
                loops: p.u32_or("loop", d.loops)?,
                barge_in: p.barge_in()?,
                on_digit: p.digit("on_digit")?,
                on_event: p.str("on_event")?.map(str::to_owned),
                ..d
            })?))
        });
        registry.register("vad", |params| {
            let p = Params::new("vad", params);
            p.only(&["sensitivity", "min_speech_ms", "min_silence_ms"])?;
            let d = VadConfig::default();
            Ok(Box::new(Vad::new(VadConfig {
                sensitivity: p.f64_or("sensitivity", f64::from(d.sensitivity))? as f32,
                min_speech_ms: p.u32_or("min_speech_ms", d.min_speech_ms)?,
                min_silence_ms: p.u32_or("min_silence_ms", d.min_silence_ms)?,
            })?))
        });
        registry.register("record", |params| {
            let p = Params::new("record", params);
            p.only(&["dir", "template", "channels", "format", "bitrate", "upload", "keep_local"])?;
            let dir = p.str("dir")?.ok_or_else(|| p.error("`dir` is required, e.g. dir = \"/var/lib/callpipe/recordings\""))?;
            let channels = p.str("channels")?.unwrap_or("stereo");
            let channels = RecordChannels::parse(channels).ok_or_else(|| {
                p.error(format!("`channels` must be \"caller\", \"outbound\", \"stereo\" or \"mixed\", not {channels:?}"))
            })?;
            // `format` defaults to what the template's extension names, and the template to the
            // format's default; `Record::new` checks that the two agree.
            let template = p.str("template")?;
            let format = match p.str("format")? {
                Some(name) => {
                    RecordFormat::parse(name).ok_or_else(|| p.error(format!("`format` must be \"wav\" or \"opus\", not {name:?}")))?
                }
                None => template.map(RecordFormat::from_template).unwrap_or_default(),
            };
            let template = template.unwrap_or(format.default_template()).to_owned();
            let bitrate = opus_bitrate(&p)?;
            let upload = upload_target(&p)?;
            Ok(Box::new(Record::new(RecordConfig { dir: dir.into(), template, channels, format, bitrate, upload })?))
        });
        registry.register("conference", |params| {
            let p = Params::new("conference", params);
            p.only(&["name", "role", "rate", "agc", "record", "record_dir", "format", "max_members", "upload", "keep_local"])?;
            let name = p.str("name")?.ok_or_else(|| p.error("`name` is required, e.g. name = \"{header:room}\""))?;
            let role = p.choice("role", ConferenceRole::parse, "\"speaker\" or \"listener\"")?;
            let record = p.choice("record", ConferenceRecording::parse, "\"off\", \"mixed\", \"tracks\" or \"both\"")?;
            let format = p.choice("format", RecordFormat::parse, "\"wav\" or \"opus\"")?;
            let d = ConferenceSettings::default();
            let settings = ConferenceSettings {
                rate: p.u32_or("rate", d.rate)?,
                agc: p.bool_or("agc", d.agc)?,
                record,
                record_dir: p.str("record_dir")?.map(Into::into),
                format,
                max_members: p.u32_or("max_members", d.max_members as u32)? as usize,
                upload: upload_target(&p)?,
            };
            Ok(Box::new(Conference::new(ConferenceConfig { name: name.to_owned(), role, settings })?))
        });
        registry.register("fork", |params| {
            let p = Params::new("fork", params);
            p.only(&[
                "url",
                "headers",
                "rate",
                "frame_ms",
                "first_message",
                "buffer_ms",
                "replies",
                "reply_rate",
                "name",
                "send",
                "ca_file",
                "codec",
                "bitrate",
                "barge_in",
                "live",
            ])?;
            let url = p.str("url")?.ok_or_else(|| p.error("`url` is required, e.g. url = \"ws://127.0.0.1:9000/stt/{call_id}\""))?;
            let d = ForkConfig::new(url);
            let headers = match params.get("headers") {
                None => Vec::new(),
                Some(toml::Value::Table(table)) => table
                    .iter()
                    .map(|(k, v)| match v {
                        toml::Value::String(s) => Ok((k.clone(), s.clone())),
                        other => Err(p.error(format!("`headers`.{k} must be a string, not {}", other.type_str()))),
                    })
                    .collect::<Result<_, _>>()?,
                Some(other) => return Err(p.error(format!("`headers` must be a table of strings, not {}", other.type_str()))),
            };
            let optional_rate = |key: &str| -> Result<Option<u32>, ProcessorError> {
                if params.contains_key(key) { p.u32_or(key, 0).map(Some) } else { Ok(None) }
            };
            let replies = p.choice("replies", ForkReplies::parse, "\"events\" or \"commands\"")?;
            let send = p.choice("send", ForkSend::parse, "\"caller\" or \"both\"")?;
            let codec = p.choice("codec", ForkCodec::parse, "\"l16\" or \"opus\"")?;
            let bitrate = opus_bitrate(&p)?;
            Ok(Box::new(Fork::new(ForkConfig {
                headers,
                send,
                codec,
                bitrate,
                ca_file: p.str("ca_file")?.map(Into::into),
                rate: optional_rate("rate")?,
                frame_ms: p.u32_or("frame_ms", d.frame_ms)?,
                first_message: p.str("first_message")?.map(str::to_owned),
                buffer_ms: p.u32_or("buffer_ms", d.buffer_ms)?,
                replies,
                reply_rate: optional_rate("reply_rate")?,
                name: p.str("name")?.map(str::to_owned),
                barge_in: p.barge_in()?,
                live: p.bool_or("live", d.live)?,
                ..d
            })?))
        });
        registry
    }

    /// Registers (or replaces) a type.
    pub fn register<F>(&mut self, kind: &str, factory: F)
    where
        F: Fn(&toml::Table) -> Result<Box<dyn Processor>, ProcessorError> + Send + Sync + 'static,
    {
        self.factories.insert(kind.to_owned(), Arc::new(factory));
    }

    /// The registered type names.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        std::iter::once(RESAMPLE).chain(self.factories.keys().map(String::as_str).filter(|k| *k != RESAMPLE))
    }

    /// Builds one processor.
    ///
    /// `resample` is built here rather than by a factory, because it holds processors of its
    /// own: `{ type = "resample", rate = 16000, processors = [...] }` (see [`Resample`]).
    pub fn build(&self, spec: &ProcessorSpec) -> Result<Box<dyn Processor>, ProcessorError> {
        if spec.kind == RESAMPLE {
            return self.build_resample(&spec.params);
        }
        let factory = self.factories.get(&spec.kind).ok_or_else(|| {
            let mut known: Vec<String> = self.kinds().map(str::to_owned).collect();
            known.sort_unstable();
            ProcessorError::Unknown { kind: spec.kind.clone(), known }
        })?;
        factory(&spec.params)
    }

    fn build_resample(&self, params: &toml::Table) -> Result<Box<dyn Processor>, ProcessorError> {
        let p = Params::new(RESAMPLE, params);
        p.only(&["rate", "processors"])?;
        let hz = p.u32_or("rate", 0)?;
        let rate = SampleRate::from_hz(hz).ok_or_else(|| p.error("`rate` must be 8000, 16000 or 24000"))?;
        let Some(toml::Value::Array(items)) = params.get("processors") else {
            return Err(p.error("`processors` must list the processors to run at `rate`, e.g. processors = [{ type = \"echo\" }]"));
        };
        let specs = items
            .iter()
            .map(|item| match item {
                toml::Value::Table(table) => ProcessorSpec::from_table(table.clone()),
                other => Err(p.error(format!("`processors` must hold tables, not {}", other.type_str()))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Errors inside name their place: "processor resample/echo: ...".
        let inner = self.build_pipeline(&specs).map_err(|e| match e {
            ProcessorError::Config { processor, message } => {
                ProcessorError::Config { processor: format!("{RESAMPLE}/{processor}"), message }
            }
            other => other,
        })?;
        Ok(Box::new(Resample::new(rate, inner)))
    }

    /// Builds a pipeline from a route's specs, in order.
    pub fn build_pipeline(&self, specs: &[ProcessorSpec]) -> Result<Pipeline, ProcessorError> {
        specs.iter().map(|spec| self.build(spec)).collect::<Result<Vec<_>, _>>().map(Pipeline::new)
    }
}

impl std::fmt::Debug for ProcessorRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.kinds()).finish()
    }
}

/// The optional Opus `bitrate` (bits per second) of the recorder and the fork; its range is checked
/// where the processor is built.
fn opus_bitrate(p: &Params<'_>) -> Result<Option<u32>, ProcessorError> {
    if !p.table.contains_key("bitrate") {
        return Ok(None);
    }
    p.u32_or("bitrate", 0).map(Some).map_err(|_| {
        let (low, high) = (super::record::OPUS_BITRATES.start(), super::record::OPUS_BITRATES.end());
        p.error(format!("`bitrate` must be an integer between {low} and {high} (bits per second)"))
    })
}

/// `upload = "s3://bucket/prefix/"` and `keep_local` (default true) of `record` and
/// `conference`.
fn upload_target(p: &Params<'_>) -> Result<Option<crate::call::UploadTarget>, ProcessorError> {
    let keep_local = p.bool_or("keep_local", true)?;
    match p.str("upload")? {
        None if !keep_local => Err(p.error("`keep_local = false` needs `upload`: without it the recording would be lost")),
        None => Ok(None),
        Some(url) => crate::call::UploadTarget::parse(url, keep_local).map(Some).map_err(|e| p.error(e)),
    }
}

/// Typed access to a processor's TOML parameters, with errors that name the processor.
#[derive(Debug, Clone, Copy)]
pub struct Params<'a> {
    processor: &'a str,
    table: &'a toml::Table,
}

impl<'a> Params<'a> {
    /// Parameters of processor type `processor`.
    pub fn new(processor: &'a str, table: &'a toml::Table) -> Params<'a> {
        Params { processor, table }
    }

    /// An error about this processor.
    pub fn error(&self, message: impl Into<String>) -> ProcessorError {
        ProcessorError::Config { processor: self.processor.to_owned(), message: message.into() }
    }

    /// An optional keyword parameter: `parse` reads it, a missing one is `T::default()`;
    /// `expected` names the choices for the error, e.g. `"\"l16\" or \"opus\""`.
    pub fn choice<T: Default>(&self, key: &str, parse: impl Fn(&str) -> Option<T>, expected: &str) -> Result<T, ProcessorError> {
        match self.str(key)? {
            None => Ok(T::default()),
            Some(text) => parse(text).ok_or_else(|| self.error(format!("`{key}` must be {expected}, not {text:?}"))),
        }
    }

    /// An optional key parameter (`on_digit`): one of 0-9, *, #, A-D.
    pub fn digit(&self, key: &str) -> Result<Option<DtmfDigit>, ProcessorError> {
        match self.str(key)? {
            None => Ok(None),
            Some(text) => DtmfDigit::from_key(text)
                .map(Some)
                .ok_or_else(|| self.error(format!("`{key}` must be one key (0-9, *, #, A-D), not {text:?}"))),
        }
    }

    /// The optional `barge_in` parameter: `"dtmf"`, `"speech"`, `"both"`, `"off"`, or a boolean
    /// (`true` is `"dtmf"`).
    pub fn barge_in(&self) -> Result<BargeInMode, ProcessorError> {
        let value = match self.table.get("barge_in") {
            None => return Ok(BargeInMode::Off),
            Some(toml::Value::Boolean(b)) => serde_json::Value::Bool(*b),
            Some(toml::Value::String(s)) => serde_json::Value::String(s.clone()),
            Some(_) => return Err(self.error(BargeInMode::EXPECTED)),
        };
        BargeInMode::from_json(&value).ok_or_else(|| self.error(BargeInMode::EXPECTED))
    }

    /// Refuses keys other than `allowed`, so that typos do not pass silently.
    pub fn only(&self, allowed: &[&str]) -> Result<(), ProcessorError> {
        match self.table.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(key) => Err(self.error(format!("unknown parameter `{key}` (known: {})", allowed.join(", ")))),
            None => Ok(()),
        }
    }

    /// A non-negative integer parameter that fits in `u32`, or `default` when absent.
    pub fn u32_or(&self, key: &str, default: u32) -> Result<u32, ProcessorError> {
        match self.table.get(key) {
            None => Ok(default),
            Some(toml::Value::Integer(n)) if *n < 0 => Err(self.error(format!("`{key}` must not be negative, not {n}"))),
            Some(toml::Value::Integer(n)) => {
                u32::try_from(*n).map_err(|_| self.error(format!("`{key}` must be at most {}, not {n}", u32::MAX)))
            }
            Some(other) => Err(self.error(format!("`{key}` must be an integer, not {}", other.type_str()))),
        }
    }

    /// A number parameter (integer or float), or `default` when absent.
    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64, ProcessorError> {
        match self.table.get(key) {
            None => Ok(default),
            Some(toml::Value::Integer(n)) => Ok(*n as f64),
            Some(toml::Value::Float(x)) => Ok(*x),
            Some(other) => Err(self.error(format!("`{key}` must be a number, not {}", other.type_str()))),
        }
    }

    /// A boolean parameter, or `default` when absent.
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, ProcessorError> {
        match self.table.get(key) {
            None => Ok(default),
            Some(toml::Value::Boolean(b)) => Ok(*b),
            Some(other) => Err(self.error(format!("`{key}` must be true or false, not {}", other.type_str()))),
        }
    }

    /// A string parameter, or `None` when absent.
    pub fn str(&self, key: &str) -> Result<Option<&'a str>, ProcessorError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(self.error(format!("`{key}` must be a string, not {}", other.type_str()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> ProcessorSpec {
        ProcessorSpec::from_table(toml::from_str(text).unwrap()).unwrap()
    }

    #[test]
    fn builds_builtins_and_refuses_bad_params() {
        let registry = ProcessorRegistry::with_builtins();
        assert_eq!(registry.build(&spec("type = 'echo'")).unwrap().name(), "echo");
        assert_eq!(registry.build(&spec("type = 'echo'\ndelay_ms = 200")).unwrap().delay().as_millis(), 200);
        for bad in [
            "type = 'echo'\ndelay_ms = -1",
            "type = 'echo'\ndelay_ms = 'x'",
            "type = 'echo'\ndelay = 5",
            "type = 'echo'\ndelay_ms = 600000",
        ] {
            assert!(matches!(registry.build(&spec(bad)), Err(ProcessorError::Config { .. })), "{bad}");
        }
        assert!(matches!(registry.build(&spec("type = 'nope'")), Err(ProcessorError::Unknown { .. })));
        assert!(matches!(
            registry.build(&spec("type = 'resample'\nrate = 16000\nprocessors = [{ type = 'nope' }]")),
            Err(ProcessorError::Unknown { .. })
        ));
        assert!(registry.kinds().any(|k| k == "resample"));
        assert!(ProcessorSpec::from_table(toml::from_str("delay_ms = 1").unwrap()).is_err());
    }

    #[test]
    fn builds_the_dtmf_processors_with_typed_params() {
        let registry = ProcessorRegistry::with_builtins();
        for good in [
            "type = 'dtmf_detect'",
            "type = 'dtmf_detect'\nmin_duration_ms = 50\nmerge_window_ms = 0\nmute = true\nlevel_floor_dbfs = -40",
            "type = 'dtmf_detect'\nlevel_floor_dbfs = -37.5",
            "type = 'dtmf_send'\ndigits = '1234#'",
            "type = 'dtmf_send'\ndigits = '*0#ABCD'\ntone_ms = 100\ngap_ms = 60\nlevel_dbfs = -12.5\nstart_ms = 1000",
            "type = 'record'\ndir = '/tmp/rec'",
            "type = 'play'\nfile = 'a.wav'",
            "type = 'play'\nfile = 'a.wav'\nloop = 0\nlevel_db = -6.5\nstart_ms = 100\nbarge_in = true",
            "type = 'play'\nfile = 'a.wav'\non_digit = '1'",
            "type = 'play'\nfile = 'a.wav'\non_event = 'stream:done'",
            "type = 'record'\ndir = '/tmp/rec'\ntemplate = '{header:caller}-{rate}.wav'\nchannels = 'mixed'",
            "type = 'record'\ndir = '/tmp/rec'\nformat = 'wav'\ntemplate = '{call_id}.wav'",
            "type = 'resample'\nrate = 16000\nprocessors = [{ type = 'dtmf_detect' }, { type = 'echo' }]",
            "type = 'resample'\nrate = 8000\nprocessors = []",
        ] {
            let name = registry.build(&spec(good)).unwrap().name();
            assert!(good.contains(name), "{good}");
        }
        for (bad, says) in [
            ("type = 'dtmf_detect'\nmute = 'yes'", "`mute` must be true or false"),
            ("type = 'dtmf_detect'\nmin_duration = 40", "unknown parameter `min_duration`"),
            ("type = 'dtmf_detect'\nmin_duration_ms = 5", "min_duration_ms"),
            ("type = 'dtmf_detect'\nlevel_floor_dbfs = 'loud'", "`level_floor_dbfs` must be a number"),
            ("type = 'dtmf_detect'\nlevel_floor_dbfs = 3", "level_floor_dbfs"),
            ("type = 'dtmf_detect'\nmerge_window_ms = -1", "merge_window_ms"),
            ("type = 'dtmf_send'", "`digits` is required"),
            ("type = 'dtmf_send'\ndigits = 12", "`digits` must be a string"),
            ("type = 'dtmf_send'\ndigits = '12E'", "0-9, *, #, A-D"),
            ("type = 'dtmf_send'\ndigits = '1'\nlevel_dbfs = 0", "level_dbfs"),
            ("type = 'dtmf_send'\ndigits = '1'\ntone = 50", "unknown parameter `tone`"),
            ("type = 'play'", "`file` is required"),
            ("type = 'play'\nfile = 'a.wav'\nloop = -1", "`loop` must not be negative, not -1"),
            ("type = 'play'\nfile = 'a.wav'\nlevel_db = 11", "level_db"),
            ("type = 'play'\nfile = 'a.wav'\nbarge_in = 1", "`barge_in` must be \"dtmf\", \"speech\""),
            ("type = 'play'\nfile = 'a.wav'\nbarge_in = 'loud'", "`barge_in` must be \"dtmf\", \"speech\""),
            ("type = 'play'\nfile = 'a.wav'\nvolume = 1", "unknown parameter `volume`"),
            ("type = 'play'\nfile = 'a.wav'\non_digit = '12'", "`on_digit` must be one key"),
            ("type = 'play'\nfile = 'a.wav'\non_digit = 'E'", "`on_digit` must be one key"),
            ("type = 'play'\nfile = 'a.wav'\non_event = ''", "`on_event` must name an event"),
            ("type = 'record'", "`dir` is required"),
            ("type = 'record'\ndir = '/tmp'\nchannels = 'quad'", "`channels` must be"),
            ("type = 'record'\ndir = '/tmp'\ntemplate = '{nope}.wav'", "unknown placeholder"),
            ("type = 'record'\ndir = '/tmp'\ntemplate = '../x.wav'", "not allowed in a file name"),
            ("type = 'record'\ndir = '/tmp'\nformat = 'mp3'", "`format` must be \"wav\" or \"opus\""),
            ("type = 'record'\ndir = '/tmp'\nformat = 'wav'\ntemplate = '{call_id}.opus'", "must end in `.wav`"),
            ("type = 'record'\ndir = '/tmp'\ntemplate = '{call_id}.ogg'", "must end in `.wav`"),
            ("type = 'record'\ndir = '/tmp'\nbitrate = 32000", "`bitrate` applies to format = \"opus\" only"),
            ("type = 'record'\ndir = '/tmp'\nformat = 'opus'\nbitrate = 'high'", "`bitrate` must be an integer"),
            ("type = 'vad'\nmin_speech_ms = -80", "`min_speech_ms` must not be negative, not -80"),
            ("type = 'vad'\nmin_silence_ms = 5000000000", "`min_silence_ms` must be at most 4294967295, not 5000000000"),
            ("type = 'resample'\nprocessors = []", "`rate` must be 8000, 16000 or 24000"),
            ("type = 'resample'\nrate = 48000\nprocessors = []", "`rate` must be"),
            ("type = 'resample'\nrate = 16000", "`processors` must list"),
            ("type = 'resample'\nrate = 16000\nprocessors = [1]", "`processors` must hold tables"),
            ("type = 'resample'\nrate = 16000\nprocessors = []\nquality = 5", "unknown parameter `quality`"),
            ("type = 'resample'\nrate = 16000\nprocessors = [{ type = 'echo', delay = 1 }]", "unknown parameter `delay`"),
        ] {
            match registry.build(&spec(bad)) {
                Err(err @ (ProcessorError::Config { .. } | ProcessorError::Invalid { .. })) => {
                    let text = err.to_string();
                    assert!(text.contains(says) && text.contains(spec(bad).kind.as_str()), "{bad}: {text}");
                }
                other => panic!("{bad}: {:?}", other.map(|p| p.name())),
            }
        }
    }

    #[test]
    fn opus_recording_is_refused_at_load_without_the_feature() {
        let registry = ProcessorRegistry::with_builtins();
        let opus = [
            "type = 'record'\ndir = '/tmp/rec'\nformat = 'opus'",
            "type = 'record'\ndir = '/tmp/rec'\ntemplate = '{call_id}-{rate}.opus'",
            "type = 'record'\ndir = '/tmp/rec'\nformat = 'opus'\ntemplate = '{call_id}.opus'\nbitrate = 32000\nchannels = 'mixed'",
        ];
        for text in opus {
            let built = registry.build(&spec(text)).map(|p| p.name());
            if cfg!(feature = "opus") {
                assert_eq!(built.ok(), Some("record"), "{text}");
            } else {
                let err = built.unwrap_err().to_string();
                assert!(err.contains(super::super::record::OPUS_FEATURE_MISSING), "{text}: {err}");
            }
        }
        if cfg!(feature = "opus") {
            for (bad, says) in [
                ("type = 'record'\ndir = '/tmp'\nformat = 'opus'\ntemplate = '{call_id}.wav'", "must end in `.opus`"),
                ("type = 'record'\ndir = '/tmp'\nformat = 'opus'\nbitrate = 1000", "`bitrate` must be between"),
                ("type = 'record'\ndir = '/tmp'\nformat = 'opus'\nbitrate = -1", "`bitrate` must be an integer between 6000 and 256000"),
            ] {
                let err = registry.build(&spec(bad)).map(|p| p.name()).unwrap_err().to_string();
                assert!(err.contains(says), "{bad}: {err}");
            }
        }
    }
}
