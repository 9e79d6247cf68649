#!/usr/bin/env bash
# VAD accuracy bench: callpipe's `vad` processor against Silero VAD and WebRTC VAD, on the same
# synthetic labelled corpus (espeak-ng speech, generated white/pink noise, babble and music, at
# 8 and 16 kHz). Prints Markdown tables for BENCHMARKS.md. See benches/vad/README.md.
#
#   benches/vad_accuracy.sh [--threshold T] [--min-speech-ms N] [--min-silence-ms N]
#                           [--no-callpipe] [--rebuild-corpus]
#
# The same threshold and event rule (min speech / min silence) apply to all three detectors.
# Needs python3, espeak-ng and sox (Debian: apt-get install -y espeak-ng sox); the Python
# packages (numpy, onnxruntime, silero-vad without torch, webrtcvad-wheels) are installed with
# pip if missing. Nothing is downloaded at run time: Silero's ONNX model ships in its wheel.
# The corpus is cached in target/vad-corpus/, results go to target/vad-bench/.
set -euo pipefail
cd "$(dirname "$0")/.."

threshold=0.5
min_speech_ms=80
min_silence_ms=300
callpipe=1
rebuild=()
while [ $# -gt 0 ]; do
  case "$1" in
    --threshold) threshold=$2; shift 2 ;;
    --min-speech-ms) min_speech_ms=$2; shift 2 ;;
    --min-silence-ms) min_silence_ms=$2; shift 2 ;;
    --no-callpipe) callpipe=0; shift ;;
    --rebuild-corpus) rebuild=(--force); shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "vad_accuracy.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "vad_accuracy.sh: $*" >&2; exit 1; }
started=$SECONDS
# shellcheck source=vad/python_env.sh
source benches/vad/python_env.sh

# --- Corpus ----------------------------------------------------------------------------------
corpus=target/vad-corpus
out=target/vad-bench
mkdir -p "$out"
"$PY" benches/vad/corpus.py --out "$corpus" "${rebuild[@]}"
mapfile -t files < <("$PY" -c "
import json, sys
m = json.load(open('$corpus/manifest.json'))
print('\n'.join('$corpus/' + e['path'] for e in m['files']))")
[ ${#files[@]} -gt 0 ] || die "empty corpus manifest"

# --- Detectors, one after the other (each single-threaded, so timings are comparable) ----------
results=()
rule=(--threshold "$threshold" --min-speech-ms "$min_speech_ms" --min-silence-ms "$min_silence_ms")
run() {  # run NAME COMMAND...: one JSON line per corpus file into $out/NAME.jsonl
  local name=$1; shift
  local t0=$SECONDS
  "$@" >"$out/$name.jsonl" || die "$name failed: $*"
  local n; n=$(grep -c '^{' "$out/$name.jsonl" || true)
  [ "$n" -eq ${#files[@]} ] || die "$name printed $n results for ${#files[@]} files"
  echo "  $name: $((SECONDS - t0)) s" >&2
  results+=(--result "$name=$out/$name.jsonl")
}

if [ $callpipe = 1 ]; then
  [ -f examples/vad_scan.rs ] || die "examples/vad_scan.rs not found (run with --no-callpipe for the reference detectors only)"
  echo "building vad_scan ..." >&2
  cargo build --release --quiet --example vad_scan || die "cargo build --release --example vad_scan failed"
  run callpipe target/release/examples/vad_scan "${rule[@]}" "${files[@]}"
fi
run silero "$PY" benches/vad/detect.py silero "${rule[@]}" "${files[@]}"
run webrtc-3 "$PY" benches/vad/detect.py webrtc --mode 3 "${rule[@]}" "${files[@]}"
run webrtc-1 "$PY" benches/vad/detect.py webrtc --mode 1 "${rule[@]}" "${files[@]}"

# --- Scores ----------------------------------------------------------------------------------
echo
echo "\`benches/vad_accuracy.sh --threshold $threshold --min-speech-ms $min_speech_ms --min-silence-ms $min_silence_ms$([ $callpipe = 1 ] || echo ' --no-callpipe')\`"
echo "(corpus $("$PY" -c "import json; print(json.load(open('$corpus/manifest.json'))['stamp'])"), $(nproc) cores, $(uname -r))"
echo
"$PY" benches/vad/score.py --corpus "$corpus" --threshold "$threshold" "${results[@]}" \
  --json "$out/summary.json" --markdown "$out/tables.md"
echo
echo "full summary: $out/summary.json; tables: $out/tables.md; took $((SECONDS - started)) s" >&2
