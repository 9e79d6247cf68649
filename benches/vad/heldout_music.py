#!/usr/bin/env python3
"""A held-out music set for the `vad` music gate: synthesis that shares nothing with
corpus.py's music() (no additive held tones, no vibrato melody, no kick/snare/hi-hat).

    python3 benches/vad/heldout_music.py --out target/vad-heldout
    target/release/examples/vad_scan target/vad-heldout/{8k,16k}/*.wav   # count "segments"
    python3 benches/vad/heldout_music.py --out target/vad-fresh --seed 4242 --files 20   # a fresh set

Instruments: Karplus-Strong plucked strings (guitar/harp-like arpeggios, decaying, with the
string's own slight inharmonicity from the loop filter), a piano-like voice of inharmonic
decaying partials (stretched partials, B = 1e-4, two detuned strings per note, hammer click),
and a soft brushed-noise pulse. Waltz (3/4) or 6/8 at 60-100 bpm, minor or major keys, chord
voicings spread over three octaves. Deterministic from a fixed seed. Five files of 120 s at
-30 to -22 dBFS, written at 16 kHz and resampled to 8 kHz with sox.
"""
import argparse, subprocess, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_wav  # noqa: E402  (WAV writing only)

RATE = 16000


def midi_hz(m):
    return 440.0 * 2 ** ((m - 69) / 12.0)


def pluck(rng, f, dur, damp):
    """Karplus-Strong: a noise burst circulating in a delay line with a two-tap average."""
    n = int(dur * RATE)
    d = int(RATE / f)                      # integer delay: the pitch is slightly flat
    buf = rng.uniform(-1, 1, d + 2)
    buf -= buf.mean()
    line = np.concatenate([buf, np.zeros(n)])
    for i in range(d + 2, n + d + 2):
        a = line[i - d]
        b = line[i - d - 1]
        line[i] = damp * 0.5 * (a + b)
    out = line[d + 2: d + 2 + n]
    env = np.minimum(1.0, np.arange(n) / (0.002 * RATE))
    return out * env


def piano(rng, f, dur):
    n = int(dur * RATE)
    t = np.arange(n) / RATE
    y = np.zeros(n)
    B = 1e-4
    for k in range(1, 16):
        fk = k * f * np.sqrt(1 + B * k * k)
        if fk > RATE / 2 * 0.9:
            break
        amp = 1.0 / k ** 1.3
        tau = 1.2 / (1 + 0.4 * k) * (440.0 / max(f, 80.0)) ** 0.3
        for det in (-0.0007, 0.0007):      # two slightly detuned strings (beating)
            y += 0.5 * amp * np.sin(2 * np.pi * fk * (1 + det) * t + rng.uniform(0, 2 * np.pi)) * np.exp(-t / tau)
    click = rng.standard_normal(n) * np.exp(-t / 0.004) * 0.05
    return (y + click) * np.minimum(1.0, t / 0.003)


def brush(rng, dur):
    n = int(dur * RATE)
    t = np.arange(n) / RATE
    y = np.cumsum(rng.standard_normal(n)) * 0.02
    y -= np.convolve(y, np.ones(32) / 32, mode="same")
    return y * np.exp(-t / 0.09) * np.minimum(1.0, t / 0.01)


def song(rng, seconds):
    n = int(seconds * RATE)
    out = np.zeros(n + 4 * RATE)
    bpm = rng.uniform(60, 100)
    beat = 60.0 / bpm
    meter = 3
    minor = rng.random() < 0.5
    root = 45 + int(rng.integers(0, 12))
    scale = [0, 2, 3, 5, 7, 8, 10] if minor else [0, 2, 4, 5, 7, 9, 11]
    degrees = [0, 5, 3, 4, 0, 3, 6, 4] if minor else [0, 3, 4, 0, 5, 1, 4, 4]

    def chord(deg):
        return [scale[(deg + j) % 7] + 12 * ((deg + j) // 7) for j in (0, 2, 4)]

    def add(at, y, gain):
        i = int(at * RATE)
        if i < len(out):
            y = y[: len(out) - i]
            out[i: i + len(y)] += gain * y

    t0, bar = 0.0, 0
    while t0 < seconds:
        c = chord(degrees[bar % len(degrees)])
        add(t0, piano(rng, midi_hz(root - 12 + c[0]), meter * beat + 0.5), 0.5)     # bass, piano
        for b in range(meter):
            for h in range(2):                                                     # arpeggio, plucked
                note = root + 12 + c[(b * 2 + h) % 3] + 12 * int(rng.random() < 0.3)
                add(t0 + (b + h / 2) * beat, pluck(rng, midi_hz(note), 1.5, 0.996), 0.35)
            add(t0 + b * beat, brush(rng, 0.3), 0.6 if b == 0 else 0.3)
        if rng.random() < 0.7:                                                     # piano chord on beat 2
            for m in c:
                add(t0 + beat, piano(rng, midi_hz(root + m), 2 * beat), 0.25)
        t0 += meter * beat
        bar += 1
    out = out[:n]
    return out / np.sqrt(np.mean(out ** 2))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("target/vad-heldout"))
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=777,
                    help="songs from seed [SEED, i], their -70 dBFS floor from [SEED + 1, i] (777: the corpus's set)")
    ap.add_argument("--files", type=int, default=5, help="how many files (their levels cycle through five)")
    args = ap.parse_args()
    for d in ("16k", "8k"):
        (args.out / d).mkdir(parents=True, exist_ok=True)
    levels = (-30.0, -26.0, -22.0, -28.0, -24.0)
    for i in range(args.files):
        level = levels[i % len(levels)]
        rng = np.random.default_rng([args.seed, i])
        x = song(rng, args.seconds) * 10 ** (level / 20)
        x = x + np.random.default_rng([args.seed + 1, i]).standard_normal(len(x)) * 10 ** (-70 / 20)
        p16 = args.out / "16k" / f"heldout_{i:02d}.wav"
        write_wav(p16, x, RATE)
        subprocess.run(["sox", "-D", str(p16), "-r", "8000", str(args.out / "8k" / p16.name)], check=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
