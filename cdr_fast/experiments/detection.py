"""The detection benchmark's report: every detector, per epoch and at the end, recomputed from
the evidence each run kept (``evidence/epoch_NNN.npz`` and ``evidence.npz``), so a change to a
detector needs no retraining.

    detection.csv   one row per (dataset, noise_type, noise_rate, seed, detector, epoch), epoch
                    "final" for the end of the run: auroc, average_precision, precision, recall
                    (of the top n times the noise rate) and correction_accuracy
    detection.md    the final average precision of each detector per cell (mean over seeds), and
                    whether the best detector is ahead of both small loss and confident learning
    detection_epochs_<dataset>.png   average precision per epoch at 40%
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic_io import write_bytes_atomic, write_csv_atomic
from ..training.evidence_keeper import judging_rate
from ..detection import (BASELINES, BEST, DETECTORS, EVIDENCE_FILE, EvidenceRecorder, adaptive_posterior,
                         detection_rows, run_detectors)

KEYS = ("dataset", "noise_type", "noise_rate", "seed")


def run_rows(folder: Path) -> tuple[list[dict[str, Any]], str]:
    """One finished run's rows: each kept epoch, then the end of the run. The readings over epochs
    are replayed from the kept epochs (as the run accumulated them); the trained network's final
    probabilities and AUX's offsets come from its evidence.npz. Also the adaptive posterior's regime."""
    summary = json.loads((folder / "summary.json").read_text())
    key = {k: summary[k] for k in KEYS}
    with np.load(folder / EVIDENCE_FILE) as f:
        kept = {k: f[k] for k in f.files}
    labels, clean = kept["given_label"], kept["clean_label"]
    known = float("nan") if summary["noise_type"] == "none" else summary["realised_noise_rate"]
    recorder = EvidenceRecorder(labels.size, kept["probs"].shape[1], labels=labels)
    rows = []
    for path in sorted((folder / "evidence").glob("epoch_*.npz")):
        with np.load(path) as f:
            probs, offsets = f["probs"], (f["aux_offsets"] if "aux_offsets" in f.files else None)
        recorder.record_probabilities(np.arange(labels.size), probs)  # every example is recorded each epoch
        recorder.end_epoch()
        epoch = recorder.evidence(labels, probs=probs, aux_offsets=offsets)
        rows += detection_rows(run_detectors(epoch), labels, clean, judging_rate(known, epoch), **key,
                               epoch=int(path.stem.split("_")[1]))
    final = recorder.evidence(labels, probs=kept["probs"], clean_labels=clean, aux_offsets=kept.get("aux_offsets"))
    rows += detection_rows(run_detectors(final), labels, clean, judging_rate(known, final), **key, epoch="final")
    return rows, adaptive_posterior(final.probs_ema, final.probs_mean, labels).regime


def cell_table(rows: list[dict[str, Any]]) -> tuple[list[str], dict[tuple, dict[str, list[float]]]]:
    """Final average precision per (dataset, noise type, rate) and detector, over seeds."""
    cells: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["epoch"] == "final":
            cells[(r["dataset"], r["noise_type"], r["noise_rate"])][r["detector"]].append(r["average_precision"])
    detectors = [d for d in DETECTORS if any(d in c for c in cells.values())]
    return detectors, cells


def markdown(rows: list[dict[str, Any]], regimes: dict[tuple, set[str]]) -> str:
    """The final average precision per cell; ``regimes``: the adaptive posterior's, per cell."""
    detectors, cells = cell_table(rows)
    head = ["dataset", "noise", "rate", "seeds", *(DETECTORS[d].label for d in detectors), f"{DETECTORS[BEST].label} ahead by",
            "regime"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    wins = 0
    for (dataset, noise, rate), per in sorted(cells.items()):
        means = {d: statistics.mean(v) for d, v in per.items()}
        lead = means[BEST] - max(means[b] for b in BASELINES)
        wins += lead > 0
        top = max(means.values())
        cols = [f"**{means[d]:.4f}**" if means[d] == top else f"{means[d]:.4f}" for d in detectors]
        lines.append(f"| {dataset} | {noise} | {rate:.0%} | {len(per[BEST])} | " + " | ".join(cols)
                     + f" | {lead:+.4f} | {', '.join(sorted(regimes[(dataset, noise, rate)]))} |")
    return (f"Final average precision (mean over seeds). {DETECTORS[BEST].label} is ahead of both small loss and "
            f"confident learning in {wins} of {len(cells)} cells.\n\n" + "\n".join(lines) + "\n")


def figure_epochs(rows: list[dict[str, Any]], dataset: str, path: Path, rate: float = 0.4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = [r for r in rows if r["dataset"] == dataset and r["noise_rate"] == rate and r["epoch"] != "final"]
    noises = sorted({r["noise_type"] for r in mine})
    if not noises:
        return
    fig, axes = plt.subplots(1, len(noises), figsize=(4 * len(noises), 3.4), squeeze=False, sharey=True)
    for ax, noise in zip(axes[0], noises):
        for detector in DETECTORS:
            per_epoch = defaultdict(list)
            for r in mine:
                if r["noise_type"] == noise and r["detector"] == detector:
                    per_epoch[r["epoch"]].append(r["average_precision"])
            if per_epoch:
                xs = sorted(per_epoch)
                ax.plot(xs, [statistics.mean(per_epoch[x]) for x in xs], label=DETECTORS[detector].label)
        ax.set_title(f"{dataset}, {noise} {rate:.0%}")
        ax.set_xlabel("epoch")
    axes[0][0].set_ylabel("average precision")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_detection(out: Path) -> None:
    rows, regimes = [], defaultdict(set)
    for summary in sorted((out / "runs").glob("*/summary.json")):
        run, regime = run_rows(summary.parent)
        rows += run
        regimes[(run[0]["dataset"], run[0]["noise_type"], run[0]["noise_rate"])].add(regime)
    ordered = [{**{k: r[k] for k in (*KEYS, "detector", "epoch")}, **{k: v for k, v in r.items()
                if k not in (*KEYS, "detector", "epoch")}} for r in rows]
    write_csv_atomic(out / "detection.csv", ordered)
    write_bytes_atomic(out / "detection.md", markdown(rows, regimes).encode())
    for dataset in sorted({r["dataset"] for r in rows}):
        figure_epochs(rows, dataset, out / f"detection_epochs_{dataset}.png")
