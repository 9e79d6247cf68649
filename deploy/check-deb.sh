#!/usr/bin/env bash
# Builds the Debian package, installs it with dpkg, serves a call through the installed binary
# with the installed configuration as the `callpipe` user, and purges the package again.
# Needs root and cargo-deb (`cargo install cargo-deb`); `.ci/run` runs it. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
cargo deb
deb=$(ls -t "${CARGO_TARGET_DIR:-target}"/debian/callpipe_*.deb | head -n 1)
echo "package: $deb"
dpkg-deb --info "$deb" | sed -n 's/^ \(Package\|Version\|Depends\|Section\):/  \1:/p'
dpkg -i "$deb"
server=""
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null || true
    if dpkg -s callpipe >/dev/null 2>&1; then dpkg --purge callpipe >/dev/null || true; fi
}
trap cleanup EXIT
test -x /usr/bin/callpipe
test -f /usr/lib/systemd/system/callpipe.service
test -f /usr/share/doc/callpipe/LICENSE-MIT
getent passwd callpipe >/dev/null
[ "$(stat -c %G /etc/callpipe/callpipe.toml)" = callpipe ] || { echo "configuration not readable by callpipe"; exit 1; }
[ "$(stat -c %U /var/lib/callpipe)" = callpipe ] || { echo "/var/lib/callpipe not owned by callpipe"; exit 1; }
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify /usr/lib/systemd/system/callpipe.service
fi
port=$((20000 + RANDOM % 20000))
log=$(mktemp)
# As the service would run it: the package's user, binary and configuration.
runuser -u callpipe -- /usr/bin/callpipe serve --config /etc/callpipe/callpipe.toml \
    --listen "127.0.0.1:$port" --control off >"$log" 2>&1 &
server=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
/usr/bin/callpipe call "ws://127.0.0.1:$port/echo" --tone 440 --duration 2 --tag
kill -TERM "$server"
wait "$server" || true
server=""
grep -q "call ended" "$log" || { cat "$log"; echo "the installed server did not log the call"; exit 1; }
rm -f "$log"
dpkg --purge callpipe >/dev/null
if getent passwd callpipe >/dev/null || [ -e /usr/bin/callpipe ]; then
    echo "purge left the user or the binary behind"
    exit 1
fi
echo "Debian package: installs, serves a call as user callpipe, purges cleanly"
