//! Several nodes as one: cluster membership and the call registry, kept in Redis.
//!
//! Each node keeps, under the configured key prefix `P`:
//!
//! ```text
//!  P:nodes             set      the ids of the nodes that have registered
//!  P:node:<id>         string   the node's report (JSON: control URL, calls, media load, ready
//!                               or draining), written with a TTL at every heartbeat
//!  P:calls:<id>        hash     call id → {node, path, start_time} for each live call of the
//!                               node; its TTL is renewed with the node's report
//!  P:conf:<name>       string   the home node of a live conference: claimed (`SET NX`) by the
//!                               node its first member reaches, renewed by it at each heartbeat
//! ```
//!
//! A conference member that reaches another node than its conference's home is linked to the
//! home (see `server::admission`): callpipe speaking its own protocol to its peer.
//!
//! A call costs the registry three commands, `HSET` and `PEXPIRE` when it starts and `HDEL` when
//! it ends (batched with whatever else is waiting); nothing is written per frame. A node killed without
//! a word disappears with its calls when its keys expire, within `ttl`. A node that loses Redis
//! keeps serving its calls, says so (`/readyz`, `/metrics`), and writes its whole hash again once
//! Redis answers.
//!
//! The registry task runs on the tokio runtime and never touches a media thread: call tasks hand
//! it their starts and ends over an unbounded channel.

mod load;
mod registry;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

use crate::auth::Secret;

/// The calls listener's path for conference links from other nodes (with the control token).
pub const LINK_PATH: &str = "/_callpipe/conference-link";

/// How long a conference member's admission may wait for its conference's home.
pub const HOME_LOOKUP_TIMEOUT: Duration = Duration::from_millis(500);

/// Replaces a claim held by a node that left (ARGV[1]) with this node's (ARGV[2]) for ARGV[3]
/// ms, or claims a free key; returns the holder afterwards.
const TAKE_OVER_CLAIM: &str = "local owner = redis.call('GET', KEYS[1]) \
if (not owner) or owner == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return ARGV[2] end \
return owner";

/// How long one registry request may take before it counts as a failure.
pub const REGISTRY_TIMEOUT: Duration = Duration::from_secs(2);

/// The `[cluster]` table.
#[derive(Clone)]
pub struct ClusterConfig {
    /// Where Redis is (`redis://[user:password@]host:port[/db]`); may hold a password.
    pub redis: Secret,
    /// This node's name in the cluster.
    pub node_id: String,
    /// How other nodes reach this node's control API (`http://host:port`); `None`: the address
    /// the control API is bound to.
    pub advertise_control: Option<String>,
    /// How other nodes reach this node's calls listener (`ws://host:port` or `wss://`), for
    /// conference links; `None`: the address the listener is bound to.
    pub advertise_media: Option<String>,
    /// How often the node's report is written.
    pub heartbeat: Duration,
    /// How long the node's keys live without a heartbeat.
    pub ttl: Duration,
    /// The prefix of every key.
    pub prefix: String,
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis", &"<redacted>")
            .field("node_id", &self.node_id)
            .field("advertise_control", &self.advertise_control)
            .field("advertise_media", &self.advertise_media)
            .field("heartbeat", &self.heartbeat)
            .field("ttl", &self.ttl)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl PartialEq for ClusterConfig {
    fn eq(&self, other: &ClusterConfig) -> bool {
        self.redis.expose() == other.redis.expose()
            && self.node_id == other.node_id
            && self.advertise_control == other.advertise_control
            && self.advertise_media == other.advertise_media
            && (self.heartbeat, self.ttl) == (other.heartbeat, other.ttl)
            && self.prefix == other.prefix
    }
}

impl ClusterConfig {
    /// The default node id: the host name and the process id.
    pub fn default_node_id() -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".into());
        let host: String = host.chars().map(|c| if valid_id_char(c) { c } else { '-' }).collect();
        format!("{host}-{}", std::process::id())
    }

    /// Checks a node id: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
    pub fn check_node_id(id: &str) -> Result<(), String> {
        if id.is_empty() || id.len() > 64 || !id.chars().all(valid_id_char) {
            return Err(format!("cluster.node_id {id:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"));
        }
        Ok(())
    }

    /// The Redis client for this configuration (nothing is connected yet).
    pub fn client(&self) -> Result<redis::Client, String> {
        crate::events::stream::redis_client(&self.redis, "cluster.redis")
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }
}

fn valid_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._-".contains(c)
}

/// A node as it reports itself in the registry (`GET /cluster/nodes`). Fields a report lacks
/// (written by another version) are left at their defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct NodeInfo {
    /// The node's id.
    pub id: String,
    /// Its control API, e.g. `http://10.0.0.5:8081`.
    pub control: String,
    /// Its calls listener, e.g. `ws://10.0.0.5:8080`.
    pub media: String,
    /// `ready`, or `draining` once it stopped taking calls.
    pub state: String,
    /// Its live calls.
    pub calls: u64,
    /// Its media threads' CPU use since its last report, as a fraction of those threads' time
    /// (0 to 1).
    pub media_load: f64,
    /// How many media threads it runs.
    pub media_threads: usize,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it wrote this report.
    pub reported_at: String,
    /// Its callpipe version.
    pub version: String,
}

/// A call's registry entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CallEntry {
    /// The node that serves the call.
    pub node: String,
    /// The path the platform connected to.
    pub path: String,
    /// When the call started (RFC 3339).
    pub start_time: String,
}

/// Why the registry could not answer.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Redis did not answer in time.
    #[error("the cluster registry (Redis) did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error, or the connection failed.
    #[error("the cluster registry (Redis) failed: {0}")]
    Redis(#[from] redis::RedisError),
    /// The last request failed: Redis is not asked again until a heartbeat gets through.
    #[error("the cluster registry (Redis) is unreachable")]
    Unreachable,
}

/// The registry's counters, for `/metrics` and `/readyz`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Whether the last registry request succeeded.
    pub up: AtomicBool,
    /// Commands sent to Redis.
    pub commands: AtomicU64,
    /// Registry requests that failed or timed out.
    pub errors: AtomicU64,
    /// Calls registered.
    pub calls_registered: AtomicU64,
    /// Control API requests handed to another node.
    pub forwarded: AtomicU64,
    /// Nodes in the last membership read (this one included).
    pub nodes: AtomicU64,
}

/// What the registry task is told by call tasks.
enum Op {
    Started { id: String, entry: String },
    Ended { id: String },
    ConferenceEnded { name: String },
}

/// What the node reports of itself at each heartbeat.
pub struct NodeGauges {
    /// Live calls now.
    pub calls: Box<dyn Fn() -> u64 + Send + Sync>,
    /// How many media threads the node runs.
    pub media_threads: usize,
    /// The names of the conferences live on this node.
    pub conferences: Box<dyn Fn() -> Vec<String> + Send + Sync>,
}

/// Where a conference lives.
#[derive(Debug, Clone, PartialEq)]
pub enum Home {
    /// On this node (it was free and this node claimed it, or it already lived here).
    Here,
    /// On another node.
    Node(NodeInfo),
}

/// This node's membership: registers its calls and reads the others'. Cheap to clone.
#[derive(Clone)]
pub struct Cluster(Arc<Inner>);

struct Inner {
    config: ClusterConfig,
    control: String,
    media: String,
    ops: mpsc::UnboundedSender<Op>,
    connection: ConnectionManager,
    draining: AtomicBool,
    wake: Notify,
    stop: Notify,
    nodes: Mutex<Vec<NodeInfo>>,
    stats: ClusterStats,
    started_at: SystemTime,
}

impl Cluster {
    /// Joins the cluster: starts the registry task (which connects, and keeps reconnecting).
    /// `control` and `media` are this node's control API and calls listener as the other nodes
    /// should reach them. Fails only on a configuration Redis cannot use; an unreachable Redis
    /// is retried.
    pub fn start(
        config: ClusterConfig,
        control: String,
        media: String,
        gauges: NodeGauges,
    ) -> Result<(Cluster, tokio::task::JoinHandle<()>), String> {
        let client = config.client()?;
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REGISTRY_TIMEOUT))
            .set_response_timeout(Some(REGISTRY_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client, manager).map_err(|e| format!("cluster.redis: {e}"))?;
        let (ops, rx) = mpsc::unbounded_channel();
        let cluster = Cluster(Arc::new(Inner {
            config,
            control,
            media,
            ops,
            connection,
            draining: AtomicBool::new(false),
            wake: Notify::new(),
            stop: Notify::new(),
            nodes: Mutex::new(Vec::new()),
            stats: ClusterStats::default(),
            started_at: SystemTime::now(),
        }));
        let task = tokio::spawn(registry::run(cluster.clone(), rx, gauges));
        Ok((cluster, task))
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.0.config.node_id
    }

    /// The registry's counters.
    pub fn stats(&self) -> &ClusterStats {
        &self.0.stats
    }

    /// Whether Redis answered the last request.
    pub fn registry_up(&self) -> bool {
        self.0.stats.up.load(Ordering::Acquire)
    }

    /// Registers a live call (written within a moment, off the caller's task).
    pub fn call_started(&self, id: &str, path: &str, started_at: SystemTime) {
        let entry = CallEntry { node: self.node_id().to_owned(), path: path.to_owned(), start_time: crate::events::timestamp(started_at) };
        let entry = serde_json::to_string(&entry).unwrap_or_default();
        let _ = self.0.ops.send(Op::Started { id: id.to_owned(), entry });
    }

    /// Removes an ended call.
    pub fn call_ended(&self, id: &str) {
        let _ = self.0.ops.send(Op::Ended { id: id.to_owned() });
    }

    /// Reports this node as draining at once (the load balancers read `/readyz`; the other
    /// nodes read this).
    pub fn set_draining(&self) {
        self.0.draining.store(true, Ordering::Release);
        self.0.wake.notify_one();
    }

    /// Leaves the cluster: the node's keys are deleted and the registry task ends.
    pub fn leave(&self) {
        self.0.stop.notify_one();
    }

    /// The nodes of the last membership read.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.0.nodes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the membership now.
    pub async fn refresh_nodes(&self) -> Result<Vec<NodeInfo>, RegistryError> {
        let nodes = registry::read_nodes(self).await?;
        self.set_nodes(nodes.clone());
        Ok(nodes)
    }

    fn set_nodes(&self, nodes: Vec<NodeInfo>) {
        self.0.stats.nodes.store(nodes.len() as u64, Ordering::Relaxed);
        *self.0.nodes.lock().unwrap_or_else(|p| p.into_inner()) = nodes;
    }

    /// The other nodes that have a live call with this id. The membership read at the last
    /// heartbeat is asked first; when none of them has the call, the membership is read again
    /// (a node may have joined since) and the new nodes asked.
    pub async fn owners(&self, call_id: &str) -> Result<Vec<NodeInfo>, RegistryError> {
        let known = self.nodes();
        let found = self.ask(&known, call_id).await?;
        if !found.is_empty() {
            return Ok(found);
        }
        let fresh = self.refresh_nodes().await?;
        let new: Vec<NodeInfo> = fresh.into_iter().filter(|n| !known.iter().any(|k| k.id == n.id)).collect();
        self.ask(&new, call_id).await
    }

    async fn ask(&self, nodes: &[NodeInfo], call_id: &str) -> Result<Vec<NodeInfo>, RegistryError> {
        let others: Vec<&NodeInfo> = nodes.iter().filter(|n| n.id != self.node_id()).collect();
        if others.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for node in &others {
            pipe.hexists(self.0.config.key(&["calls", &node.id]), call_id);
        }
        let found: Vec<bool> = self.query(&pipe, others.len()).await?;
        Ok(others.into_iter().zip(found).filter(|(_, has)| *has).map(|(n, _)| n.clone()).collect())
    }

    /// Where the conference `name` lives: claimed for this node when no node has it (or its
    /// claim lapsed), else the node that has it. A node whose claim stands but which left the
    /// membership (killed: its claim expires within the TTL) is passed over: this node claims
    /// the conference for itself.
    pub async fn conference_home(&self, name: &str) -> Result<Home, RegistryError> {
        // A call waits for this before it is prepared: one bound for every request it makes,
        // and none at all while Redis is known to be away.
        if !self.registry_up() {
            return Err(RegistryError::Unreachable);
        }
        match tokio::time::timeout(HOME_LOOKUP_TIMEOUT, self.find_home(name)).await {
            Ok(home) => home,
            Err(_) => Err(RegistryError::Timeout(HOME_LOOKUP_TIMEOUT)),
        }
    }

    async fn find_home(&self, name: &str) -> Result<Home, RegistryError> {
        let key = self.0.config.key(&["conf", name]);
        let ttl = self.0.config.ttl.as_millis() as u64;
        let mut claim = redis::pipe();
        claim.cmd("SET").arg(&key).arg(self.node_id()).arg("NX").arg("PX").arg(ttl).ignore().get(&key);
        let (owner,): (Option<String>,) = self.query(&claim, 2).await?;
        let Some(owner) = owner.filter(|owner| owner != self.node_id()) else { return Ok(Home::Here) };
        if let Some(node) = self.live_node(&owner).await? {
            return Ok(Home::Node(node));
        }
        // The owner has left: its claim is taken over, unless another node took it first (then
        // that node is the home).
        let mut take = redis::pipe();
        take.cmd("EVAL").arg(TAKE_OVER_CLAIM).arg(1).arg(&key).arg(&owner).arg(self.node_id()).arg(ttl);
        let (now,): (Option<String>,) = self.query(&take, 1).await?;
        match now {
            Some(now) if now != self.node_id() => match self.live_node(&now).await? {
                Some(node) => Ok(Home::Node(node)),
                None => Ok(Home::Here),
            },
            _ => Ok(Home::Here),
        }
    }

    /// The other node where the conference `name` lives, if one does (nothing is claimed).
    pub async fn conference_node(&self, name: &str) -> Result<Option<NodeInfo>, RegistryError> {
        let key = self.0.config.key(&["conf", name]);
        let (owner,): (Option<String>,) = self.query(redis::pipe().get(&key), 1).await?;
        match owner {
            Some(owner) if owner != self.node_id() => self.live_node(&owner).await,
            _ => Ok(None),
        }
    }

    /// A conference of this node ended: its claim is released.
    pub fn conference_ended(&self, name: &str) {
        let _ = self.0.ops.send(Op::ConferenceEnded { name: name.to_owned() });
    }

    /// The node `id`, if it is in the membership (read again when the last read lacks it).
    async fn live_node(&self, id: &str) -> Result<Option<NodeInfo>, RegistryError> {
        if let Some(node) = self.nodes().into_iter().find(|n| n.id == id) {
            return Ok(Some(node));
        }
        Ok(self.refresh_nodes().await?.into_iter().find(|n| n.id == id))
    }

    /// Sends a pipeline of `commands` commands, within [`REGISTRY_TIMEOUT`], counting it.
    async fn query<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline, commands: usize) -> Result<T, RegistryError> {
        let mut connection = self.0.connection.clone();
        let stats = &self.0.stats;
        stats.commands.fetch_add(commands as u64, Ordering::Relaxed);
        let result = match tokio::time::timeout(REGISTRY_TIMEOUT, pipe.query_async(&mut connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(RegistryError::Redis(e)),
            Err(_) => Err(RegistryError::Timeout(REGISTRY_TIMEOUT)),
        };
        stats.up.store(result.is_ok(), Ordering::Release);
        if result.is_err() {
            stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}
