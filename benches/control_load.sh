#!/usr/bin/env bash
# Does the control plane (HTTP API, call events, signed webhooks) disturb media timing under load?
#
#   benches/control_load.sh [CALLS] [SECONDS]          e.g. benches/control_load.sh 200 30
#
# Runs `callpipe serve` (release build, a generated configuration) and `callpipe load` with CALLS
# calls of SECONDS s at 16 kHz against /echo, twice:
#
#   baseline  route /echo = [echo], `[events] log = "off"`, no event_url, nobody calls the API.
#   busy      the same route with `event_url` pointing at a local webhook receiver (Python
#             `http.server`, answers 200, checks every HS256 signature and payload_hash),
#             `[events] log` to a file, `signature_secret` set; and during the steady window a
#             poller (Python, one keep-alive connection) that every 100 ms does
#             GET /calls?page_size=100 (a random page), GET /metrics,
#             PUT /calls/{id}/notify on a random live load call, and PUT /calls/{id}
#             {"action":"unmute"} on the call it muted at the previous tick, then
#             {"action":"mute"} on the next call of the mute group.
#
# Both configurations set `[control] token` (the poller sends it) and run the same calls. Mute
# silences a call's echo, which the load emulator would count as lost frames and arrival gaps,
# so mute is aimed only at a separate mute group: MUTE_CALLS (default 4) extra
# `callpipe call --tag` calls with known ids (`/echo?call_id=ctl-mute-N`), run in both
# configurations and reported on their own (one of them is muted at a time, about 100 ms, i.e.
# about 5 echo frames per mute). The load report's figures cover only the CALLS load calls,
# which get notify (it changes no audio) but never mute. Server CPU per call-minute counts all
# CALLS + MUTE_CALLS calls.
#
# Reported per configuration: from `callpipe load --report` the echo round trip p50/p99/p99.9,
# inter-arrival deviation p99, loss and the emulator's own send lateness; from the server's final
# summary line (stderr; over the whole run, every call) its send lateness p50/p99/p99.9, media
# tick lateness p99 and frames sent over 1 ms late; from GET /metrics at the end the webhooks
# delivered/failed/dropped and events logged; the poller's requests by status and their latency;
# the server's CPU (utime+stime from /proc) per call-minute over the steady window; the
# receiver's and poller's own CPU (they share the machine's cores); and, since the machine may
# be shared, the CPU other processes used in the window, the hypervisor's steal time and the
# kernel's CPU pressure (PSI).
# Each configuration prints a block of details, then both go into two markdown tables.
#
# MUTE_CALLS=N sets the mute group's size; CARGO_TARGET_DIR is honoured. Loopback only; each
# configuration is bounded by SECONDS plus the ramp plus at most 20 s of webhook drain; every
# background process is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-200}
seconds=${2:-30}
mute_calls=${MUTE_CALLS:-4}
ramp=$(( calls / 100 > 1 ? calls / 100 : 1 ))
window=$(( seconds - ramp - 4 ))      # steady window: [ramp + 2, seconds - 2] s after the load starts
if [ "$window" -lt 5 ]; then echo "SECONDS must be at least ramp + 9 (ramp = CALLS/100, at least 1)" >&2; exit 2; fi
cargo build --release --quiet --bin callpipe
bin=${CARGO_TARGET_DIR:-target}/release/callpipe
hz=$(getconf CLK_TCK)
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Sleeps in the background, so that a signal's trap runs at once.
pause() { sleep "$1" & wait $!; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# CPU pressure (PSI): microseconds during which some runnable task waited for a CPU.
pressure() { awk '/^some/ {sub("total=", "", $5); print $5; f=1} END {if (!f) print 0}' /proc/pressure/cpu 2>/dev/null || echo 0; }
# Time the hypervisor kept this VM's CPUs from running (steal), in clock ticks.
steal() { awk '/^cpu / {print $9 + 0}' /proc/stat; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The webhook receiver: counts requests and event kinds, verifies each signature; GET answers
# the counts and its own CPU time as JSON.
cat >"$dir/receiver.py" <<'PY'
import base64, hashlib, hmac, json, os, resource, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
secret = os.environ["CTLBENCH_SECRET"].encode()
lock = threading.Lock()
counts = {"requests": 0, "signed_ok": 0, "signature_bad": 0, "unsigned": 0, "events": {}}
def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def answer(self, body=b""):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        auth = self.headers.get("Authorization", "")
        verdict = "unsigned"
        if auth.startswith("Bearer "):
            try:
                head, claims, sig = auth[7:].split(".")
                mac = hmac.new(secret, f"{head}.{claims}".encode(), hashlib.sha256).digest()
                good = hmac.compare_digest(mac, b64d(sig)) and json.loads(b64d(claims))["payload_hash"] == hashlib.sha256(body).hexdigest()
            except Exception:
                good = False
            verdict = "signed_ok" if good else "signature_bad"
        try:
            kind = json.loads(body).get("event", "?")
        except Exception:
            kind = "unparsable"
        with lock:
            counts["requests"] += 1
            counts[verdict] += 1
            counts["events"][kind] = counts["events"].get(kind, 0) + 1
        self.answer()
    def do_GET(self):
        ru = resource.getrusage(resource.RUSAGE_SELF)
        with lock:
            self.answer(json.dumps({**counts, "cpu_s": ru.ru_utime + ru.ru_stime}).encode())
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
PY

# The API poller: one tick every 100 ms for SECONDS, over one keep-alive connection.
cat >"$dir/poller.py" <<'PY'
import http.client, json, os, random, resource, sys, time
port, seconds, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
mute_ids = sys.argv[4].split(",") if len(sys.argv) > 4 and sys.argv[4] else []
token = os.environ["CTLBENCH_TOKEN"]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
statuses, latency, by_kind = {}, [], {}
def request(kind, method, path, body=None):
    global conn
    t = time.perf_counter()
    try:
        conn.request(method, path, body=body, headers={"Authorization": f"Bearer {token}", **({"Content-Type": "application/json"} if body else {})})
        r = conn.getresponse()
        data, status = r.read(), str(r.status)
    except Exception as e:
        data, status = b"", "error:" + type(e).__name__
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    latency.append((time.perf_counter() - t) * 1000)
    statuses[status] = statuses.get(status, 0) + 1
    k = by_kind.setdefault(kind, {})
    k[status] = k.get(status, 0) + 1
    return status, data
count, ticks, late_ticks, mute_windows, seq, muted = 100, 0, 0, [], 0, None
start = time.monotonic()
next_tick = start
while time.monotonic() < start + seconds:
    ticks += 1
    index = random.randint(0, max(0, count - 100))
    status, data = request("GET /calls", "GET", f"/calls?page_size=100&record_index={index}")
    live = []
    if status == "200":
        page = json.loads(data)
        count = page["count"]
        live = [c["id"] for c in page["_embedded"]["calls"] if c["status"] == "live" and not c["id"].startswith("ctl-mute-")]
    request("GET /metrics", "GET", "/metrics")
    if live:
        seq += 1
        request("PUT notify", "PUT", f"/calls/{random.choice(live)}/notify", json.dumps({"payload": {"n": seq}}))
    if mute_ids:
        # One mute-group call muted at a time, for one tick (about 100 ms, 5 frames).
        if muted:
            request("PUT unmute", "PUT", f"/calls/{muted[0]}", '{"action":"unmute"}')
            mute_windows.append((time.perf_counter() - muted[1]) * 1000)
        target = mute_ids[ticks % len(mute_ids)]
        muted = (target, time.perf_counter())
        request("PUT mute", "PUT", f"/calls/{target}", '{"action":"mute"}')
    next_tick += 0.1
    now = time.monotonic()
    if now > next_tick:
        late_ticks += 1
        next_tick = now
    else:
        time.sleep(next_tick - now)
if muted:
    request("PUT unmute", "PUT", f"/calls/{muted[0]}", '{"action":"unmute"}')
    mute_windows.append((time.perf_counter() - muted[1]) * 1000)
def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] if v else 0.0
ru = resource.getrusage(resource.RUSAGE_SELF)
json.dump({"ticks": ticks, "late_ticks": late_ticks, "requests": len(latency), "statuses": statuses, "by_kind": by_kind,
           "latency_p50": pct(latency, 0.5), "latency_p99": pct(latency, 0.99), "latency_max": max(latency, default=0),
           "mute_pairs": len(mute_windows), "mute_window_p50": pct(mute_windows, 0.5), "mute_window_max": max(mute_windows, default=0),
           "mute_ms": sum(mute_windows),
           "cpu_s": ru.ru_utime + ru.ru_stime}, open(out, "w"))
PY

# Every process's CPU time (own + reaped children's), keyed by pid and start time, to estimate
# what other processes on this shared machine used during the window. /proc/stat's machine-wide
# counters are tick-sampled and miss most of a 20 ms-periodic workload, so they are not used.
cat >"$dir/scan.py" <<'PY'
import json, os, sys
out = {}
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = [f[19], sum(int(x) for x in f[11:15])]
out["_skip"] = [str(os.getpid()), str(os.getppid())]
json.dump(out, open(sys.argv[1], "w"))
PY

webhooks_done() {
  curl -sf "http://127.0.0.1:$cport/metrics" >"$dir/m.txt" || true
  awk '/^callpipe_webhooks_total/ {s += $2} /^callpipe_calls_active/ {a += $2} END {print a + 0, s + 0}' "$dir/m.txt"
}

run_config() {
  local name=$1 out="$dir/$1"
  mkdir -p "$out"
  local port cport wport
  port=$(free_port); cport=$(free_port); wport=$(free_port)
  {
    printf '[server]\nstats_interval_ms = 10000\n\n[control]\ntoken = "env:CTLBENCH_TOKEN"\n\n[events]\n'
    if [ "$name" = busy ]; then
      printf 'log = "%s"\nsignature_secret = "env:CTLBENCH_SECRET"\n' "$out/events.jsonl"
    else
      printf 'log = "off"\n'
    fi
    printf '\n[[route]]\npath = "/echo"\nprocessors = [{ type = "echo" }]\n'
    if [ "$name" = busy ]; then printf 'event_url = "http://127.0.0.1:%s/events"\n' "$wport"; fi
  } >"$out/callpipe.toml"
  local receiver=""
  if [ "$name" = busy ]; then
    python3 "$dir/receiver.py" "$wport" >"$out/receiver.log" 2>&1 &
    receiver=$!; pids+=("$receiver")
  fi
  "$bin" serve --listen 127.0.0.1:$port --control 127.0.0.1:$cport --config "$out/callpipe.toml" >"$out/server.log" 2>&1 &
  server=$!; pids+=("$server")
  for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$cport/readyz" >/dev/null 2>&1 && { [ -z "$receiver" ] || curl -sf "http://127.0.0.1:$wport/" >/dev/null 2>&1; } && break
    sleep 0.1
  done
  local mute_pids=() mute_ids=()
  for i in $(seq "$mute_calls"); do
    "$bin" call "ws://127.0.0.1:$port/echo?call_id=ctl-mute-$i" --tag --json --duration $((seconds + ramp)) >"$out/mute-$i.json" 2>/dev/null &
    mute_pids+=($!); pids+=($!); mute_ids+=("ctl-mute-$i")
  done
  "$bin" load "ws://127.0.0.1:$port/echo" --calls "$calls" --ramp "$ramp" --duration "$seconds" --report "$out/run.json" >"$out/load.txt" 2>"$out/load.err" &
  local client=$!; pids+=("$client")
  pause $((ramp + 2))
  local s0 t0 s1 t1 p0 p1 st0 st1 poller=""
  python3 "$dir/scan.py" "$out/procs0.json"
  s0=$(cpu $server); p0=$(pressure); st0=$(steal); t0=$(date +%s.%N)
  if [ "$name" = busy ]; then
    python3 "$dir/poller.py" "$cport" "$window" "$out/poller.json" "$(IFS=,; echo "${mute_ids[*]}")" &
    poller=$!; pids+=("$poller")
  fi
  pause "$window"
  s1=$(cpu $server); p1=$(pressure); st1=$(steal); t1=$(date +%s.%N)
  python3 "$dir/scan.py" "$out/procs1.json"
  echo "$$ $server $client ${mute_pids[*]} $receiver $poller" >"$out/ours.txt"
  [ -n "$poller" ] && { wait "$poller" || true; }
  wait "$client" || true
  for p in "${mute_pids[@]}"; do wait "$p" || true; done
  # Let the last call events reach the log and the receiver: wait (up to 20 s) until no call is
  # live and the webhook outcomes stop moving for a second.
  local last="" now
  for _ in $(seq 40); do
    now=$(webhooks_done)
    [ "${now%% *}" = 0 ] && [ "$now" = "$last" ] && break
    last=$now; sleep 0.5
  done
  curl -sf "http://127.0.0.1:$cport/metrics" >"$out/metrics.txt" || true
  [ -n "$receiver" ] && { curl -sf "http://127.0.0.1:$wport/" >"$out/receiver.json" || true; }
  kill -TERM $server; wait $server 2>/dev/null || true
  [ -n "$receiver" ] && { kill $receiver 2>/dev/null || true; wait $receiver 2>/dev/null || true; }
  echo "$s0 $s1 $t0 $t1 $p0 $p1 $st0 $st1" >"$out/cpu.txt"
  pids=()
}

echo "machine: $(nproc) cores (shared), $(uname -r), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "command: benches/control_load.sh $calls $seconds; $calls load calls + $mute_calls mute-group calls at 16 kHz, ramp ${ramp} s, steady window ${window} s"
export CTLBENCH_SECRET CTLBENCH_TOKEN
CTLBENCH_SECRET=$(head -c 24 /dev/urandom | base64)
CTLBENCH_TOKEN=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')
for config in baseline busy; do run_config $config; done

python3 - "$dir" "$calls" "$mute_calls" "$hz" <<'PY'
import glob, json, os, re, sys
d, calls, mute_calls, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
def metrics(path):
    m = {}
    if os.path.exists(path):
        for line in open(path):
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                m[key] = float(value)
    return m
rows = {}
for name in ("baseline", "busy"):
    o = f"{d}/{name}"
    r = json.load(open(f"{o}/run.json"))
    m = metrics(f"{o}/metrics.txt")
    log = open(f"{o}/server.log").read()
    summary = [l for l in log.splitlines() if "send lateness n=" in l][-1]
    send = dict(re.findall(r"(p50|p99|p99\.9)=([0-9.]+)ms", summary.split("| send lateness ")[1].split(" | ")[0]))
    tick = dict(re.findall(r"(p50|p99|p99\.9)=([0-9.]+)ms", summary.split("| media tick lateness ")[1]))
    late = re.search(r"late\(>1ms\)=(\d+)", summary).group(1)
    s0, s1, t0, t1, p0, p1, st0, st1 = map(float, open(f"{o}/cpu.txt").read().split())
    cpm = (s1 - s0) / hz / ((calls + mute_calls) * (t1 - t0) / 60)
    mute = []
    for f in sorted(glob.glob(f"{o}/mute-*.json")):
        try:
            mute.append(json.load(open(f)))
        except ValueError:
            mute.append({"error": "no report"})
    poller = json.load(open(f"{o}/poller.json")) if os.path.exists(f"{o}/poller.json") else None
    receiver = json.load(open(f"{o}/receiver.json")) if os.path.exists(f"{o}/receiver.json") else None
    events_lines = sum(1 for _ in open(f"{o}/events.jsonl")) if os.path.exists(f"{o}/events.jsonl") else 0
    warnings = [l for l in log.splitlines() if " WARN " in l or " ERROR " in l]
    t = r["totals"]
    hook = {k: m.get('callpipe_webhooks_total{outcome="%s"}' % k, 0) for k in ("delivered", "failed", "dropped")}
    log_failures = m.get('callpipe_events_log_failures_total{reason="write_error"}', 0) + m.get('callpipe_events_log_failures_total{reason="queue_full"}', 0)
    print(f"\n== {name}")
    print(f"load: {t['calls']} calls, {t['failed']} failed, frames sent {t['frames_sent']} received {t['frames_received']} lost {t['lost']} "
          f"(loss {t['loss']:.6f}) duplicated {t['duplicated']} reordered {t['reordered']} wrong-size {t['wrong_size']} unsent {t['unsent']}; "
          f"errors {len(r['errors'])}{' ' + repr(r['errors'][:3]) if r['errors'] else ''}")
    print(f"load ms: rtt p50 {r['rtt']['p50']:.3f} p99 {r['rtt']['p99']:.3f} p99.9 {r['rtt']['p999']:.3f} max {r['rtt']['max']:.3f} | "
          f"arrival dev p50 {r['arrival']['p50']:.3f} p99 {r['arrival']['p99']:.3f} p99.9 {r['arrival']['p999']:.3f} | "
          f"emulator send late p99 {r['send_late']['p99']:.3f}{' (saturated)' if r['client_saturated'] else ''}")
    print(f"server: {summary.split('INFO ', 1)[-1]}")
    print(f"server CPU: {(s1 - s0) / hz:.2f} s over {t1 - t0:.1f} s = {cpm:.4f} CPU-s per call-minute ({calls + mute_calls} calls)")
    # Other processes in the window, from each process's own plus reaped children's CPU time:
    # the growth over the window for processes alive at both ends, all of it for processes
    # started in it, less the time at the start of processes that ended in it (a process that
    # exits is reaped by a living ancestor, whose children's time then counts it in full).
    before, after = json.load(open(f"{o}/procs0.json")), json.load(open(f"{o}/procs1.json"))
    skip = set(open(f"{o}/ours.txt").read().split()) | set(before["_skip"]) | set(after["_skip"]) | {"_skip"}
    other_ticks = sum(c - (before[p][1] if p in before and before[p][0] == start else 0)
                      for p, (start, c) in after.items() if p not in skip)
    other_ticks -= sum(c for p, (start, c) in before.items() if p not in skip and after.get(p, [None])[0] != start)
    other = max(0.0, other_ticks / hz / (t1 - t0))
    psi = (p1 - p0) / 1e6 / (t1 - t0) * 100
    steal_ms = (st1 - st0) / hz * 1000
    print(f"machine in the window: other processes used {other:.2f} cores; hypervisor steal {steal_ms:.0f} ms; "
          f"CPU pressure (some task waiting for a core) {psi:.0f} % of the time")
    print(f"metrics: webhooks delivered {hook['delivered']:.0f} failed {hook['failed']:.0f} "
          f"dropped {hook['dropped']:.0f} attempts failed {m.get('callpipe_webhook_attempts_failed_total', 0):.0f}; "
          f"events logged {m.get('callpipe_events_logged_total', 0):.0f} (log file lines {events_lines}), log failures "
          f"{log_failures:.0f}; "
          f"ring overrun in/out {m.get('callpipe_ring_overrun_in_bytes_total', 0):.0f}/{m.get('callpipe_ring_overrun_out_total', 0):.0f}, underruns {m.get('callpipe_ring_underrun_total', 0):.0f}")
    print(f"server warnings/errors logged: {len(warnings)}" + "".join(f"\n  {w}" for w in warnings[:5]))
    echoed = sum(x.get("echoed", 0) for x in mute); lost = sum(x.get("lost", 0) for x in mute); sent = sum(x.get("frames_sent", 0) for x in mute)
    print(f"mute group: {len(mute)} calls, frames sent {sent} echoed {echoed} lost {lost}; errors {[x.get('error') for x in mute if x.get('error')]}")
    if poller:
        print(f"poller: {poller['ticks']} ticks ({poller['late_ticks']} late), {poller['requests']} requests, statuses {poller['statuses']}; "
              f"by request {json.dumps(poller['by_kind'])}; latency ms p50 {poller['latency_p50']:.2f} p99 {poller['latency_p99']:.2f} max {poller['latency_max']:.2f}; "
              f"mute pairs {poller['mute_pairs']} (mute sent to unmute answered: p50 {poller['mute_window_p50']:.1f} ms, max {poller['mute_window_max']:.1f} ms, "
              f"{poller['mute_ms'] / 20:.0f} frame times in all); CPU {poller['cpu_s']:.2f} s")
    if receiver:
        print(f"receiver: {receiver['requests']} POSTs, signature ok {receiver['signed_ok']} bad {receiver['signature_bad']} unsigned {receiver['unsigned']}, "
              f"events {json.dumps(receiver['events'], sort_keys=True)}; CPU {receiver['cpu_s']:.2f} s")
    ok = sum(n for s, n in (poller or {"statuses": {}})["statuses"].items() if s.startswith("2"))
    rows[name] = dict(
        rtt=f"{r['rtt']['p50']:.2f} / {r['rtt']['p99']:.2f} / {r['rtt']['p999']:.2f}", arr=f"{r['arrival']['p99']:.2f}",
        loss=f"{t['loss']:.5f}", emu=f"{r['send_late']['p99']:.2f}{' (saturated)' if r['client_saturated'] else ''}",
        send=f"{send['p50']} / {send['p99']} / {send['p99.9']}", tick=tick["p99"], late=late, cpm=f"{cpm:.4f}",
        api=f"{poller['requests']} ({ok} 2xx)" if poller else "0", apilat=f"{poller['latency_p50']:.2f} / {poller['latency_p99']:.2f}" if poller else "-",
        hooks=f"{hook['delivered']:.0f} / {hook['failed']:.0f} / {hook['dropped']:.0f}",
        recv=f"{receiver['requests']} ({receiver['signed_ok']} signed ok)" if receiver else "-",
        logged=f"{m.get('callpipe_events_logged_total', 0):.0f}", mute=f"{poller['mute_pairs']} pairs, {lost} frames" if poller else f"0 pairs, {lost} frames",
        side=f"{poller['cpu_s'] + receiver['cpu_s']:.2f}" if poller and receiver else "-", other=f"{other:.2f}", steal=f"{steal_ms:.0f}", psi=f"{psi:.0f} %")
print(f"\n{calls} calls (+{mute_calls} mute-group calls), 16 kHz. ms unless named.\n")
print("| config | RTT p50 / p99 / p99.9 | arrival dev p99 | loss | emulator send late p99 | server send late p50 / p99 / p99.9 | media tick late p99 | frames late >1 ms | server CPU-s/call-min | other processes (cores) | steal ms | CPU pressure |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for name, x in rows.items():
    print(f"| {name} | {x['rtt']} | {x['arr']} | {x['loss']} | {x['emu']} | {x['send']} | {x['tick']} | {x['late']} | {x['cpm']} | {x['other']} | {x['steal']} | {x['psi']} |")
print()
print("| config | API requests | API latency p50 / p99 | webhooks delivered / failed / dropped | receiver POSTs | events logged | mute group: mute pairs, echo frames lost | poller + receiver CPU-s |")
print("|---|---|---|---|---|---|---|---|")
for name, x in rows.items():
    print(f"| {name} | {x['api']} | {x['apilat']} | {x['hooks']} | {x['recv']} | {x['logged']} | {x['mute']} | {x['side']} |")
PY
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
