#!/usr/bin/env bash
# The recorder's writer thread under load: `callpipe serve` with an echo-and-record route,
# `callpipe load` with N calls at 16 kHz, the CPU of the one `callpipe-recorder` thread from
# /proc, and every file checked with Python's `wave` module afterwards.
#
#   benches/record_load.sh [CALLS] [SECONDS] [wav|opus]
#
# `opus` builds with `--features opus` (needs cmake) and checks the files with `opusinfo`.
# Loopback only; bounded by SECONDS plus the ramp. Prints the writer's CPU-seconds per
# call-minute and the calls one core of writer could sustain at that cost.
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-500}
seconds=${2:-30}
format=${3:-wav}
features=()
[ "$format" = opus ] && features=(--features opus)
cargo build --release --quiet --bin callpipe "${features[@]}"
dir=$(mktemp -d)
conf=$(mktemp --suffix=.toml)
port=$((20000 + RANDOM % 20000))
cp callpipe.toml "$conf"
printf '\n[[route]]\npath = "/rec"\nprocessors = [{ type = "echo" }, { type = "record", dir = "%s", format = "%s" }]\n' "$dir" "$format" >>"$conf"
target/release/callpipe serve --listen 127.0.0.1:$port --config "$conf" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$dir" "$conf"' EXIT
sleep 1
ramp=$(( calls / 100 > 1 ? calls / 100 : 1 ))
target/release/callpipe load ws://127.0.0.1:$port/rec --calls "$calls" --ramp "$ramp" --duration "$seconds" >/dev/null 2>&1 &
client=$!
sleep $((ramp + 3))
task=$(grep -l '^callpipe-record' /proc/$server/task/*/comm | head -1 | xargs dirname)
cpu() { awk '{print $14 + $15}' "$task/stat"; }
c0=$(cpu); t0=$(date +%s.%N)
sleep $((seconds - 6))
c1=$(cpu); t1=$(date +%s.%N)
wait $client || true
kill -TERM $server; wait $server 2>/dev/null || true
python3 - "$dir" "$calls" "$c0" "$c1" "$t0" "$t1" "$(getconf CLK_TCK)" "$seconds" "$format" <<'PY'
import glob, re, subprocess, sys, wave
d, calls, c0, c1, t0, t1, hz, seconds, fmt = sys.argv[1:]
files = glob.glob(d + "/*." + fmt)
durations = []
for f in files:
    if fmt == "wav":
        w = wave.open(f)
        assert w.getnchannels() == 2 and w.getframerate() == 16000, f
        durations.append(w.getnframes() / w.getframerate())
    else:
        run = subprocess.run(["opusinfo", f], capture_output=True, text=True)
        info = run.stdout + run.stderr
        assert run.returncode == 0, info
        assert "Channels: 2" in info and "Original sample rate: 16000 Hz" in info and "WARNING" not in info.upper(), info
        m, s = re.search(r"Playback length: (\d+)m:([\d.]+)s", info).groups()
        durations.append(int(m) * 60 + float(s))
minutes = int(calls) * (float(t1) - float(t0)) / 60
cpu = (float(c1) - float(c0)) / float(hz)
per_call_minute = cpu / minutes
print(f"calls={calls} files={len(files)} all open as 2-channel 16 kHz {fmt}; durations {min(durations):.2f}-{max(durations):.2f} s for {seconds} s calls")
print(f"writer thread: {cpu:.2f} CPU-s over {float(t1) - float(t0):.1f} s = {per_call_minute:.5f} CPU-s per call-minute"
      f" -> about {60 / per_call_minute:,.0f} concurrent calls per core of writer" if per_call_minute > 0 else "writer thread used no measurable CPU")
PY
