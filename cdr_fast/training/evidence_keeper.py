"""The run's evidence about its labels: an ``EvidenceRecorder`` (``cdr_fast.detection``, the same
class a user's own loop calls) fed by the loop, and ``evidence.npz`` written at the run's end.

Every example of the dataset's training set is scored. A training example is recorded at its
training visit (train mode: in-sample, no extra forward pass); a validation example at each
epoch's validation pass (eval mode: out-of-sample). At the end the trained network's
probabilities on every example (eval mode) are added. The file's rows are in the dataset's
order, and its ``trained`` column says which examples the network trained on.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..detection import Evidence, EvidenceRecorder
from ..detection.count import estimated_noise_rate
from ..trained import predict_probabilities
from .observers import Observer, Step
from .split import NoisySplit


def judging_rate(known: float, evidence: Evidence) -> float:
    """The share at which detection.csv judges the detectors' precision and recall: the noise rate
    the run knows (``Trainer.known_noise_rate``), else the evidence's own estimate."""
    return known if math.isfinite(known) else estimated_noise_rate(evidence)


class EvidenceKeeper(Observer):
    """Records every epoch's per-example probabilities and writes ``evidence.npz`` (main rank).
    With ``keep_epochs`` (the benchmark's cells) each epoch's probabilities go to
    ``evidence/epoch_NNN.npz`` too; ``epoch_probs`` then holds the last epoch's for the others."""

    name = "evidence"

    def __init__(self, data: NoisySplit, device: torch.device, keep_epochs: bool = False,
                 want_epoch_probs: bool = False, sharded: bool = False) -> None:
        self.data = data
        trained_on = data.whole(data.train_y, data.val_y)  # the labels the network sees, canaries' planted ones
        self.given = trained_on.cpu().numpy().copy()  # the dataset's labels
        self.planted: np.ndarray | None = None  # the canaries' planted labels, -1 elsewhere (None: no canaries)
        if data.canaries.numel():
            rows = data.canaries.numpy()
            self.planted = np.full(self.given.shape, -1, dtype=np.int64)
            self.planted[rows] = self.given[rows]
            self.given[rows] = data.canary_labels.numpy()
        self.clean = data.whole(data.train_clean, data.val_clean).cpu().numpy() if data.train_clean is not None else None
        self.keep_epochs = keep_epochs
        self.want_epoch_probs = want_epoch_probs or keep_epochs
        self.recorder = EvidenceRecorder(data.num_examples, data.num_classes, device, labels=trained_on,
                                         keep_epoch=self.want_epoch_probs)
        self.train_rows = data.train_index.to(device)
        self.val_rows = data.val_index.to(device)
        self.sharded = sharded  # under torch.distributed: each rank records its share
        self.epoch_probs: np.ndarray | None = None  # the last epoch's, where wanted ...
        self.epoch_offsets: np.ndarray | None = None  # ... and AUX's offsets after it
        self.final: Evidence | None = None  # what evidence.npz holds, once written

    @property
    def judged(self) -> np.ndarray:
        """(n,) bool: the examples whose given label is judged (all but the canaries)."""
        return np.ones(self.given.shape, dtype=bool) if self.planted is None else self.planted < 0

    def on_step_end(self, run, step: Step) -> None:
        self.recorder.record(self.train_rows[step.index], step.logits)

    def on_held_out(self, run, rows: Tensor, logits: Tensor) -> None:
        self.recorder.record(self.val_rows[rows], logits)

    def on_epoch_end(self, run, stats: dict[str, Any]) -> None:
        r = self.recorder
        if run.dist.enabled:  # each rank recorded its share of the epoch's examples
            r.merge_ranks(run.dist.all_reduce_, keeps_unseen=run.dist.is_main)
        if self.want_epoch_probs:
            self.epoch_probs = r.epoch_probs.cpu().numpy().copy()  # end_epoch zeroes the buffer
            self.epoch_offsets = self.offsets(run)
        r.end_epoch()
        if self.keep_epochs and run.folder is not None:
            run.folder.write_epoch_evidence(run.epoch, self.epoch_probs, self.epoch_offsets)

    def offsets(self, run) -> np.ndarray | None:
        """AUX's offsets per example (zero rows for the held-out ones, which have no row in the table)."""
        if run.aux is None:
            return None
        table = run.aux.offsets()
        return self.data.whole(table, table.new_zeros(self.val_rows.numel(), table.shape[1])).cpu().numpy()

    def on_run_end(self, run) -> None:
        if run.folder is None:
            return
        d, batch = self.data, run.config.eval_batch_size
        # written to the host batch by batch, in the dataset's order: n x classes never on the device
        p = np.empty((d.num_examples, d.num_classes), dtype=np.float32)
        for split, index in ((d.train_x, d.train_index), (d.val_x, d.val_index)):
            if index.numel():
                p[index.numpy()] = predict_probabilities(run.model, split, batch)
        trained = np.zeros(d.num_examples, dtype=bool)
        trained[d.train_index.numpy()] = True
        self.final = self.recorder.evidence(
            self.given, probs=p, index=np.arange(d.num_examples), clean_labels=self.clean, aux_offsets=self.offsets(run),
            trained=trained, class_names=d.class_names, files=d.files,
            planted_labels=self.planted)  # the flag rate: from the evidence, never --tau
        run.folder.write_evidence(self.final)

    def state_dict(self) -> Any:
        return self.recorder.state_dict()

    def load_state_dict(self, state: Any) -> None:
        self.recorder.load_state_dict(state)

    def epoch_state(self) -> Any:
        # one process: the state_dict holds the epoch so far; several: each rank's own rows too
        return self.recorder.epoch_rows() if self.sharded else None

    def load_epoch_state(self, state: Any) -> None:
        if state is not None:
            self.recorder.load_epoch_rows(state)
