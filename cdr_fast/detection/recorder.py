"""The evidence recorder: what any training loop calls to keep the evidence our detectors read.

    recorder = EvidenceRecorder(len(train_set), num_classes, device="cuda", labels=train_labels)
    for epoch in range(epochs):
        for x, y, idx in loader:                    # idx: each example's row (0 .. n-1)
            logits = model(x)                       # the network's logits, without AUX's offsets
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(); loss.backward(); opt.step()
            recorder.record(idx, logits)            # no host sync, no per-example Python
        recorder.end_epoch()
    recorder.save("runs/mine", train_labels, probs=final_probabilities)   # -> runs/mine/evidence.npz

``record`` keeps each visited example's softmax probabilities for the epoch (one row written per
example, on the logits' device); ``end_epoch`` folds the epoch's rows into the running readings:
their sum (the mean over epochs), their exponential moving average (each epoch weighs
``EMA_WEIGHT``) and, where the given labels are known, the running mean of the margin
``max_{j != y} p_j - p_y``. An example not visited in an epoch keeps its readings; each example's
mean is over its own visits. The state is n x classes float32 three times (sum, EMA, the epoch's
rows) on the device, and ``state_dict`` holds all of it, so a loop resumed mid-epoch records
exactly what an uninterrupted one does.

Our own loop (``cdr_fast.training``) uses exactly this class: each training visit is recorded in
train mode (in-sample), and each epoch's validation pass records the held-out examples in eval mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .count import estimated_noise_rate
from .evidence import EVIDENCE_FILE, Evidence

EMA_WEIGHT = 0.3  # a new epoch's weight in probs_ema: about the last 3 epochs count


def _as_index(index, device: torch.device) -> Tensor:
    return torch.as_tensor(index, device=device).long().reshape(-1)


class EvidenceRecorder:
    """Per-example evidence from a training loop (see the module's docstring).

    ``labels`` (optional, (n,) ints): the given labels, for the margin reading; without them the
    saved ``margin_mean`` is the margin of the mean probabilities instead of the mean margin."""

    def __init__(self, num_examples: int, num_classes: int, device: str | torch.device | None = None, *,
                 labels=None) -> None:
        if int(num_examples) < 0 or int(num_classes) < 2:
            raise ValueError(f"EvidenceRecorder needs num_examples >= 0 and num_classes >= 2; got {num_examples} "
                             f"and {num_classes}")
        n, m = int(num_examples), int(num_classes)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.num_examples, self.num_classes = n, m
        self.labels: Tensor | None = None
        if labels is not None:
            self.labels = torch.as_tensor(labels, device=self.device).long().reshape(-1)
            if self.labels.numel() != n:
                raise ValueError(f"EvidenceRecorder: {self.labels.numel()} labels for {n} examples")
        self.probs_sum = torch.zeros(n, m, device=self.device)
        self.probs_ema = torch.zeros(n, m, device=self.device)
        self.margin_sum = torch.zeros(n, dtype=torch.float64, device=self.device)
        self.visits = torch.zeros(n, dtype=torch.int64, device=self.device)  # epochs in which each was recorded
        self.epoch_probs = torch.zeros(n, m, device=self.device)  # this epoch's rows ...
        self.epoch_seen = torch.zeros(n, dtype=torch.bool, device=self.device)  # ... and which were written
        self.epochs = 0

    def record(self, index, logits: Tensor) -> None:
        """The batch's example rows ``index`` (n-based positions) and the network's ``logits``
        (batch x classes, without AUX's offsets)."""
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"record: logits must be (batch, {self.num_classes}); got {tuple(logits.shape)}")
        idx = _as_index(index, self.device)
        if idx.numel() != logits.shape[0]:
            raise ValueError(f"record: {idx.numel()} indices for {logits.shape[0]} rows of logits")
        self.epoch_probs[idx] = torch.softmax(logits.detach().float(), 1).to(self.device)
        self.epoch_seen[idx] = True

    def end_epoch(self) -> None:
        """Fold this epoch's recorded rows into the readings, and start the next epoch."""
        seen = self.epoch_seen
        p = self.epoch_probs
        self.probs_sum += p  # zero rows where unseen
        # a first visit starts the average; later ones move it; unseen rows keep theirs (no host sync)
        moved = torch.where((self.visits > 0)[:, None], self.probs_ema * (1 - EMA_WEIGHT) + p * EMA_WEIGHT, p)
        self.probs_ema = torch.where(seen[:, None], moved, self.probs_ema)
        if self.labels is not None:
            self.margin_sum += torch.where(seen, _margin(p.double(), self.labels), 0.0)
        self.visits += seen.long()
        self.epochs += 1
        self.epoch_probs.zero_()
        self.epoch_seen.zero_()

    # ---------------------------------------------------------------- state

    EPOCH_KEYS = ("epoch_probs", "epoch_seen")
    TOTAL_KEYS = ("probs_sum", "probs_ema", "margin_sum", "visits")

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {k: getattr(self, k).cpu() for k in (*self.TOTAL_KEYS, *self.EPOCH_KEYS)}
        state["epochs"] = self.epochs
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in (*self.TOTAL_KEYS, *self.EPOCH_KEYS):
            if k in state:
                getattr(self, k).copy_(state[k])
        self.epochs = int(state["epochs"])

    # ---------------------------------------------------------------- reading

    def means(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """probs_mean, margin_mean and probs_ema as float64 arrays (each over the example's own visits)."""
        k = self.visits.clamp(min=1).double()
        probs_mean = self.probs_sum.double() / k[:, None]
        if self.labels is not None:
            margin_mean = self.margin_sum / k
        else:
            margin_mean = torch.zeros(self.num_examples, dtype=torch.float64, device=self.device)
        return probs_mean.cpu().numpy(), margin_mean.cpu().numpy(), self.probs_ema.double().cpu().numpy()

    def evidence(self, given_labels, *, probs=None, index=None, clean_labels=None, aux_offsets=None, trained=None,
                 class_names=None, files=None, flag_rate: float | None = None) -> Evidence:
        """The readings as an ``Evidence`` (``evidence.npz``'s contents). ``probs``: the trained
        network's probabilities per example (eval mode; default: the recent reading, ``probs_ema``);
        ``index``: each row's index in your dataset (default 0 .. n-1); ``trained``: which rows the
        network trained on (default: all); ``class_names``, ``files``: how the user names classes and
        examples."""
        given = np.asarray(given_labels.cpu() if isinstance(given_labels, Tensor) else given_labels).astype(np.int64)
        if given.shape != (self.num_examples,):
            raise ValueError(f"save: given_labels must be ({self.num_examples},); got {given.shape}")
        probs_mean, margin_mean, probs_ema = self.means()
        if self.labels is None:  # no labels while recording: the margin of the mean probabilities
            rows = np.arange(given.size)
            others = probs_mean.copy()
            others[rows, given] = -np.inf
            margin_mean = others.max(1) - probs_mean[rows, given] if given.size else margin_mean
        final = probs_ema if probs is None else _numpy(probs).astype(np.float64)
        evidence = Evidence(
            index=np.arange(self.num_examples) if index is None else _numpy(index).astype(np.int64),
            given_label=given, probs=final, probs_mean=probs_mean, margin_mean=margin_mean, probs_ema=probs_ema,
            epochs=self.epochs, clean_label=None if clean_labels is None else _numpy(clean_labels).astype(np.int64),
            aux_offsets=None if aux_offsets is None else _numpy(aux_offsets).astype(np.float64),
            trained=np.ones(self.num_examples, bool) if trained is None else _numpy(trained).astype(bool),
            class_names=list(class_names) if class_names is not None else None,
            files=list(files) if files is not None else None)
        evidence.flag_rate = estimated_noise_rate(evidence) if flag_rate is None else float(flag_rate)
        return evidence

    def save(self, run_folder_or_path: str | Path, given_labels, **kwargs: Any) -> Path:
        """Write ``evidence.npz`` (into a folder, or to the path given if it ends in ``.npz``);
        ``kwargs`` as ``evidence``. Returns the file's path."""
        path = Path(run_folder_or_path)
        if path.suffix != ".npz":
            path.mkdir(parents=True, exist_ok=True)
            path = path / EVIDENCE_FILE
        self.evidence(given_labels, **kwargs).save(path)
        return path


def _margin(p: Tensor, labels: Tensor) -> Tensor:
    """``max_{j != y} p_j - p_y`` per row."""
    rows = torch.arange(labels.numel(), device=p.device)
    others = p.clone()
    others[rows, labels] = -1.0
    return others.max(1).values - p[rows, labels]


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
