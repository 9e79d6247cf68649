#!/usr/bin/env bash
# Server CPU and memory for /echo under N concurrent calls, measured from /proc.
#
#   benches/echo_cpu.sh [CALLS] [SECONDS] [RATE] [SERVER]
#
# SERVER is `callpipe` (the embedded defaults) or `minimal` (examples/minimal_echo.rs, the
# one-task-per-connection baseline). The load driver (examples/echo_load.rs) runs on the same machine; only the server's
# own utime+stime is counted, over a window that starts after the ramp and ends before hang-up.
# The driver runs at nice 10 so that, on a 2-core machine, it stands in for a platform on
# another host instead of competing with the server on equal terms. MEDIA_THREADS=N passes
# --media-threads N to callpipe; SERVER_BIN=path serves with that callpipe binary (an older build).
# Prints CPU-seconds per call-minute, RSS, and for callpipe its own pacing-lateness summary.
# Loopback only; bounded in calls and time.
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-500}
seconds=${2:-60}
rate=${3:-16000}
server=${4:-callpipe}
ramp=5
port=$((20000 + RANDOM % 20000))
cargo build --release --quiet --bin callpipe --example echo_load --example minimal_echo
log=$(mktemp)
case "$server" in
  callpipe) ${SERVER_WRAPPER:-} ${SERVER_BIN:-target/release/callpipe} serve --listen 127.0.0.1:$port ${MEDIA_THREADS:+--media-threads $MEDIA_THREADS} >"$log" 2>&1 & ;;
  minimal) target/release/examples/minimal_echo 127.0.0.1:$port >"$log" 2>&1 & ;;
  *) echo "unknown server $server" >&2; exit 2 ;;
esac
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
sleep 1
nice -n 10 target/release/examples/echo_load ws://127.0.0.1:$port/echo "$calls" "$seconds" "$rate" "$ramp" >"$log.load" &
load=$!
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
sleep $((ramp + 3))
c0=$(cpu); t0=$(date +%s.%N)
sleep $((seconds - 6))
c1=$(cpu); t1=$(date +%s.%N)
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
wait $load
kill -TERM $pid; wait $pid 2>/dev/null || true
awk -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v hz="$ticks" -v n="$calls" -v rss="$rss_kb" -v s="$server" -v r="$rate" 'BEGIN {
  cpu = (c1 - c0) / hz; wall = t1 - t0;
  printf "server=%s calls=%d rate=%d window=%.1fs cpu=%.2fs (%.1f%% of one core) cpu_per_call_minute=%.4f rss=%.1fMB\n", s, n, r, wall, cpu, 100 * cpu / wall, cpu / (n * wall / 60), rss / 1024 }'
cat "$log.load"
grep -o 'send lateness.*' "$log" | tail -1 || true
grep -c 'call ended' "$log" | sed 's/^/calls ended: /' || true
rm -f "$log" "$log.load"
