//! Recordings to S3-compatible object storage, off the media threads: the call's task hands a
//! finalized file here and awaits the object's URL.
//!
//! Credentials, region and endpoint come from the environment, as the AWS tools read them
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL` for an S3-compatible server, `AWS_ALLOW_HTTP=true` for one without TLS);
//! the `[storage]` table may set any of them instead ([`StorageConfig`]).
//! Files up to [`SINGLE_PUT_MAX`] go in one `PUT`; larger ones in parts of [`PART_SIZE`], at most
//! [`PARTS_IN_FLIGHT`] at once, aborted on failure. Each request is retried by the client with
//! exponential backoff; an upload that still fails is tried again whole, [`ATTEMPTS`] times in
//! all, before the error is reported (and the local file kept).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ObjectStore, RetryConfig, WriteMultipart};
use tokio::io::AsyncReadExt;

use crate::auth::Secret;
use crate::call::UploadTarget;

/// The largest file sent in a single `PUT`.
pub const SINGLE_PUT_MAX: u64 = 16 << 20;

/// The size of each part of a multipart upload (S3's minimum is 5 MiB).
pub const PART_SIZE: usize = 8 << 20;

/// Parts being sent at once.
const PARTS_IN_FLIGHT: usize = 4;

/// Whole-upload attempts.
pub const ATTEMPTS: u32 = 3;

/// Uploads under way at once, over the server (each holds up to 16 MiB of a file, or a
/// multipart upload's parts in flight); the rest wait their turn.
pub const CONCURRENT_UPLOADS: usize = 4;

/// The client's retries of one request: 100 ms doubling to 5 s, for at most a minute.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig { init_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(5), base: 2.0 },
        max_retries: 6,
        retry_timeout: Duration::from_secs(60),
    }
}

/// `[storage]`: what is set here overrides the environment.
#[derive(Clone, Default, PartialEq)]
pub struct StorageConfig {
    /// The S3 endpoint, e.g. `http://127.0.0.1:9000` for an S3-compatible server.
    pub endpoint: Option<String>,
    /// The region.
    pub region: Option<String>,
    /// Whether plain `http://` endpoints are allowed.
    pub allow_http: Option<bool>,
    /// The access key id.
    pub access_key_id: Option<Secret>,
    /// The secret access key.
    pub secret_access_key: Option<Secret>,
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field("access_key_id", &self.access_key_id.as_ref().map(|_| "<redacted>"))
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Counters of uploads.
#[derive(Debug, Default)]
pub struct UploadStats {
    /// Files uploaded.
    pub uploaded: std::sync::atomic::AtomicU64,
    /// Bytes uploaded.
    pub bytes: std::sync::atomic::AtomicU64,
    /// Files whose upload failed after every attempt.
    pub failed: std::sync::atomic::AtomicU64,
}

/// A stored recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// The object's URL, `s3://bucket/key`.
    pub url: String,
    /// Whether the local file is still there.
    pub kept: bool,
}

/// The S3 clients of a server, one per bucket, built on first use. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Uploads {
    config: Arc<StorageConfig>,
    stores: Arc<Mutex<HashMap<String, Arc<dyn ObjectStore>>>>,
    turns: Arc<tokio::sync::Semaphore>,
    /// The counters.
    pub stats: Arc<UploadStats>,
}

impl Default for Uploads {
    fn default() -> Uploads {
        Uploads {
            config: Arc::default(),
            stores: Arc::default(),
            turns: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_UPLOADS)),
            stats: Arc::default(),
        }
    }
}

impl Uploads {
    /// Uploads configured by `[storage]` (and the environment).
    pub fn new(config: StorageConfig) -> Uploads {
        Uploads { config: Arc::new(config), ..Uploads::default() }
    }

    fn store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, String> {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = stores.get(bucket) {
            return Ok(store.clone());
        }
        let c = &self.config;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(retry());
        if let Some(endpoint) = &c.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &c.region {
            builder = builder.with_region(region);
        }
        if let Some(allow) = c.allow_http {
            builder = builder.with_allow_http(allow);
        }
        let text = |secret: &Secret| String::from_utf8_lossy(secret.expose()).into_owned();
        if let Some(id) = &c.access_key_id {
            builder = builder.with_access_key_id(text(id));
        }
        if let Some(key) = &c.secret_access_key {
            builder = builder.with_secret_access_key(text(key));
        }
        let store: Arc<dyn ObjectStore> = Arc::new(builder.build().map_err(|e| format!("S3 client for bucket {bucket:?}: {e}"))?);
        stores.insert(bucket.to_owned(), store.clone());
        Ok(store)
    }

    /// Uploads `file` under `target`'s prefix with its own name; returns the object's URL. On
    /// success without `keep_local`, the local file is removed (and `kept` says whether that
    /// worked).
    pub async fn upload(&self, file: &Path, target: &UploadTarget) -> Result<Uploaded, String> {
        let result = match self.turns.acquire().await {
            Ok(_turn) => self.try_upload(file, target).await,
            Err(_) => Err("uploads are closed".to_owned()),
        };
        let counter = if result.is_ok() { &self.stats.uploaded } else { &self.stats.failed };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        result
    }

    async fn try_upload(&self, file: &Path, target: &UploadTarget) -> Result<Uploaded, String> {
        use std::sync::atomic::Ordering::Relaxed;
        let name = file.file_name().and_then(|n| n.to_str()).ok_or_else(|| format!("{} has no file name", file.display()))?;
        let store = self.store(&target.bucket)?;
        let key = ObjectPath::from(target.key(name));
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            match put_file(store.as_ref(), file, &key).await {
                Ok(bytes) => {
                    self.stats.bytes.fetch_add(bytes, Relaxed);
                    let mut kept = true;
                    if !target.keep_local {
                        match tokio::fs::remove_file(file).await {
                            Ok(()) => kept = false,
                            Err(e) => {
                                tracing::warn!(file = %file.display(), error = %e, "uploaded, but the local file could not be removed")
                            }
                        }
                    }
                    return Ok(Uploaded { url: target.url(name), kept });
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), to = %target.url(name), attempt, error = %e, "recording upload failed");
                    last = e;
                    if attempt < ATTEMPTS {
                        tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                    }
                }
            }
        }
        Err(format!("upload to {} failed {ATTEMPTS} times: {last}", target.url(name)))
    }
}

/// Sends the file to `key`: one `PUT`, or a multipart upload beyond [`SINGLE_PUT_MAX`]. Returns
/// its size.
async fn put_file(store: &dyn ObjectStore, file: &Path, key: &ObjectPath) -> Result<u64, String> {
    let io = |e: std::io::Error| format!("{}: {e}", file.display());
    let size = tokio::fs::metadata(file).await.map_err(io)?.len();
    if size <= SINGLE_PUT_MAX {
        let bytes = tokio::fs::read(file).await.map_err(io)?;
        store.put(key, bytes.into()).await.map_err(|e| e.to_string())?;
        return Ok(size);
    }
    let upload = store.put_multipart(key).await.map_err(|e| e.to_string())?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
    let mut reader = tokio::fs::File::open(file).await.map_err(io)?;
    let mut chunk = vec![0u8; PART_SIZE];
    loop {
        let mut filled = 0;
        while filled < chunk.len() {
            match reader.read(&mut chunk[filled..]).await {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(io(e));
                }
            }
        }
        if filled == 0 {
            break;
        }
        if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
            let _ = writer.abort().await;
            return Err(e.to_string());
        }
        writer.write(&chunk[..filled]);
        if filled < chunk.len() {
            break;
        }
    }
    writer.finish().await.map_err(|e| e.to_string())?;
    Ok(size)
}
