"""Shared helpers for the VAD accuracy bench: WAV I/O and the speech event rule.

The event rule here is the one callpipe's `vad` processor applies to its per-frame
decisions, re-implemented so that every detector in the bench (Silero, WebRTC and callpipe
itself) is turned into `speech:started` / `speech:stopped` segments the same way.
"""

import math
import wave

import numpy as np


def read_wav(path):
    """Read a mono 16-bit PCM WAV file. Returns (float32 samples in [-1, 1), rate)."""
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected mono 16-bit PCM")
        rate = w.getframerate()
        data = w.readframes(w.getnframes())
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0, rate


def read_wav_i16(path):
    """Read a mono 16-bit PCM WAV file as int16 samples. Returns (samples, rate)."""
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected mono 16-bit PCM")
        rate = w.getframerate()
        data = w.readframes(w.getnframes())
    return np.frombuffer(data, dtype="<i2").copy(), rate


def write_wav(path, samples, rate):
    """Write float samples (nominal range [-1, 1]) as mono 16-bit PCM, clipping at full scale."""
    pcm = np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32768.0), -32768, 32767)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())


def events_from_decisions(decisions, hop_ms, min_speech_ms=100, min_silence_ms=300, end_ms=None):
    """Turn per-frame speech decisions into segments, [[start_ms, end_ms], ...].

    Speech starts once a run of consecutive speech frames lasts at least `min_speech_ms`;
    the segment starts at the first frame of that run. It stops once a run of non-speech
    frames lasts at least `min_silence_ms`; the segment ends at the first non-speech frame of
    that run. Frame i covers [i * hop_ms, (i + 1) * hop_ms). A segment still open at the end of
    the file ends at its trailing non-speech run if there is one, else at `end_ms` (default: the
    end of the last frame).
    """
    need_speech = max(1, math.ceil(min_speech_ms / hop_ms - 1e-9))
    need_silence = max(1, math.ceil(min_silence_ms / hop_ms - 1e-9))
    segments = []
    in_speech = False
    run = 0          # length of the current run that could flip the state
    run_start = 0    # index of the first frame of that run
    start = 0
    for i, d in enumerate(decisions):
        d = bool(d)
        if not in_speech:
            if d:
                if run == 0:
                    run_start = i
                run += 1
                if run >= need_speech:
                    in_speech = True
                    start = run_start
                    run = 0
            else:
                run = 0
        else:
            if not d:
                if run == 0:
                    run_start = i
                run += 1
                if run >= need_silence:
                    in_speech = False
                    segments.append([start * hop_ms, run_start * hop_ms])
                    run = 0
            else:
                run = 0
    if in_speech:
        if run > 0:   # trailing silence too short to stop: end where it began
            last = run_start * hop_ms
        else:
            last = len(decisions) * hop_ms if end_ms is None else end_ms
        segments.append([start * hop_ms, last])
    return segments
