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

``record`` folds each visited example's softmax probabilities into its running readings at once:
their sum (the mean over its visits), their exponential moving average (each visit weighs
``EMA_WEIGHT``) and, where the given labels are known, the running mean of the margin
``max_{j != y} p_j - p_y``. Every record is one visit: a loop visits each example at most once per
epoch (the indices of one call must be distinct), and an example not visited keeps its readings.
``end_epoch`` counts the epoch; under torch.distributed, ``merge_ranks`` first combines the ranks'
rows.

Where the readings live (``storage``): on the logits' device while they are small, else in host
memory, so at ImageNet's size (1.28M x 1,000: 5 GB per n x classes float32 array) the device holds
only the batch in flight. On the host path each batch's probabilities are copied to pinned memory
without a sync and folded a few steps later, once the copy is done (``LAG``); the device memory is
``LAG + 1`` batches. ``keep_epoch`` also keeps each epoch's own probabilities (one more array).

``state_dict`` holds all of it, so a loop resumed mid-epoch records exactly what an uninterrupted
one does. Our own loop (``cdr_fast.training``) uses exactly this class: each training visit is
recorded in train mode (in-sample), and each epoch's validation pass records the held-out examples
in eval mode.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..checks import check_choice
from .count import estimated_noise_rate
from .evidence import EVIDENCE_FILE, Evidence

EMA_WEIGHT = 0.3  # a new visit's weight in probs_ema: about the last 3 epochs count
DEVICE_BYTES = 1 << 30  # readings up to this size stay on a CUDA device ("auto"); larger ones go to the host
LAG = 2  # host storage: batches copied but not yet folded
MERGE_BYTES = 1 << 26  # distributed merge: rows all-reduced 64 MB at a time
STORAGE = ("auto", "device", "host")


def _as_index(index, device: torch.device) -> Tensor:
    return torch.as_tensor(index, device=device).long().reshape(-1)


class _Staging:
    """Pinned host buffers one batch's rows are copied into without a sync, and the event that
    says the copy is done."""

    def __init__(self, rows: int, classes: int, pinned: bool) -> None:
        self.index = torch.empty(rows, dtype=torch.int64, pin_memory=pinned)
        self.probs = torch.empty(rows, classes, pin_memory=pinned)
        self.size = 0
        self.event = torch.cuda.Event() if pinned else None


class EvidenceRecorder:
    """Per-example evidence from a training loop (see the module's docstring).

    ``labels`` (optional, (n,) ints): the given labels, for the margin reading; without them the
    saved ``margin_mean`` is the margin of the mean probabilities instead of the mean margin.
    ``storage``: "device", "host", or "auto" (the device while the readings take at most
    ``DEVICE_BYTES``). ``keep_epoch``: also keep the epoch's own probabilities (``epoch_probs``)."""

    def __init__(self, num_examples: int, num_classes: int, device: str | torch.device | None = None, *,
                 labels=None, storage: str = "auto", keep_epoch: bool = False) -> None:
        if int(num_examples) < 0 or int(num_classes) < 2:
            raise ValueError(f"EvidenceRecorder needs num_examples >= 0 and num_classes >= 2; got {num_examples} "
                             f"and {num_classes}")
        n, m = int(num_examples), int(num_classes)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.num_examples, self.num_classes = n, m
        check_choice("storage", storage, STORAGE)
        arrays = 3 if keep_epoch else 2
        if storage == "auto":
            storage = "host" if self.device.type == "cuda" and arrays * n * m * 4 > DEVICE_BYTES else "device"
        self.storage = storage
        self.place = self.device if storage == "device" else torch.device("cpu")  # where the readings live
        self.labels: Tensor | None = None
        if labels is not None:
            self.labels = torch.as_tensor(labels).to(self.place).long().reshape(-1)
            if self.labels.numel() != n:
                raise ValueError(f"EvidenceRecorder: {self.labels.numel()} labels for {n} examples")
        self.probs_sum = torch.zeros(n, m, device=self.place)
        self.probs_ema = torch.zeros(n, m, device=self.place)
        self.margin_sum = torch.zeros(n, dtype=torch.float64, device=self.place)
        self.visits = torch.zeros(n, dtype=torch.int64, device=self.place)  # records of each example
        self.epoch_seen = torch.zeros(n, dtype=torch.bool, device=self.place)  # recorded this epoch
        self.epoch_probs = torch.zeros(n, m, device=self.place) if keep_epoch else None  # this epoch's rows
        self.epochs = 0
        self._pending: deque[_Staging] = deque()  # host storage: copied, not yet folded
        self._free: list[_Staging] = []

    @property
    def _block_rows(self) -> int:
        """Rows of an n x classes array in a block of at most MERGE_BYTES as float64."""
        return max(1, MERGE_BYTES // (8 * self.num_classes))

    def device_bytes(self) -> int:
        """Bytes this recorder holds on the device (its readings, or its staging buffers)."""
        held = [t for t in (self.probs_sum, self.probs_ema, self.margin_sum, self.visits, self.epoch_seen,
                            self.epoch_probs, self.labels) if t is not None and t.device.type == "cuda"]
        return sum(t.numel() * t.element_size() for t in held)

    # ---------------------------------------------------------------- recording

    def record(self, index, logits: Tensor) -> None:
        """The batch's example rows ``index`` (distinct positions in 0 .. n-1) and the network's
        ``logits`` (batch x classes, without AUX's offsets)."""
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"record: logits must be (batch, {self.num_classes}); got {tuple(logits.shape)}")
        self.record_probabilities(index, torch.softmax(logits.detach().float(), 1))

    def record_probabilities(self, index, probs) -> None:
        """As ``record``, from probabilities (batch x classes) already computed."""
        probs = torch.as_tensor(probs).detach().float()
        if probs.dim() != 2 or probs.shape[1] != self.num_classes:
            raise ValueError(f"record: probabilities must be (batch, {self.num_classes}); got {tuple(probs.shape)}")
        idx = _as_index(index, probs.device)
        if idx.numel() != probs.shape[0]:
            raise ValueError(f"record: {idx.numel()} indices for {probs.shape[0]} rows of logits")
        # by storage, not by device equality: torch.device("cuda") != torch.device("cuda", 0)
        if self.storage == "host" and probs.device.type == "cuda":
            self._stage(idx, probs)
        else:
            self._fold(idx.to(self.place), probs.to(self.place))

    def _stage(self, idx: Tensor, probs: Tensor) -> None:
        """Host storage: copy the batch to a staging buffer without a sync; fold the oldest staged
        batch once more than ``LAG`` are in flight."""
        slot = self._slot(probs.shape[0], pinned=probs.device.type == "cuda")
        slot.index[:slot.size].copy_(idx, non_blocking=True)
        slot.probs[:slot.size].copy_(probs, non_blocking=True)
        if slot.event is not None:
            slot.event.record()
        self._pending.append(slot)
        while len(self._pending) > LAG:
            self._fold_oldest()

    def _slot(self, rows: int, pinned: bool) -> _Staging:
        slot = self._free.pop() if self._free else None
        if slot is None or slot.index.numel() < rows:
            slot = _Staging(rows, self.num_classes, pinned)
        slot.size = rows
        return slot

    def _fold_oldest(self) -> None:
        slot = self._pending.popleft()
        if slot.event is not None:
            slot.event.synchronize()  # its copy is done (the GPU has long moved on)
        self._fold(slot.index[:slot.size], slot.probs[:slot.size])
        self._free.append(slot)

    def flush(self) -> None:
        """Fold every batch still in flight (host storage); reading or saving the state does it."""
        while self._pending:
            self._fold_oldest()

    def _fold(self, idx: Tensor, p: Tensor) -> None:
        """One batch's rows into the readings (``idx`` distinct), where the readings live."""
        # index_select / index_add_ / index_copy_: the row ops, several times faster on the CPU than
        # advanced indexing; sum + p and the EMA's expression round exactly as whole-array updates would
        first = (self.visits.index_select(0, idx) == 0)[:, None]
        self.probs_sum.index_add_(0, idx, p)
        ema = self.probs_ema.index_select(0, idx)  # then in place: each batch-sized temporary costs
        ema.mul_(1 - EMA_WEIGHT).add_(p * EMA_WEIGHT)  # page faults on the CPU (measured: 1.1 ms of 1.3)
        self.probs_ema.index_copy_(0, idx, torch.where(first, p, ema, out=ema))
        if self.labels is not None:
            self.margin_sum.index_add_(0, idx, _margin(p, self.labels.index_select(0, idx)))
        self.visits.index_add_(0, idx, torch.ones_like(idx))
        self.epoch_seen.index_fill_(0, idx, True)
        if self.epoch_probs is not None:
            self.epoch_probs.index_copy_(0, idx, p)

    def merge_ranks(self, all_reduce: Callable[[Tensor], Tensor], keeps_unseen: bool) -> None:
        """Under torch.distributed, where each rank recorded its share of the epoch's examples:
        call at the epoch's end on every rank, with ``all_reduce`` (an in-place sum over the ranks)
        and ``keeps_unseen`` True on exactly one rank. Every rank then holds each example's readings
        from the rank that recorded it this epoch (the rows no rank recorded from the one that keeps
        them): exactly what one process recording every batch would hold."""
        self.flush()
        anyone = all_reduce(self.epoch_seen.to(torch.int32).to(self.device)).to(self.place) > 0
        mine = self.epoch_seen | (~anyone if keeps_unseen else torch.zeros_like(anyone))
        step = self._block_rows
        for name in (*self.TOTAL_KEYS, "epoch_probs"):
            values = getattr(self, name)
            if values is None:
                continue
            for lo in range(0, self.num_examples, step):  # at most MERGE_BYTES on the device at a time
                block = values[lo:lo + step]
                owned = mine[lo:lo + step].reshape(-1, *([1] * (block.dim() - 1)))
                share = torch.where(owned, block, torch.zeros_like(block)).to(self.device)
                block.copy_(all_reduce(share))
        self.epoch_seen.copy_(anyone)

    def end_epoch(self) -> None:
        """Count the epoch and start the next (under torch.distributed, after ``merge_ranks``)."""
        self.flush()
        self.epochs += 1
        self.epoch_seen.zero_()
        if self.epoch_probs is not None:
            self.epoch_probs.zero_()

    # ---------------------------------------------------------------- state

    TOTAL_KEYS = ("probs_sum", "probs_ema", "margin_sum", "visits")

    def state_dict(self) -> dict[str, Any]:
        self.flush()
        keys = (*self.TOTAL_KEYS, "epoch_seen", *(("epoch_probs",) if self.epoch_probs is not None else ()))
        state: dict[str, Any] = {k: getattr(self, k).cpu() for k in keys}
        state["epochs"] = self.epochs
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending.clear()
        for k in (*self.TOTAL_KEYS, "epoch_seen", "epoch_probs"):
            if k in state and getattr(self, k) is not None:
                getattr(self, k).copy_(state[k])
        self.epochs = int(state["epochs"])

    def epoch_rows(self) -> dict[str, Any]:
        """This rank's rows of the epoch in progress (which it recorded, and their readings): under
        torch.distributed, what a mid-epoch checkpoint keeps of each rank besides the main one's state."""
        self.flush()
        seen = self.epoch_seen.cpu()
        rows = {k: getattr(self, k).cpu()[seen] for k in (*self.TOTAL_KEYS, "epoch_probs") if getattr(self, k) is not None}
        return {"seen": seen, "rows": rows}

    def load_epoch_rows(self, state: dict[str, Any]) -> None:
        seen = state["seen"].to(self.place)
        self.epoch_seen.copy_(seen)
        for k, values in state["rows"].items():
            getattr(self, k)[seen] = values.to(self.place)

    # ---------------------------------------------------------------- reading

    def means(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """probs_mean (float32), margin_mean (float64) and probs_ema (float32), each over the
        example's own visits, as host arrays."""
        self.flush()
        k = self.visits.clamp(min=1)
        probs_mean = torch.empty_like(self.probs_sum)
        step = self._block_rows
        for lo in range(0, self.num_examples, step):  # in row blocks: no n x classes float64 temporary
            probs_mean[lo:lo + step] = (self.probs_sum[lo:lo + step].double() / k[lo:lo + step, None]).float()
        if self.labels is not None:
            margin_mean = self.margin_sum / k.double()
        else:
            margin_mean = torch.zeros(self.num_examples, dtype=torch.float64, device=self.place)
        return probs_mean.cpu().numpy(), margin_mean.cpu().numpy(), self.probs_ema.cpu().numpy()

    def evidence(self, given_labels, *, probs=None, index=None, clean_labels=None, aux_offsets=None, trained=None,
                 class_names=None, files=None, planted_labels=None, flag_rate: float | None = None) -> Evidence:
        """The readings as an ``Evidence`` (``evidence.npz``'s contents). ``probs``: the trained
        network's probabilities per example (eval mode; default: the recent reading, ``probs_ema``);
        ``index``: each row's index in your dataset (default 0 .. n-1); ``trained``: which rows the
        network trained on (default: all); ``class_names``, ``files``: how the user names classes and
        examples; ``planted_labels``: the canaries' planted labels, -1 elsewhere (``canaries``), where
        ``given_labels`` holds the dataset's labels and the recording saw the planted ones."""
        given = np.asarray(given_labels.cpu() if isinstance(given_labels, Tensor) else given_labels).astype(np.int64)
        if given.shape != (self.num_examples,):
            raise ValueError(f"save: given_labels must be ({self.num_examples},); got {given.shape}")
        probs_mean, margin_mean, probs_ema = self.means()
        if self.labels is None:  # no labels while recording: the margin of the mean probabilities
            rows = np.arange(given.size)
            others = probs_mean.astype(np.float64)
            others[rows, given] = -np.inf
            margin_mean = others.max(1) - probs_mean[rows, given] if given.size else margin_mean
        final = probs_ema if probs is None else _numpy(probs)
        evidence = Evidence(
            index=np.arange(self.num_examples) if index is None else _numpy(index).astype(np.int64),
            given_label=given, probs=final, probs_mean=probs_mean, margin_mean=margin_mean, probs_ema=probs_ema,
            epochs=self.epochs, clean_label=None if clean_labels is None else _numpy(clean_labels).astype(np.int64),
            aux_offsets=None if aux_offsets is None else _numpy(aux_offsets),
            trained=np.ones(self.num_examples, bool) if trained is None else _numpy(trained).astype(bool),
            class_names=list(class_names) if class_names is not None else None,
            files=list(files) if files is not None else None,
            planted_label=None if planted_labels is None else _numpy(planted_labels).astype(np.int64))
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
    """``max_{j != y} p_j - p_y`` per row, in float64 (the selections are exact in p's own dtype)."""
    column = labels.reshape(-1, 1)
    others = p.scatter(1, column, -1.0)
    return others.max(1).values.double() - p.gather(1, column).reshape(-1).double()


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
