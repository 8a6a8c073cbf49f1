"""Cross-fitting (``--folds K``): out-of-sample evidence for every example.

Fold k is a run of its own (``--out/fold_k``, resumable as any run) whose held-out split is the
k-th of a seeded, balanced K-way partition of the whole training set (``split.fold_split``). Its
evidence already scores those held-out examples out-of-sample: at every epoch's validation pass
and, at the end, with the trained network (the ``trained`` column is False for them). Combining
takes each example's row from the fold that held it out, and writes, into ``--out``, the same
``evidence.npz`` (``trained`` False everywhere: every reading is out-of-sample; no AUX offsets,
which exist only for trained examples), ``suspects.csv``, ``config.json`` and ``summary.json``
(the folds' summaries). K times the cost of one run.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

import numpy as np

from ..atomic_io import write_csv_atomic, write_json_atomic
from ..detection import BEST, Evidence, load_evidence, run_detectors
from ..detection.count import estimated_noise_rate
from .detection_log import suspect_rows
from .run_folder import RunFolder


def combine_folds(folder: Path, folds: int) -> Evidence:
    parts = [load_evidence(folder / f"fold_{k}") for k in range(folds)]
    first = parts[0]
    n = first.given_label.size
    rows = {name: np.zeros_like(getattr(first, name)) for name in ("probs", "probs_mean", "probs_ema", "margin_mean")}
    scored = np.zeros(n, dtype=bool)
    for part in parts:
        if part.given_label.size != n or not np.array_equal(part.given_label, first.given_label):
            raise ValueError("the folds' evidence files disagree on the examples or their labels")
        held = ~part.trained
        if (scored & held).any():
            raise ValueError("an example is held out by two folds")
        for name, values in rows.items():
            values[held] = getattr(part, name)[held]
        scored |= held
    if not scored.all():
        raise ValueError(f"{int((~scored).sum())} examples are held out by no fold")
    combined = dataclasses.replace(first, **rows, trained=np.zeros(n, dtype=bool), aux_offsets=None,
                                   epochs=min(p.epochs for p in parts))
    combined.flag_rate = estimated_noise_rate(combined)
    run = RunFolder(folder)
    run.make()
    combined.save(folder / "evidence.npz")
    write_csv_atomic(folder / "suspects.csv", suspect_rows(combined, run_detectors(combined, [BEST])[BEST]))
    settings = RunFolder(folder / "fold_0").settings()
    write_json_atomic(folder / "config.json", {**{k: v for k, v in settings.items() if k not in ("fold", "run_id")},
                                               "folds": folds})
    summaries = [RunFolder(folder / f"fold_{k}").summary() for k in range(folds)]
    write_json_atomic(folder / "summary.json", {
        "folds": folds, "num_examples": n, "evidence": "out-of-sample (cross-fitted)",
        "test_acc_last_mean": statistics.fmean(s["test_acc_last"] for s in summaries),
        "fold_summaries": summaries})
    return combined
