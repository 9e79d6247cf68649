//! The configuration file as written: a serde mirror of `callpipe.toml`, table by table, with
//! the defaults of every key that may be left out.
//!
//! Unknown keys are errors (`deny_unknown_fields`), so a typo never silently falls back to a
//! default. Nothing here is checked: [`Config::parse`](super::Config::parse) validates these
//! values once into the typed configuration.

use std::path::PathBuf;

use serde::Deserialize;

use super::{FramePolicy, ReadMode};
use crate::session::SessionConfig;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) media: RawMedia,
    #[serde(default)]
    pub(super) control: RawControl,
    #[serde(default)]
    pub(super) events: RawEvents,
    #[serde(default)]
    pub(super) route: Vec<RawRoute>,
    pub(super) cluster: Option<RawCluster>,
    #[serde(default)]
    pub(super) storage: RawStorage,
}

/// `[storage]`: the S3-compatible storage recordings are uploaded to; each key overrides the
/// environment's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStorage {
    pub(super) endpoint: String,
    pub(super) region: String,
    pub(super) allow_http: Option<bool>,
    pub(super) access_key_id: String,
    pub(super) secret_access_key: String,
}

/// `[cluster]`: present, the node joins the cluster registered in `redis`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawCluster {
    pub(super) redis: String,
    pub(super) node_id: String,
    pub(super) advertise_control: String,
    pub(super) advertise_media: String,
    pub(super) heartbeat_ms: u64,
    pub(super) ttl_ms: u64,
    pub(super) key_prefix: String,
}

impl Default for RawCluster {
    fn default() -> RawCluster {
        RawCluster {
            redis: "redis://127.0.0.1:6379".into(),
            node_id: String::new(),
            advertise_control: String::new(),
            advertise_media: String::new(),
            heartbeat_ms: 2000,
            ttl_ms: 6000,
            key_prefix: "callpipe".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawControl {
    pub(super) listen: String,
    pub(super) token: String,
    pub(super) ended_calls: usize,
    pub(super) max_stream_bytes: usize,
    pub(super) fetch_timeout_ms: u64,
    pub(super) stream_root: String,
}

impl Default for RawControl {
    fn default() -> RawControl {
        RawControl {
            listen: "127.0.0.1:8081".into(),
            token: String::new(),
            ended_calls: 1000,
            max_stream_bytes: 64 << 20,
            fetch_timeout_ms: 10_000,
            stream_root: String::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawEvents {
    pub(super) log: String,
    pub(super) queue: usize,
    pub(super) timeout_ms: u64,
    pub(super) retries: u32,
    pub(super) backoff_ms: u64,
    pub(super) max_backoff_ms: u64,
    pub(super) workers: usize,
    pub(super) signature_secret: String,
    pub(super) flush_timeout_ms: u64,
    pub(super) redis: Option<RawEventsRedis>,
}

/// `[events.redis]`: present, every event is also appended to a Redis stream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawEventsRedis {
    pub(super) url: String,
    pub(super) stream: String,
    pub(super) max_len: usize,
}

impl Default for RawEventsRedis {
    fn default() -> RawEventsRedis {
        RawEventsRedis { url: "redis://127.0.0.1:6379".into(), stream: "callpipe:events".into(), max_len: 100_000 }
    }
}

impl Default for RawEvents {
    fn default() -> RawEvents {
        RawEvents {
            log: "stdout".into(),
            queue: 10_000,
            timeout_ms: 5000,
            retries: 3,
            backoff_ms: 500,
            max_backoff_ms: 10_000,
            workers: 4,
            signature_secret: String::new(),
            flush_timeout_ms: 5000,
            redis: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    pub(super) tls: Option<RawTls>,
    pub(super) listen: String,
    pub(super) metadata_timeout_ms: u64,
    pub(super) frame_policy: FramePolicy,
    pub(super) max_message_bytes: usize,
    pub(super) max_calls: usize,
    pub(super) shutdown_grace_ms: u64,
    pub(super) write_timeout_ms: u64,
    pub(super) send_buffer_bytes: usize,
    pub(super) stats_interval_ms: u64,
    pub(super) read_mode: ReadMode,
    pub(super) max_text_per_second: u32,
    pub(super) idle_timeout_ms: u64,
    pub(super) max_duration_s: u64,
}

impl Default for RawServer {
    fn default() -> RawServer {
        RawServer {
            tls: None,
            listen: "127.0.0.1:8080".into(),
            metadata_timeout_ms: 5000,
            frame_policy: FramePolicy::Lenient,
            max_message_bytes: 65536,
            max_calls: 10_000,
            shutdown_grace_ms: 10_000,
            write_timeout_ms: 10_000,
            send_buffer_bytes: 65_536,
            stats_interval_ms: 10_000,
            read_mode: ReadMode::Readiness,
            max_text_per_second: 50,
            idle_timeout_ms: 120_000,
            max_duration_s: 14_400,
        }
    }
}

/// `[server.tls]`: both files are required.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMedia {
    pub(super) threads: usize,
    pub(super) io: crate::media::MediaIo,
    pub(super) lookahead_frames: u32,
    pub(super) outbound_queue_frames: usize,
    pub(super) inbound_buffer_frames: usize,
    pub(super) input_jitter_ms: u64,
    pub(super) max_input_wait_ms: u64,
    pub(super) max_input_backlog_ms: u64,
    pub(super) max_catchup_ms: u64,
}

impl Default for RawMedia {
    fn default() -> RawMedia {
        let s = SessionConfig::default();
        RawMedia {
            threads: 0,
            io: crate::media::MediaIo::default(),
            lookahead_frames: s.lookahead_frames,
            outbound_queue_frames: s.outbound_queue_frames,
            inbound_buffer_frames: s.inbound_buffer_frames,
            input_jitter_ms: s.timeline.jitter.as_millis() as u64,
            max_input_wait_ms: s.timeline.max_wait.as_millis() as u64,
            max_input_backlog_ms: s.timeline.max_backlog.as_millis() as u64,
            max_catchup_ms: s.max_catchup.as_millis() as u64,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) path: String,
    pub(super) header: Option<String>,
    pub(super) equals: Option<String>,
    pub(super) processors: Vec<toml::Table>,
    pub(super) event_url: Option<String>,
    pub(super) auth: Option<toml::Table>,
}
