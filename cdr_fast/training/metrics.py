"""A run's metrics: the training metrics of an epoch, measured on the fly, accuracy on held-out data,
and the line each epoch prints (docs/design.md, "Training protocol").

Training accuracy is each example's prediction f(x) (without the AUX offset) when it was last
trained on, as the published code reports it: no extra forward pass. Everything accumulates on
the device; under torch.distributed the ranks' shares are combined at the end of the epoch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..atomic_io import write_csv_atomic
from ..data.batches import Examples, batches, ranges
from ..distributed import SINGLE, Distributed
from .observers import Observer, Step
from .split import NoisySplit


class EpochMetrics:
    """One epoch's training metrics over ``n`` examples, accumulated step by step."""

    def __init__(self, n: int, device: torch.device) -> None:
        self.predicted = torch.full((n,), -1, dtype=torch.int64, device=device)  # f(x); -1: not seen here
        self.predicted_aux = torch.full((n,), -1, dtype=torch.int64, device=device)  # f(x) + lam * B[i]
        self.loss_sum = torch.zeros((), device=device)
        self.kept_sum = torch.zeros((), device=device)
        self.steps = 0

    def record(self, idx: Tensor, logits: Tensor, logits_aux: Tensor | None, loss: Tensor,
               kept_fraction: Tensor | None) -> None:
        """One step: the batch's predictions, its loss, and the share CDR kept (None: unmasked)."""
        self.predicted[idx] = logits.detach().argmax(1)
        if logits_aux is not None:
            self.predicted_aux[idx] = logits_aux.detach().argmax(1)
        self.loss_sum += loss.detach()
        if kept_fraction is not None:
            self.kept_sum += kept_fraction
        self.steps += 1

    def state(self) -> dict[str, Any]:
        """This rank's accumulators, for a mid-epoch checkpoint."""
        return {"predicted": self.predicted.cpu(), "predicted_aux": self.predicted_aux.cpu(),
                "loss_sum": self.loss_sum.cpu(), "kept_sum": self.kept_sum.cpu(), "steps": self.steps}

    def load(self, state: dict[str, Any]) -> None:
        for name in ("predicted", "predicted_aux", "loss_sum", "kept_sum"):
            getattr(self, name).copy_(state[name])
        self.steps = state["steps"]

    def reduce(self, dist: Distributed) -> None:
        """Combine the ranks' shares: each rank saw its part of every batch."""
        if dist.enabled:
            for seen in (self.predicted, self.predicted_aux):
                dist.all_reduce_(seen, "max")
            self.loss_sum = dist.all_reduce_(self.loss_sum) / dist.world_size

    @property
    def mean_loss(self) -> float:
        return self.loss_sum.item() / self.steps

    def stats(self, data: NoisySplit, aux: bool, masked: bool) -> dict[str, float]:
        """Loss, accuracy against the noisy and the clean labels, the share of noisy examples
        memorised, and CDR's kept share, in percent (NaN where a quantity is not defined)."""
        nan = float("nan")
        memorised = None
        if data.train_clean is not None:
            noisy_mask = data.train_y != data.train_clean
            if noisy_mask.any():
                memorised = (self.predicted[noisy_mask] == data.train_y[noisy_mask]).float().mean()
        return {
            "train_loss": self.mean_loss,
            "train_acc_noisy": 100.0 * (self.predicted == data.train_y).float().mean().item(),
            "train_acc_clean": (100.0 * (self.predicted == data.train_clean).float().mean().item()
                                if data.train_clean is not None else nan),
            "train_acc_noisy_aux": 100.0 * (self.predicted_aux == data.train_y).float().mean().item() if aux else nan,
            "memorised_noisy": 100.0 * memorised.item() if memorised is not None else nan,
            "kept_pct": 100.0 * self.kept_sum.item() / self.steps if masked else nan,
        }


class TrainingMetrics(Observer):
    """Each epoch's training metrics, measured on the fly at every step: it completes the epoch's
    row of ``run.history`` (first among the observers, so the others read a whole row), stops a
    run whose loss or weights became non-finite, and keeps ``metrics.csv`` (one row per epoch,
    rewritten from the checkpoint's history when a run starts, so it never lags or leads it)."""

    def __init__(self, n: int, device: torch.device) -> None:
        self.n, self.device = n, device
        self.current: EpochMetrics | None = None

    def on_run_start(self, run) -> None:
        if run.folder is not None and run.history:
            write_csv_atomic(run.folder.path / "metrics.csv", run.history)

    def on_epoch_start(self, run) -> None:
        if self.current is None:  # else a mid-epoch checkpoint restored it
            self.current = EpochMetrics(self.n, self.device)

    def on_step_end(self, run, step: Step) -> None:
        self.current.record(step.index, step.logits, step.logits_aux, step.loss, run.optimizer.last_kept_fraction)

    def on_epoch_end(self, run, stats: dict[str, Any]) -> None:
        metrics, self.current = self.current, None
        metrics.reduce(run.dist)
        run.check_finite(metrics.mean_loss)
        train = metrics.stats(run.data, aux=run.aux is not None, masked=run.optimizer.param_groups[0]["tau"] > 0)
        row = {"epoch": stats["epoch"], "lr": stats["lr"], **train, **{k: v for k, v in stats.items()
                                                                     if k not in ("epoch", "lr")}}
        stats.clear()
        stats.update(row)
        run.history.append(stats)
        if run.folder is not None:
            write_csv_atomic(run.folder.path / "metrics.csv", run.history)

    def epoch_state(self) -> Any:
        return self.current.state() if self.current is not None else None

    def load_epoch_state(self, state: Any) -> None:
        self.current = None
        if state is not None:
            self.current = EpochMetrics(self.n, self.device)
            self.current.load(state)


@torch.no_grad()
def accuracy(model: nn.Module, images: Examples, labels: Tensor, batch_size: int, dist: Distributed = SINGLE,
             on_logits=None) -> float:
    """Accuracy in percent; under torch.distributed each rank evaluates a contiguous share.
    ``on_logits(rows, logits)``, if given, sees each batch's logits (the evidence of held-out examples)."""
    model.eval()
    n = images.shape[0]
    lo, hi = 0, n
    if dist.enabled:
        share = dist.shard(torch.arange(n))
        lo, hi = (int(share[0]), int(share[-1]) + 1) if share.numel() else (0, 0)
    correct = torch.zeros((), dtype=torch.int64, device=labels.device)
    rows = ranges(lo, hi, batch_size)
    for r, x in zip(rows, batches(images, rows, labels.device)):
        logits = model(x)
        correct += (logits.argmax(1) == labels[r.start:r.stop]).sum()
        if on_logits is not None:
            on_logits(torch.arange(r.start, r.stop, device=labels.device), logits)
    if n == 0:
        return float("nan")  # no validation split
    return 100.0 * dist.all_reduce_(correct).item() / n


def format_epoch(s: dict[str, Any], epochs: int) -> str:
    kept = "" if math.isnan(s["kept_pct"]) else f"  kept {s['kept_pct']:5.1f}%"
    mem = "  n/a " if math.isnan(s["memorised_noisy"]) else f"{s['memorised_noisy']:5.1f}%"
    aux = "" if math.isnan(s["train_acc_noisy_aux"]) else f" (with offsets {s['train_acc_noisy_aux']:5.1f}%)"
    clean = "  n/a " if math.isnan(s["train_acc_clean"]) else f"{s['train_acc_clean']:5.1f}%"
    return (
        f"epoch {s['epoch']:>{len(str(epochs))}}/{epochs}  lr {s['lr']:.0e}  loss {s['train_loss']:.4f}  "
        f"train noisy {s['train_acc_noisy']:5.1f}%{aux}  clean {clean}  memorised {mem}  "
        f"val {'  n/a ' if math.isnan(s['val_acc']) else format(s['val_acc'], '5.2f') + '%'}  test {s['test_acc']:5.2f}%{kept}  {s['epoch_time_s']:.1f}s"
    )
