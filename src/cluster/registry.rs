//! The registry task: the node's heartbeat, its calls written as they start and end, the
//! membership read, and a full rewrite of the node's calls after Redis was lost.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::load::MediaLoad;
use super::{Cluster, NodeGauges, NodeInfo, Op, RegistryError};

/// Renews a conference's claim held by this node (ARGV[1]) for ARGV[2] ms, or claims it when
/// nobody holds it; another node's claim is left alone. One round trip, atomic in Redis.
const RENEW_CLAIM: &str = "local owner = redis.call('GET', KEYS[1]) \
if owner == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
elseif not owner then return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) and 1 or 0 \
else return 0 end";

/// Deletes a conference's claim if this node (ARGV[1]) holds it.
const RELEASE_CLAIM: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// Starts and ends written in one pipeline at most.
const BATCH: usize = 512;

/// The node's live calls as registered: id → (entry, how many live calls have that id).
type Registered = HashMap<String, (String, usize)>;

pub(super) async fn run(cluster: Cluster, mut ops: mpsc::UnboundedReceiver<Op>, gauges: NodeGauges) {
    let inner = &cluster.0;
    let mut calls: Registered = HashMap::new();
    // The hash is written whole at the first heartbeat, and again after any failure.
    let mut rewrite = true;
    let mut load = MediaLoad::new(gauges.media_threads);
    let mut heartbeat = tokio::time::interval(inner.config.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_up = None;
    loop {
        tokio::select! {
            () = inner.stop.notified() => break,
            op = ops.recv() => {
                let Some(op) = op else { break };
                let mut batch = vec![op];
                while batch.len() < BATCH {
                    match ops.try_recv() {
                        Ok(op) => batch.push(op),
                        Err(_) => break,
                    }
                }
                let (batch, ended): (Vec<Op>, Vec<Op>) = batch.into_iter().partition(|op| !matches!(op, Op::ConferenceEnded { .. }));
                release_conferences(&cluster, ended, &gauges).await;
                let (changed, started) = apply(&mut calls, batch);
                inner.stats.calls_registered.fetch_add(started, Ordering::Relaxed);
                if !rewrite && write_calls(&cluster, &changed, &calls).await.is_err() {
                    rewrite = true;
                }
            }
            _ = heartbeat.tick() => {
                rewrite = beat(&cluster, &gauges, &mut load, &calls, rewrite, &mut was_up).await;
            }
            () = inner.wake.notified() => {
                rewrite = beat(&cluster, &gauges, &mut load, &calls, rewrite, &mut was_up).await;
            }
        }
    }
    // Conferences that ended just before the stop release their claims too.
    let mut ended = Vec::new();
    while let Ok(op) = ops.try_recv() {
        if matches!(op, Op::ConferenceEnded { .. }) {
            ended.push(op);
        }
    }
    release_conferences(&cluster, ended, &gauges).await;
    leave(&cluster).await;
}

/// Applies starts and ends to the node's calls; returns the ids whose entry changed.
fn apply(calls: &mut Registered, batch: Vec<Op>) -> (Vec<String>, u64) {
    let mut changed = Vec::with_capacity(batch.len());
    let mut started = 0;
    for op in batch {
        match op {
            Op::Started { id, entry } => {
                started += 1;
                let slot = calls.entry(id.clone()).or_insert_with(|| (String::new(), 0));
                slot.0 = entry;
                slot.1 += 1;
                changed.push(id);
            }
            Op::Ended { id } => {
                if let Some(slot) = calls.get_mut(&id) {
                    slot.1 -= 1;
                    if slot.1 == 0 {
                        calls.remove(&id);
                    }
                    changed.push(id);
                }
            }
            Op::ConferenceEnded { .. } => {}
        }
    }
    changed.sort();
    changed.dedup();
    (changed, started)
}

/// Releases the claims of conferences that ended here (a claim another node took meanwhile is
/// left alone).
async fn release_conferences(cluster: &Cluster, ended: Vec<Op>, gauges: &NodeGauges) {
    if ended.is_empty() {
        return;
    }
    // A conference that started here again since it ended keeps its claim.
    let live = (gauges.conferences)();
    for op in ended {
        let Op::ConferenceEnded { name } = op else { continue };
        if live.contains(&name) {
            continue;
        }
        let key = cluster.0.config.key(&["conf", &name]);
        let mut release = redis::pipe();
        release.cmd("EVAL").arg(RELEASE_CLAIM).arg(1).arg(&key).arg(cluster.node_id()).ignore();
        let _ = cluster.query::<()>(&release, 1).await;
    }
}

/// Writes the changed calls: `HSET` for those still live (and the hash's TTL), `HDEL` for those
/// gone.
async fn write_calls(cluster: &Cluster, changed: &[String], calls: &Registered) -> Result<(), RegistryError> {
    let key = cluster.0.config.key(&["calls", cluster.node_id()]);
    let mut pipe = redis::pipe();
    let mut live: Vec<(&str, &str)> = Vec::new();
    let mut gone: Vec<&str> = Vec::new();
    for id in changed {
        match calls.get(id) {
            Some((entry, _)) => live.push((id, entry)),
            None => gone.push(id),
        }
    }
    let mut commands = 0;
    if !live.is_empty() {
        // The hash may be new (the node had no calls at its last heartbeat): it must expire
        // with the node from the start.
        pipe.hset_multiple(&key, &live).ignore();
        pipe.cmd("PEXPIRE").arg(&key).arg(cluster.0.config.ttl.as_millis() as u64).ignore();
        commands += 2;
    }
    if !gone.is_empty() {
        pipe.hdel(&key, &gone).ignore();
        commands += 1;
    }
    if commands == 0 {
        return Ok(());
    }
    cluster
        .query::<()>(&pipe, commands)
        .await
        .inspect_err(|e| warn!(error = %e, "the cluster registry missed call starts or ends; they are written again once it answers"))
}

/// One heartbeat: the node's report (and its whole call hash when `rewrite`), then the
/// membership read. Returns whether the hash must be rewritten at the next one.
async fn beat(
    cluster: &Cluster,
    gauges: &NodeGauges,
    load: &mut MediaLoad,
    calls: &Registered,
    rewrite: bool,
    was_up: &mut Option<bool>,
) -> bool {
    let inner = &cluster.0;
    let config = &inner.config;
    let ttl_ms = inner.config.ttl.as_millis() as u64;
    let report = NodeInfo {
        id: config.node_id.clone(),
        control: inner.control.clone(),
        media: inner.media.clone(),
        state: if inner.draining.load(Ordering::Acquire) { "draining" } else { "ready" }.into(),
        calls: (gauges.calls)(),
        media_load: load.sample(Instant::now()),
        media_threads: gauges.media_threads,
        started_at: crate::events::timestamp(inner.started_at),
        reported_at: crate::events::timestamp(SystemTime::now()),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let node_key = config.key(&["node", &config.node_id]);
    let calls_key = config.key(&["calls", &config.node_id]);
    let mut pipe = redis::pipe();
    pipe.cmd("SET").arg(&node_key).arg(serde_json::to_string(&report).unwrap_or_default()).arg("PX").arg(ttl_ms).ignore();
    pipe.sadd(config.key(&["nodes"]), &config.node_id).ignore();
    let mut commands = 2;
    if rewrite {
        pipe.del(&calls_key).ignore();
        commands += 1;
        if !calls.is_empty() {
            let all: Vec<(&str, &str)> = calls.iter().map(|(id, (entry, _))| (id.as_str(), entry.as_str())).collect();
            pipe.hset_multiple(&calls_key, &all).ignore();
            commands += 1;
        }
    }
    pipe.cmd("PEXPIRE").arg(&calls_key).arg(ttl_ms).ignore();
    commands += 1;
    // The conferences living here keep their claims (and claim again after an outage); a claim
    // another node holds is left alone.
    for name in (gauges.conferences)() {
        pipe.cmd("EVAL").arg(RENEW_CLAIM).arg(1).arg(config.key(&["conf", &name])).arg(&config.node_id).arg(ttl_ms).ignore();
        commands += 1;
    }
    let written = cluster.query::<()>(&pipe, commands).await;
    let up = written.is_ok();
    if *was_up != Some(up) {
        match &written {
            Ok(()) => info!(node = config.node_id, calls = calls.len(), "cluster registry reachable: node registered"),
            Err(e) => {
                warn!(node = config.node_id, error = %e, "cluster registry unreachable: serving this node's calls alone until it answers")
            }
        }
        *was_up = Some(up);
    }
    if !up {
        return true;
    }
    match read_nodes(cluster).await {
        Ok(nodes) => cluster.set_nodes(nodes),
        Err(e) => warn!(error = %e, "cluster membership read failed"),
    }
    false
}

/// Reads every registered node's report; forgets the ids whose report has expired.
pub(super) async fn read_nodes(cluster: &Cluster) -> Result<Vec<NodeInfo>, RegistryError> {
    let config = &cluster.0.config;
    let set = config.key(&["nodes"]);
    let ids: Vec<String> = cluster.query(redis::pipe().smembers(&set), 1).await.map(|(ids,): (Vec<String>,)| ids)?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = ids.iter().map(|id| config.key(&["node", id])).collect();
    let (reports,): (Vec<Option<String>>,) = cluster.query(redis::pipe().mget(&keys), 1).await?;
    let mut nodes = Vec::new();
    let mut expired = Vec::new();
    for (id, report) in ids.iter().zip(reports) {
        match report.map(|r| serde_json::from_str::<NodeInfo>(&r)) {
            Some(Ok(node)) => nodes.push(node),
            // A report this version cannot read is left alone (its node is not this one's to
            // forget).
            Some(Err(_)) => {}
            None => expired.push(id.as_str()),
        }
    }
    if !expired.is_empty() {
        // A node that comes back registers again at its next heartbeat.
        let _ = cluster.query::<()>(redis::pipe().srem(&set, &expired).ignore(), 1).await;
    }
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(nodes)
}

/// Deletes the node's keys (a clean stop; a killed node's keys expire instead).
async fn leave(cluster: &Cluster) {
    let config = &cluster.0.config;
    let mut pipe = redis::pipe();
    pipe.del(config.key(&["node", &config.node_id])).ignore();
    pipe.del(config.key(&["calls", &config.node_id])).ignore();
    pipe.srem(config.key(&["nodes"]), &config.node_id).ignore();
    match cluster.query::<()>(&pipe, 3).await {
        Ok(()) => info!(node = config.node_id, "left the cluster"),
        Err(e) => warn!(node = config.node_id, error = %e, "could not leave the cluster cleanly; the node's keys expire within the TTL"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_with_one_id_stay_registered_until_the_last_ends() {
        let mut calls = Registered::new();
        let start = |id: &str| Op::Started { id: id.into(), entry: format!("{{\"id\":\"{id}\"}}") };
        assert_eq!(apply(&mut calls, vec![start("a"), start("b"), start("a")]), (vec!["a".to_owned(), "b".to_owned()], 3));
        assert_eq!(apply(&mut calls, vec![Op::Ended { id: "a".into() }]), (vec!["a".to_owned()], 0));
        assert!(calls.contains_key("a"), "one call with id a is still live");
        apply(&mut calls, vec![Op::Ended { id: "a".into() }, Op::Ended { id: "c".into() }]);
        assert!(!calls.contains_key("a"));
        assert_eq!(calls.len(), 1);
    }
}
