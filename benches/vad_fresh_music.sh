#!/usr/bin/env bash
# False speech starts on fresh music: callpipe's `vad` next to Silero VAD and WebRTC VAD
# (aggressiveness 3) on sets of plucked-string and piano music that benches/vad/heldout_music.py
# makes from seeds of your choice, so that a change to the music check can be judged on music it
# was not tuned on. Prints a Markdown table of the starts each made, per set and rate, and per
# hour over all sets. See benches/vad/README.md.
#
#   benches/vad_fresh_music.sh [--files N] [--threshold T] [--min-speech-ms N]
#                              [--min-silence-ms N] [SEED...]
#
# Seeds default to 4242 9090 31337 2718 1111 2222; each set is N files (default 20) of 120 s
# at 8 and 16 kHz (40 minutes a rate), cached in target/vad-fresh/SEED/. BEFORE=PATH adds a
# column for another vad_scan binary (an older commit's, say) run on the same files. A set is
# made again only when files are missing: remove target/vad-fresh/ after changing
# heldout_music.py. Needs what benches/vad_accuracy.sh needs; about 1 minute a set to make it,
# and 1 minute a set to run.
set -euo pipefail
if [ -n "${BEFORE:-}" ]; then
  BEFORE=$(realpath "$BEFORE")
fi
cd "$(dirname "$0")/.."

files=20
threshold=0.5
min_speech_ms=80
min_silence_ms=300
seeds=()
while [ $# -gt 0 ]; do
  case "$1" in
    --files) files=${2:?--files needs a count}; shift 2 ;;
    --threshold) threshold=${2:?--threshold needs a value}; shift 2 ;;
    --min-speech-ms) min_speech_ms=${2:?--min-speech-ms needs a value}; shift 2 ;;
    --min-silence-ms) min_silence_ms=${2:?--min-silence-ms needs a value}; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "vad_fresh_music.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    *) [[ $1 =~ ^[0-9]+$ ]] || { echo "vad_fresh_music.sh: seed $1 is not a number" >&2; exit 2; }
       seeds+=("$1"); shift ;;
  esac
done
[ ${#seeds[@]} -gt 0 ] || seeds=(4242 9090 31337 2718 1111 2222)
[[ $files =~ ^[1-9][0-9]*$ ]] || { echo "vad_fresh_music.sh: --files $files is not a positive count" >&2; exit 2; }

die() { echo "vad_fresh_music.sh: $*" >&2; exit 1; }
started=$SECONDS
# shellcheck source=vad/python_env.sh
source benches/vad/python_env.sh
if [ -n "${BEFORE:-}" ]; then
  [ -x "$BEFORE" ] || die "BEFORE=$BEFORE is not an executable vad_scan"
fi

echo "building vad_scan ..." >&2
cargo build --release --quiet --example vad_scan || die "cargo build --release --example vad_scan failed"

root=target/vad-fresh
wavs_in() { if [ -d "$1" ]; then find "$1" -name 'heldout_*.wav' | wc -l; else echo 0; fi; }
rule=(--threshold "$threshold" --min-speech-ms "$min_speech_ms" --min-silence-ms "$min_silence_ms")
results=()
for seed in "${seeds[@]}"; do
  set_dir=$root/$seed
  n8=$(wavs_in "$set_dir/8k")
  n16=$(wavs_in "$set_dir/16k")
  if [ "$n8" -lt "$files" ] || [ "$n16" -lt "$files" ]; then
    echo "making set $seed ($files files) ..." >&2
    "$PY" benches/vad/heldout_music.py --out "$set_dir" --seed "$seed" --files "$files" >/dev/null
  fi
  for rate in 8k 16k; do
    mapfile -t wavs < <(for i in $(seq 0 $((files - 1))); do printf '%s/%s/heldout_%02d.wav\n' "$set_dir" "$rate" "$i"; done)
    run() {  # run NAME COMMAND...: one JSON line per file into $set_dir/NAME-RATE.jsonl
      local name=$1; shift
      "$@" "${wavs[@]}" >"$set_dir/$name-$rate.jsonl" || die "$name failed on set $seed at $rate"
      results+=("$seed" "$rate" "$name" "$set_dir/$name-$rate.jsonl")
    }
    echo "set $seed, $rate ..." >&2
    run callpipe target/release/examples/vad_scan "${rule[@]}"
    [ -z "${BEFORE:-}" ] || run before "$BEFORE" "${rule[@]}"
    run silero "$PY" benches/vad/detect.py silero "${rule[@]}"
    run webrtc-3 "$PY" benches/vad/detect.py webrtc --mode 3 "${rule[@]}"
  done
done

echo
echo "\`$([ -n "${BEFORE:-}" ] && echo "BEFORE=<vad_scan> ")benches/vad_fresh_music.sh --files $files --threshold $threshold --min-speech-ms $min_speech_ms --min-silence-ms $min_silence_ms ${seeds[*]}\`"
echo "($(nproc) cores, $(uname -r))"
echo
"$PY" - "${results[@]}" <<'PY'
import collections, json, sys

args = sys.argv[1:]
starts = collections.defaultdict(int)      # (seed, rate, detector) -> starts
minutes = collections.defaultdict(float)   # (seed, rate) -> minutes of audio
where = collections.defaultdict(list)      # (seed, rate, detector) -> files with starts
detectors, sets = [], []
for seed, rate, name, path in zip(args[0::4], args[1::4], args[2::4], args[3::4]):
    if name not in detectors:
        detectors.append(name)
    if (seed, rate) not in sets:
        sets.append((seed, rate))
    total = 0.0
    for line in open(path):
        d = json.loads(line)
        n = len(d["segments"])
        starts[seed, rate, name] += n
        total += len(d["probs"]) * d["hop_ms"] / 60000
        if n:
            where[seed, rate, name].append(d["file"].rsplit("/", 1)[-1].removesuffix(".wav").removeprefix("heldout_"))
    minutes[seed, rate] = total
print("| set (seed) | rate | " + " | ".join(detectors) + " |")
print("|---|---|" + "---|" * len(detectors))
for seed, rate in sets:
    cells = []
    for name in detectors:
        n, files = starts[seed, rate, name], where[seed, rate, name]
        cells.append(f"{n} ({', '.join(files)})" if files and len(files) <= 4 else str(n))
    print(f"| {seed} | {rate[:-1]} kHz | " + " | ".join(cells) + " |")
for rate in ("8k", "16k"):
    mins = sum(minutes[s, r] for s, r in sets if r == rate)
    cells = []
    for name in detectors:
        n = sum(starts[s, r, name] for s, r in sets if r == rate)
        cells.append(f"**{n} in {mins:.0f} min: {n / mins * 60:.1f}/h**")
    print(f"| all | {rate[:-1]} kHz | " + " | ".join(cells) + " |")
print()
print("Each cell: speech:started events on music alone (the files that had them, by number).")
PY
echo "took $((SECONDS - started)) s" >&2
