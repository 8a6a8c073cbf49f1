"""A run's evidence about its labels, accumulated over training and kept in the run folder.

Every epoch, each training example's softmax probabilities are recorded at its training visit
(the network's f(x), without AUX's offsets; no extra forward pass, as "area under the margin"
reads them). ``Evidence`` keeps their running sums; at the end of the run the trained network's
probabilities on the training set (eval mode) are added, and everything is written to
``evidence.npz`` in the run folder, for our detectors and for any other tool:

    index          (n,)   int64    each example's index in the dataset's training set
    given_label    (n,)   int64    the label trained on
    clean_label    (n,)   int64    the true label, where known (synthetic noise, or an npz's)
    probs          (n, m) float32  the trained network's probabilities, eval mode, after the
                                   last epoch. IN-SAMPLE: the network was trained on these
                                   examples; a network that memorised its labels is confident
                                   in the wrong ones too
    probs_mean     (n, m) float32  the mean over epochs of the probabilities at each visit
    probs_ema      (n, m) float32  their exponential moving average over epochs (each epoch
                                   weighs EMA_WEIGHT, the past 1 - EMA_WEIGHT): the recent epochs
    margin_mean    (n,)   float32  the mean over epochs of max_{j != y} p[j] - p[y] at each visit
    aux_offsets    (n, m) float32  AUX runs: the offsets lam * B[i] added to the logits
    epochs         ()     int64    epochs accumulated
    estimated_noise_rate   () float64  the rate that sets the flagged count (NaN: none)

With ``keep_epochs``, ``evidence/epoch_NNN.npz`` also holds each epoch's ``probs`` (float32) and,
with AUX, its ``aux_offsets``, for studying how the evidence evolves.

Read it with ``numpy.load`` (or ``load_evidence``). To run another tool on the same evidence, pass
it ``probs`` (or ``probs_mean``) and ``given_label``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..atomic_io import write_bytes_atomic
EVIDENCE_FILE = "evidence.npz"
EMA_WEIGHT = 0.3  # a new epoch's weight in probs_ema: about the last 3 epochs count


class EvidenceAccumulator:
    """Running sums of each epoch's per-example probabilities and margins, on the device: n x classes
    float32, as much memory as AUX's table (the epoch's own probabilities take as much again)."""

    def __init__(self, n: int, num_classes: int, device: torch.device) -> None:
        self.probs_sum = torch.zeros(n, num_classes, device=device)
        self.margin_sum = torch.zeros(n, dtype=torch.float64, device=device)
        self.probs_ema = torch.zeros(n, num_classes, device=device)
        self.epochs = 0

    def add_epoch(self, probs: Tensor, labels: Tensor) -> None:
        self.probs_sum += probs
        if self.epochs:
            self.probs_ema.mul_(1 - EMA_WEIGHT).add_(probs, alpha=EMA_WEIGHT)
        else:
            self.probs_ema.copy_(probs)
        p = probs.double()
        rows = torch.arange(labels.numel(), device=labels.device)
        others = p.clone()
        others[rows, labels] = -1.0
        self.margin_sum += others.max(1).values - p[rows, labels]
        self.epochs += 1

    def state_dict(self) -> dict:
        return {"probs_sum": self.probs_sum.cpu(), "margin_sum": self.margin_sum.cpu(),
                "probs_ema": self.probs_ema.cpu(), "epochs": self.epochs}

    def load_state_dict(self, state: dict) -> None:
        self.probs_sum.copy_(state["probs_sum"])
        self.probs_ema.copy_(state["probs_ema"])
        self.margin_sum.copy_(state["margin_sum"])
        self.epochs = int(state["epochs"])

    def means(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """probs_mean, margin_mean and probs_ema, as float64 arrays."""
        k = max(self.epochs, 1)
        return ((self.probs_sum.double() / k).cpu().numpy(), (self.margin_sum / k).cpu().numpy(),
                self.probs_ema.double().cpu().numpy())


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
    estimated_noise_rate: float = float("nan")

    def __post_init__(self) -> None:
        n = self.given_label.shape[0]
        for name in ("index", "probs", "probs_mean", "margin_mean", "probs_ema", "clean_label", "aux_offsets"):
            value = getattr(self, name)
            if value is not None and value.shape[0] != n:
                raise ValueError(f"evidence: {name} has {value.shape[0]} rows for {n} labels")

    @property
    def truly_noisy(self) -> np.ndarray | None:
        return None if self.clean_label is None else self.given_label != self.clean_label

    def save(self, path: Path) -> None:
        arrays = {"index": self.index.astype(np.int64), "given_label": self.given_label.astype(np.int64),
                  "probs": self.probs.astype(np.float32), "probs_mean": self.probs_mean.astype(np.float32),
                  "margin_mean": self.margin_mean.astype(np.float32), "probs_ema": self.probs_ema.astype(np.float32),
                  "epochs": np.int64(self.epochs),
                  "estimated_noise_rate": np.float64(self.estimated_noise_rate)}
        if self.clean_label is not None:
            arrays["clean_label"] = self.clean_label.astype(np.int64)
        if self.aux_offsets is not None:
            arrays["aux_offsets"] = self.aux_offsets.astype(np.float32)
        save_npz_atomic(path, arrays)


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_bytes_atomic(Path(path), buf.getvalue())


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
    return Evidence(index=arrays["index"], given_label=arrays["given_label"], probs=arrays["probs"].astype(np.float64),
                    probs_mean=arrays["probs_mean"].astype(np.float64),
                    margin_mean=arrays["margin_mean"].astype(np.float64),
                    probs_ema=arrays["probs_ema"].astype(np.float64), epochs=int(arrays["epochs"]),
                    clean_label=arrays.get("clean_label"),
                    aux_offsets=arrays["aux_offsets"].astype(np.float64) if "aux_offsets" in arrays else None,
                    estimated_noise_rate=float(arrays.get("estimated_noise_rate", np.nan)))
