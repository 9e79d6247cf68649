#!/usr/bin/env bash
# callpipe's /echo against the server a user would write instead, side by side in one run.
#
#   benches/peer_compare.sh [CALLS] [SECONDS] [RUNS]
#
# For each of RUNS rounds, runs `callpipe serve` (release build, embedded defaults, /echo), the
# same with `--media-io io_uring` (its sends batched through io_uring; `callpipe-uring` below;
# leave it out with IO_URING=0), and then examples/minimal_echo.rs (one tokio task per
# connection, tokio-tungstenite, 8 KiB read buffer), each loaded by the same client: `callpipe
# load` with CALLS calls of SECONDS at 16 kHz (tagged frames, ramp 5 s), at nice 10 so that it
# stands in for a platform on another host. For each server it prints its CPU-seconds per
# call-minute (its own utime+stime from /proc over the steady window: after the ramp, before
# the hang-ups; split into user space and kernel), its RSS above the idle process (taken once
# the RSS has held still for 1 s after start-up; peak sampled every 0.5 s) and per call, the
# echo round trip p50/p99/p99.9 and the loss as the client measured them, and how often its
# threads went to sleep and were woken per frame received (`wakes/f`); then the ratios
# callpipe/minimal, and across rounds the median and the spread. Loopback only; bounded in calls
# and time. SERVER_BIN=path serves with that callpipe binary instead (an older build, for a
# before/after comparison); BEFORE_BIN=path adds that binary as one more server of each round
# (`callpipe-before`), so that two builds are compared in one run; CLIENT_BIN=path loads them with
# that build's `callpipe load` instead; CLIENT_NICE=N runs the client at that nice level instead
# of 10 (0: the client competes for the cores on equal terms). The client's own CPU over the
# same window is printed too (`client`, its kernel share, and `both`: server and client), since
# on loopback each side's kernel time includes work for the other.
# FLOOR=1 adds examples/floor_echo.rs (`floor`): a server that only reads each frame, unmasks
# it and writes it back, on a media thread per core that collects its sockets for 250 µs as a
# busy callpipe thread does (FLOOR_COLLECT_US=N: that long instead; 0: each socket as soon as it
# is ready): the floor that the kernel's work per frame puts under any server here.
# LOAD_ARGS adds options to the client for every server, e.g. LOAD_ARGS="--jitter-ms 20" to
# measure the memory of calls whose buffers have grown to take a jittery network's bunches.
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-500}
seconds=${2:-20}
runs=${3:-3}
rate=16000
ramp=5
cargo build --release --quiet --bin callpipe --example minimal_echo --example floor_echo
release=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
trap 'jobs -p | xargs -r kill 2>/dev/null || true; rm -rf "$work"' EXIT
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14, $15}' "/proc/$1/stat"; } # utime stime
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# The times PID's threads went to sleep and were woken (voluntary context switches, summed over
# its threads): on a virtual machine a wake-up costs a thread up to about 30 microseconds of CPU
# (benches/wake_cost.c: 2 from the same core, 12 from the other, 31 from a timer), a cost that
# the count of system calls does not show. A thread that ends meanwhile is not an error.
wakes() { { cat /proc/"$1"/task/*/status 2>/dev/null || true; } | awk '/^voluntary_ctxt_switches/ {n += $2} END {print n + 0}'; }
# Waits until PID's RSS has held still for 1 s, at most 10 s: the port accepts connections as
# soon as it is bound, before the server has finished starting (callpipe starts its media
# threads after binding), and an idle figure taken then was up to 3.8 MB low.
settle() {
  local last=-1 same=0 now
  for _ in $(seq 50); do
    now=$(rss "$1")
    if [ "$now" = "$last" ]; then same=$((same + 1)); [ "$same" -ge 5 ] && return; else same=0; last=$now; fi
    sleep 0.2
  done
  echo "warning: the server's RSS did not settle in 10 s; its idle figure may be low" >&2
}

measure() { # SERVER ROUND -> one line of figures
  local server=$1 round=$2 port=$((20000 + RANDOM % 20000)) pid
  case "$server" in
    callpipe) "${SERVER_BIN:-$release/callpipe}" serve --listen "127.0.0.1:$port" --control off >"$work/$server.log" 2>&1 & ;;
    callpipe-before) "$BEFORE_BIN" serve --listen "127.0.0.1:$port" --control off >"$work/$server.log" 2>&1 & ;;
    callpipe-uring) "${SERVER_BIN:-$release/callpipe}" serve --listen "127.0.0.1:$port" --control off --media-io io_uring >"$work/$server.log" 2>&1 & ;;
    minimal) "$release/examples/minimal_echo" "127.0.0.1:$port" >"$work/$server.log" 2>&1 & ;;
    floor) "$release/examples/floor_echo" "127.0.0.1:$port" "${FLOOR_COLLECT_US:-250}" >"$work/$server.log" 2>&1 & ;;
  esac
  pid=$!
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  local idle peak u0 s0 u1 s1 cu0 cs0 cu1 cs1 w0 w1 t0 t1 load
  settle "$pid"
  idle=$(rss "$pid"); peak=$idle
  nice -n "${CLIENT_NICE:-10}" "${CLIENT_BIN:-$release/callpipe}" load "ws://127.0.0.1:$port/echo" --calls "$calls" --ramp "$ramp" \
    --duration "$seconds" --rate "$rate" ${LOAD_ARGS:-} --report "$work/$server-$round.json" >"$work/$server-$round.out" 2>&1 &
  load=$!
  sleep $((ramp + 1))
  read -r u0 s0 < <(cpu "$pid"); read -r cu0 cs0 < <(cpu "$load"); w0=$(wakes "$pid"); t0=$(date +%s.%N)
  local window=$((seconds - ramp - 3))
  for _ in $(seq $((window * 2))); do
    sleep 0.5
    local now; now=$(rss "$pid"); [ "$now" -gt "$peak" ] && peak=$now
  done
  read -r u1 s1 < <(cpu "$pid"); read -r cu1 cs1 < <(cpu "$load"); w1=$(wakes "$pid"); t1=$(date +%s.%N)
  wait "$load" || true
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$work/$server-$round.json" "$server" "$round" "$calls" "$u0" "$s0" "$u1" "$s1" "$t0" "$t1" "$ticks" "$idle" "$peak" "$cu0" "$cs0" "$cu1" "$cs1" "$w0" "$w1" <<'PY'
import json, sys
path, server, rnd, calls, u0, s0, u1, s1, t0, t1, hz, idle, peak, cu0, cs0, cu1, cs1, w0, w1 = sys.argv[1:]
r = json.load(open(path))
calls = int(calls); wall = float(t1) - float(t0)
user = (float(u1) - float(u0)) / float(hz); kernel = (float(s1) - float(s0)) / float(hz); cpu = user + kernel
per_min = cpu / (calls * wall / 60)
user_min = user / (calls * wall / 60); kernel_min = kernel / (calls * wall / 60)
client_user = (float(cu1) - float(cu0)) / float(hz); client_kernel = (float(cs1) - float(cs0)) / float(hz)
client_min = (client_user + client_kernel) / (calls * wall / 60); client_kernel_min = client_kernel / (calls * wall / 60)
above = (int(peak) - int(idle)) / 1024
wakes_per_frame = (int(w1) - int(w0)) / (calls * wall * 50)  # 50 frames a second each way
t = r["totals"]
print(f"{server:<14} {rnd:>5} {per_min:>9.4f} {100 * cpu / wall:>6.1f}% {user_min:>8.4f} {kernel_min:>8.4f} {above:>8.1f} {(int(peak) - int(idle)) / calls:>17.1f} "
      f"{r['rtt']['p50']:>7.3f} {r['rtt']['p99']:>7.3f} {r['rtt']['p999']:>7.3f} {t['lost']:>6} {t['frames_sent']:>9} {'yes' if r['client_saturated'] else 'no':>5} "
      f"{client_min:>9.4f} {client_kernel_min:>9.4f} {per_min + client_min:>9.4f} {wakes_per_frame:>7.3f}")
PY
}

servers="callpipe"
[ -n "${BEFORE_BIN:-}" ] && servers="$servers callpipe-before"
[ "${IO_URING:-1}" = 1 ] && servers="$servers callpipe-uring"
[ "${FLOOR:-0}" = 1 ] && servers="$servers floor"
servers="$servers minimal"
printf '%-14s %5s %9s %7s %8s %8s %8s %17s %7s %7s %7s %6s %9s %5s %9s %9s %9s %7s\n' server round "cpu/cmin" "core" "user" "kernel" "rss MB+" "KiB per call" "rtt p50" "p99" "p99.9" lost sent "sat?" "client" "c.kernel" "both" "wakes/f"
: >"$work/lines"
for round in $(seq "$runs"); do
  for server in $servers; do
    measure "$server" "$round" | tee -a "$work/lines"
  done
done
python3 - "$work/lines" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
def col(server, i): return [float(r[i]) for r in rows if r[0] == server]
def kib(server): return col(server, 7)
def show(name, server, i, fmt="{:.4f}"):
    a, b = col(server, i), col("minimal", i)
    ratios = [x / y if y else float("inf") for x, y in zip(a, b)]
    print(f"{name:<26} {server} median {fmt.format(statistics.median(a))} ({fmt.format(min(a))}-{fmt.format(max(a))}), "
          f"minimal median {fmt.format(statistics.median(b))} ({fmt.format(min(b))}-{fmt.format(max(b))}), "
          f"ratio median {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")
for server in [s for s in ("callpipe", "callpipe-before", "callpipe-uring", "floor") if col(s, 2)]:
    print()
    show("CPU-s per call-minute", server, 2)
    show("  of which user space", server, 4)
    show("  of which kernel", server, 5)
    show("KiB per call above idle", server, 7, "{:.1f}")
    show("client CPU-s per call-min", server, 14)
    show("server and client", server, 16)
    show("wake-ups per frame", server, 17, "{:.3f}")
    show("round trip p50 ms", server, 8, "{:.3f}")
    show("round trip p99 ms", server, 9, "{:.3f}")
    show("round trip p99.9 ms", server, 10, "{:.3f}")
    print(f"{'lost frames':<26} {server} {sum(col(server, 11)):.0f}, minimal {sum(col('minimal', 11)):.0f}")
PY
