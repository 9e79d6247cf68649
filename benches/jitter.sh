#!/usr/bin/env bash
# The jitter benchmark: `callpipe serve` on a loopback port, `callpipe load` against /echo at
# 100, 500, 1,000 and 2,000 calls at 16 kHz, and a markdown table of what both sides measured.
#
#   benches/jitter.sh [SECONDS] [LEVELS...]          e.g. benches/jitter.sh 30 100 500 1000 2000
#
# Environment: BIN=path uses that callpipe binary instead of building this tree's (to compare
# with an older commit's build). SCHED=fifo runs the server under `chrt -f 20` and the load
# generator under `chrt -f 10` (real-time scheduling, as media servers are deployed); the default
# is the normal scheduler. Client and server share this machine's cores, so at high levels the emulator's own
# send lateness (reported) shows when the machine, not the server, is the limit.
# Loopback only; every run is bounded by SECONDS plus its ramp.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
levels=("$@")
[ ${#levels[@]} -gt 0 ] || levels=(100 500 1000 2000)
if [ -n "${BIN:-}" ]; then
  bin=$BIN   # another build to compare, e.g. one of an older commit (git worktree)
else
  cargo build --release --quiet --bin callpipe
  bin=target/release/callpipe
fi
server_wrap=(); client_wrap=()
if [ "${SCHED:-}" = fifo ]; then server_wrap=(chrt -f 20); client_wrap=(chrt -f 10); fi
hz=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo "machine: $(nproc) cores, $(uname -r); scheduler: ${SCHED:-normal}; ${seconds} s per level at 16 kHz"
echo
echo "| calls | RTT p50 | RTT p99 | RTT p99.9 | arrival dev p50 | arrival dev p99 | RFC 3550 jitter p99 | loss | emulator send late p99 | server send late p99 | server CPU-s/call-min | server RSS MB | emulator CPU-s/call-min |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for calls in "${levels[@]}"; do
  port=$((20000 + RANDOM % 20000))
  ramp=$(( calls / 100 > 1 ? calls / 100 : 1 ))
  log=$(mktemp); report=$(mktemp --suffix=.json)
  "${server_wrap[@]}" $bin serve --listen 127.0.0.1:$port >"$log" 2>&1 &
  server=$!
  sleep 1
  "${client_wrap[@]}" $bin load ws://127.0.0.1:$port/echo --calls "$calls" --ramp "$ramp" --duration "$seconds" --report "$report" >/dev/null 2>&1 &
  client=$!
  sleep $((ramp + 3))
  s0=$(cpu $server); c0=$(cpu $client); t0=$(date +%s.%N)
  sleep $((seconds - 6))
  s1=$(cpu $server); c1=$(cpu $client); t1=$(date +%s.%N)
  rss=$(awk '/VmRSS/ {print $2}' /proc/$server/status)
  wait $client || true
  kill -TERM $server; wait $server 2>/dev/null || true
  late=$(grep -o 'send lateness n=[0-9]* p50=[0-9.]*ms p99=[0-9.]*ms' "$log" | tail -1 | sed 's/.*p99=//')
  python3 - "$report" "$calls" "$s0" "$s1" "$c0" "$c1" "$t0" "$t1" "$hz" "$rss" "$late" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
calls, s0, s1, c0, c1, t0, t1, hz, rss, late = sys.argv[2:]
minutes = int(calls) * (float(t1) - float(t0)) / 60
f = lambda p: f"{p:.2f}"
print(f"| {calls} | {f(r['rtt']['p50'])} | {f(r['rtt']['p99'])} | {f(r['rtt']['p999'])} | {f(r['arrival']['p50'])} | {f(r['arrival']['p99'])} "
      f"| {f(r['jitter']['p99'])} | {r['totals']['loss']:.5f} | {f(r['send_late']['p99'])}{' (saturated)' if r['client_saturated'] else ''} "
      f"| {late} | {(float(s1) - float(s0)) / float(hz) / minutes:.4f} | {int(rss) / 1024:.0f} | {(float(c1) - float(c0)) / float(hz) / minutes:.4f} |")
PY
  rm -f "$log" "$report"
done
echo
echo "All figures in ms unless named; RTT is the echo round trip of tagged frames; arrival dev is |inter-arrival - 20 ms| of the frames the server sent; server send late is callpipe's own measure (frame written to the socket after its 20 ms grid instant)."
