//! The server's counters as Prometheus text (see [`crate::metrics`] for the format).
//!
//! The families read [`ServerStats`], [`MediaStats`] and the server's services (processor times
//! in [`crate::services::Timings`], recording bytes from
//! [`crate::services::Recorder::bytes_written`], fork counters from
//! [`crate::services::ForkNet::totals`]) with relaxed loads: each value is current, the set is
//! not one atomic snapshot.

use std::sync::atomic::Ordering;

use super::ServerStats;
use crate::media::MediaStats;
use crate::metrics::{Exposition, Kind, LATENESS_BOUNDS, PROCESSOR_BOUNDS, Unit};
use crate::processor;

/// The running server's exposition text, as the control API's `GET /metrics` serves it: the
/// families of [`render`], then calls by route, refusals, limits, rings and event delivery.
pub(crate) fn render_server(shared: &super::Shared) -> String {
    let mut out = Exposition::new();
    write_server(&mut out, &shared.stats);
    write_media(&mut out, shared.media.stats());
    write_processors(&mut out, &shared.services);
    write_uploads(&mut out, &shared.services.uploads.stats);
    write_calls(&mut out, shared);
    write_events(&mut out, shared.events.stats());
    write_conferences(&mut out, &shared.conferences, shared.media.stats());
    if let Some(cluster) = &shared.cluster {
        write_cluster(&mut out, cluster);
    }
    out.finish()
}

/// Recordings uploaded to object storage.
fn write_uploads(out: &mut Exposition, stats: &crate::services::uploads::UploadStats) {
    let r = Ordering::Relaxed;
    out.family("callpipe_uploads_total", Kind::Counter, "Recordings uploaded to object storage, by outcome (failed: after every attempt).");
    out.sample(&[("outcome", "uploaded")], stats.uploaded.load(r) as f64);
    out.sample(&[("outcome", "failed")], stats.failed.load(r) as f64);
    out.family("callpipe_upload_bytes_total", Kind::Counter, "Bytes of recordings uploaded.").sample(&[], stats.bytes.load(r) as f64);
}

/// The cluster registry: reachable or not, its traffic, forwarded requests.
fn write_cluster(out: &mut Exposition, cluster: &crate::cluster::Cluster) {
    let r = Ordering::Relaxed;
    let s = cluster.stats();
    let node = [("node", cluster.node_id())];
    out.family("callpipe_cluster_registry_up", Kind::Gauge, "1 when the last request to the cluster registry (Redis) succeeded.")
        .sample(&node, if cluster.registry_up() { 1.0 } else { 0.0 });
    out.family("callpipe_cluster_registry_commands_total", Kind::Counter, "Commands sent to the cluster registry.")
        .sample(&node, s.commands.load(r) as f64);
    out.family("callpipe_cluster_registry_errors_total", Kind::Counter, "Registry requests that failed or timed out.")
        .sample(&node, s.errors.load(r) as f64);
    out.family("callpipe_cluster_calls_registered_total", Kind::Counter, "Calls written to the registry.")
        .sample(&node, s.calls_registered.load(r) as f64);
    out.family("callpipe_cluster_forwarded_total", Kind::Counter, "Control API requests handed to the node that serves the call.")
        .sample(&node, s.forwarded.load(r) as f64);
    out.family("callpipe_cluster_nodes", Kind::Gauge, "Nodes in the last membership read, this one included.")
        .sample(&[], s.nodes.load(r) as f64);
}

/// Conferences, their members, and the mixers running on the media threads.
fn write_conferences(out: &mut Exposition, conferences: &crate::processor::Conferences, media: &MediaStats) {
    let r = Ordering::Relaxed;
    let (live, members) = conferences.counts();
    out.family("callpipe_conferences_active", Kind::Gauge, "Conferences with at least one member.").sample(&[], live as f64);
    out.family("callpipe_conference_members_active", Kind::Gauge, "Members of live conferences.").sample(&[], members as f64);
    out.family("callpipe_conference_mixers", Kind::Gauge, "Conference mixers on the media threads (a closed one ends within a cycle).")
        .sample(&[], media.mixers.load(r) as f64);
    out.family("callpipe_conferences_started_total", Kind::Counter, "Conferences started.")
        .sample(&[], conferences.stats.started.load(r) as f64);
    out.family("callpipe_conference_joins_total", Kind::Counter, "Members admitted to conferences.")
        .sample(&[], conferences.stats.joined.load(r) as f64);
    out.family(
        "callpipe_conference_refusals_total",
        Kind::Counter,
        "Calls refused by their conference: full, or a route whose settings disagree with the running conference.",
    )
    .sample(&[], conferences.stats.refused.load(r) as f64);
}

/// Calls by route, 401s by reason, limits, hang-ups and ring overruns and underruns (ended
/// calls' totals plus the live calls' counters).
fn write_calls(out: &mut Exposition, shared: &super::Shared) {
    let r = Ordering::Relaxed;
    let stats = &shared.stats;
    // Routes that share a path (and pick by a metadata header) add up under the path.
    let mut by_path: Vec<(&str, u64, u64)> = Vec::new();
    for route in &stats.routes {
        let (active, total) = (route.calls_active.load(r), route.calls_total.load(r));
        match by_path.iter_mut().find(|(path, ..)| *path == route.path) {
            Some(entry) => {
                entry.1 += active;
                entry.2 += total;
            }
            None => by_path.push((&route.path, active, total)),
        }
    }
    out.family("callpipe_calls_active", Kind::Gauge, "Calls live now, by route path.");
    for (path, active, _) in &by_path {
        out.sample(&[("route", path)], *active as f64);
    }
    out.family("callpipe_calls_total", Kind::Counter, "Calls accepted, by route path.");
    for (path, _, total) in &by_path {
        out.sample(&[("route", path)], *total as f64);
    }
    out.family(
        "callpipe_upgrades_unauthorized_total",
        Kind::Counter,
        "WebSocket upgrades refused with HTTP 401, by reason (missing, scheme, bad_token, malformed, algorithm, bad_signature, expired, not_yet_valid, missing_iat, application_id, webhook_token).",
    );
    let refused = stats.rejected_unauthorized.lock().map(|m| m.clone()).unwrap_or_default();
    for (reason, count) in &refused {
        out.sample(&[("reason", reason)], *count as f64);
    }
    if refused.is_empty() {
        out.sample(&[("reason", "missing")], 0.0);
    }
    out.family("callpipe_control_unauthorized_total", Kind::Counter, "Control API requests refused with HTTP 401.")
        .sample(&[], stats.control_unauthorized.load(r) as f64);
    out.family(
        "callpipe_limit_closes_total",
        Kind::Counter,
        "Calls ended by a limit: text_rate and idle (close 1008), max_duration (1000).",
    );
    out.sample(&[("limit", "text_rate")], stats.closed_text_flood.load(r) as f64);
    out.sample(&[("limit", "idle")], stats.closed_idle.load(r) as f64);
    out.sample(&[("limit", "max_duration")], stats.hangups_max_duration.load(r) as f64);
    out.family("callpipe_api_hangups_total", Kind::Counter, "Calls hung up through the control API.")
        .sample(&[], stats.hangups_api.load(r) as f64);
    // Ended calls' totals plus the live calls', read under the lock that moves a call from one
    // to the other.
    let (overrun_in, overrun_out, underrun) = shared.calls.with_live(|live| {
        let mut sums = (stats.ring_overrun_in_bytes.load(r), stats.ring_overrun_out.load(r), stats.input_missing.load(r));
        for call in live {
            let link = &call.link.stats;
            sums.0 += link.ring_overrun_in_bytes.load(r);
            sums.1 += link.ring_overrun_out.load(r);
            sums.2 += link.session().input_missing;
        }
        sums
    });
    out.family("callpipe_ring_overrun_in_bytes_total", Kind::Counter, "Caller audio bytes dropped because a call's inbound ring was full (a full ring now stops the socket reads instead, so this stays 0; kept for dashboards).")
        .sample(&[], overrun_in as f64);
    out.family("callpipe_ring_overrun_out_total", Kind::Counter, "Outbound frames dropped because a call's outbound rings were full.")
        .sample(&[], overrun_out as f64);
    out.family(
        "callpipe_ring_underrun_total",
        Kind::Counter,
        "20 ms passes that ran without the caller's frame (the inbound ring was empty at the tick).",
    )
    .sample(&[], underrun as f64);
}

/// The event log and webhook delivery.
fn write_events(out: &mut Exposition, events: &crate::events::EventStats) {
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed) as f64;
    out.family("callpipe_events_logged_total", Kind::Counter, "Call events written to the JSON-lines log.")
        .sample(&[], load(&events.logged));
    out.family("callpipe_events_log_failures_total", Kind::Counter, "Call events lost from the log: write errors and a full queue.");
    out.sample(&[("reason", "write_error")], load(&events.log_errors));
    out.sample(&[("reason", "queue_full")], load(&events.log_dropped));
    out.family(
        "callpipe_webhooks_total",
        Kind::Counter,
        "Webhook deliveries by outcome: delivered, failed (given up after retries or refused), dropped (queue full).",
    );
    out.sample(&[("outcome", "delivered")], load(&events.webhooks_delivered));
    out.sample(&[("outcome", "failed")], load(&events.webhooks_failed));
    out.sample(&[("outcome", "dropped")], load(&events.webhooks_dropped));
    out.family("callpipe_webhook_attempts_failed_total", Kind::Counter, "Webhook attempts that failed (each retry counts).")
        .sample(&[], load(&events.webhook_attempts_failed));
    out.family("callpipe_event_stream_total", Kind::Counter, "Events for the Redis stream by outcome: written, dropped (queue full).");
    out.sample(&[("outcome", "written")], load(&events.stream_written));
    out.sample(&[("outcome", "dropped")], load(&events.stream_dropped));
    out.family(
        "callpipe_event_stream_attempts_failed_total",
        Kind::Counter,
        "Batches the Redis stream refused or did not answer (each is retried).",
    )
    .sample(&[], load(&events.stream_attempts_failed));
}

/// The exposition text of the server, media and processor families.
#[cfg(test)]
pub(crate) fn render(stats: &ServerStats, media: &MediaStats, services: &crate::services::Services) -> String {
    let mut out = Exposition::new();
    write_server(&mut out, stats);
    write_media(&mut out, media);
    write_processors(&mut out, services);
    out.finish()
}

/// The connection side's families, from [`ServerStats`].
fn write_server(out: &mut Exposition, stats: &ServerStats) {
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed) as f64;
    let counter = |out: &mut Exposition, name: &str, help: &str, value: f64| {
        out.family(name, Kind::Counter, help).sample(&[], value);
    };
    counter(out, "callpipe_frames_in_total", "Audio frames received from the platform.", load(&stats.frames_in));
    counter(out, "callpipe_frames_out_total", "Audio frames sent to the platform.", load(&stats.frames_out));
    counter(out, "callpipe_frames_wrong_size_total", "Inbound audio frames of the wrong size.", load(&stats.wrong_size));
    counter(
        out,
        "callpipe_frames_late_total",
        "Outbound frames written more than 1 ms after their playout deadline.",
        load(&stats.late_frames),
    );
    out.family("callpipe_closes_total", Kind::Counter, "Calls closed by callpipe because of an error, by WebSocket close code.");
    for (code, closes) in [
        ("1003", &stats.closed_1003),
        ("1007", &stats.closed_1007),
        ("1008", &stats.closed_1008),
        ("1009", &stats.closed_1009),
        ("1011", &stats.closed_1011),
    ] {
        out.sample(&[("code", code)], load(closes));
    }
    out.family(
        "callpipe_upgrades_rejected_total",
        Kind::Counter,
        "WebSocket upgrades refused: not_found (HTTP 404, no route), unavailable (HTTP 503, at capacity or draining), unauthorized (HTTP 401; by reason in callpipe_upgrades_unauthorized_total).",
    );
    out.sample(&[("reason", "not_found")], load(&stats.rejected_not_found));
    out.sample(&[("reason", "unavailable")], load(&stats.rejected_unavailable));
    out.sample(&[("reason", "unauthorized")], stats.unauthorized_total() as f64);
    counter(out, "callpipe_handshakes_failed_total", "WebSocket handshakes that failed or timed out.", load(&stats.failed_handshakes));
    counter(out, "callpipe_bad_text_messages_total", "Text messages that were not valid JSON objects.", load(&stats.bad_text));
    out.histogram(
        "callpipe_send_lateness_seconds",
        "How long after its grid instant each outbound frame was written to the socket.",
        &[],
        &stats.send_lateness,
        Unit::Microseconds,
        LATENESS_BOUNDS,
    );
}

/// The media threads' families, from [`MediaStats`].
fn write_media(out: &mut Exposition, media: &MediaStats) {
    out.histogram(
        "callpipe_media_tick_lateness_seconds",
        "How late each media thread slot started after its scheduled instant.",
        &[],
        &media.tick_lateness,
        Unit::Microseconds,
        LATENESS_BOUNDS,
    );
    out.family(
        "callpipe_media_ticks_skipped_total",
        Kind::Counter,
        "Call ticks given up because a media thread fell more than max_catchup behind.",
    )
    .sample(&[], media.skipped_ticks.load(Ordering::Relaxed) as f64);
    out.family("callpipe_media_calls", Kind::Gauge, "Calls on media threads now.").sample(&[], media.calls.load(Ordering::Relaxed) as f64);
    out.family(
        "callpipe_media_batched_sends_total",
        Kind::Counter,
        "Socket sends the media threads made through io_uring ([media] io = \"io_uring\").",
    )
    .sample(&[], media.batched_sends.load(Ordering::Relaxed) as f64);
    out.family("callpipe_media_batch_submits_total", Kind::Counter, "io_uring_enter system calls that carried those sends.")
        .sample(&[], media.batch_submits.load(Ordering::Relaxed) as f64);
    out.family(
        "callpipe_media_slots_total",
        Kind::Counter,
        "Slots the media threads woke up for (a slot with nothing due is not woken for).",
    )
    .sample(&[], media.slots.load(Ordering::Relaxed) as f64);
}

/// The processors' families: time per pass by processor type, recording bytes.
fn write_processors(out: &mut Exposition, services: &crate::services::Services) {
    let help = format!(
        "Time of one processor's process call per 20 ms pass, by processor type (a sample: by default one pass in {} is timed).",
        processor::TIMING_INTERVAL
    );
    let timings = services.timings.snapshot();
    if timings.is_empty() {
        // The family is declared even before the first call, so that it is never missing.
        out.family("callpipe_processor_seconds", Kind::Histogram, &help);
    }
    for (name, histogram) in &timings {
        out.histogram("callpipe_processor_seconds", &help, &[("processor", *name)], histogram, Unit::Nanoseconds, PROCESSOR_BOUNDS);
    }
    out.family("callpipe_recording_bytes_total", Kind::Counter, "Bytes written to recording files.")
        .sample(&[], services.recorder.bytes_written() as f64);
    write_forks(out, &services.fork);
}

/// The `fork` processors' counters, one series per fork name (label `fork`). Every family is
/// declared even before the first fork, so that none is ever missing.
fn write_forks(out: &mut Exposition, forks: &crate::services::ForkNet) {
    let forks = forks.totals();
    let each = |out: &mut Exposition, name: &str, help: &str, value: fn(&processor::ForkTotals) -> u64| {
        out.family(name, Kind::Counter, help);
        for (fork, totals) in &forks {
            out.sample(&[("fork", fork)], value(totals) as f64);
        }
    };
    each(out, "callpipe_fork_connects_total", "Fork connections opened (upgrades that succeeded), by fork name.", |t| t.connects);
    each(
        out,
        "callpipe_fork_connect_failures_total",
        "Fork connection attempts that failed (TCP, TLS, the upgrade or the 5 s timeout), by fork name.",
        |t| t.connect_failures,
    );
    out.family(
        "callpipe_fork_disconnects_total",
        Kind::Counter,
        "Fork connections ended, by fork name and reason: target_closed (the target closed with 1000), error (lost, or closed with another code), call_ended (the call ended).",
    );
    for (fork, t) in &forks {
        for (reason, value) in
            [("target_closed", t.disconnects_target_closed), ("error", t.disconnects_error), ("call_ended", t.disconnects_call_ended)]
        {
            out.sample(&[("fork", fork), ("reason", reason)], value as f64);
        }
    }
    each(out, "callpipe_fork_frames_sent_total", "Binary messages (frame_ms of audio each) sent to fork targets.", |t| t.frames_sent);
    each(out, "callpipe_fork_sent_bytes_total", "Payload bytes of the binary messages sent to fork targets.", |t| t.bytes_sent);
    each(
        out,
        "callpipe_fork_frames_dropped_total",
        "20 ms frames dropped because a fork's ring was full (the target slow, dead or being reconnected).",
        |t| t.frames_dropped,
    );
    out.family("callpipe_fork_replies_total", Kind::Counter, "Messages received from fork targets, by fork name and kind (text, binary).");
    for (fork, t) in &forks {
        out.sample(&[("fork", fork), ("kind", "text")], t.text_replies as f64);
        out.sample(&[("fork", fork), ("kind", "binary")], t.binary_replies as f64);
    }
    out.family(
        "callpipe_fork_reply_audio_dropped_seconds_total",
        Kind::Counter,
        "Reply audio from fork targets dropped because more than 60 s of it waited to play.",
    );
    for (fork, t) in &forks {
        out.sample(&[("fork", fork)], t.reply_audio_dropped_us as f64 / 1e6);
    }
}

#[cfg(test)]
mod tests;
