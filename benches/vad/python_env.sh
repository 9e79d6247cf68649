# Sourced by the VAD benches: checks for python3, espeak-ng and sox, and installs the Python
# packages the reference detectors need with pip if they are missing (numpy, onnxruntime,
# webrtcvad-wheels, and silero-vad without torch: only the ONNX model in its wheel is used).
# Nothing is downloaded at run time. Expects `die` to be defined; sets PY.
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || die "python3 not found"
for tool in espeak-ng sox; do
  command -v "$tool" >/dev/null || die "$tool not found (Debian: apt-get install -y espeak-ng sox)"
done

pip_install() {
  # Quiet; falls back to --break-system-packages on an externally managed interpreter.
  "$PY" -m pip install --quiet --disable-pip-version-check "$@" 2>/tmp/vad-pip.$$ ||
    "$PY" -m pip install --quiet --disable-pip-version-check --break-system-packages "$@" 2>>/tmp/vad-pip.$$ ||
    { cat /tmp/vad-pip.$$ >&2; rm -f /tmp/vad-pip.$$; die "pip install $* failed"; }
  rm -f /tmp/vad-pip.$$
}
has_module() { "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)"; }
missing=()
for m in numpy:numpy onnxruntime:onnxruntime webrtcvad:webrtcvad-wheels; do
  has_module "${m%%:*}" || missing+=("${m#*:}")
done
[ ${#missing[@]} -eq 0 ] || { echo "installing ${missing[*]} ..." >&2; pip_install "${missing[@]}"; }
# silero-vad declares torch as a dependency; the benches only need the ONNX model it ships.
has_module silero_vad || { echo "installing silero-vad (without torch) ..." >&2; pip_install --no-deps silero-vad; }
