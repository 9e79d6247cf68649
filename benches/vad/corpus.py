#!/usr/bin/env python3
"""Build the VAD accuracy corpus: synthetic, deterministic, labelled.

    python3 benches/vad/corpus.py --out target/vad-corpus [--force]

Speech comes from the espeak-ng command line (several languages and voices); noise, babble
and music are generated here with numpy from fixed seeds. Everything is made at 16 kHz and
resampled to 8 kHz with sox, so both rates hold the same material and the same labels.

Layout under --out:
    manifest.json                 every file: path, rate, kind, condition, duration
    16k/<condition>/<name>.wav    mono 16-bit PCM
    16k/<condition>/<name>.json   true speech extents, [[start_ms, end_ms], ...]
    8k/...                        the same files at 8 kHz

The corpus is rebuilt only when this script, common.py, heldout_music.py or the espeak-ng/sox versions change
(a stamp in manifest.json), or with --force.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import read_wav, write_wav  # noqa: E402
import heldout_music  # noqa: E402

RATE = 16000
FRAME = RATE // 100            # 10 ms: label grid and placement grid
SEED = 20240611

# ---------------------------------------------------------------------------------------------
# Corpus size. Kept modest so that the whole bench runs in minutes on two cores.
SPEECH_FILES = 6               # per condition; each ~40-50 s
SPEECH_FILE_MIN_S = 40.0
SNRS = (20, 10, 5)             # dB, measured over the labelled speech
NOISE_TYPES = ("white", "pink", "babble", "music")
ONLY_FILE_S = 120.0            # noise-only and music-only files: 5 x 120 s = 10 min each
BABBLE_ONLY_FILE_S = 100.0     # babble-only: 3 x 100 s = 5 min
FLOOR_DBFS = -70.0             # faint white floor on every file (a line is never bit-exact zero)

# Utterances: true speech extent 1-4 s, silence gaps 0.5-3 s between them.
UTT_MIN_S, UTT_MAX_S = 1.0, 4.0
GAP_MIN_S, GAP_MAX_S = 0.5, 3.0
SPEECH_DBFS = (-28.0, -18.0)   # active speech level of each utterance, drawn uniformly

# Label derivation on the clean utterance: 10 ms frames above peak-45 dB are speech; pauses
# shorter than 300 ms inside an utterance are merged into it.
LABEL_REL_DB = -45.0
LABEL_MERGE_MS = 300

VOICES = ["en-gb", "en-us", "de", "fr-fr", "es", "it", "nl", "pt"]
VARIANTS = ["", "+f2", "+f3", "+f4", "+m3", "+m7", "+klatt2", "+klatt4"]

SENTENCES = {
    "en": [
        "Please hold the line while I check your account",
        "Your call is important to us",
        "I would like to change my delivery address",
        "The meeting has been moved to Thursday afternoon",
        "Can you read me the reference number again",
        "Thank you for calling",
        "We will send the invoice by email tomorrow morning",
        "Press one to speak to an agent",
        "The weather in the north will stay cold and wet",
        "My order never arrived and nobody answered my emails",
        "Yes that is correct",
        "I am calling about the broken heater in the kitchen",
        "Could you spell your last name for me please",
        "The train to Manchester leaves from platform four",
    ],
    "de": [
        "Bitte bleiben Sie am Apparat",
        "Ich möchte meine Adresse ändern lassen",
        "Der Termin wurde auf Donnerstag verschoben",
        "Können Sie mir die Nummer noch einmal sagen",
        "Vielen Dank für Ihren Anruf",
        "Die Rechnung kommt morgen früh per Post",
        "Mein Paket ist leider nie angekommen",
        "Das Wetter im Norden bleibt kalt und regnerisch",
        "Ja das ist richtig so",
        "Der Zug nach Hamburg fährt von Gleis sieben ab",
    ],
    "fr": [
        "Veuillez patienter quelques instants",
        "Je voudrais changer mon adresse de livraison",
        "La réunion a été déplacée à jeudi après midi",
        "Pouvez vous répéter le numéro de dossier",
        "Merci de votre appel",
        "Nous vous enverrons la facture demain matin",
        "Ma commande n'est jamais arrivée",
        "Le train pour Lyon part du quai numéro trois",
        "Oui c'est bien cela",
        "Il fera froid et humide dans le nord du pays",
    ],
    "es": [
        "Por favor espere un momento",
        "Quiero cambiar la dirección de entrega",
        "La reunión se ha movido al jueves por la tarde",
        "Puede repetir el número de referencia",
        "Gracias por su llamada",
        "Le enviaremos la factura mañana por la mañana",
        "Mi pedido nunca llegó a casa",
        "El tren a Sevilla sale del andén cinco",
        "Sí eso es correcto",
        "Mañana hará frío y lloverá en el norte",
    ],
    "it": [
        "Per favore resti in linea",
        "Vorrei cambiare il mio indirizzo di consegna",
        "La riunione è stata spostata a giovedì pomeriggio",
        "Può ripetere il numero di pratica",
        "Grazie per aver chiamato",
        "Le invieremo la fattura domani mattina",
        "Il mio ordine non è mai arrivato",
        "Il treno per Milano parte dal binario due",
        "Sì è corretto",
        "Domani farà freddo e pioverà al nord",
    ],
    "nl": [
        "Blijft u even aan de lijn alstublieft",
        "Ik wil graag mijn adres wijzigen",
        "De vergadering is verplaatst naar donderdag",
        "Kunt u het nummer nog een keer herhalen",
        "Bedankt voor uw telefoontje",
        "Mijn bestelling is nooit aangekomen",
    ],
    "pt": [
        "Por favor aguarde um momento",
        "Gostaria de mudar o meu endereço",
        "A reunião foi adiada para quinta feira",
        "Pode repetir o número de referência",
        "Obrigado pela sua chamada",
        "A minha encomenda nunca chegou",
    ],
}


def lang_of(voice):
    return {"en-gb": "en", "en-us": "en", "fr-fr": "fr"}.get(voice, voice)


def db_to_amp(db):
    return 10.0 ** (db / 20.0)


def rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def tool_version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except (OSError, IndexError):
        return "missing"


def stamp():
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in ("corpus.py", "common.py", "heldout_music.py"):
        h.update((here / name).read_bytes())
    h.update(tool_version(["espeak-ng", "--version"]).encode())
    h.update(tool_version(["sox", "--version"]).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Speech


class Speaker:
    """espeak-ng utterances at 16 kHz, with their true speech extent."""

    def __init__(self, tmp):
        self.tmp = Path(tmp)
        self.n = 0

    def synth(self, text, voice, speed, pitch):
        self.n += 1
        raw = self.tmp / f"u{self.n}.wav"
        out = self.tmp / f"u{self.n}_16k.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch),
                        "-w", str(raw), text], check=True, capture_output=True)
        subprocess.run(["sox", "-D", str(raw), "-r", str(RATE), str(out)], check=True,
                       capture_output=True)
        x, rate = read_wav(out)
        assert rate == RATE
        raw.unlink()
        out.unlink()
        return x.astype(np.float64)


def speech_frames(x):
    """Per 10 ms frame: True where the clean signal is above peak-45 dB."""
    n = len(x) // FRAME
    if n == 0:
        return np.zeros(0, dtype=bool)
    e = np.mean(np.square(x[: n * FRAME].reshape(n, FRAME)), axis=1)
    db = 10 * np.log10(e + 1e-20)
    return db > db.max() + LABEL_REL_DB


def frames_to_segments(active, merge_frames):
    """Runs of active frames, merging gaps shorter than merge_frames. Frame indices [a, b)."""
    segs = []
    i, n = 0, len(active)
    while i < n:
        if active[i]:
            j = i
            while j < n and active[j]:
                j += 1
            if segs and i - segs[-1][1] < merge_frames:
                segs[-1][1] = j
            else:
                segs.append([i, j])
            i = j
        else:
            i += 1
    return segs


def make_utterance(speaker, rng, used):
    """One utterance cropped to its speech extent, with its speech runs (frame indices)."""
    for _ in range(50):
        voice = VOICES[rng.integers(len(VOICES))]
        variant = VARIANTS[rng.integers(len(VARIANTS))]
        sentences = SENTENCES[lang_of(voice)]
        text = sentences[rng.integers(len(sentences))]
        speed = int(rng.integers(140, 191))
        pitch = int(rng.integers(30, 71))
        key = (voice, variant, text)
        if key in used:
            continue
        x = speaker.synth(text, voice + variant, speed, pitch)
        segs = frames_to_segments(speech_frames(x), LABEL_MERGE_MS // 10)
        if not segs:
            continue
        a, b = segs[0][0], segs[-1][1]
        if not (UTT_MIN_S * 100 <= b - a <= UTT_MAX_S * 100):
            continue
        used.add(key)
        clip = x[a * FRAME: b * FRAME]
        runs = [[s - a, e - a] for s, e in segs]
        active = np.concatenate([clip[s * FRAME: e * FRAME] for s, e in runs])
        level = rng.uniform(*SPEECH_DBFS)
        clip = clip * (db_to_amp(level) / rms(active))
        return clip, runs, f"{voice}{variant}"
    raise RuntimeError("could not synthesise an utterance of 1-4 s; is espeak-ng working?")


def speech_file(speaker, rng, used):
    """A clean speech file: utterances separated by random gaps. Returns (signal, labels_ms)."""
    pieces, labels, voices = [], [], []
    pos = 0  # in 10 ms frames

    def gap():
        return int(round(rng.uniform(GAP_MIN_S, GAP_MAX_S) * 100))

    g = gap()
    pieces.append(np.zeros(g * FRAME))
    pos += g
    while pos < SPEECH_FILE_MIN_S * 100:
        clip, runs, voice = make_utterance(speaker, rng, used)
        pieces.append(clip)
        labels.extend([[(pos + s) * 10, (pos + e) * 10] for s, e in runs])
        voices.append(voice)
        pos += len(clip) // FRAME
        g = gap()
        pieces.append(np.zeros(g * FRAME))
        pos += g
    return np.concatenate(pieces), labels, voices


# ---------------------------------------------------------------------------------------------
# Noises


def white(rng, n):
    return rng.standard_normal(n)


def coloured(rng, n, exponent):
    """Noise with power spectrum ~ 1/f**exponent (1: pink, 2: brown), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / RATE)
    f[0] = f[1]
    f = np.maximum(f, 20.0)       # no sub-audio drift
    spec *= f ** (-exponent / 2.0)
    x = np.fft.irfft(spec, n)
    return x / rms(x)


def babble(rng, n, pool, talkers=None):
    """Continuous babble: 4-6 talkers, each a chain of espeak utterances, summed. Unit RMS."""
    talkers = talkers or int(rng.integers(4, 7))
    out = np.zeros(n)
    for _ in range(talkers):
        stream = []
        length = -int(rng.integers(0, 2 * RATE))   # random start phase
        while length < n:
            u = pool[rng.integers(len(pool))]
            stream.append(u * db_to_amp(rng.uniform(-4, 4)))
            pause = np.zeros(int(rng.uniform(0.0, 0.15) * RATE))
            stream.append(pause)
            length += len(u) + len(pause)
        s = np.concatenate(stream)
        off = int(rng.integers(0, max(1, len(s) - n)))
        out += s[off: off + n]
    return out / rms(out)


def music(rng, n):
    """Synthetic music: harmonic-tone chords with envelopes, bass, a vibrato melody, drums.

    Not a recording: chords of additive harmonic tones (a I-vi-IV-V style progression in a
    random key), a bass line, a melody line with vibrato, and drum-like noise bursts (kick,
    snare, hi-hat) on a fixed rhythm. Unit RMS.
    """
    out = np.zeros(n + RATE)
    bpm = rng.uniform(80, 140)
    beat = 60.0 / bpm
    root = 48 + int(rng.integers(0, 12))                 # MIDI note of the key
    major = [0, 2, 4, 5, 7, 9, 11]
    progression = [[0, 4, 7], [9, 12, 16], [5, 9, 12], [7, 11, 14],
                   [2, 5, 9], [4, 7, 11]]
    bright = rng.uniform(0.8, 1.6)                       # harmonic roll-off (timbre)
    nharm = int(rng.integers(5, 11))

    def hz(m):
        return 440.0 * 2 ** ((m - 69) / 12.0)

    def tone(freq, dur, amp, attack=0.02, release=0.15, vib=0.0):
        m = int(dur * RATE)
        t = np.arange(m) / RATE
        phase = 2 * np.pi * freq * t
        if vib:
            phase += (vib * freq / 5.5) * np.sin(2 * np.pi * 5.5 * t)
        y = np.zeros(m)
        for k in range(1, nharm + 1):
            if freq * k > RATE / 2 * 0.9:
                break
            y += np.sin(k * phase) / k ** bright
        env = np.minimum(1.0, t / attack) * np.exp(-t / max(dur, 0.1) * 1.5)
        env *= np.clip((dur - t) / release, 0.0, 1.0)
        return amp * y * env

    def add(at, y):
        i = int(at * RATE)
        if i >= n:
            return
        y = y[: len(out) - i]
        out[i: i + len(y)] += y

    def burst(dur, decay, amp, hp=False, pitch=None):
        m = int(dur * RATE)
        t = np.arange(m) / RATE
        if pitch:   # kick: a falling sine
            f = pitch * (1 + 2 * np.exp(-t / 0.03))
            y = np.sin(2 * np.pi * np.cumsum(f) / RATE)
        else:
            y = rng.standard_normal(m)
            if hp:
                y = np.diff(y, prepend=0.0)
        return amp * y * np.exp(-t / decay)

    t0, bar = 0.0, 0
    while t0 < n / RATE:
        chord = progression[(bar + int(rng.integers(0, 2))) % len(progression)]
        for m in chord:                                   # pad chord, one per bar
            add(t0, tone(hz(root + 12 + m), 4 * beat, 0.18, attack=0.08, release=0.3))
        for b in range(4):
            tb = t0 + b * beat
            add(tb, tone(hz(root - 12 + chord[0]), beat * 0.9, 0.35))            # bass
            add(tb, burst(0.25, 0.08, 0.9, pitch=50.0) if b in (0, 2) else
                burst(0.2, 0.06, 0.35))                                           # kick/snare
            for h in (0.0, 0.5):
                add(tb + h * beat, burst(0.05, 0.012, 0.25, hp=True))             # hi-hat
            if rng.random() < 0.8:                                                 # melody
                step = major[int(rng.integers(0, 7))]
                add(tb, tone(hz(root + 24 + step), beat * rng.choice([0.5, 1.0]),
                             0.22, vib=0.01))
        t0 += 4 * beat
        bar += 1
    out = out[:n]
    return out / rms(out)


def noise_for(kind, rng, n, pool):
    if kind == "white":
        return white(rng, n)
    if kind == "pink":
        return coloured(rng, n, 1.0)
    if kind == "brown":
        return coloured(rng, n, 2.0)
    if kind == "babble":
        return babble(rng, n, pool)
    if kind == "music":
        return music(rng, n)
    raise ValueError(kind)


def label_mask(n, labels):
    m = np.zeros(n, dtype=bool)
    for s, e in labels:
        m[s * RATE // 1000: e * RATE // 1000] = True
    return m


def mix_at_snr(clean, noise, labels, snr_db):
    mask = label_mask(len(clean), labels)
    ps = np.mean(np.square(clean[mask]))
    pn = np.mean(np.square(noise[mask]))
    return clean + noise * np.sqrt(ps / (pn * 10 ** (snr_db / 10.0)))


# ---------------------------------------------------------------------------------------------


def build(out):
    rng_master = np.random.default_rng(SEED)
    entries = []
    tmp = tempfile.mkdtemp(prefix="vad-corpus-")
    speaker = Speaker(tmp)
    used = set()

    def save(sig, cond, name, kind, labels, extra=None):
        floor = np.random.default_rng(int(hashlib.md5(f"{cond}/{name}".encode()).hexdigest()[:8], 16))
        sig = sig + floor.standard_normal(len(sig)) * db_to_amp(FLOOR_DBFS)
        peak = np.max(np.abs(sig))
        if peak > 0.98:   # keep headroom; scales speech and noise alike, SNR unchanged
            sig = sig * (0.98 / peak)
        d16 = out / "16k" / cond
        d16.mkdir(parents=True, exist_ok=True)
        write_wav(d16 / f"{name}.wav", sig, RATE)
        (d16 / f"{name}.json").write_text(json.dumps(labels) + "\n")
        d8 = out / "8k" / cond
        d8.mkdir(parents=True, exist_ok=True)
        subprocess.run(["sox", "-D", str(d16 / f"{name}.wav"), "-r", "8000", str(d8 / f"{name}.wav")],
                       check=True, capture_output=True)
        (d8 / f"{name}.json").write_text(json.dumps(labels) + "\n")
        dur = len(sig) * 1000 // RATE
        for rate, d in ((16000, "16k"), (8000, "8k")):
            e = {"path": f"{d}/{cond}/{name}.wav", "labels": f"{d}/{cond}/{name}.json",
                 "rate": rate, "kind": kind, "condition": cond, "duration_ms": dur}
            if extra:
                e.update(extra)
            entries.append(e)

    try:
        # Target speech files, and a separate pool of utterances for babble (other seed).
        rng_speech = np.random.default_rng(rng_master.integers(2**32))
        files = [speech_file(speaker, rng_speech, used) for _ in range(SPEECH_FILES)]
        rng_pool = np.random.default_rng(rng_master.integers(2**32))
        pool = [make_utterance(speaker, rng_pool, set())[0] for _ in range(48)]
        print(f"  synthesised {speaker.n} espeak-ng utterances", file=sys.stderr)

        for i, (clean, labels, voices) in enumerate(files):
            name = f"speech_{i:02d}"
            save(clean, "clean", name, "speech", labels, {"voices": voices})
            for kind in NOISE_TYPES:
                rng_n = np.random.default_rng([SEED, i, NOISE_TYPES.index(kind)])
                noise = noise_for(kind, rng_n, len(clean), pool)
                for snr in SNRS:
                    save(mix_at_snr(clean, noise, labels, snr), f"{kind}_{snr}dB", name,
                         "speech", labels, {"voices": voices, "noise": kind, "snr_db": snr})

        # Noise-only: stationary and non-stationary, at telephone-background levels.
        n = int(ONLY_FILE_S * RATE)
        rng_o = np.random.default_rng([SEED, 100])
        specs = [("white", -40.0, None), ("pink", -35.0, None), ("white", -32.0, "am"),
                 ("pink", -35.0, "steps"), ("brown", -30.0, None)]
        for i, (kind, level, mod) in enumerate(specs):
            x = noise_for(kind, rng_o, n, pool)
            gain = np.full(n, db_to_amp(level))
            if mod == "am":      # slow swell, +-6 dB at 0.2-0.5 Hz
                t = np.arange(n) / RATE
                gain *= db_to_amp(6 * np.sin(2 * np.pi * rng_o.uniform(0.2, 0.5) * t))
            elif mod == "steps":  # level jumps every 1-5 s between -50 and -25 dBFS
                pos = 0
                while pos < n:
                    step = int(rng_o.uniform(1, 5) * RATE)
                    gain[pos: pos + step] = db_to_amp(rng_o.uniform(-50, -25))
                    pos += step
            save(x * gain, "noise_only", f"noise_{i:02d}_{kind}{'_' + mod if mod else ''}",
                 "noise", [], {"noise": kind, "level_dbfs": level})

        # Music-only: hold-music style, at the levels a platform plays it.
        for i, level in enumerate((-30.0, -26.0, -22.0, -28.0, -24.0)):
            x = music(np.random.default_rng([SEED, 200, i]), n)
            save(x * db_to_amp(level), "music_only", f"music_{i:02d}", "music", [],
                 {"level_dbfs": level})

        # Held-out music (heldout_music.py: plucked strings, a piano-like voice, brushes; no
        # synthesis shared with music() above): whether a detector's handling of music holds
        # beyond the music it was tuned on.
        for i, level in enumerate((-30.0, -26.0, -22.0, -28.0, -24.0)):
            x = heldout_music.song(np.random.default_rng([777, i]), ONLY_FILE_S)
            save(x * db_to_amp(level), "music_heldout", f"heldout_{i:02d}", "music", [],
                 {"level_dbfs": level})

        # Babble-only: speech-like, reported apart from noise (a VAD may rightly fire on it).
        nb = int(BABBLE_ONLY_FILE_S * RATE)
        for i, level in enumerate((-35.0, -30.0, -25.0)):
            x = babble(np.random.default_rng([SEED, 300, i]), nb, pool)
            save(x * db_to_amp(level), "babble_only", f"babble_{i:02d}", "babble", [],
                 {"level_dbfs": level})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entries


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--force", action="store_true", help="rebuild even if the cached corpus is current")
    args = ap.parse_args()
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"corpus.py: `{tool}` not found (Debian: apt-get install -y espeak-ng sox)")
    out = args.out
    st = stamp()
    manifest = out / "manifest.json"
    if manifest.exists() and not args.force:
        try:
            if json.loads(manifest.read_text()).get("stamp") == st:
                print(f"corpus: cached at {out} (stamp {st})", file=sys.stderr)
                return
        except ValueError:
            pass
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    print(f"corpus: building at {out} ...", file=sys.stderr)
    entries = build(out)
    total = sum(e["duration_ms"] for e in entries) / 1000.0
    manifest.write_text(json.dumps({
        "stamp": st, "seed": SEED,
        "espeak": tool_version(["espeak-ng", "--version"]),
        "sox": tool_version(["sox", "--version"]),
        "files": entries,
    }, indent=1) + "\n")
    print(f"corpus: {len(entries)} files, {total / 60:.1f} min of audio (both rates)", file=sys.stderr)


if __name__ == "__main__":
    main()
