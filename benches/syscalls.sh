#!/usr/bin/env bash
# System calls per echoed frame: callpipe's /echo (with epoll writes, then with
# `--media-io io_uring`: `callpipe-uring`) and examples/minimal_echo.rs under the same client,
# one after the other, in one run.
#
#   benches/syscalls.sh [CALLS] [SECONDS]
#
# Each server gets CALLS calls of SECONDS at 16 kHz from `callpipe load` (ramp 5 s, nice 10);
# over a window of the steady state `perf stat` counts the server's system calls by kind
# (tracepoints, so the counting itself costs a little CPU: read the CPU figures from
# benches/peer_compare.sh, not from here), and the script divides each count by the frames the
# server received in the window (CALLS x window x 50). Needs `perf` (Debian's linux-perf) and
# permission to use tracepoints (root). Loopback only; bounded in calls and time.
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-500}
seconds=${2:-20}
ramp=5
cargo build --release --quiet --bin callpipe --example minimal_echo
release=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
trap 'jobs -p | xargs -r kill 2>/dev/null || true; rm -rf "$work"' EXIT
kinds="read recvfrom readv write sendto writev epoll_wait epoll_pwait epoll_pwait2 epoll_ctl futex clock_nanosleep timerfd_settime sched_yield io_uring_enter"
events="raw_syscalls:sys_enter"
for k in $kinds; do events="$events,syscalls:sys_enter_$k"; done

for server in callpipe callpipe-uring minimal; do
  port=$((20000 + RANDOM % 20000))
  case "$server" in
    callpipe) "$release/callpipe" serve --listen "127.0.0.1:$port" --control off >"$work/$server.log" 2>&1 & ;;
    callpipe-uring) "$release/callpipe" serve --listen "127.0.0.1:$port" --control off --media-io io_uring >"$work/$server.log" 2>&1 & ;;
    minimal) "$release/examples/minimal_echo" "127.0.0.1:$port" >"$work/$server.log" 2>&1 & ;;
  esac
  pid=$!
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  nice -n 10 "$release/callpipe" load "ws://127.0.0.1:$port/echo" --calls "$calls" --ramp "$ramp" \
    --duration "$seconds" --rate 16000 >"$work/$server.load" 2>&1 &
  load=$!
  sleep $((ramp + 1))
  window=$((seconds - ramp - 3))
  perf stat -x, -e "$events" -p "$pid" -- sleep "$window" 2>"$work/$server.perf" >/dev/null
  wait "$load" || true
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  frames=$((calls * window * 50))
  awk -F, -v s="$server" -v f="$frames" '$1 ~ /^[0-9]+$/ { name = $3; sub(/.*sys_enter_?/, "", name); if (name == "") name = "all"; printf "%-14s %-16s %12d %8.3f per frame\n", s, name, $1, $1 / f }' "$work/$server.perf" | awk '$3 > 0'
  echo
done
