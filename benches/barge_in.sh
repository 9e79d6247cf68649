#!/usr/bin/env bash
# Barge-in latency: from the caller's speech onset to callpipe's {"action":"clear"} on the wire,
# measured end to end with the platform emulator while a `talk` plays.
#
#   benches/barge_in.sh [CALLS_PER_RATE]
#
# Builds callpipe with text to speech (`--features tts`, needs libespeak-ng-dev and the
# espeak-ng command), starts `callpipe serve` on loopback with one route,
# [vad, talk(barge_in = "speech")], and plays, at 8 and 16 kHz, CALLS_PER_RATE (default 20)
# utterances made with espeak-ng in several languages and voices, each after 1.0 to 2.5 s of
# silence, through `callpipe call --play FILE --json`. The onset of each file is its first
# sample above -40 dBFS; the latency is the emulator's time of the clear minus the onset (both
# on the emulator's clock of the caller's audio). Then the same number of coughs (150 ms noise
# bursts) that must not barge in. Prints p50 / p90 / p99 / max per rate, misses and false
# barge-ins. Loopback only; bounded (8 s per call, 4 at a time).
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-20}
cargo build --release --quiet --features tts --bin callpipe
bin=${CARGO_TARGET_DIR:-target}/release/callpipe
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
cat >"$work/barge.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
stats_interval_ms = 0
[control]
listen = "off"
[events]
log = "off"
[[route]]
path = "/bot"
processors = [
  { type = "vad" },
  { type = "talk", language = "en-GB", barge_in = "speech", loop = 0, text = "Thank you for calling. All of our agents are busy at the moment. Please stay on the line and we will be with you shortly." },
]
TOML
"$bin" serve --config "$work/barge.toml" >"$work/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 50); do
  (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
  sleep 0.1
done
# The callers: espeak-ng utterances (and coughs) after a random lead, at each rate, with their
# onsets in onsets.txt.
python3 - "$work" "$calls" <<'PY'
import random, struct, subprocess, sys, wave, math
work, calls = sys.argv[1], int(sys.argv[2])
rng = random.Random(11)
voices = ["en-gb", "en-us", "de", "fr", "es", "it", "en-gb+f3", "en-us+m3", "de+f2", "nl"]
lines = ["Hello, I want to speak to an agent.", "Yes, that's right.", "Can you repeat that please?",
         "I'm calling about my order.", "No thanks.", "Operator!", "Wait, stop, I have a question."]
def write(path, rate, samples):
    with wave.open(path, "wb") as w:
        w.setnchannels(1); w.setsampwidth(2); w.setframerate(rate)
        w.writeframes(struct.pack(f"<{len(samples)}h", *samples))
def read(path):
    with wave.open(path) as w:
        return w.getframerate(), list(struct.unpack(f"<{w.getnframes()}h", w.readframes(w.getnframes())))
with open(f"{work}/onsets.txt", "w") as out:
    for rate in (8000, 16000):
        for i in range(calls):
            raw = f"{work}/raw-{rate}-{i}.wav"
            subprocess.run(["espeak-ng", "-v", voices[i % len(voices)], "-w", f"{work}/tts.wav", lines[i % len(lines)]], check=True)
            subprocess.run(["sox", f"{work}/tts.wav", "-r", str(rate), "-b", "16", "-c", "1", raw], check=True)
            _, speech = read(raw)
            lead = int(rate * rng.uniform(1.0, 2.5))
            first = next(k for k, s in enumerate(speech) if abs(s) > 328)
            write(f"{work}/speech-{rate}-{i}.wav", rate, [0] * lead + speech)
            out.write(f"speech {rate} {work}/speech-{rate}-{i}.wav {(lead + first) * 1000 / rate:.1f}\n")
            noise = []
            for k in range(rate * 150 // 1000):
                t = k / rate
                noise.append(int(rng.uniform(-1, 1) * 12000 * min(t / 0.005, 1) * math.exp(-t / 0.05)))
            write(f"{work}/cough-{rate}-{i}.wav", rate, [0] * lead + noise)
            out.write(f"cough {rate} {work}/cough-{rate}-{i}.wav {lead * 1000 / rate:.1f}\n")
PY
run() {
  local kind=$1 rate=$2 file=$3 onset=$4
  "$bin" call "ws://127.0.0.1:$port/bot" --rate "$rate" --play "$file" --duration 6 --json >"$file.json" 2>"$file.err" || true
  # Each call writes its own result file (no appends from concurrent calls to one file).
  python3 - "$kind" "$rate" "$onset" "$file.json" >"$file.result" <<'PY'
import json, sys
kind, rate, onset, path = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
try:
    report = json.load(open(path))
except ValueError:
    # No report: the call failed; say so (its stderr is in the .err file beside it).
    print(kind, rate, "failed")
    err = open(path[: -len(".json")] + ".err").read().strip()
    print(f"barge_in.sh: {kind} call at {rate} Hz gave no report: {err or 'no message'}", file=sys.stderr)
    sys.exit()
report = report.get("report", report)
clears = report.get("clears_at_ms", [])
print(kind, rate, f"{clears[0] - onset:.1f}" if clears else "none")
PY
}
# Four calls at a time (waiting for the calls only: the server runs in the background too).
calls_running=()
while read -r kind rate file onset; do
  run "$kind" "$rate" "$file" "$onset" &
  calls_running+=($!)
  if [ ${#calls_running[@]} -ge 4 ]; then
    wait "${calls_running[@]}"
    calls_running=()
  fi
done <"$work/onsets.txt"
[ ${#calls_running[@]} -eq 0 ] || wait "${calls_running[@]}"
cat "$work"/*.wav.result >"$work/results.txt"
echo "# barge-in latency: benches/barge_in.sh $calls ($(date -u +%F), $(nproc) cores)"
python3 - "$work/results.txt" <<'PY'
import sys
rows = [line.split() for line in open(sys.argv[1])]
print()
print("| rate | speech calls | barged in | latency p50 / p90 / p99 / max (ms) | coughs | false barge-ins | calls without a report |")
print("|---|---|---|---|---|---|---|")
for rate in ("8000", "16000"):
    speech = [r for r in rows if r[0] == "speech" and r[1] == rate]
    failed = sum(1 for r in rows if r[1] == rate and r[2] == "failed")
    lat = sorted(float(r[2]) for r in speech if r[2] not in ("none", "failed"))
    coughs = [r for r in rows if r[0] == "cough" and r[1] == rate]
    false = sum(1 for r in coughs if r[2] not in ("none", "failed"))
    pct = lambda p: lat[min(len(lat) - 1, round((len(lat) - 1) * p))] if lat else float("nan")
    print(f"| {rate} Hz | {len(speech)} | {len(lat)} | {pct(0.5):.0f} / {pct(0.9):.0f} / {pct(0.99):.0f} / {max(lat) if lat else float('nan'):.0f} | {len(coughs)} | {false} | {failed} |")
PY
