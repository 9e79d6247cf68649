//! `/calls/{id}/talk` and `/calls/{id}/input`: text to speech spoken into a call (the Voice
//! API's `PUT`/`DELETE /v1/calls/{uuid}/talk`) and the caller's keys collected (its `input`
//! action with `type: ["dtmf"]`). The session plays the talk and runs the collection; the call's
//! events report `talk:done` and `input`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::calls::{live_call, message, send};
use super::stream::Playing;
use super::{Problem, body_object};
use crate::processor::{InputCollector, InputConfig};
use crate::server::Shared;
use crate::server::calls::CallCommand;
use crate::services::tts::{TalkAudio, TalkRequest, TtsError};
use crate::session::Control;

/// `PUT /calls/{id}/talk`: `{"text": "...", "language": "en-GB", "voice": "f3", "loop": 1,
/// "level": 0, "barge_in": "speech"}` → 200 with a `talk_id`.
pub(super) async fn put_talk(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> Result<Response, Problem> {
    let queued_at = Instant::now();
    let body = body_object(&body)?;
    let call = live_call(&shared, &id)?;
    known_fields(&body, &["text", "language", "voice", "style", "premium", "loop", "level", "barge_in", "bargeIn"])?;
    let text = match body.get("text") {
        Some(Value::String(text)) => text.clone(),
        None => return Err(Problem::bad_request("`text` is required: the words to say, or SSML in <speak>")),
        Some(_) => return Err(Problem::bad_request("`text` must be a string: the words to say, or SSML in <speak>")),
    };
    let language = match body.get("language") {
        None => "en-US".to_owned(),
        Some(Value::String(language)) => language.clone(),
        Some(_) => return Err(Problem::bad_request("`language` must be a BCP-47 code such as \"en-GB\"")),
    };
    let voice = match body.get("voice") {
        None => None,
        Some(Value::String(voice)) => Some(voice.clone()),
        Some(_) => return Err(Problem::bad_request("`voice` must be an espeak-ng voice variant such as \"f3\"")),
    };
    let Playing { loops, gain, barge_in } = Playing::read(&body, &call)?;
    let tts = shared.services.tts;
    let request = TalkRequest { text, language, voice, rate: call.rate, queued_at };
    let talk = tokio::task::spawn_blocking(move || {
        tts.check(&request.text, &request.language, request.voice.as_deref())?;
        tts.speak(request)
    })
    .await
    .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "tts-failed", "Text To Speech Failed", e.to_string()))?
    .map_err(tts_problem)?;
    let talk_id = call.stream_id();
    let command = Control::Talk { id: talk_id, audio: TalkAudio::new(talk.clone(), loops, gain), barge_in };
    if let Err(problem) = send(&call, CallCommand::media(command)) {
        talk.cancel();
        return Err(problem);
    }
    Ok(axum::Json(json!({ "message": "Talk started", "uuid": call.id, "talk_id": talk_id })).into_response())
}

/// `DELETE /calls/{id}/talk`.
pub(super) async fn delete_talk(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Response, Problem> {
    let call = live_call(&shared, &id)?;
    send(&call, CallCommand::media(Control::StopTalk))?;
    Ok(message(&call, "Talk stopped"))
}

/// `PUT /calls/{id}/input`: `{"max_digits": 4, "submit_on_hash": true, "time_out": 3}` (or the
/// Voice API's `{"dtmf": {"maxDigits": 4, "submitOnHash": true, "timeOut": 3}}`) → 200; the
/// result is the call's `input` event.
pub(super) async fn put_input(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> Result<Response, Problem> {
    let body = body_object(&body)?;
    let call = live_call(&shared, &id)?;
    known_fields(&body, &["max_digits", "submit_on_hash", "time_out", "dtmf", "type"])?;
    match body.get("type") {
        None => {}
        Some(Value::Array(types)) if !types.is_empty() && types.iter().all(|t| t == "dtmf") => {}
        Some(_) => return Err(Problem::bad_request("`type` must be [\"dtmf\"]: callpipe collects keys, not speech")),
    }
    let voice_api = match body.get("dtmf") {
        None => None,
        Some(Value::Object(dtmf)) => Some(dtmf),
        Some(_) => return Err(Problem::bad_request("`dtmf` must be an object such as {\"maxDigits\": 4}")),
    };
    let field = |snake: &str, camel: &str| body.get(snake).or_else(|| voice_api.and_then(|d| d.get(camel)));
    let d = InputConfig::default();
    let config = InputConfig {
        max_digits: match field("max_digits", "maxDigits") {
            None => d.max_digits,
            Some(v) => {
                v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| Problem::bad_request("`max_digits` must be 1 to 20"))?
            }
        },
        submit_on_hash: match field("submit_on_hash", "submitOnHash") {
            None => d.submit_on_hash,
            Some(v) => v.as_bool().ok_or_else(|| Problem::bad_request("`submit_on_hash` must be true or false"))?,
        },
        time_out: match field("time_out", "timeOut") {
            None => d.time_out,
            Some(v) => v.as_f64().ok_or_else(|| Problem::bad_request("`time_out` must be a number of seconds, 0 to 10"))?,
        },
        ..d
    };
    config.check().map_err(Problem::bad_request)?;
    send(&call, CallCommand::media(Control::Input(InputCollector::new(&config))))?;
    Ok(message(&call, "Input started"))
}

/// Refuses fields other than `known`, naming the first.
fn known_fields(body: &Map<String, Value>, known: &[&str]) -> Result<(), Problem> {
    match body.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(Problem::bad_request(format!("unknown field `{key}` (known: {})", known.join(", ")))),
        None => Ok(()),
    }
}

/// A talk that cannot be spoken: 501 without text to speech in the build, 503 when its thread
/// cannot run, 400 for the request's own faults.
fn tts_problem(error: TtsError) -> Problem {
    match error {
        TtsError::NotBuilt => Problem::new(StatusCode::NOT_IMPLEMENTED, "tts-not-built", "Text To Speech Not Built", error.to_string()),
        TtsError::Engine(_) => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "tts-unavailable", "Text To Speech Unavailable", error.to_string())
        }
        other => Problem::bad_request(other.to_string()),
    }
}
