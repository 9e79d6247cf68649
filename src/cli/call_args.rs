//! The options `callpipe call` and `callpipe load` share, and the call plan they make: the rate,
//! metadata headers and credentials, what the caller plays, its keys (`--dtmf`, as events or
//! in-band tones), the platform's playout and strictness, and the network's jitter, stalls and
//! pauses.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use callpipe::auth::{PlatformJwt, Secret};
use callpipe::client::audio;
use callpipe::client::platform::{CallPlan, DtmfMode, Source};
use callpipe::protocol::{DtmfDigit, SampleRate};
use clap::{Args, ValueEnum};

/// `--dtmf-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DtmfModeArg {
    Event,
    Inband,
    Both,
}

/// Options shared by `call` and `load`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// Sample rate: 8000, 16000 or 24000.
    #[arg(long, default_value_t = 16000)]
    pub rate: u32,
    /// A metadata header, flattened into the first message (repeatable). JSON values are
    /// kept as JSON: `--header n=5` sends a number.
    #[arg(long = "header", value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// The Authorization header of the upgrade, e.g. "Bearer eyJ...".
    #[arg(long)]
    authorization: Option<String>,
    /// Send each call a fresh "Bearer <JWT>" signed HS256 with this secret, as the platform does
    /// for {"type":"vonage"}. "env:NAME" reads it from the environment (safer than the command line).
    #[arg(long, value_name = "SECRET", conflicts_with = "authorization")]
    jwt_secret: Option<String>,
    /// The application_id claim of --jwt-secret's tokens.
    #[arg(long, value_name = "ID", requires = "jwt_secret")]
    application_id: Option<String>,
    /// Play this WAV file (any rate, mono or stereo, 16/24/32-bit or float), resampled.
    #[arg(long, conflicts_with = "tone")]
    play: Option<PathBuf>,
    /// Play a sine at this frequency in Hz.
    #[arg(long)]
    tone: Option<f64>,
    /// Seconds of audio to stream.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Keys to press: "12#" (one a second from --dtmf-start), or "1@0.5,2@1.2,#@3" with times.
    #[arg(long)]
    dtmf: Option<String>,
    /// When the first of a plain --dtmf sequence is pressed, in s.
    #[arg(long, default_value_t = 1.0)]
    dtmf_start: f64,
    /// How the keys reach the bot: `event` (the platform's `websocket:dtmf`), `inband`
    /// (tones in the audio only), or `both`.
    #[arg(long, value_enum, default_value_t = DtmfModeArg::Event)]
    dtmf_mode: DtmfModeArg,
    /// The same as --dtmf-mode both (kept for existing scripts).
    #[arg(long, conflicts_with = "dtmf_mode")]
    dtmf_inband: bool,
    /// Hang up this many seconds after the start, even mid-stream.
    #[arg(long)]
    hangup_after: Option<f64>,
    /// Frames the playout buffer holds (the platform's limit).
    #[arg(long, default_value_t = 3072)]
    playout_limit: usize,
    /// Close the call on a frame of the wrong size, as the platform does.
    #[arg(long)]
    strict: bool,
    /// Network jitter on the platform's sending side: each message leaves 0..J ms late (order
    /// kept, nothing lost, as TCP over a bad route delivers).
    #[arg(long, value_name = "J", default_value_t = 0)]
    jitter_ms: u64,
    /// A network stall every S seconds (with --stall-ms): what is sent meanwhile arrives
    /// together when it ends.
    #[arg(long, value_name = "S", requires = "stall_ms")]
    stall_every: Option<f64>,
    /// How long each stall of --stall-every lasts, in ms.
    #[arg(long, value_name = "M", requires = "stall_every")]
    stall_ms: Option<u64>,
    /// The platform pauses its sending at S seconds into the call (with --pause-ms): no frames
    /// for that long, then the caller's audio resumes where it stopped, at real-time pace.
    #[arg(long, value_name = "S", requires = "pause_ms")]
    pause_at: Option<f64>,
    /// How long the pause of --pause-at lasts, in ms.
    #[arg(long, value_name = "M", requires = "pause_at")]
    pause_ms: Option<u64>,
}

impl CallArgs {
    pub fn plan(&self, tag_frames: bool, record: Option<PathBuf>) -> anyhow::Result<CallPlan> {
        let rate = SampleRate::from_hz(self.rate).with_context(|| format!("--rate {} is not 8000, 16000 or 24000", self.rate))?;
        if !(self.duration.is_finite() && self.duration > 0.0 && self.duration <= 86_400.0) {
            bail!("--duration must be between 0 and 86400 seconds");
        }
        let mut plan = CallPlan::new(rate, Duration::from_secs_f64(self.duration));
        for header in &self.headers {
            let (key, value) = header.split_once('=').with_context(|| format!("--header {header}: expected KEY=VALUE"))?;
            let value = serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
            plan.headers.insert(key.to_owned(), value);
        }
        if let Some(auth) = &self.authorization {
            plan.upgrade_headers.push(("Authorization".into(), auth.clone()));
        }
        if let Some(secret) = &self.jwt_secret {
            let secret = Secret::parse(secret).map_err(|e| anyhow::anyhow!("--jwt-secret: {e}"))?;
            plan.jwt = Some(PlatformJwt::new(secret, self.application_id.clone()));
        }
        plan.source = match (&self.play, self.tone) {
            (Some(path), _) => Source::Samples(audio::load_wav(path, rate)?.into()),
            (None, Some(hz)) => Source::Tone(hz),
            (None, None) => Source::Silence,
        };
        if let Some(keys) = &self.dtmf {
            plan.dtmf = parse_dtmf(keys, self.dtmf_start)?;
        }
        plan.dtmf_mode = match (self.dtmf_inband, self.dtmf_mode) {
            (true, _) | (false, DtmfModeArg::Both) => DtmfMode::Both,
            (false, DtmfModeArg::Event) => DtmfMode::Event,
            (false, DtmfModeArg::Inband) => DtmfMode::Inband,
        };
        plan.hangup_after = self.hangup_after.map(Duration::from_secs_f64);
        plan.playout_limit = self.playout_limit.max(1);
        plan.strict = self.strict;
        if self.jitter_ms > 60_000 {
            bail!("--jitter-ms {} is over a minute", self.jitter_ms);
        }
        plan.network.jitter = Duration::from_millis(self.jitter_ms);
        if let (Some(every), Some(ms)) = (self.stall_every, self.stall_ms) {
            if !(0.1..=86_400.0).contains(&every) {
                bail!("--stall-every must be between 0.1 and 86400 seconds, not {every}");
            }
            if Duration::from_millis(ms) >= Duration::from_secs_f64(every) {
                bail!("--stall-ms {ms} must be shorter than --stall-every ({every} s)");
            }
            plan.network.stall_every = Some(Duration::from_secs_f64(every));
            plan.network.stall = Duration::from_millis(ms);
        }
        if let (Some(at), Some(ms)) = (self.pause_at, self.pause_ms) {
            if !(at.is_finite() && at >= 0.0 && at < self.duration) {
                bail!("--pause-at must be within the call's --duration ({} s), not {at}", self.duration);
            }
            if ms > 3_600_000 {
                bail!("--pause-ms {ms} is over an hour");
            }
            plan.pause = Some((Duration::from_secs_f64(at), Duration::from_millis(ms)));
        }
        plan.tag_frames = tag_frames;
        plan.record = record;
        Ok(plan)
    }
}

/// `"12#"` → one key a second from `start`; `"1@0.5,2@1.2"` → keys at those seconds.
fn parse_dtmf(keys: &str, start: f64) -> anyhow::Result<Vec<(Duration, DtmfDigit)>> {
    let digit = |c: char| DtmfDigit::from_char(c).with_context(|| format!("{c:?} is not a DTMF key"));
    if keys.contains('@') {
        let mut out = Vec::new();
        for item in keys.split(',') {
            let (k, at) = item.trim().split_once('@').with_context(|| format!("{item:?}: expected KEY@SECONDS"))?;
            let mut chars = k.chars();
            let (Some(c), None) = (chars.next(), chars.next()) else { bail!("{item:?}: one key per entry") };
            let at: f64 = at.parse().with_context(|| format!("{item:?}: bad time"))?;
            if !(at.is_finite() && at >= 0.0) {
                bail!("{item:?}: bad time");
            }
            out.push((Duration::from_secs_f64(at), digit(c)?));
        }
        out.sort_by_key(|(at, _)| *at);
        Ok(out)
    } else {
        keys.chars().enumerate().map(|(i, c)| Ok((Duration::from_secs_f64(start.max(0.0) + i as f64), digit(c)?))).collect()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn call_args(args: &[&str]) -> Result<CallArgs, clap::Error> {
        let cli = Cli::try_parse_from(["callpipe", "call", "ws://127.0.0.1:1/bot"].iter().chain(args))?;
        match cli.command {
            Command::Call(call) => Ok(call.call),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn jwt_secret_signs_a_header_the_verifier_accepts() {
        use callpipe::auth::{Admission, Validation};
        use std::time::SystemTime;
        let plan = call_args(&["--jwt-secret", "cli-secret", "--application-id", "app-7"]).unwrap().plan(false, None).unwrap();
        assert!(plan.upgrade_headers.is_empty());
        let header = plan.jwt.as_ref().unwrap().authorization(SystemTime::now());
        let validation = Validation { application_id: Some("app-7".into()), ..Validation::default() };
        let admission = Admission::Jwt { secret: Secret::parse("cli-secret").unwrap(), validation };
        assert_eq!(admission.check(Some(&header), SystemTime::now()), Ok(()));
        let other = Admission::Jwt { secret: Secret::parse("not-the-cli-secret").unwrap(), validation: Validation::default() };
        assert_eq!(other.check(Some(&header), SystemTime::now()).unwrap_err().reason, "bad_signature");
    }

    #[test]
    fn jwt_secret_conflicts_with_authorization() {
        let err = call_args(&["--jwt-secret", "s", "--authorization", "Bearer x"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        let err = call_args(&["--application-id", "app"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let plan = call_args(&["--authorization", "Bearer x"]).unwrap().plan(false, None).unwrap();
        assert!(plan.jwt.is_none());
        assert_eq!(plan.upgrade_headers, [("Authorization".to_owned(), "Bearer x".to_owned())]);
        assert!(call_args(&["--jwt-secret", ""]).unwrap().plan(false, None).is_err());
    }

    #[test]
    fn dtmf_schedules() {
        let plain = parse_dtmf("12#", 1.0).unwrap();
        assert_eq!(plain.len(), 3);
        assert_eq!(plain[2], (Duration::from_secs(3), DtmfDigit::Pound));
        let timed = parse_dtmf("2@1.5, 1@0.5", 0.0).unwrap();
        assert_eq!(timed[0], (Duration::from_millis(500), DtmfDigit::Digit(1)));
        assert!(parse_dtmf("x", 0.0).is_err());
        assert!(parse_dtmf("12@1", 0.0).is_err());
    }
}
