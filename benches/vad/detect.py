#!/usr/bin/env python3
"""Run a reference VAD (Silero or WebRTC) on WAV files, in the same output shape as callpipe's
`vad_scan` example: one JSON line per file,

    {"file": ..., "rate": 8000, "hop_ms": 32, "probs": [...], "segments": [[start_ms, end_ms], ...],
     "us_per_frame": 12.3}

`probs` are the raw per-frame speech probabilities (WebRTC: 0 or 1) on the detector's native
hop; `segments` come from applying callpipe's event rule (common.events_from_decisions) to the
decisions prob >= threshold, with the same --min-speech-ms / --min-silence-ms that the bench
passes to `vad_scan`. `us_per_frame` is the detector's own processing time (model calls only,
one thread) per 20 ms of audio.

    python3 benches/vad/detect.py silero [--threshold 0.5] FILE.wav...
    python3 benches/vad/detect.py webrtc --mode 3 FILE.wav...

Silero runs the ONNX model shipped inside the `silero-vad` wheel with onnxruntime directly (no
torch): 512-sample windows at 16 kHz and 256 at 8 kHz (32 ms), each with the previous
window's last 64 / 32 samples prepended as context, and the recurrent state carried between
windows, exactly as the package's own OnnxWrapper does. State is reset per file.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import events_from_decisions, read_wav, read_wav_i16  # noqa: E402


def silero_model_path():
    # Locate the package without importing it: its __init__ imports torch, which is not needed
    # (nor installed) to run the ONNX model.
    import importlib.util
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("detect.py: the `silero-vad` package is missing (pip install --no-deps silero-vad)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "silero_vad.onnx"
    if not path.exists():
        sys.exit(f"detect.py: {path} not found in the installed silero-vad package")
    return path


class Silero:
    def __init__(self):
        import onnxruntime
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        self.path = silero_model_path()
        self.session = onnxruntime.InferenceSession(
            str(self.path), sess_options=opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in self.session.get_inputs()]
        if names != ["input", "state", "sr"]:
            sys.exit(f"detect.py: unexpected Silero model inputs {names}")

    def probs(self, x, rate):
        if rate not in (8000, 16000):
            raise ValueError(f"Silero supports 8 and 16 kHz, not {rate}")
        win = 512 if rate == 16000 else 256
        ctx = 64 if rate == 16000 else 32
        n = -(-len(x) // win)
        padded = np.zeros(n * win, dtype=np.float32)
        padded[: len(x)] = x
        state = np.zeros((2, 1, 128), dtype=np.float32)
        context = np.zeros((1, ctx), dtype=np.float32)
        sr = np.array(rate, dtype=np.int64)
        out = np.empty(n, dtype=np.float32)
        run = self.session.run
        t0 = time.perf_counter()
        for i in range(n):
            chunk = np.concatenate([context, padded[None, i * win: (i + 1) * win]], axis=1)
            prob, state = run(None, {"input": chunk, "state": state, "sr": sr})
            out[i] = prob[0, 0]
            context = chunk[:, -ctx:]
        elapsed = time.perf_counter() - t0
        return out, win * 1000 // rate, elapsed


class WebRtc:
    def __init__(self, mode):
        try:
            import webrtcvad
        except ImportError:
            sys.exit("detect.py: the `webrtcvad` module is missing (pip install webrtcvad-wheels)")
        self.vad = webrtcvad.Vad(mode)

    def probs(self, pcm16, rate):
        step = rate // 50                      # 20 ms frames
        n = len(pcm16) // step                 # a trailing partial frame is dropped
        data = pcm16[: n * step].astype("<i2").tobytes()
        nbytes = step * 2
        is_speech = self.vad.is_speech
        out = np.empty(n, dtype=np.float32)
        t0 = time.perf_counter()
        for i in range(n):
            out[i] = 1.0 if is_speech(data[i * nbytes: (i + 1) * nbytes], rate) else 0.0
        elapsed = time.perf_counter() - t0
        return out, 20, elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("detector", choices=["silero", "webrtc"])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--mode", type=int, default=3, help="WebRTC aggressiveness 0-3 (default 3)")
    ap.add_argument("--threshold", type=float, default=0.5, help="speech when prob >= this (default 0.5)")
    ap.add_argument("--min-speech-ms", type=int, default=100)
    ap.add_argument("--min-silence-ms", type=int, default=300)
    args = ap.parse_args()

    det = Silero() if args.detector == "silero" else WebRtc(args.mode)
    for f in args.files:
        if args.detector == "silero":
            x, rate = read_wav(f)
        else:
            x, rate = read_wav_i16(f)
        probs, hop_ms, elapsed = det.probs(x, rate)
        decisions = probs >= args.threshold
        end_ms = len(x) * 1000 // rate
        segments = events_from_decisions(decisions, hop_ms, args.min_speech_ms,
                                         args.min_silence_ms, end_ms=end_ms)
        frames20 = len(x) / (rate * 0.02)
        print(json.dumps({
            "file": f, "rate": rate, "hop_ms": hop_ms,
            "probs": [round(float(p), 4) for p in probs],
            "segments": segments,
            "us_per_frame": round(elapsed * 1e6 / max(frames20, 1), 2),
        }), flush=True)


if __name__ == "__main__":
    main()
