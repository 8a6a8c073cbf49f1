"""The training loop, as in the published CDR code (docs/design.md, "Training protocol").

Each epoch records training accuracy against the noisy and the clean labels, the fraction of
noisy examples memorised, validation and test accuracy. The summary reports test accuracy at the
epoch of best validation accuracy and at the last epoch.

Training accuracy is measured on the fly: each example's prediction is the network's output
f(x) (without the AUX offset) when it was last trained on, as the published code reports it.
This costs no extra forward pass.

The dataset lives on the device as one tensor and batches are drawn by index; each epoch's
order comes from a generator seeded by (seed, epoch), so a resumed run continues exactly.

Under torchrun (``dist``, see ``cdr_fast.distributed``) every rank draws the same order and
trains on its contiguous share of each global batch; the optimizer averages the gradients, the
epoch's metrics are reduced over the ranks and evaluation is sharded. Only the main rank has a
run folder and writes.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ..auxiliary import AuxBias
from ..data import random_crop_flip
from ..distributed import SINGLE, Distributed
from ..detect import aux_suspects, precision_recall, small_loss_suspects
from ..estimate import NoiseEstimate, estimate_noise, warm_up_probabilities
from ..engines import resolve_engine
from ..models import build_model
from ..optim import CDRSGD
from .config import TrainConfig, resolve_device
from .run_folder import RunFolder
from .split import prepare_data

CHECKPOINT_FORMAT = 2  # 2: the optimizer state carries the threshold's sample counter


class TrainingDiverged(ValueError):
    """The loss or the weights became non-finite; the last good checkpoint is kept."""


def loss_fn(name: str, logits: Tensor, target: Tensor) -> Tensor:
    if name == "ce":
        return F.cross_entropy(logits, target)
    # Squared loss against one-hot targets (the AUX paper's): 1/2 ||z - e_y||^2, mean over the batch.
    one_hot = F.one_hot(target, logits.shape[1]).to(logits.dtype)
    return 0.5 * (logits - one_hot).pow(2).sum(1).mean()


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int, dist: Distributed = SINGLE) -> float:
    """Accuracy in percent; under torch.distributed each rank evaluates a contiguous share."""
    model.eval()
    n = images.shape[0]
    lo, hi = 0, n
    if dist.enabled:
        share = dist.shard(torch.arange(n))
        lo, hi = (int(share[0]), int(share[-1]) + 1) if share.numel() else (0, 0)
    correct = torch.zeros((), dtype=torch.int64, device=images.device)
    for i in range(lo, hi, batch_size):
        end = min(i + batch_size, hi)
        correct += (model(images[i:end]).argmax(1) == labels[i:end]).sum()
    return 100.0 * dist.all_reduce_(correct).item() / max(n, 1)


class Trainer:
    """Builds a run from its config and trains it epoch by epoch, saving each epoch to ``folder``
    (None: write nothing, as the benchmarks do)."""

    def __init__(self, config: TrainConfig, folder: RunFolder | None, progress: bool = True,
                 log: Callable[[str], None] = print, dist: Distributed = SINGLE) -> None:
        config.validate()
        self.config, self.dist = config, dist
        self.folder = folder if dist.is_main else None  # only the main rank writes
        self.progress = progress and dist.is_main
        self.log = log if dist.is_main else (lambda line: None)
        self.device = resolve_device(config.device)
        if dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", dist.local_rank)  # one GPU per process
        self.engine = resolve_engine(config.engine, self.device)  # once; the optimizer and AUX share it

        self.data = prepare_data(config, self.device)
        torch.manual_seed(config.seed)
        shape = self.data.train_x.shape
        self.model = build_model(config.model, shape[1], self.data.num_classes, shape[-1]).to(self.device)
        groups: list[dict[str, Any]] = [{"params": list(self.model.parameters())}]
        self.aux: AuxBias | None = None
        if config.parts["aux"]:
            self.aux = AuxBias(shape[0], self.data.num_classes, config.aux_lambda, engine=self.engine).to(self.device)
            groups.append(self.aux.param_group(per_example_lr=config.aux_lr, batch_size=config.batch_size))
        self.optimizer = CDRSGD(
            groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
            tau=config.cdr_rate, rdi_lambda=config.rdi_lambda if config.parts["rdi"] else 0.0, engine=self.engine,
            process_group=dist.group if dist.enabled else None,
        )
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, config.milestones, config.gamma)
        self.epoch = 0  # epochs completed
        self.history: list[dict[str, Any]] = []
        self.noise_estimate: NoiseEstimate | None = None  # with tau "auto"
        self.augment = config.dataset == "cifar10"

    # ---------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": dataclasses.asdict(self.config),
            "world_size": self.dist.world_size,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "aux": self.aux.state_dict() if self.aux is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": self.history,
            "noise_estimate": self.noise_estimate._asdict() if self.noise_estimate is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {state.get('format')!r} is not {CHECKPOINT_FORMAT} "
                             "(made by another version of cdr-fast)")
        saved = dict(state["config"])
        mine = self.config.used_settings()  # a setting the run does not use cannot block its resume
        saved["epochs"] = mine["epochs"]  # a run may be resumed with more epochs
        diffs = {k: (saved.get(k), v) for k, v in mine.items() if saved.get(k) != v}
        if diffs:
            detail = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diffs.items())
            raise ValueError(f"the checkpoint was made with other settings ({detail})")
        saved_world = state.get("world_size", 1)
        if saved_world != self.dist.world_size:
            # Replicated state would load, but the batch splits differ, so the run would not continue
            # bit for bit; refuse rather than resume inexactly.
            raise ValueError(f"the checkpoint was made by {saved_world} process(es) and this run has "
                             f"{self.dist.world_size}: resume with the same number (torchrun --nproc_per_node="
                             f"{saved_world}{' or plain python' if saved_world == 1 else ''})")
        self.model.load_state_dict(state["model"])
        if self.aux is not None:
            self.aux.load_state_dict(state["aux"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = state["epoch"]
        self.history = list(state["history"])
        if state.get("noise_estimate") is not None:  # the optimizer's state already holds its tau
            self.noise_estimate = NoiseEstimate(**state["noise_estimate"])

    def resume(self) -> None:
        """Continue from the folder's checkpoint."""
        self.load_state_dict(self.folder.checkpoint())

    # ---------------------------------------------------------------- tau "auto"

    def estimate_noise(self) -> NoiseEstimate:
        """Warm a fresh network up on the noisy labels, estimate the noise rate from its
        probabilities (``cdr_fast.estimate``) and make it CDR's tau. The main network and its
        data order are untouched: the warm-up uses a model and a generator of its own."""
        cfg, d = self.config, self.data
        shape = d.train_x.shape
        torch.manual_seed(cfg.seed + 1)
        warm = build_model(cfg.model, shape[1], d.num_classes, shape[-1]).to(self.device)
        probs = warm_up_probabilities(warm, d.train_x, d.train_y, steps=cfg.tau_warmup_steps,
                                      batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum,
                                      weight_decay=cfg.weight_decay, seed=cfg.seed, eval_batch_size=cfg.eval_batch_size)
        estimate = estimate_noise(probs, d.train_y)
        # Every rank warmed up alike; on a GPU rounding may still differ, so rank 0's estimate rules.
        rate = self.dist.broadcast_(torch.tensor([estimate.rate], dtype=torch.float64, device=self.device))
        matrix = self.dist.broadcast_(estimate.transition.to(self.device))
        self.noise_estimate = NoiseEstimate(float(rate.item()), matrix.cpu())
        tau = min(self.noise_estimate.rate, 0.99)  # tau must stay below 1
        for group in self.optimizer.param_groups:
            group["tau"] = tau
        return self.noise_estimate

    # ---------------------------------------------------------------- training

    def _epoch_generator(self) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.config.seed * 100_003 + self.epoch)
        return gen

    def train_epoch(self) -> dict[str, Any]:
        cfg, d = self.config, self.data
        n = d.train_x.shape[0]
        gen = self._epoch_generator()
        order = torch.randperm(n, generator=gen, device=self.device)
        predicted = torch.full((n,), -1, dtype=torch.int64, device=self.device)  # f(x)
        predicted_aux = torch.full((n,), -1, dtype=torch.int64, device=self.device)  # f(x) + lam * B[i]
        loss_sum = torch.zeros((), device=self.device)
        kept_sum = torch.zeros((), device=self.device)
        steps = math.ceil(n / cfg.batch_size)
        lr = self.optimizer.param_groups[0]["lr"]
        self.model.train()
        if self.aux is not None:
            self.aux.train()
        t0 = time.perf_counter()
        bar = tqdm(total=steps, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not self.progress, unit="step", dynamic_ncols=True)
        for start in range(0, n, cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            idx = self.dist.shard(batch)  # the whole batch in a single process
            if self.augment:  # drawn for the global batch, so the crops do not depend on the ranks
                x = random_crop_flip(d.train_x[batch], 4, gen)[self.dist.shard(torch.arange(batch.numel()))]
            else:
                x = d.train_x[idx]
            logits = self.model(x)
            predicted[idx] = logits.detach().argmax(1)
            if self.aux is not None:
                logits = self.aux(logits, idx)
                predicted_aux[idx] = logits.detach().argmax(1)
            loss = loss_fn(cfg.loss, logits, d.train_y[idx])
            weight = self.dist.loss_weight(idx.numel(), batch.numel())
            if weight != 1.0:  # unequal shards (or an empty one): weigh to the global batch's mean
                loss = loss * weight if idx.numel() else logits.sum() * 0.0
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach()
            if self.optimizer.last_kept_fraction is not None:
                kept_sum += self.optimizer.last_kept_fraction
            bar.update()
        bar.close()
        self.scheduler.step()
        if self.dist.enabled:  # each rank saw its shares: combine (-1 marks an example not seen here)
            for seen in (predicted, predicted_aux):
                self.dist.all_reduce_(seen, "max")
            loss_sum = self.dist.all_reduce_(loss_sum) / self.dist.world_size
            for buffer in self.model.buffers():  # BatchNorm's running statistics: rank 0's, as DDP keeps them
                self.dist.broadcast_(buffer)
        train_time = time.perf_counter() - t0
        self._check_finite(loss_sum.item() / steps)

        memorised = None
        if d.train_clean is not None:
            noisy_mask = d.train_y != d.train_clean
            if noisy_mask.any():
                memorised = (predicted[noisy_mask] == d.train_y[noisy_mask]).float().mean()
        stats = {
            "epoch": self.epoch + 1,
            "lr": lr,
            "train_loss": loss_sum.item() / steps,
            "train_acc_noisy": 100.0 * (predicted == d.train_y).float().mean().item(),
            "train_acc_clean": (100.0 * (predicted == d.train_clean).float().mean().item()
                                if d.train_clean is not None else float("nan")),
            "train_acc_noisy_aux": (100.0 * (predicted_aux == d.train_y).float().mean().item()
                                    if self.aux is not None else float("nan")),
            "memorised_noisy": 100.0 * memorised.item() if memorised is not None else float("nan"),
            "kept_pct": 100.0 * kept_sum.item() / steps if self.optimizer.param_groups[0]["tau"] > 0 else float("nan"),
            "val_acc": accuracy(self.model, d.val_x, d.val_y, cfg.eval_batch_size, self.dist),
            "test_acc": accuracy(self.model, d.test_x, d.test_y, cfg.eval_batch_size, self.dist),
            "train_time_s": train_time,
        }
        stats["epoch_time_s"] = time.perf_counter() - t0
        return stats

    def _check_finite(self, mean_loss: float) -> None:
        params = list(self.model.parameters()) + ([self.aux.weight] if self.aux is not None else [])
        finite_weights = all(bool(torch.isfinite(p).all()) for p in params)
        if math.isfinite(mean_loss) and finite_weights:
            return
        what = f"the training loss became {mean_loss}" if not math.isfinite(mean_loss) else "the weights became non-finite"
        kept = f"the checkpoint of epoch {self.epoch} is kept" if self.epoch else "no epoch was saved"
        raise TrainingDiverged(f"epoch {self.epoch + 1}: {what}; stopped ({kept}). Lower --lr, or check --momentum "
                               f"and --weight-decay (now lr {self.config.lr}, momentum {self.config.momentum})")

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs, saving each to the run folder; returns the summary."""
        if self.folder is not None:
            self.folder.make()
        for tensor in self.model.state_dict().values():  # the same seed (or checkpoint) made the
            self.dist.broadcast_(tensor)                  # replicas equal; make sure, as DDP does
        if self.config.estimates_tau and self.noise_estimate is None:
            estimate = self.estimate_noise()
            self.log(f"estimated noise rate {estimate.rate:.3f} after {self.config.tau_warmup_steps} warm-up steps: "
                     f"tau = {self.optimizer.param_groups[0]['tau']:.3f}")
            if self.folder is not None:
                self.folder.write_transition(estimate.transition)
        while self.epoch < self.config.epochs:
            stats = self.train_epoch()
            self.epoch += 1
            self.history.append(stats)
            if self.folder is not None:
                self.folder.save_epoch(self.state_dict(), self.history)
            self.log(format_epoch(stats, self.config.epochs))
        summary = self.summary()
        if self.folder is not None:
            if self.aux is not None:
                self.folder.write_suspects(self.suspect_rows())
            self.folder.write_summary(summary)
        return summary

    def suspect_rows(self) -> list[dict[str, Any]]:
        """Every training example, most suspect first: its index in the dataset, the given label,
        the label AUX's offsets argue for, and the score (see ``cdr_fast.detect``)."""
        d = self.data
        score, suggested = aux_suspects(self.aux.weight, d.train_y, self.aux.lam)
        order = score.argsort(descending=True).cpu()
        columns = (d.train_index[order], d.train_y.cpu()[order], suggested.cpu()[order], score.cpu()[order])
        return [{"index": int(i), "given_label": int(y), "suggested_label": int(s), "score": round(float(v), 6)}
                for i, y, s, v in zip(*(c.tolist() for c in columns))]

    def detection(self) -> dict[str, Any]:
        """Precision and recall of AUX's suspects and of the small-loss criterion, flagging as many
        examples as the realised noise rate says are mislabelled (synthetic noise: known flips)."""
        d = self.data
        noisy = d.train_y != d.train_clean
        flagged = int(noisy.sum().item())
        small_loss = small_loss_suspects(self.model, d.train_x, d.train_y, self.config.eval_batch_size)
        out = {"flagged": flagged}
        for name, score in (("aux", aux_suspects(self.aux.weight, d.train_y, self.aux.lam).score),
                            ("small_loss", small_loss.score)):
            precision, recall = precision_recall(score, noisy, flagged)
            out[f"{name}_precision"], out[f"{name}_recall"] = precision, recall
        return out

    def summary(self) -> dict[str, Any]:
        cfg, h = self.config, self.history
        best = max(h, key=lambda s: s["val_acc"])  # first epoch reaching the best
        return {
            "method": cfg.method,
            "noise_type": cfg.noise_type,
            "noise_rate": cfg.noise_rate,
            "realised_noise_rate": self.data.realised_rate,
            "tau": self.optimizer.param_groups[0]["tau"],
            "estimated_noise_rate": self.noise_estimate.rate if self.noise_estimate is not None else None,
            "dataset": cfg.dataset,
            "model": cfg.model,
            "epochs": cfg.epochs,
            "seed": cfg.seed,
            "engine": self.engine.name,
            "device": str(self.device),
            "world_size": self.dist.world_size,
            "num_train": int(self.data.train_x.shape[0]),
            "num_val": int(self.data.val_x.shape[0]),
            "num_test": int(self.data.test_x.shape[0]),
            "best_val_epoch": best["epoch"],
            "best_val_acc": best["val_acc"],
            "test_acc_at_best_val": best["test_acc"],
            "test_acc_last": h[-1]["test_acc"],
            "memorised_noisy_last": h[-1]["memorised_noisy"],
            "epoch_time_s_median": statistics.median(s["epoch_time_s"] for s in h),
            "train_acc_noisy_aux_last": h[-1]["train_acc_noisy_aux"] if self.aux is not None else None,
            "detection": self.detection() if self.aux is not None and self.data.realised_rate > 0 else None,
            "config": cfg.used_settings(),
        }


def format_epoch(s: dict[str, Any], epochs: int) -> str:
    kept = "" if math.isnan(s["kept_pct"]) else f"  kept {s['kept_pct']:5.1f}%"
    mem = "  n/a " if math.isnan(s["memorised_noisy"]) else f"{s['memorised_noisy']:5.1f}%"
    aux = "" if math.isnan(s["train_acc_noisy_aux"]) else f" (with offsets {s['train_acc_noisy_aux']:5.1f}%)"
    clean = "  n/a " if math.isnan(s["train_acc_clean"]) else f"{s['train_acc_clean']:5.1f}%"
    return (
        f"epoch {s['epoch']:>{len(str(epochs))}}/{epochs}  lr {s['lr']:.0e}  loss {s['train_loss']:.4f}  "
        f"train noisy {s['train_acc_noisy']:5.1f}%{aux}  clean {clean}  memorised {mem}  "
        f"val {s['val_acc']:5.2f}%  test {s['test_acc']:5.2f}%{kept}  {s['epoch_time_s']:.1f}s"
    )
