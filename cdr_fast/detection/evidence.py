"""The evidence file: what a run (or any loop, through ``EvidenceRecorder``) keeps about its labels.

``evidence.npz`` in a run folder holds, per example of the dataset's training set (the
validation split included: every example is scored):

    index          (n,)   int64    each example's index in the dataset's training set
    given_label    (n,)   int64    the label trained on (or held out with)
    trained        (n,)   bool     whether the network trained on it (False: the held-out
                                   validation split, whose readings are out-of-sample)
    clean_label    (n,)   int64    the true label, where known (synthetic noise, or an npz's)
    probs          (n, m) float32  the trained network's probabilities, eval mode, after the
                                   last epoch. IN-SAMPLE for trained examples: a network that
                                   memorised its labels is confident in the wrong ones too
    probs_mean     (n, m) float32  the mean over epochs of each epoch's probabilities (a trained
                                   example's at its training visit, a held-out one's at the
                                   epoch's validation pass)
    probs_ema      (n, m) float32  their exponential moving average over epochs (each epoch
                                   weighs EMA_WEIGHT, the past 1 - EMA_WEIGHT): the recent epochs
    margin_mean    (n,)   float32  the mean over epochs of max_{j != y} p[j] - p[y]
    aux_offsets    (n, m) float32  AUX runs: the offsets lam * B[i] added to the logits (0 on
                                   held-out rows)
    planted_label  (n,)   int64    runs with canaries (``--canaries``): the wrong label planted on a
                                   canary and trained on, -1 elsewhere; ``given_label`` keeps the
                                   dataset's. A canary is never flagged (detection/canaries.py)
    epochs         ()     int64    epochs accumulated
    flag_rate      ()     float64  the share of examples to flag: the noise rate estimated from the
                                   evidence itself (cdr_fast.detection.count), unless given
    class_names    (m,)   str      where the dataset names its classes
    files          (n,)   str      a folder dataset: each example's file, relative to its folder

With ``keep_epochs``, ``evidence/epoch_NNN.npz`` also holds each epoch's ``probs`` (float32) and,
with AUX, its ``aux_offsets``, for studying how the evidence evolves.

Read it with ``numpy.load`` (or ``load_evidence``). To run another tool on the same evidence, pass
it ``probs`` (or ``probs_mean``) and ``given_label``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic_io import write_atomic

EVIDENCE_FILE = "evidence.npz"
FLOAT_ARRAYS = ("probs", "probs_mean", "margin_mean", "probs_ema", "aux_offsets")

@dataclass
class Evidence:
    """The contents of ``evidence.npz`` (see the module's docstring)."""

    index: np.ndarray
    given_label: np.ndarray
    probs: np.ndarray
    probs_mean: np.ndarray
    margin_mean: np.ndarray
    probs_ema: np.ndarray
    epochs: int
    clean_label: np.ndarray | None = None
    aux_offsets: np.ndarray | None = None
    trained: np.ndarray | None = None  # None: every example was trained on
    class_names: list[str] | None = None
    files: list[str] | None = None
    planted_label: np.ndarray | None = None  # None: no canaries
    flag_rate: float = float("nan")

    def __post_init__(self) -> None:
        # float32, as the file stores them: a run's own detectors read what find_labels.py reads,
        # and at ImageNet's size (1.28M x 1,000) each array is 5 GB, not 10
        for name in FLOAT_ARRAYS:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, np.asarray(value, dtype=np.float32))
        n = self.given_label.shape[0]
        if self.trained is None:
            self.trained = np.ones(n, dtype=bool)
        for name in ("index", "probs", "probs_mean", "margin_mean", "probs_ema", "clean_label", "aux_offsets",
                     "trained", "files", "planted_label"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"evidence: {name} has {len(value)} rows for {n} labels")

    @property
    def truly_noisy(self) -> np.ndarray | None:
        return None if self.clean_label is None else self.given_label != self.clean_label

    @property
    def canary(self) -> np.ndarray:
        """(n,) bool: the planted flips (all False without canaries)."""
        if self.planted_label is None:
            return np.zeros(self.given_label.shape, dtype=bool)
        return self.planted_label >= 0

    @property
    def judged(self) -> np.ndarray:
        """(n,) bool: the examples whose given label the evidence judges (all but the canaries)."""
        return ~self.canary

    @property
    def trained_label(self) -> np.ndarray:
        """The labels the network saw: the given ones, the canaries' planted ones."""
        return self.given_label if self.planted_label is None else np.where(self.canary, self.planted_label,
                                                                             self.given_label)

    def class_name(self, label: int) -> str:
        return self.class_names[label] if self.class_names is not None else str(label)

    def save(self, path: Path) -> None:
        arrays = {"index": self.index.astype(np.int64), "given_label": self.given_label.astype(np.int64),
                  "probs": self.probs, "probs_mean": self.probs_mean, "margin_mean": self.margin_mean,
                  "probs_ema": self.probs_ema, "trained": np.asarray(self.trained, dtype=bool),
                  "epochs": np.int64(self.epochs), "flag_rate": np.float64(self.flag_rate)}
        if self.class_names is not None:
            arrays["class_names"] = np.asarray(self.class_names, dtype=str)
        if self.files is not None:
            arrays["files"] = np.asarray(self.files, dtype=str)
        if self.clean_label is not None:
            arrays["clean_label"] = self.clean_label.astype(np.int64)
        if self.aux_offsets is not None:
            arrays["aux_offsets"] = self.aux_offsets
        if self.planted_label is not None:
            arrays["planted_label"] = self.planted_label.astype(np.int64)
        save_npz_atomic(path, arrays)


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Compressed, written straight into the file (atomically): never a second copy in memory."""
    write_atomic(Path(path), lambda f: np.savez_compressed(f, **arrays))


def load_evidence(path: str | Path) -> Evidence:
    """An ``evidence.npz`` (a run folder's, or the file itself), with a one-line error if it is
    missing or not one."""
    path = Path(path)
    if path.is_dir():
        path = path / EVIDENCE_FILE
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the evidence ({err}); a finished run's folder holds {EVIDENCE_FILE}") \
            from None
    missing = {"index", "given_label", "probs", "probs_mean", "margin_mean", "probs_ema", "epochs"} - set(arrays)
    if missing:
        raise ValueError(f"{path}: not a cdr-fast evidence file (lacks {', '.join(sorted(missing))})")
    return Evidence(index=arrays["index"], given_label=arrays["given_label"], probs=arrays["probs"],
                    probs_mean=arrays["probs_mean"], margin_mean=arrays["margin_mean"], probs_ema=arrays["probs_ema"],
                    epochs=int(arrays["epochs"]), clean_label=arrays.get("clean_label"),
                    aux_offsets=arrays.get("aux_offsets"),
                    trained=arrays["trained"].astype(bool) if "trained" in arrays else None,
                    class_names=[str(c) for c in arrays["class_names"]] if "class_names" in arrays else None,
                    files=[str(f) for f in arrays["files"]] if "files" in arrays else None,
                    planted_label=arrays.get("planted_label"),
                    flag_rate=float(arrays.get("flag_rate", np.nan)))
