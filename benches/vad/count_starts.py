#!/usr/bin/env python3
"""Counts the speech starts a detector made on audio that holds no speech (music, noise), from
the JSON lines of `vad_scan` or `detect.py` on stdin: one line per file with starts, then the
total and the rate per hour of audio.

    target/release/examples/vad_scan target/vad-fresh/16k/*.wav | python3 benches/vad/count_starts.py
    python3 benches/vad/detect.py silero --min-speech-ms 80 target/vad-fresh/16k/*.wav | python3 benches/vad/count_starts.py
"""
import json
import sys

total, seconds = 0, 0.0
for line in sys.stdin:
    d = json.loads(line)
    starts = [s[0] for s in d["segments"]]
    seconds += len(d["probs"]) * d["hop_ms"] / 1000
    total += len(starts)
    if starts:
        print(f"{d['file']}: {len(starts)} start(s) at {starts} ms")
hours = seconds / 3600
print(f"{total} start(s) in {seconds / 60:.1f} min: {total / hours if hours else 0:.1f} an hour")
