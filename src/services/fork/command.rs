//! The commands a fork's target may send (with `replies = "commands"`): one JSON object per
//! text message, parsed on the fork's task.

use serde_json::Value;

/// A known command with bad arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// `dtmf` without digits.
    #[error("dtmf needs \"digits\", e.g. {{\"action\":\"dtmf\",\"digits\":\"12#\"}}")]
    DtmfDigits,
    /// `play` without a `file://` URL.
    #[error("play needs a \"url\" of the form file:///path/to/file.wav")]
    PlayUrl,
    /// `dtmf` with more keys than one command plays.
    #[error("dtmf plays at most {max} keys, not {count}")]
    TooManyKeys {
        /// The limit.
        max: usize,
        /// The keys asked for.
        count: usize,
    },
    /// `dtmf` with a character that is not a key.
    #[error("dtmf: {0:?} is not a DTMF key (0-9, *, #, A-D)")]
    NotAKey(char),
}

/// A command from the target (with `replies = "commands"`), one JSON object per text message:
///
/// * `{"action":"clear"}`: barge-in. Drops the target's audio not yet played and everything
///   queued for the caller, and sends the platform a `clear`.
/// * `{"action":"notify","payload":{...}}`: when everything the target sent before it has
///   played to the caller, the target receives `{"event":"notify","payload":{...}}`.
/// * `{"action":"hangup"}`: hangs up the call (close 1000, hang-up reason `"processor"`).
/// * `{"action":"dtmf","digits":"12#"}`: plays DTMF keys to the caller after the audio sent
///   before (50 ms tones, 50 ms gaps).
/// * `{"action":"play","url":"file:///path/prompt.wav"}`: plays a WAV file to the caller after
///   the audio sent before.
///
/// Anything else (no `action`, an unknown one) is not a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Barge-in.
    Clear,
    /// Tell the target when the audio so far has played.
    Notify(Value),
    /// Hang up the call.
    Hangup,
    /// Play DTMF keys.
    Dtmf(String),
    /// Play a WAV file.
    Play(String),
}

/// A command from a text message, `Ok(None)` when it is not one, `Err` when it names a known
/// action with bad arguments.
pub fn parse_command(value: &Value) -> Result<Option<Command>, CommandError> {
    let Some(action) = value.get("action").and_then(Value::as_str) else { return Ok(None) };
    Ok(Some(match action {
        "clear" => Command::Clear,
        "hangup" => Command::Hangup,
        "notify" => Command::Notify(value.get("payload").cloned().unwrap_or(Value::Null)),
        "dtmf" => match value.get("digits").and_then(Value::as_str) {
            Some(digits) if !digits.is_empty() => Command::Dtmf(digits.to_owned()),
            _ => return Err(CommandError::DtmfDigits),
        },
        "play" => match value.get("url").and_then(Value::as_str).and_then(|u| u.strip_prefix("file://")) {
            Some(path) if !path.is_empty() => Command::Play(path.to_owned()),
            _ => return Err(CommandError::PlayUrl),
        },
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn commands_parse_and_others_are_not_commands() {
        assert_eq!(parse_command(&json!({ "action": "clear" })), Ok(Some(Command::Clear)));
        assert_eq!(parse_command(&json!({ "action": "hangup" })), Ok(Some(Command::Hangup)));
        assert_eq!(parse_command(&json!({ "action": "notify", "payload": { "n": 1 } })), Ok(Some(Command::Notify(json!({ "n": 1 })))));
        assert_eq!(parse_command(&json!({ "action": "dtmf", "digits": "12#" })), Ok(Some(Command::Dtmf("12#".into()))));
        assert_eq!(parse_command(&json!({ "action": "play", "url": "file:///a.wav" })), Ok(Some(Command::Play("/a.wav".into()))));
        assert!(parse_command(&json!({ "action": "play", "url": "http://x/a.wav" })).is_err());
        assert!(parse_command(&json!({ "action": "dtmf" })).is_err());
        assert_eq!(parse_command(&json!({ "action": "dance" })), Ok(None));
        assert_eq!(parse_command(&json!({ "transcript": "hi" })), Ok(None));
    }
}
