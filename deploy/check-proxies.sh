#!/usr/bin/env bash
# Checks deploy/haproxy.cfg and deploy/nginx.conf for real, on loopback: two callpipe nodes behind
# each proxy (the files as shipped, with their example addresses and ports swapped for loopback
# ones). For each proxy:
#   1. 20 calls through it: every upgrade passes, the echo comes back with no frame lost, and
#      both nodes take calls (least connections);
#   2. calls that name a conference in their URL (`?conference=KEY`): each key's calls all reach
#      one node, and two keys that hash apart reach both nodes;
#   3. two 12 s calls through it, then node 1 drains (SIGTERM): 20 new calls all succeed and all
#      go to node 2, node 1 takes none, and both long calls (whichever node they are on) run to
#      their end;
#   4. both nodes again, then node 2 killed with -9: 20 new calls all succeed, on node 1.
# Needs haproxy and nginx (Debian: apt-get install -y haproxy nginx); `.ci/run` installs them.
# Starts everything on loopback ports and stops it all at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in haproxy nginx python3; do
    command -v "$tool" >/dev/null || { echo "check-proxies.sh: $tool not found (Debian: apt-get install -y haproxy nginx)"; exit 1; }
done
cargo build --release --quiet --bin callpipe
bin=$(pwd)/${CARGO_TARGET_DIR:-target}/release/callpipe
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "check-proxies.sh: $*"; for f in "$work"/*.log; do echo "--- $f"; tail -n 20 "$f"; done; exit 1; }
wait_port() {
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
    fail "nothing listens on 127.0.0.1:$1"
}
# Calls node N's control API has accepted (callpipe_calls_total, all routes).
calls_total() {
    python3 - "$1" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
print(int(sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith("callpipe_calls_total"))))
PY
}

base=$((20000 + RANDOM % 20000))
lb=$base
media=($((base + 1)) $((base + 2)))
control=($((base + 3)) $((base + 4)))
node_pid=()
start_nodes() {
    node_pid=()
    for i in 0 1; do
        cat >"$work/node$i.toml" <<TOML
[server]
listen = "127.0.0.1:${media[$i]}"
stats_interval_ms = 0
# Longer than the long calls below: a draining node lets them end by themselves.
shutdown_grace_ms = 30000
[control]
listen = "127.0.0.1:${control[$i]}"
[events]
log = "off"
[[route]]
path = "/echo"
processors = [{ type = "echo" }]
TOML
        "$bin" serve --config "$work/node$i.toml" >"$work/node$i.log" 2>&1 &
        node_pid+=($!)
        pids+=($!)
        wait_port "${media[$i]}"
        wait_port "${control[$i]}"
    done
}
stop_nodes() {
    for pid in "${node_pid[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
}
# The shipped file with the example nodes (10.0.0.11:8080 and .12, control port 8081) and the
# listening port 8080 replaced by this run's loopback ports.
localize() {
    sed -e "s/10\.0\.0\.11:8080 check port 8081/127.0.0.1:${media[0]} check port ${control[0]}/" \
        -e "s/10\.0\.0\.12:8080 check port 8081/127.0.0.1:${media[1]} check port ${control[1]}/" \
        -e "s/10\.0\.0\.11:8080/127.0.0.1:${media[0]}/" -e "s/10\.0\.0\.12:8080/127.0.0.1:${media[1]}/" \
        -e "s/bind :8080/bind 127.0.0.1:$lb/" -e "s/listen 8080;/listen 127.0.0.1:$lb;/" \
        -e "s|pid /run/nginx-callpipe.pid;|pid $work/nginx.pid;|" \
        -e "s/maxconn 9000/maxconn $maxconn/" "$1"
}
# HAProxy refuses to start when its maxconn needs more file descriptors than the process may
# open; a check needs few.
files=$(ulimit -Hn)
[ "$files" = unlimited ] && files=100000
maxconn=$((files / 2 - 100))
[ "$maxconn" -gt 9000 ] && maxconn=9000
[ "$maxconn" -gt 200 ] || fail "the file limit ($files) is too low for haproxy"


check() {
    local proxy=$1
    echo "== $proxy"
    start_nodes
    case $proxy in
        haproxy)
            localize deploy/haproxy.cfg >"$work/haproxy.cfg"
            grep -q "127.0.0.1:${media[1]}" "$work/haproxy.cfg" || fail "haproxy.cfg: the example servers were not found"
            haproxy -c -f "$work/haproxy.cfg" >/dev/null || fail "haproxy -c rejects deploy/haproxy.cfg"
            haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
            ;;
        nginx)
            localize deploy/nginx.conf >"$work/nginx.conf"
            grep -q "127.0.0.1:${media[1]}" "$work/nginx.conf" || fail "nginx.conf: the example servers were not found"
            mkdir -p "$work/nginx"
            nginx -t -p "$work/nginx" -c "$work/nginx.conf" -g "daemon off;" >/dev/null 2>&1 || fail "nginx -t rejects deploy/nginx.conf"
            nginx -p "$work/nginx" -c "$work/nginx.conf" -g "daemon off;" >"$work/nginx.log" 2>&1 &
            ;;
    esac
    local proxy_pid=$!
    pids+=($proxy_pid)
    wait_port "$lb"
    sleep 1.5 # two health checks: both nodes up
    local url="ws://127.0.0.1:$lb/echo"

    # 1. Calls pass through, both ways, nothing lost; both nodes take some.
    "$bin" load "$url" --calls 20 --ramp 1 --duration 3 --max-loss 0 >"$work/load1.log" 2>&1 ||
        fail "$proxy: calls through the proxy failed: $(tail -n 3 "$work/load1.log")"
    local a b
    a=$(calls_total "${control[0]}")
    b=$(calls_total "${control[1]}")
    echo "  20 calls through $proxy: node 1 took $a, node 2 took $b; none failed, no frame lost"
    local status
    status=$(python3 -c "import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen('http://127.0.0.1:$lb/_callpipe/conference-link', timeout=5)
    print(200)
except urllib.error.HTTPError as e:
    print(e.code)")
    [ "$status" = 404 ] || fail "$proxy: the conference link path answered $status from outside, not 404"
    echo "  the conference link path is not offered to the outside (404)"
    [ "$a" -ge 3 ] && [ "$b" -ge 3 ] || fail "$proxy: calls not spread over both nodes ($a and $b)"

    # 2. Calls naming a conference: one node per key. Keys are tried until two land apart.
    local on1=0 on2=0 key n a0 b0 a1 b1
    for n in $(seq 1 12); do
        key="room-$n"
        a0=$(calls_total "${control[0]}")
        b0=$(calls_total "${control[1]}")
        "$bin" load "$url?conference=$key" --calls 6 --ramp 0.5 --duration 1 --max-loss 0 >"$work/conf.log" 2>&1 ||
            fail "$proxy: conference calls failed: $(tail -n 3 "$work/conf.log")"
        a1=$(($(calls_total "${control[0]}") - a0))
        b1=$(($(calls_total "${control[1]}") - b0))
        [ "$a1" -eq 0 ] || [ "$b1" -eq 0 ] || fail "$proxy: the 6 calls of conference $key were split: $a1 on node 1, $b1 on node 2"
        [ "$a1" -eq 6 ] && on1=1
        [ "$b1" -eq 6 ] && on2=1
        [ $((on1 + on2)) -eq 2 ] && break
    done
    [ $((on1 + on2)) -eq 2 ] || fail "$proxy: every conference key went to one node"
    echo "  conference keys: each key's 6 calls reached one node, and the keys ($n tried) reached both"
    a=$(calls_total "${control[0]}")
    b=$(calls_total "${control[1]}")

    # 3. Node 1 drains: its live call goes on, new calls all reach node 2.
    "$bin" call "$url" --tone 440 --duration 12 >"$work/long0.log" 2>&1 &
    local long0=$!
    "$bin" call "$url" --tone 440 --duration 12 >"$work/long1.log" 2>&1 &
    local long1=$!
    sleep 1
    kill -TERM "${node_pid[0]}"
    sleep 1.5 # haproxy: two failed checks; nginx needs none
    # A node with no call left has exited already: it takes no calls either.
    a=$(calls_total "${control[0]}" 2>/dev/null || echo gone)
    "$bin" load "$url" --calls 20 --ramp 2 --duration 2 --max-loss 0 >"$work/load2.log" 2>&1 ||
        fail "$proxy: calls during node 1's drain failed: $(tail -n 3 "$work/load2.log")"
    local a2 b2
    a2=$(calls_total "${control[0]}" 2>/dev/null || echo gone)
    b2=$(calls_total "${control[1]}")
    [ "$a2" = "$a" ] || [ "$a2" = gone ] || fail "$proxy: the draining node took $((a2 - a)) new calls"
    [ $((b2 - b)) -ge 20 ] || fail "$proxy: node 2 took $((b2 - b)) of the 20 calls made during the drain"
    wait "$long0" || fail "$proxy: a long call failed: $(tail -n 3 "$work/long0.log")"
    wait "$long1" || fail "$proxy: a long call failed: $(tail -n 3 "$work/long1.log")"
    echo "  node 1 drained: the 20 calls made meanwhile all went to node 2 and succeeded; the two 12 s calls ran to their end"

    # 4. Both nodes again, then node 2 killed outright (-9): new calls all reach node 1.
    stop_nodes
    start_nodes
    sleep 1.5 # haproxy: node 1 passes its checks again
    kill -KILL "${node_pid[1]}"
    wait "${node_pid[1]}" 2>/dev/null || true
    sleep 1.5 # haproxy: two failed checks; nginx skips a refused connection at once
    a=$(calls_total "${control[0]}")
    "$bin" load "$url" --calls 20 --ramp 2 --duration 2 --max-loss 0 >"$work/load3.log" 2>&1 ||
        fail "$proxy: calls after node 2 was killed failed: $(tail -n 3 "$work/load3.log")"
    a2=$(calls_total "${control[0]}")
    [ $((a2 - a)) -ge 20 ] || fail "$proxy: node 1 took $((a2 - a)) of the 20 calls made after node 2 was killed"
    echo "  node 2 killed (-9): the 20 calls made then all went to node 1 and succeeded"
    kill "$proxy_pid" 2>/dev/null || true
    wait "$proxy_pid" 2>/dev/null || true
    stop_nodes
}

check haproxy
check nginx
echo "proxies: haproxy and nginx pass calls through, spread them, and route around a draining or killed node"
