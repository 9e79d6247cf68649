#!/usr/bin/env python3
"""Score VAD results against the corpus labels.

    python3 benches/vad/score.py --corpus target/vad-corpus \
        --result callpipe=out/callpipe.jsonl --result silero=out/silero.jsonl ... \
        [--threshold 0.5] [--json summary.json] [--markdown tables.md]

Each result file holds one JSON line per WAV ({"file", "rate", "hop_ms", "probs", "segments",
"us_per_frame"}, optionally "delay_ms" and "voiced"), as printed by callpipe's `vad_scan` example and by
detect.py. Results are matched to corpus files by their last three path parts
(rate/condition/name.wav), so detectors may be run from any directory. Segments may leave
their end null (still open at the end of the file): they end at the file's end.

Metrics, per detector, per rate and per condition:
  * frame precision / recall on a 10 ms grid: the raw decision (prob >= threshold) of the
    detector frame that holds each 10 ms cell's centre, against the labels;
  * onset error: for each labelled speech segment, the first detector segment whose start lies
    within +-500 ms of the label's start; |start - label start| in ms (median, p90); a label
    with no such start is a missed onset ("merged" when an earlier segment already covers it);
  * offset error: likewise with the last detector segment end within +-500 ms of the label's end;
  * on the noise-only, music-only (two sets) and babble-only files: segments started (false
    `speech:started` events) per hour of audio, and the fraction of 10 ms cells called speech;
  * cost: the detector's own processing time per 20 ms of audio (us), duration-weighted mean.
"""

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

WINDOW_MS = 500
GRID_MS = 10


def corpus_key(path):
    """A corpus file's identity, whatever directory the detector was run from: rate/condition/name."""
    return "/".join(Path(path).parts[-3:])


def load_results(path):
    out = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or not line.startswith("{"):
                continue
            try:
                r = json.loads(line)
            except ValueError as e:
                sys.exit(f"score.py: {path}:{n}: not JSON: {e}")
            for key in ("file", "rate", "hop_ms", "probs", "segments"):
                if key not in r:
                    sys.exit(f"score.py: {path}:{n}: missing {key!r}")
            out[corpus_key(r["file"])] = r
    return out


def grid_decisions(r, n_cells, threshold):
    # A detector whose frame decision is more than prob >= threshold (an energy gate, say) may
    # report its decisions as "voiced" (0/1 per frame); they are then used instead.
    if r.get("voiced") is not None:
        probs, threshold = np.asarray(r["voiced"], dtype=np.float64), 0.5
    else:
        probs = np.asarray(r["probs"], dtype=np.float64)
    centres = np.arange(n_cells) * GRID_MS + GRID_MS / 2.0
    # Frame i covers [i * hop_ms - delay_ms, (i + 1) * hop_ms - delay_ms): a detector that
    # resamples first may report its resampler's delay as "delay_ms" (default 0).
    delay = float(r.get("delay_ms") or 0.0)
    idx = np.floor((centres + delay) / float(r["hop_ms"])).astype(int)
    d = np.zeros(n_cells, dtype=bool)
    ok = (idx >= 0) & (idx < len(probs))
    d[ok] = probs[idx[ok]] >= threshold
    return d


def grid_truth(labels, n_cells):
    t = np.zeros(n_cells, dtype=bool)
    for s, e in labels:
        t[int(s) // GRID_MS: int(e) // GRID_MS] = True
    return t


def segments_of(r, duration_ms):
    segs = []
    for s in r["segments"]:
        start, end = s[0], s[1] if len(s) > 1 and s[1] is not None else duration_ms
        segs.append((float(start), float(end)))
    return segs


def boundary_errors(labels, segs):
    """(onset errors, offset errors, signed offset errors, onset misses, merged, offset misses)."""
    on, off, off_signed = [], [], []
    on_miss = merged = off_miss = 0
    for ls, le in labels:
        starts = [s for s, _ in segs if abs(s - ls) <= WINDOW_MS]
        if starts:
            on.append(abs(min(starts) - ls))
        else:
            on_miss += 1
            if any(s < ls - WINDOW_MS and e > ls for s, e in segs):
                merged += 1
        ends = [e for _, e in segs if abs(e - le) <= WINDOW_MS]
        if ends:
            off.append(abs(max(ends) - le))
            off_signed.append(max(ends) - le)
        else:
            off_miss += 1
    return on, off, off_signed, on_miss, merged, off_miss


class Acc:
    """Accumulates one (detector, rate, condition) cell."""

    def __init__(self):
        self.tp = self.fp = self.fn = self.cells = 0
        self.on, self.off, self.off_signed = [], [], []
        self.labels = self.on_miss = self.merged = self.off_miss = 0
        self.starts = 0
        self.ms = 0.0
        self.cost_weighted = 0.0

    def add_speech(self, truth, dec, labels, segs):
        self.tp += int(np.sum(truth & dec))
        self.fp += int(np.sum(~truth & dec))
        self.fn += int(np.sum(truth & ~dec))
        on, off, off_signed, om, mg, fm = boundary_errors(labels, segs)
        self.on += on
        self.off += off
        self.off_signed += off_signed
        self.labels += len(labels)
        self.on_miss += om
        self.merged += mg
        self.off_miss += fm

    def add_nonspeech(self, dec, segs):
        self.fp += int(np.sum(dec))
        self.cells += len(dec)
        self.starts += len(segs)

    def add_time(self, duration_ms, us_per_frame):
        self.ms += duration_ms
        if us_per_frame is not None:
            self.cost_weighted += duration_ms * float(us_per_frame)

    def summary(self, kind):
        s = {"audio_s": round(self.ms / 1000.0, 1)}
        if self.ms:
            s["us_per_20ms"] = round(self.cost_weighted / self.ms, 2)
        if kind == "cost":
            return s
        if kind == "speech":
            s["precision"] = self.tp / (self.tp + self.fp) if self.tp + self.fp else None
            s["recall"] = self.tp / (self.tp + self.fn) if self.tp + self.fn else None
            s["labels"] = self.labels

            def pct(v, q):
                return float(np.percentile(v, q)) if v else None
            s["onset_ms_median"] = pct(self.on, 50)
            s["onset_ms_p90"] = pct(self.on, 90)
            s["onset_missed"] = self.on_miss
            s["onset_merged"] = self.merged
            s["offset_ms_median"] = pct(self.off, 50)
            s["offset_ms_p90"] = pct(self.off, 90)
            s["offset_signed_ms_median"] = pct(self.off_signed, 50)
            s["offset_missed"] = self.off_miss
        else:
            hours = self.ms / 3.6e6
            s["false_starts"] = self.starts
            s["false_starts_per_hour"] = self.starts / hours if hours else None
            s["speech_cell_fraction"] = self.fp / self.cells if self.cells else None
        return s


def fmt(v, spec=".2f", none="–"):
    return none if v is None else format(v, spec)


def ms(v):
    return "–" if v is None else f"{v:.0f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, type=Path)
    ap.add_argument("--result", action="append", required=True, metavar="NAME=FILE.jsonl")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--json", type=Path, help="write the full summary here")
    ap.add_argument("--markdown", type=Path, help="write the tables here as well as to stdout")
    args = ap.parse_args()

    manifest = json.loads((args.corpus / "manifest.json").read_text())
    files = manifest["files"]
    detectors = []
    results = {}
    for spec in args.result:
        name, _, path = spec.partition("=")
        if not path:
            sys.exit(f"score.py: --result wants NAME=FILE, got {spec!r}")
        detectors.append(name)
        results[name] = load_results(path)

    # cells[det][rate][condition], plus pooled groups
    cells = defaultdict(lambda: defaultdict(lambda: defaultdict(Acc)))
    missing = defaultdict(int)
    for e in files:
        wav = corpus_key(e["path"])
        labels = json.loads((args.corpus / e["labels"]).read_text())
        dur = e["duration_ms"]
        n_cells = dur // GRID_MS
        truth = grid_truth(labels, n_cells)
        for det in detectors:
            r = results[det].get(wav)
            if r is None:
                missing[det] += 1
                continue
            if r["rate"] != e["rate"]:
                sys.exit(f"score.py: {det}: {wav} reported at {r['rate']} Hz, expected {e['rate']}")
            dec = grid_decisions(r, n_cells, args.threshold)
            segs = segments_of(r, dur)
            cond = e["condition"]
            groups = [cond]
            if e["kind"] == "speech":
                # Babble is speech-like (a detector may rightly call it speech), so the pooled
                # groups keep it apart from the noises and music.
                if e.get("noise") == "babble":
                    groups += ["babble (all SNRs)"]
                else:
                    groups += ["all but babble"]
                    if "snr_db" in e:
                        groups += [f"{e['snr_db']} dB (white, pink, music)"]
            for g in groups:
                acc = cells[det][e["rate"]][g]
                if e["kind"] == "speech":
                    acc.add_speech(truth, dec, labels, segs)
                else:
                    acc.add_nonspeech(dec, segs)
                acc.add_time(dur, r.get("us_per_frame"))
            cells[det][e["rate"]]["all files"].add_time(dur, r.get("us_per_frame"))
    for det, n in missing.items():
        print(f"score.py: warning: {det} has no result for {n} corpus files", file=sys.stderr)

    kinds = {e["condition"]: e["kind"] for e in files}
    summary = {"threshold": args.threshold, "window_ms": WINDOW_MS, "grid_ms": GRID_MS,
               "corpus_stamp": manifest.get("stamp"), "detectors": {}}
    for det in detectors:
        summary["detectors"][det] = {}
        for rate in sorted(cells[det]):
            summary["detectors"][det][str(rate)] = {
                g: acc.summary(kinds.get(g, "speech" if g != "all files" else "cost"))
                for g, acc in cells[det][rate].items()}

    md = render(summary, detectors, files)
    print(md)
    if args.markdown:
        args.markdown.write_text(md + "\n")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")


def render(summary, detectors, files):
    lines = []
    speech_conds = []
    for e in files:
        if e["kind"] == "speech" and e["condition"] not in speech_conds:
            speech_conds.append(e["condition"])
    snr_groups = ["clean"] + sorted({f"{e['snr_db']} dB (white, pink, music)" for e in files
                                     if "snr_db" in e and e.get("noise") != "babble"},
                                    key=lambda g: -int(g.split()[0])) + ["babble (all SNRs)"]
    rates = sorted({e["rate"] for e in files})

    def get(det, rate, g):
        return summary["detectors"].get(det, {}).get(str(rate), {}).get(g)

    def pr(s):
        return "–" if not s else f"{fmt(s['precision'])} / {fmt(s['recall'])}"

    def onoff(s, which):
        if not s:
            return "–"
        n = s["labels"]
        missed = s[f"{which}_missed"]
        return f"{ms(s[f'{which}_ms_median'])} / {ms(s[f'{which}_ms_p90'])} ({100.0 * missed / n:.0f} %)" if n else "–"

    # 1. Summary
    lines.append("Frame precision / recall (10 ms grid, raw decisions): clean; each SNR pooled over "
                 "white, pink and music; babble pooled over its three SNRs. Onset and offset |error| "
                 "median / p90 in ms over every speech file except babble, with the share "
                 "of labelled utterances whose onset (offset) no segment hit within ±500 ms; false "
                 "`speech:started` per hour on noise-only, music-only (the corpus's music and the held-out set) and babble-only audio, with the share "
                 "of that audio's 10 ms cells called speech (one segment covering a whole file counts "
                 "once, so read the two together); cost in µs per 20 ms of audio, one thread.")
    lines.append("")
    head = ["detector", "rate"] + [f"P / R {g.replace(' (white, pink, music)', '')}" for g in snr_groups] + [
        "onset med / p90 (missed)", "offset med / p90 (missed)",
        "false starts/h (speech time) noise", "music", "held-out music", "babble", "µs / 20 ms"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for det in detectors:
        for rate in rates:
            row = [det, f"{rate // 1000} kHz"]
            row += [pr(get(det, rate, g)) for g in snr_groups]
            allsp = get(det, rate, "all but babble")
            row += [onoff(allsp, "onset"), onoff(allsp, "offset")]
            for c in ("noise_only", "music_only", "music_heldout", "babble_only"):
                s = get(det, rate, c)
                row.append("–" if not s else f"{s['false_starts_per_hour']:.0f} "
                           f"({100 * s['speech_cell_fraction']:.0f} %)")
            cost = get(det, rate, "all files")
            row.append("–" if not cost or "us_per_20ms" not in cost else f"{cost['us_per_20ms']:.1f}")
            lines.append("| " + " | ".join(row) + " |")

    # 2. Detail per rate
    for rate in rates:
        lines.append("")
        lines.append(f"{rate // 1000} kHz, per condition: P / R · onset med / p90 (missed) · offset "
                     "med / p90 (missed)")
        lines.append("")
        lines.append("| condition | " + " | ".join(detectors) + " |")
        lines.append("|---|" + "---|" * len(detectors))
        for c in speech_conds:
            row = [c]
            for det in detectors:
                s = get(det, rate, c)
                row.append("–" if not s else f"{pr(s)} · {onoff(s, 'onset')} · {onoff(s, 'offset')}")
            lines.append("| " + " | ".join(row) + " |")
        for c in ("noise_only", "music_only", "music_heldout", "babble_only"):
            row = [c + " (false starts/h, speech frames)"]
            for det in detectors:
                s = get(det, rate, c)
                row.append("–" if not s else
                           f"{s['false_starts_per_hour']:.0f}/h, {100 * s['speech_cell_fraction']:.1f} %")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
