#!/usr/bin/env bash
# Late delivery: does every bit of the caller's audio reach the processors, with no silence put
# in, when the network is late?
#
#   benches/late_delivery.sh [RUNS] [SECONDS]
#
# Starts `callpipe serve` (release build) with one route that records the caller (16 kHz, WAV,
# channels = "caller"), then, RUNS times each, plays SECONDS of 16 kHz noise through
# `callpipe call` over four networks: clean, `--jitter-ms 60`, `--jitter-ms 20 --stall-every 5
# --stall-ms 300`, and `--jitter-ms 20 --stall-every 8 --stall-ms 3000`. Each recording is
# compared with what was sent, sample for sample: it prints whether it is exact, the frames of
# silence inserted (or missing) and the first difference. A 3 s stall is longer than
# `max_input_wait_ms` (1 s) and is taken for a pause while it lasts, so silence goes in before
# its backlog: there the check is that every frame sent is in the recording, whole and in order,
# with nothing but silent frames between ("whole"). Exit status 1 if any recording fails its
# check. Loopback only; bounded.
# SERVER_BIN=path runs that server binary instead (e.g. an older build, for a before/after
# comparison with the same client).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
seconds=${2:-20}
cargo build --release --quiet --bin callpipe
bin=${CARGO_TARGET_DIR:-target}/release/callpipe
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
cat >"$work/late.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
stats_interval_ms = 0
[control]
listen = "off"
[events]
log = "off"
[[route]]
path = "/rec"
processors = [{ type = "record", dir = "$work/rec", channels = "caller" }]
TOML
"${SERVER_BIN:-$bin}" serve --config "$work/late.toml" >"$work/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 50); do
  (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
  sleep 0.1
done
python3 - "$work/noise.wav" "$seconds" <<'PY'
import random, struct, sys, wave
rate, seconds = 16000, float(sys.argv[2])
rng = random.Random(7)
samples = [rng.randrange(-10000, 10000) or 1 for _ in range(int(rate * seconds))]
with wave.open(sys.argv[1], "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(rate)
    w.writeframes(struct.pack(f"<{len(samples)}h", *samples))
PY
compare() {
  python3 - "$work/noise.wav" "$1" "$2" <<'PY'
import struct, sys, wave
def read(path):
    with wave.open(path) as w:
        return list(struct.unpack(f"<{w.getnframes()}h", w.readframes(w.getnframes())))
sent, got = read(sys.argv[1]), read(sys.argv[2])
frame = 320
zeros = sum(1 for i in range(0, len(got) - frame + 1, frame) if not any(got[i:i + frame]))
if sys.argv[3] == "whole":
    # Silence is allowed between whole frames (a pause); the noise sent has no zero sample.
    frames = [got[i:i + frame] for i in range(0, len(got) - frame + 1, frame)]
    kept = [s for f in frames if any(f) for s in f]
    exact = kept == sent and len(got) % frame == 0
    label = "whole" if exact else "NO"
else:
    exact = sent == got
    label = "yes" if exact else "NO"
    kept = got
first = next((i for i, (a, b) in enumerate(zip(sent, kept)) if a != b), None)
if first is None and len(kept) != len(sent):
    first = min(len(kept), len(sent))
where = "-" if first is None else f"{first / 16:.0f} ms"
print(f"{label:>6} {len(got) // frame - len(sent) // frame:>+9} {zeros:>10} {where:>16}")
sys.exit(0 if exact else 1)
PY
}
failed=0
printf '%-44s %4s %6s %9s %10s %16s\n' network run exact "frames±" "silent fr." "first difference"
for network in "clean|exact|" "jitter 60 ms|exact|--jitter-ms 60" \
  "jitter 20 ms, 300 ms stall every 5 s|exact|--jitter-ms 20 --stall-every 5 --stall-ms 300" \
  "jitter 20 ms, 3 s stall every 8 s|whole|--jitter-ms 20 --stall-every 8 --stall-ms 3000"; do
  name=${network%%|*}
  rest=${network#*|}
  check=${rest%%|*}
  args=${rest#*|}
  for run in $(seq "$runs"); do
    rm -rf "$work/rec"
    # shellcheck disable=SC2086
    "$bin" call "ws://127.0.0.1:$port/rec" --rate 16000 --play "$work/noise.wav" --duration "$seconds" $args >"$work/call.out" 2>&1 \
      || { echo "callpipe call failed:"; cat "$work/call.out"; exit 1; }
    file=""
    for _ in $(seq 50); do
      file=$(ls "$work"/rec/*.wav 2>/dev/null | head -n 1 || true)
      size=$([ -n "$file" ] && stat -c %s "$file" || echo 0)
      sleep 0.1
      [ -n "$file" ] && [ "$size" = "$(stat -c %s "$file")" ] && [ "$size" -gt 44 ] && break
    done
    printf '%-44s %4s ' "$name" "$run"
    compare "$file" "$check" || failed=1
  done
done
echo "server: $(grep -c 'call ended' "$work/server.log" || true) calls ended; dropped_in totals: $(grep -o 'dropped_in=[0-9]*' "$work/server.log" | sort | uniq -c | tr '\n' ' ')"
exit $failed
