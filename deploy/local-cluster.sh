#!/usr/bin/env bash
# A callpipe cluster on this machine's loopback: redis-server, N nodes and HAProxy (with
# deploy/haproxy.cfg as shipped, its example servers replaced by the N nodes), then waits. Ctrl-C
# (or SIGTERM, or --for SECONDS running out) stops everything it started.
#
#   deploy/local-cluster.sh [N] [--port BASE] [--for SECONDS] [--dir DIR] [--grace MS]
#
# N nodes (default 3). Ports from BASE (default 7000): Redis BASE, HAProxy BASE+1 (calls), node i
# (from 1) BASE+10*i (calls) and BASE+10*i+1 (control API). Each node serves /echo and /conf (a
# conference named by the `room` header). Everything lives in DIR (default: a new temporary
# directory): the configuration files, the logs, `nodeI.pid`, and `env`, which holds the
# addresses and the control token for scripts (benches/cluster.sh reads it). A draining node's
# calls get --grace ms (default 30000) to end by themselves.
#
# Installs haproxy and redis-server with apt-get when they are missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=3
base=7000
run_for=""
dir=""
grace=30000""
while [ $# -gt 0 ]; do
    case $1 in
        --port) base=$2; shift 2 ;;
        --for) run_for=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --grace) grace=$2; shift 2 ;;
        -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
        *[!0-9]* | "") echo "local-cluster.sh: unknown argument $1 (see --help)"; exit 2 ;;
        *) nodes=$1; shift ;;
    esac
done
[ "$nodes" -ge 1 ] && [ "$nodes" -le 50 ] || { echo "local-cluster.sh: N must be from 1 to 50"; exit 2; }

missing=()
command -v haproxy >/dev/null || missing+=(haproxy)
command -v redis-server >/dev/null || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
cargo build --release --quiet --bin callpipe
bin=$(pwd)/${CARGO_TARGET_DIR:-target}/release/callpipe
if [ -z "$dir" ]; then
    dir=$(mktemp -d /tmp/callpipe-cluster.XXXXXX)
else
    mkdir -p "$dir"
fi
pids=()
stop() {
    trap - EXIT INT TERM
    echo "stopping the cluster"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop EXIT
trap 'exit 0' INT TERM
wait_port() {
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
    echo "local-cluster.sh: nothing listens on 127.0.0.1:$1 (logs in $dir)"
    exit 1
}

redis_port=$base
lb_port=$((base + 1))
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$dir/redis.log" 2>&1 &
pids+=($!)
wait_port "$redis_port"

servers=""
for i in $(seq 1 "$nodes"); do
    media=$((base + 10 * i))
    control=$((media + 1))
    cat >"$dir/node$i.toml" <<TOML
[server]
listen = "127.0.0.1:$media"
stats_interval_ms = 0
shutdown_grace_ms = $grace
[control]
listen = "127.0.0.1:$control"
token = "$token"
[events]
log = "$dir/node$i.events.jsonl"
[cluster]
redis = "redis://127.0.0.1:$redis_port"
node_id = "node$i"
heartbeat_ms = 1000
ttl_ms = 5000
[[route]]
path = "/echo"
processors = [{ type = "echo" }]
[[route]]
path = "/conf"
processors = [{ type = "conference", name = "{header:room}" }]
TOML
    "$bin" serve --config "$dir/node$i.toml" >"$dir/node$i.log" 2>&1 &
    pids+=($!)
    echo $! >"$dir/node$i.pid"
    servers+="    server node$i 127.0.0.1:$media check port $control"$'\n'
done
for i in $(seq 1 "$nodes"); do
    wait_port $((base + 10 * i))
    wait_port $((base + 10 * i + 1))
done

# The shipped HAProxy file, its example servers replaced by these nodes (in both backends), its
# listening port by this one, and its maxconn fitted to this process's file limit.
files=$(ulimit -Hn)
[ "$files" = unlimited ] && files=100000
maxconn=$((files / 2 - 100))
[ "$maxconn" -gt 9000 ] && maxconn=9000
awk -v servers="$servers" '
    /^    server node1 / { printf "%s", servers; next }
    /^    server node[0-9]+ / { next }
    { print }
' deploy/haproxy.cfg | sed -e "s/bind :8080/bind 127.0.0.1:$lb_port/" -e "s/maxconn 9000/maxconn $maxconn/" >"$dir/haproxy.cfg"
haproxy -c -f "$dir/haproxy.cfg" >/dev/null
haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
pids+=($!)
wait_port "$lb_port"

cat >"$dir/env" <<ENV
CLUSTER_DIR=$dir
CLUSTER_NODES=$nodes
CLUSTER_REDIS=redis://127.0.0.1:$redis_port
CLUSTER_REDIS_PORT=$redis_port
CLUSTER_LB=ws://127.0.0.1:$lb_port
CLUSTER_TOKEN=$token
CLUSTER_BASE=$base
ENV
echo "callpipe cluster of $nodes nodes on loopback (files in $dir):"
echo "  calls, through HAProxy:  ws://127.0.0.1:$lb_port/echo   ws://127.0.0.1:$lb_port/conf?conference=KEY (with a room header)"
echo "  Redis:                   redis://127.0.0.1:$redis_port"
for i in $(seq 1 "$nodes"); do
    echo "  node$i:                   ws://127.0.0.1:$((base + 10 * i))   control http://127.0.0.1:$((base + 10 * i + 1))"
done
echo "  control token:           $token"
echo "  try: $bin call ws://127.0.0.1:$lb_port/echo --tone 440 --duration 5"
echo "       curl -s -H 'Authorization: Bearer $token' http://127.0.0.1:$((base + 11))/cluster/nodes"
echo "ready"
# `wait` (unlike a foreground `sleep`) returns as soon as a signal arrives.
if [ -n "$run_for" ]; then
    sleep "$run_for" &
else
    echo "Ctrl-C stops it all"
    sleep infinity &
fi
pids+=($!)
wait $!
