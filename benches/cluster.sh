#!/usr/bin/env bash
# A cluster under load, with failures: 3 nodes behind HAProxy on loopback (deploy/local-cluster.sh),
# then
#   1. the conference delay, members on one node and on two (examples/conference_delay: a tone
#      burst a second; RUNS runs of each, one after the other, medians and spreads);
#   2. `callpipe load` of CALLS echo calls through HAProxy; meanwhile the control API's latency
#      for one call asked on its own node and on another (forwarded), 300 requests each; then
#      node2 drained (SIGTERM) and node3 killed (-9) mid-run;
#   3. what that did: calls per node, calls broken (those on the killed node), frames lost on the
#      other calls (target 0), how long the killed node stayed in the registry, and the Redis
#      commands per call (heartbeats included, from Redis's own counters).
#
#   benches/cluster.sh [--calls 1500] [--duration 40] [--runs 5] [--port 7400]
set -euo pipefail
cd "$(dirname "$0")/.."
calls=1500
duration=40
runs=5
port=7400
while [ $# -gt 0 ]; do
    case $1 in
        --calls) calls=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        *) echo "cluster.sh: unknown argument $1"; exit 2 ;;
    esac
done
cargo build --release --quiet --bin callpipe --example conference_delay
bin=$(pwd)/${CARGO_TARGET_DIR:-target}/release/callpipe
delay=$(pwd)/${CARGO_TARGET_DIR:-target}/release/examples/conference_delay
dir=$(mktemp -d /tmp/callpipe-cluster-bench.XXXXXX)
# The drained node's calls must be able to end by themselves.
deploy/local-cluster.sh 3 --port "$port" --dir "$dir" --grace $(((duration + 30) * 1000)) >"$dir/cluster.out" 2>&1 &
cluster=$!
trap 'kill -TERM $cluster 2>/dev/null; wait $cluster 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 300); do grep -q '^ready' "$dir/cluster.out" 2>/dev/null && break; sleep 0.2; done
grep -q '^ready' "$dir/cluster.out" || { cat "$dir/cluster.out"; exit 1; }
# shellcheck disable=SC1091
. "$dir/env"
media() { echo "ws://127.0.0.1:$((CLUSTER_BASE + 10 * $1))"; }
control() { echo "http://127.0.0.1:$((CLUSTER_BASE + 10 * $1 + 1))"; }
redis() { redis-cli -p "$CLUSTER_REDIS_PORT" "$@"; }
sleep 2

echo "== conference delay ($runs runs of 6 bursts each way)"
for n in $(seq "$runs"); do
    "$delay" "$(media 1)/conf" "$(media 1)/conf" "same-$n" 6 >>"$dir/delay-same.jsonl"
    "$delay" "$(media 1)/conf" "$(media 2)/conf" "cross-$n" 6 >>"$dir/delay-cross.jsonl"
done
python3 - "$dir" <<'PY'
import json, statistics, sys
d = sys.argv[1]
def summary(name):
    rows = [json.loads(l) for l in open(f"{d}/delay-{name}.jsonl")]
    medians = [r["median_ms"] for r in rows if r["median_ms"] is not None]
    heard = sum(r["heard"] for r in rows), sum(r["bursts"] for r in rows)
    return statistics.median(medians), min(medians), max(medians), heard
same, cross = summary("same"), summary("cross")
print(f"members on one node:  median {same[0]:.1f} ms (runs' medians {same[1]:.1f}-{same[2]:.1f}), bursts heard {same[3][0]}/{same[3][1]}")
print(f"members on two nodes: median {cross[0]:.1f} ms (runs' medians {cross[1]:.1f}-{cross[2]:.1f}), bursts heard {cross[3][0]}/{cross[3][1]}")
print(f"the link adds: {cross[0] - same[0]:+.1f} ms (median of runs)")
PY

echo "== $calls calls through HAProxy for ${duration} s; node2 drained and node3 killed mid-run"
commands_before=$(redis INFO stats | sed -n 's/^total_commands_processed:\([0-9]*\).*/\1/p')
ramp=10
"$bin" load "$CLUSTER_LB/echo" --calls "$calls" --ramp $ramp --duration "$duration" --report "$dir/load.json" >"$dir/load.log" 2>&1 &
load=$!
sleep $((ramp + 3))

# Control API latency: one of node1's live calls, asked on node1 and on node2.
python3 - "$(control 1)" "$(control 2)" "$CLUSTER_TOKEN" <<'PY'
import http.client, json, statistics, sys, time, urllib.parse
local, remote, token = sys.argv[1:4]
headers = {"Authorization": f"Bearer {token}"}
def connection(url):
    u = urllib.parse.urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=10)
c = connection(local)
c.request("GET", "/calls?status=live&page_size=100", headers=headers)
page = json.loads(c.getresponse().read())
ids = [x["id"] for x in page["_embedded"]["calls"] if x.get("node") == "node1"]
if not ids:
    sys.exit("no live call on node1 to ask about")
path = "/calls/" + urllib.parse.quote(ids[0], safe="")
def timings(url):
    conn, times = connection(url), []
    for _ in range(300):
        start = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        times.append((time.perf_counter() - start) * 1000)
        assert response.status == 200, response.status
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]
l, r = timings(local), timings(remote)
print(f"control API, GET /calls/{{id}} of a node1 call, 300 requests: on node1 p50 {l[0]:.2f} ms p99 {l[1]:.2f} ms; on node2 (forwarded) p50 {r[0]:.2f} ms p99 {r[1]:.2f} ms ({r[0] / l[0]:.1f}x)")
PY

sleep 3
echo "draining node2 (SIGTERM)"
kill -TERM "$(cat "$dir/node2.pid")"
sleep 4
echo "killing node3 (SIGKILL)"
killed_at=$(date +%s.%N)
kill -KILL "$(cat "$dir/node3.pid")"
# How long the killed node stays in the membership.
while redis SISMEMBER callpipe:nodes node3 | grep -q 1 && [ "$(redis EXISTS callpipe:node:node3)" = 1 ]; do sleep 0.1; done
gone_at=$(date +%s.%N)
calls_left=$(redis EXISTS callpipe:calls:node3)
wait $load || true
commands_after=$(redis INFO stats | sed -n 's/^total_commands_processed:\([0-9]*\).*/\1/p')
tail -n 4 "$dir/load.log"

python3 - "$dir" "$calls" "$commands_before" "$commands_after" "$killed_at" "$gone_at" "$calls_left" <<'PY'
import json, sys
d, calls, before, after, killed, gone, left = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), sys.argv[7]
per_node, closes = {}, {}
for i in (1, 2, 3):
    started = ended = dropped = 0
    codes = {}
    for line in open(f"{d}/node{i}.events.jsonl"):
        e = json.loads(line)
        if e.get("path") != "/echo":
            continue
        started += e["event"] == "started"
        if e["event"] == "ended":
            ended += 1
            codes[e.get("close_code")] = codes.get(e.get("close_code"), 0) + 1
            dropped += e.get("dropped_in", 0) + e.get("dropped_out", 0)
    per_node[i] = (started, ended)
    closes[i] = (codes, dropped)
t = json.load(open(f"{d}/load.json"))["totals"]
print("calls per node (started / ended): " + ", ".join(f"node{i} {s}/{e}" for i, (s, e) in per_node.items()))
print("close codes and frames dropped by the server, per node: " + ", ".join(f"node{i} {c} {dr}" for i, (c, dr) in closes.items()))
print(f"load: {t['calls']} calls, {t['failed']} failed to connect, {t['broken']} broken mid-call (node3 had {per_node[3][0] - per_node[3][1]} live when killed)")
print(f"frames lost on the calls not broken: {t['lost_unbroken']} (target 0); over all calls {t['lost']} of {t['frames_sent']} sent")
print(f"node3 left the membership {gone - killed:.1f} s after kill -9 (TTL 5 s); its calls key then existed: {left}")
print(f"Redis commands per call, heartbeats included: {(after - before) / max(calls, 1):.2f} ({after - before} commands)")
PY
