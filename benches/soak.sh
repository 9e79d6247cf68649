#!/usr/bin/env bash
# Soak and fault run. `callpipe serve` with a route that detects DTMF, echoes and records every
# call; `callpipe load` with CALLS well-behaved 8 kHz calls for MINUTES; at the same time
# benches/soak_bad_peers.py keeps BAD misbehaving connections going on the same route (binary
# before metadata, bad/deep/huge metadata, odd and 1-byte frames, a 1 MiB frame, a text flood,
# continuation abuse, slowloris, resets mid-frame, peers that never read, connect-and-drop).
#
#   benches/soak.sh [CALLS] [MINUTES] [BAD]          # e.g. benches/soak.sh 500 30 20
#   KILL=1 benches/soak.sh [CALLS] [MINUTES] [BAD]   # kill -9 the server half-way
#   CHANNELS=stereo benches/soak.sh ...              # record both directions (default: caller)
#   KEEP=1 benches/soak.sh ...                       # keep the recordings of a passing run
#
# The recordings need disk: 16 KB per call-second mono, 32 stereo (500 calls for 30 minutes:
# 14.4 GB mono, 28.8 GB stereo). The script refuses to start without that much room (plus a
# tenth) in its directory's filesystem (/tmp, or TMPDIR), and deletes them after a passing run.
#
# Loopback only; ends by itself after MINUTES plus the ramp. Reports: server RSS over time
# (sampled every 10 s; the growth after the ramp, by a least-squares line), the load report's
# loss, round trip, arrival jitter and the emulator's send lateness, panics in the server's log
# (must be 0), the misbehaving peers' outcomes, and the recordings: every file must open, and
# (without KILL) each one's duration must match its `recording` event within 20 ms. With KILL=1
# the files of the calls cut off by the kill must still open, each short of the time from its
# call's `started` event to the kill by at most 1250 ms: the WAV header is rewritten once per
# second of audio, plus up to 250 ms for the audio still in the ring or the writer's buffer, the
# time from `started` to the call's first pass, and the kill time's own measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-500}
minutes=${2:-30}
bad=${3:-20}
kill_half=${KILL:-0}
channels=${CHANNELS:-caller}
case $channels in caller | stereo) ;; *) echo "CHANNELS must be caller or stereo" >&2; exit 2 ;; esac
cargo build --release --quiet --bin callpipe
dir=$(mktemp -d "${TMPDIR:-/tmp}/callpipe-soak-XXXXXX")
[ "$channels" = stereo ] && bytes_per_call_second=32000 || bytes_per_call_second=16000
need=$((calls * (minutes * 60 + 60) * bytes_per_call_second * 11 / 10))
avail=$(df --output=avail -B1 "$dir" | tail -n 1)
if [ "$avail" -lt "$need" ]; then
    echo "soak: the recordings need about $((need / 1000000000)) GB in $dir; $((avail / 1000000000)) GB free" >&2
    rmdir "$dir"
    exit 1
fi
conf="$dir/soak.toml"
port=$((20000 + RANDOM % 20000))
cp callpipe.toml "$conf"
cat >>"$conf" <<EOF

[[route]]
path = "/soak"
processors = [{ type = "dtmf_detect" }, { type = "echo" }, { type = "record", dir = "$dir/rec", template = "{call_id}.wav", channels = "$channels" }]
EOF
sed -i "s|^log = .*|log = \"$dir/events.jsonl\"|" "$conf"
grep -q "^log = \"$dir/events.jsonl\"" "$conf" || printf '\n[events]\nlog = "%s"\n' "$dir/events.jsonl" >>"$conf"
target/release/callpipe serve --listen 127.0.0.1:$port --control off --config "$conf" 2>"$dir/server.log" >/dev/null &
server=$!
trap 'kill -9 $server 2>/dev/null || true' EXIT
sleep 1
seconds=$((minutes * 60))
ramp=$((calls / 100 > 1 ? calls / 100 : 1))
( while kill -0 $server 2>/dev/null; do
    printf '%s %s\n' "$(date +%s)" "$(awk '/^VmRSS/ {print $2}' /proc/$server/status 2>/dev/null || echo 0)"
    sleep 10
  done ) >"$dir/rss.txt" &
target/release/callpipe load ws://127.0.0.1:$port/soak --rate 8000 --calls "$calls" --ramp "$ramp" --duration "$seconds" \
    --report "$dir/load.json" >"$dir/load.txt" 2>&1 &
client=$!
deadline=$(($(date +%s) + ramp + seconds))
python3 benches/soak_bad_peers.py 127.0.0.1 $port /soak "$deadline" "$bad" "$dir/bad.json" &
peers=$!
if [ "$kill_half" = 1 ]; then
    sleep $((ramp + seconds / 2))
    kill -9 $server
    killed_at=$(date +%s.%N)
    wait $client || true
    # The misbehaving peers would keep meeting a refused connection until the deadline.
    kill -TERM $peers 2>/dev/null || true
    wait $peers || true
else
    killed_at=0
    wait $client || true
    wait $peers || true
    kill -TERM $server
    wait $server 2>/dev/null || true
fi
status=0
python3 - "$dir" "$calls" "$minutes" "$bad" "$ramp" "$killed_at" <<'PY' || status=$?
import glob, json, os, sys, wave
d, calls, minutes, bad, ramp, killed_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
print(f"soak: {calls} calls for {minutes} min, {bad} misbehaving connections at a time" + (", kill -9 half-way (at %.3f)" % killed_at if killed_at else ""))
rss = [tuple(map(int, l.split())) for l in open(f"{d}/rss.txt") if len(l.split()) == 2 and l.split()[1] != "0"]
if rss:
    t0 = rss[0][0]
    after = [(t - t0, kb) for t, kb in rss if t - t0 >= ramp + 30]
    line = "rss: first %d MB, max %d MB, last %d MB" % (rss[0][1] // 1024, max(k for _, k in rss) // 1024, rss[-1][1] // 1024)
    if len(after) >= 3:
        n = len(after); mx = sum(t for t, _ in after) / n; my = sum(k for _, k in after) / n
        slope = sum((t - mx) * (k - my) for t, k in after) / max(1e-9, sum((t - mx) ** 2 for t, _ in after))
        line += ", growth after the ramp %+.1f MB per 10 min (%d samples)" % (slope * 600 / 1024, n)
    print(line)
try:
    r = json.load(open(f"{d}/load.json"))
    t = r["totals"]
    print("load: %d calls, %d failed, frames sent %d, received %d, lost %d (loss %.5f)" % (t["calls"], t["failed"], t["frames_sent"], t["frames_received"], t["lost"], t["loss"]))
    for name in ("rtt", "arrival", "jitter", "send_late"):
        p = r[name]
        print("  %-9s p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms" % (name, p["p50"], p["p99"], p["p999"], p["max"]))
except (OSError, ValueError, KeyError) as e:
    print("load: no report (%s)" % e)
import re
log = open(f"{d}/server.log", errors="replace").read().splitlines()
panics = sum(l.count("panicked") for l in log)
print("server panics: %d" % panics)
# One log line per rejection: each close the server initiated (its final summary line counts them
# by code) has exactly one "call refused" or "closing call" line with that code.
summaries = [l for l in log if " INFO calls active=" in l]
logged_ok = True
if summaries and not killed_at:
    counted = {c: int(n) for c, n in re.findall(r"\b(10\d\d)=(\d+)", summaries[-1].split(" closes ")[1].split("|")[0])}
    lines = {}
    for l in log:
        m = re.search(r"INFO (?:call refused|closing call)\b.* close=(\d+)", l)
        if m:
            lines[m.group(1)] = lines.get(m.group(1), 0) + 1
    logged_ok = all(lines.get(c, 0) == n for c, n in counted.items())
    print("rejections logged: " + ", ".join("%s: %d closes, %d lines" % (c, n, lines.get(c, 0)) for c, n in sorted(counted.items()))
          + "; handshake timeouts: %d lines" % sum("handshake timed out" in l for l in log) + ("" if logged_ok else " MISMATCH"))
try:
    print("misbehaving peers (fault: outcome count):")
    for fault, outcomes in json.load(open(f"{d}/bad.json")).items():
        print("  %-20s %s" % (fault, ", ".join("%s %d" % kv for kv in sorted(outcomes.items()))))
except (OSError, ValueError) as e:
    print("misbehaving peers: no report (%s)" % e)
from datetime import datetime
events, started = {}, {}
try:
    for l in open(f"{d}/events.jsonl", errors="replace"):
        try:
            e = json.loads(l)
        except ValueError:
            continue
        if e.get("event") == "recording" and e.get("file"):
            events[e["file"]] = e
        if e.get("event") == "started":
            started[e["call_id"]] = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
except OSError:
    pass
# The writer's own line when it finalized a file: it precedes the `recording` event, which waits
# for the call's close handshake (up to 2 s with a peer that does not read), so a kill can fall
# between the two.
finished = {}
for l in log:
    m = re.search(r"INFO recording finished path=(\S+) duration_ms=(\d+)", l)
    if m:
        finished[m.group(1)] = int(m.group(2))
files = sorted(glob.glob(f"{d}/rec/*.wav"))
opened, broken, matched, mismatched, unannounced, worst = 0, [], 0, [], 0, 0.0
cut_short, cut_worst, finished_unannounced = [], 0.0, 0
for f in files:
    try:
        w = wave.open(f)
        ms = w.getnframes() * 1000 / w.getframerate()
        w.close()
        opened += 1
    except Exception as e:
        broken.append((f, str(e)))
        continue
    e = events.get(f)
    if e is None and killed_at and f in finished:
        finished_unannounced += 1
        e = {"duration_ms": finished[f]}
    if e is None:
        unannounced += 1
        # Cut off by the kill: the file must hold the call up to about a second before it.
        call_id = os.path.basename(f)[:-4]
        if killed_at and call_id in started:
            short = (killed_at - started[call_id]) * 1000 - ms
            cut_worst = max(cut_worst, short)
            if short > 1250:
                cut_short.append((f, ms, short))
        continue
    diff = abs(ms - e["duration_ms"])
    worst = max(worst, diff)
    if diff <= 20:
        matched += 1
    else:
        mismatched.append((f, ms, e["duration_ms"]))
print("recordings: %d files, %d open, %d broken; %d match their event within 20 ms (worst %.1f ms), %d do not, %d without an event" % (
    len(files), opened, len(broken), matched, worst, len(mismatched), unannounced))
if killed_at:
    print("finalized before the kill, their event not yet out: %d files (matched against the server's 'recording finished' line)" % finished_unannounced)
    print("cut off by the kill: %d files, each short of the kill by at most %.0f ms (limit 1250 ms); %d over" % (
        unannounced, cut_worst, len(cut_short)))
for f, err in broken[:5]:
    print("  broken: %s: %s" % (f, err))
for f, ms, ev in mismatched[:5]:
    print("  mismatch: %s: file %.1f ms, event %d ms" % (f, ms, ev))
ok = panics == 0 and logged_ok and not broken and not mismatched and not cut_short and (killed_at or not unannounced)
print("result: %s (files in %s)" % ("ok" if ok else "FAILED", d))
sys.exit(0 if ok else 1)
PY
if [ $status = 0 ] && [ "${KEEP:-0}" != 1 ]; then
    echo "recordings ($(du -sh "$dir/rec" | cut -f1)) deleted; KEEP=1 keeps them"
    rm -rf "$dir/rec"
fi
exit $status
