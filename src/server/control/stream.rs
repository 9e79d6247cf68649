//! `/calls/{id}/stream`: audio played into a call. A WAV file (`file://`, inside
//! `control.stream_root` when set) or URL (`http(s)://`) is read or fetched within
//! `control.max_stream_bytes` and `control.fetch_timeout`, and decoded and resampled to the
//! call's rate on a blocking thread, before the call sees it; the session plays it.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::calls::{call_ended, check_barge_in, live_call, message, send};
use super::{Problem, body_object};
use crate::call::BargeInMode;
use crate::protocol::SampleRate;
use crate::server::Shared;
use crate::server::calls::{CallCommand, LiveCall};
use crate::session::Control;

/// How the API's audio plays (streams and talks alike): the `loop`, `level` and `barge_in`
/// fields of the request.
pub(super) struct Playing {
    /// Times to play; 0 until stopped.
    pub(super) loops: u32,
    /// `1 + level`.
    pub(super) gain: f32,
    pub(super) barge_in: BargeInMode,
}

impl Playing {
    /// Reads the fields (absent ones take their defaults), and checks that the call can barge
    /// in as asked.
    pub(super) fn read(body: &serde_json::Map<String, Value>, call: &LiveCall) -> Result<Playing, Problem> {
        let loops = match body.get("loop") {
            None => 1,
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| Problem::bad_request("`loop` must be 0 (until stopped) or a positive whole number"))?,
        };
        let level = match body.get("level") {
            None => 0.0,
            Some(v) => v
                .as_f64()
                .filter(|l| (-1.0..=1.0).contains(l))
                .ok_or_else(|| Problem::bad_request("`level` must be a number from -1 to 1"))?,
        };
        let barge_in = match body.get("barge_in").or_else(|| body.get("bargeIn")) {
            None => BargeInMode::Off,
            Some(value) => BargeInMode::from_json(value).ok_or_else(|| Problem::bad_request(BargeInMode::EXPECTED))?,
        };
        check_barge_in(call, barge_in)?;
        Ok(Playing { loops, gain: (1.0 + level) as f32, barge_in })
    }
}

pub(super) async fn put_stream(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> Result<Response, Problem> {
    let body = body_object(&body)?;
    let call = live_call(&shared, &id)?;
    let url = match body.get("stream_url") {
        Some(Value::String(url)) => url.clone(),
        Some(Value::Array(urls)) if urls.len() == 1 && urls[0].is_string() => urls[0].as_str().unwrap_or_default().to_owned(),
        _ => return Err(Problem::bad_request("`stream_url` must be an array of one URL (file:// or http(s)://)")),
    };
    let Playing { loops, gain, barge_in } = Playing::read(&body, &call)?;
    let audio = {
        let _loading = shared.stream_loads.acquire().await.map_err(|_| call_ended(&call.id))?;
        load_stream(&shared, &url, call.rate).await?
    };
    let stream_id = call.stream_id();
    let command = Control::Stream { id: stream_id, audio: audio.into(), loops, gain, barge_in };
    send(&call, CallCommand::media(command))?;
    Ok(axum::Json(json!({ "message": "Stream started", "uuid": call.id, "stream_id": stream_id })).into_response())
}

pub(super) async fn delete_stream(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Response, Problem> {
    let call = live_call(&shared, &id)?;
    send(&call, CallCommand::media(Control::StopStream))?;
    Ok(message(&call, "Stream stopped"))
}

/// Fetches and decodes a stream's audio at the call's rate.
async fn load_stream(shared: &Shared, url: &str, rate: SampleRate) -> Result<Vec<i16>, Problem> {
    let invalid = |detail: String| Problem::new(StatusCode::BAD_REQUEST, "invalid-stream", "Invalid Stream", detail);
    let parsed = url::Url::parse(url).map_err(|e| invalid(format!("stream_url {url:?}: {e}")))?;
    let limit = shared.config.control.max_stream_bytes;
    let bytes = match parsed.scheme() {
        "file" => {
            let path: PathBuf = parsed.to_file_path().map_err(|()| invalid(format!("{url:?} is not a local file path")))?;
            let root = shared.config.control.stream_root.clone();
            let read = tokio::task::spawn_blocking(move || read_file(&path, root.as_deref(), limit));
            match tokio::time::timeout(shared.config.control.fetch_timeout, read).await {
                Ok(read) => read.map_err(|e| invalid(e.to_string()))?.map_err(|e| invalid(e.to_string()))?,
                Err(_) => return Err(invalid(format!("{url}: reading took longer than the fetch timeout"))),
            }
        }
        "http" | "https" => fetch(shared, parsed, limit).await?,
        other => return Err(invalid(format!("stream_url scheme {other:?}: use file:// or http(s)://"))),
    };
    let decode = tokio::task::spawn_blocking(move || crate::audio::load_wav_bytes(&bytes, rate));
    decode.await.map_err(|e| invalid(e.to_string()))?.map_err(|e| invalid(format!("{url} is not a usable WAV file ({e})")))
}

/// Why a stream's file was refused.
#[derive(Debug, thiserror::Error)]
enum StreamFileError {
    /// The file (or its real path) could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// `control.stream_root` itself cannot be resolved.
    #[error("control.stream_root {}: {source}", root.display())]
    Root { root: PathBuf, source: std::io::Error },
    /// The file is not under `control.stream_root`.
    #[error("{} is outside control.stream_root", path.display())]
    Outside { path: PathBuf },
    /// A device, a FIFO, a directory.
    #[error("{} is not a regular file", path.display())]
    NotRegular { path: PathBuf },
    /// Larger than `control.max_stream_bytes`.
    #[error("{} is over the {limit}-byte limit (control.max_stream_bytes)", path.display())]
    TooLarge { path: PathBuf, limit: usize },
}

/// Reads a regular file of at most `limit` bytes, inside `root` when one is set. Devices, FIFOs
/// and files that grow past the limit while read are refused.
fn read_file(path: &std::path::Path, root: Option<&std::path::Path>, limit: usize) -> Result<Vec<u8>, StreamFileError> {
    use std::io::Read;
    let unreadable = |source: std::io::Error| StreamFileError::Read { path: path.to_owned(), source };
    if let Some(root) = root {
        let real = path.canonicalize().map_err(unreadable)?;
        let root = root.canonicalize().map_err(|source| StreamFileError::Root { root: root.to_owned(), source })?;
        if !real.starts_with(&root) {
            return Err(StreamFileError::Outside { path: path.to_owned() });
        }
    }
    let file = std::fs::File::open(path).map_err(unreadable)?;
    if !file.metadata().map_err(unreadable)?.is_file() {
        return Err(StreamFileError::NotRegular { path: path.to_owned() });
    }
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes).map_err(unreadable)?;
    if bytes.len() > limit {
        return Err(StreamFileError::TooLarge { path: path.to_owned(), limit });
    }
    Ok(bytes)
}

async fn fetch(shared: &Shared, url: url::Url, limit: usize) -> Result<Vec<u8>, Problem> {
    let failed = |detail: String| Problem::new(StatusCode::BAD_GATEWAY, "stream-fetch-failed", "Stream Fetch Failed", detail);
    let shown = url.to_string();
    let mut response =
        shared.http.get(url).timeout(shared.config.control.fetch_timeout).send().await.map_err(|e| failed(format!("{shown}: {e}")))?;
    if !response.status().is_success() {
        return Err(failed(format!("{shown}: HTTP {}", response.status())));
    }
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(failed(format!("{shown} is over the {limit}-byte limit")));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| failed(format!("{shown}: {e}")))? {
        if bytes.len() + chunk.len() > limit {
            return Err(failed(format!("{shown} is over the {limit}-byte limit")));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_files_are_regular_bounded_and_inside_the_root() {
        let dir = std::env::temp_dir().join(format!("callpipe-read-file-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("inner")).unwrap();
        let file = dir.join("inner/a.wav");
        std::fs::write(&file, [7u8; 100]).unwrap();
        assert_eq!(read_file(&file, None, 100).unwrap().len(), 100);
        assert!(read_file(&file, None, 99).unwrap_err().to_string().contains("limit"));
        assert!(read_file(std::path::Path::new("/dev/zero"), None, 1000).unwrap_err().to_string().contains("not a regular file"));
        assert!(read_file(&dir, None, 1000).is_err(), "a directory");
        assert!(read_file(&file, Some(&dir.join("inner")), 100).is_ok());
        let outside = dir.join("b.wav");
        std::fs::write(&outside, [1u8; 10]).unwrap();
        assert!(read_file(&outside, Some(&dir.join("inner")), 100).unwrap_err().to_string().contains("outside"));
        let sneaky = dir.join("inner/../b.wav");
        assert!(read_file(&sneaky, Some(&dir.join("inner")), 100).unwrap_err().to_string().contains("outside"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
