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
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from ..auxiliary import AuxBias
from ..data import dataset_spec, random_crop_flip
from ..detection import evidence_detectors
from ..detection.evidence import EvidenceAccumulator
from ..distributed import SINGLE, Distributed
from ..engines import resolve_engine
from ..estimate import NoiseEstimate, estimate_noise, warm_up_probabilities
from ..models import build_model
from ..optim import CDRSGD
from .advice import estimate_warning, fitted_warmup, masking_warning, warmup_warning
from .checkpoint import CHECKPOINT_FORMAT, check_compatible
from .config import TrainConfig, resolve_device
from .metrics import EpochMetrics, accuracy, format_epoch
from .run_folder import RunFolder
from .split import NoisySplit, prepare_data
from .summary import epoch_detection, final_detection, final_evidence, run_summary, suspect_rows


class TrainingDiverged(ValueError):
    """The loss or the weights became non-finite; the last good checkpoint is kept."""


class RunStopped(Exception):
    """A signal stopped the run after a step, which a mid-epoch checkpoint saved."""

    def __init__(self, signal_name: str, step: int, steps: int) -> None:
        super().__init__(signal_name, step, steps)
        self.signal_name, self.step, self.steps = signal_name, step, steps


# Under torchrun the ranks agree to stop every this many steps (one all-reduce of a flag).
STOP_CHECK_STEPS = 20
# --checkpoint-every in minutes becomes steps after this many steps are timed.
TIMED_STEPS = 21


def loss_fn(name: str, logits: Tensor, target: Tensor) -> Tensor:
    if name == "ce":
        return F.cross_entropy(logits, target)
    # Squared loss against one-hot targets (the AUX paper's): 1/2 ||z - e_y||^2, mean over the batch.
    one_hot = F.one_hot(target, logits.shape[1]).to(logits.dtype)
    return 0.5 * (logits - one_hot).pow(2).sum(1).mean()


class Trainer:
    """Builds a run from its config and trains it epoch by epoch, saving each epoch to ``folder``
    (None: write nothing, as the benchmarks do)."""

    def __init__(self, config: TrainConfig, folder: RunFolder | None, progress: bool = True,
                 log: Callable[[str], None] = print, dist: Distributed = SINGLE, checkpoint_every: int = 0,
                 checkpoint_minutes: float = 0.0, keep_epoch_evidence: bool = False,
                 data: NoisySplit | None = None) -> None:
        config.validate()
        self.config, self.dist = config, dist
        self.folder = folder if dist.is_main else None  # only the main rank writes
        self.progress = progress and dist.is_main and sys.stderr.isatty()  # a redirected log gets epoch lines
        self.log = log if dist.is_main else (lambda line: None)
        self.device = resolve_device(config.device)
        if dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", dist.local_rank)  # one GPU per process
        self.engine = resolve_engine(config.engine, self.device)  # once; the optimizer and AUX share it

        # the config's split, or one given (a cross-validation fold: cdr_fast.experiments.kfold)
        self.data = prepare_data(config, self.device) if data is None else data
        n_train = self.data.train_x.shape[0]
        if config.batch_size > n_train:
            raise ValueError(f"batch size {config.batch_size} is larger than the training set ({n_train} examples after "
                             f"the validation split): an epoch would be one step; use at most {n_train}")
        torch.manual_seed(config.seed)
        shape = self.data.train_x.shape
        self.model = build_model(config.model, shape[1], self.data.num_classes, shape[-1]).to(self.device)
        groups: list[dict[str, Any]] = [{"params": list(self.model.parameters())}]
        self.aux: AuxBias | None = None
        if config.parts.aux:
            self.aux = AuxBias(shape[0], self.data.num_classes, config.aux_lambda, engine=self.engine).to(self.device)
            groups.append(self.aux.param_group(aux_lr=config.aux_lr, batch_size=config.batch_size))
        self.optimizer = CDRSGD(
            groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
            tau=config.cdr_rate, rdi_lambda=config.rdi_lambda if config.parts.rdi else 0.0, engine=self.engine,
            process_group=dist.group if dist.enabled else None,
        )
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, config.milestones, config.gamma)
        self.epoch = 0  # epochs completed
        self.saved_epoch = 0  # the epoch of the run folder's checkpoint (0: none) ...
        self.saved_step = 0  # ... and the step of the next epoch it holds (0: the epoch's end)
        self.checkpoint_every = checkpoint_every  # steps between mid-epoch checkpoints (0: epoch ends only)
        self.checkpoint_minutes = checkpoint_minutes  # or minutes, turned into steps once measured
        self._timed_steps, self._timing_from = 0, 0.0
        self.stop_signal: str | None = None  # set by a signal handler: save and stop after this step
        self._partial: dict[str, Any] | None = None
        self._warned_masking = False  # CDR masking less than tau: said once
        self.history: list[dict[str, Any]] = []
        self.noise_estimate: NoiseEstimate | None = None  # with tau "auto"
        self.augment = dataset_spec(config.dataset).augment
        # the per-example evidence the label detectors read (cdr_fast.detection), and how they fared per epoch
        self.evidence = EvidenceAccumulator(n_train, self.data.num_classes, self.device)
        self.keep_epoch_evidence = keep_epoch_evidence  # also write each epoch's probabilities
        self.detection_history: list[dict[str, Any]] = []

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
            "evidence": self.evidence.state_dict(),
            "detection_history": self.detection_history,
            "noise_estimate": self.noise_estimate._asdict() if self.noise_estimate is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_compatible(state, self.config, self.dist.world_size)
        self.model.load_state_dict(state["model"])
        if self.aux is not None:
            self.aux.load_state_dict(state["aux"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = self.saved_epoch = state["epoch"]
        self._partial = state.get("partial")  # a mid-epoch checkpoint: the epoch continues at its step
        self.saved_step = self._partial["step"] if self._partial is not None else 0
        self.history = list(state["history"])
        self.evidence.load_state_dict(state["evidence"])
        self.detection_history = list(state["detection_history"])
        if state.get("noise_estimate") is not None:  # the optimizer's state already holds its tau
            self.noise_estimate = NoiseEstimate(**state["noise_estimate"])

    def resume(self) -> None:
        """Continue from the folder's checkpoint."""
        self.load_state_dict(self.folder.checkpoint())

    # ---------------------------------------------------------------- tau "auto"

    def estimate_noise(self, steps: int | None = None) -> NoiseEstimate:
        """Warm a fresh network up on the noisy labels, estimate the noise rate from its
        probabilities (``cdr_fast.estimate``) and make it CDR's tau. The main network and its
        data order are untouched: the warm-up uses a model and a generator of its own."""
        cfg, d = self.config, self.data
        shape = d.train_x.shape
        torch.manual_seed(cfg.seed + 1)
        warm = build_model(cfg.model, shape[1], d.num_classes, shape[-1]).to(self.device)
        probs = warm_up_probabilities(warm, d.train_x, d.train_y, steps=steps or cfg.tau_warmup_steps,
                                      batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum,
                                      weight_decay=cfg.weight_decay, seed=cfg.seed, eval_batch_size=cfg.eval_batch_size)
        estimate = estimate_noise(probs, d.train_y)
        # Every rank warmed up alike; on a GPU rounding may still differ, so rank 0's estimate rules.
        rate = self.dist.broadcast_(torch.tensor([estimate.rate], dtype=torch.float64, device=self.device))
        matrix = self.dist.broadcast_(estimate.transition.to(self.device))
        self.noise_estimate = NoiseEstimate(float(rate.item()), matrix.cpu())
        self.optimizer.set_tau(min(self.noise_estimate.rate, 0.99))  # tau must stay below 1
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
        metrics = EpochMetrics(n, d.num_classes, self.device)
        steps = math.ceil(n / cfg.batch_size)
        lr = self.optimizer.param_groups[0]["lr"]
        self.model.train()
        if self.aux is not None:
            self.aux.train()
        t0, done = time.perf_counter(), 0
        if self._partial is not None:  # a mid-epoch checkpoint: continue at its step, as if never stopped
            done, t0 = self._partial["step"], t0 - self._partial["elapsed_s"]
            gen.set_state(self._partial["generator"])
            metrics.load(self._partial["metrics"][self.dist.rank])
            self._partial = None
        bar = tqdm(total=steps, initial=done, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not self.progress, unit="step", dynamic_ncols=True)
        for start in range(done * cfg.batch_size, n, cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            idx = self.dist.shard(batch)  # the whole batch in a single process
            if self.augment:  # drawn for the global batch, so the crops do not depend on the ranks
                x = random_crop_flip(d.train_x[batch], 4, gen)[self.dist.shard(torch.arange(batch.numel()))]
            else:
                x = d.train_x[idx]
            logits = self.model(x)
            logits_aux = self.aux(logits, idx) if self.aux is not None else None
            loss = loss_fn(cfg.loss, logits_aux if logits_aux is not None else logits, d.train_y[idx])
            weight = self.dist.loss_weight(idx.numel(), batch.numel())
            if weight != 1.0:  # unequal shards (or an empty one): weigh to the global batch's mean
                loss = loss * weight if idx.numel() else (logits_aux if logits_aux is not None else logits).sum() * 0.0
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            metrics.record(idx, logits, logits_aux, loss, self.optimizer.last_kept_fraction)
            bar.update()
            done += 1
            if done == steps:
                break  # the epoch's end is saved whole (fit), a stop asked now included
            self._minutes_to_steps(time.perf_counter())
            stop = self._stop_agreed(done)
            if stop or (self.checkpoint_every and done % self.checkpoint_every == 0):
                self._save_partial(done, gen, metrics, time.perf_counter() - t0)
            if stop:
                raise self._stopped(done, steps)
        bar.close()
        self.scheduler.step()
        metrics.reduce(self.dist)
        if self.dist.enabled:
            for buffer in self.model.buffers():  # BatchNorm's running statistics: rank 0's, as DDP keeps them
                self.dist.broadcast_(buffer)
        train_time = time.perf_counter() - t0
        self._check_finite(metrics.mean_loss)
        self.evidence.add_epoch(metrics.probs, d.train_y)
        self._read_evidence(metrics.probs)
        stats = {
            "epoch": self.epoch + 1,
            "lr": lr,
            **metrics.stats(d, aux=self.aux is not None, masked=self.optimizer.param_groups[0]["tau"] > 0),
            "val_acc": accuracy(self.model, d.val_x, d.val_y, cfg.eval_batch_size, self.dist),
            "test_acc": accuracy(self.model, d.test_x, d.test_y, cfg.eval_batch_size, self.dist),
            "train_time_s": train_time,
        }
        stats["epoch_time_s"] = time.perf_counter() - t0
        return stats

    def _read_evidence(self, probs: Tensor) -> None:
        """After an epoch: how each detector would fare now (known flips only), and with
        ``keep_epoch_evidence`` the epoch's probabilities, into the run folder."""
        if self.folder is None or not (self.keep_epoch_evidence or self.data.train_clean is not None):
            return
        offsets = self.aux.offsets() if self.aux is not None else None
        if self.keep_epoch_evidence:
            self.folder.write_epoch_evidence(self.epoch + 1, probs, offsets)
        self.detection_history += epoch_detection(self.epoch + 1, probs, offsets, self.evidence, self.data,
                                                  self.flag_rate)

    @property
    def flag_rate(self) -> float:
        """The share of examples the detectors flag: the estimated noise rate with tau "auto", else,
        under synthetic noise, the share it flipped (asymmetric noise at 40% flips 40% of 4 classes),
        else NaN: confident learning's estimate serves."""
        if self.noise_estimate is not None:
            return self.noise_estimate.rate
        return self.data.realised_rate if self.config.noise_type != "none" else float("nan")

    def _minutes_to_steps(self, now: float) -> None:
        """``checkpoint_minutes`` as a step count, measured once over this process's first
        ``TIMED_STEPS`` steps on rank 0 and shared: every rank then checkpoints at the same steps."""
        if not self.checkpoint_minutes or self.checkpoint_every:
            return
        self._timed_steps += 1
        if self._timed_steps == 1:
            self._timing_from = now
        elif self._timed_steps == TIMED_STEPS:
            per_step = (now - self._timing_from) / (TIMED_STEPS - 1)
            steps = self.dist.broadcast_object(max(1, round(60 * self.checkpoint_minutes / per_step)))
            self.checkpoint_every = steps
            self.log(f"checkpoint every {steps} steps (about {self.checkpoint_minutes:g} minutes at "
                     f"{1e3 * per_step:.1f} ms a step)")

    def _stop_agreed(self, step: int, epoch_end: bool = False) -> bool:
        """Whether every rank stops after this step: a signal asked one to (``stop_signal``). One
        process stops at once; ranks agree every ``STOP_CHECK_STEPS`` steps and at each epoch's
        end, with one all-reduce."""
        if not self.dist.enabled:
            return self.stop_signal is not None
        if step % STOP_CHECK_STEPS and not epoch_end:
            return False
        flag = torch.tensor(int(self.stop_signal is not None), device=self.device)
        return bool(self.dist.all_reduce_(flag, "max").item())

    def _stopped(self, step: int, steps: int) -> RunStopped:
        return RunStopped(self.stop_signal or "a signal on another rank", step, steps)

    def _save_partial(self, step: int, gen: torch.Generator, metrics: EpochMetrics, elapsed: float) -> None:
        """A mid-epoch checkpoint: everything ``state_dict`` holds, plus where the epoch stands
        (its step, its generator, every rank's metric accumulators). Collective under torchrun."""
        ranks = self.dist.gather_objects(metrics.state())
        if self.folder is None:
            return
        state = self.state_dict()
        state["partial"] = {"step": step, "generator": gen.get_state(), "metrics": ranks, "elapsed_s": elapsed}
        self.folder.save_checkpoint(state)
        self.saved_step = step

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
            n, batch = self.data.train_x.shape[0], self.config.batch_size
            steps, cut = fitted_warmup(self.config.tau_warmup_steps, batch, n)
            self._warn(cut or warmup_warning(steps, batch, n))
            estimate = self.estimate_noise(steps)
            self.log(f"estimated noise rate {estimate.rate:.3f} after {steps} warm-up steps: "
                     f"tau = {self.optimizer.param_groups[0]['tau']:.3f}")
            self._warn(estimate_warning(estimate.rate, steps, batch, n))
            if self.folder is not None:
                self.folder.write_transition(estimate.transition)
        while self.epoch < self.config.epochs:
            stats = self.train_epoch()
            self.epoch += 1
            self.history.append(stats)
            if self.folder is not None:
                self.folder.save_epoch(self.state_dict(), self.history, self.detection_history)
                self.saved_epoch, self.saved_step = self.epoch, 0
            self.log(format_epoch(stats, self.config.epochs))
            if not self._warned_masking:
                self._warned_masking = self._warn(masking_warning(stats["kept_pct"],
                                                                  self.optimizer.param_groups[0]["tau"]))
            if self.epoch < self.config.epochs and self._stop_agreed(0, epoch_end=True):
                raise self._stopped(0, 0)
        if self.folder is None:
            return self.summary()
        evidence = final_evidence(self.model, self.aux, self.evidence, self.data, self.flag_rate,
                                  self.config.eval_batch_size)
        suspects = evidence_detectors(evidence)  # once, for the rows and the suspects file
        detection = final_detection(evidence, suspects)
        self.folder.write_evidence(evidence)
        self.folder.write_detection(self.detection_history + detection)
        summary = self.summary(detection)
        self.folder.write_suspects(suspect_rows(evidence, suspects))
        self.folder.write_summary(summary)
        return summary

    def _warn(self, line: str | None) -> bool:
        if line is not None:
            self.log(f"warning: {line}")
        return line is not None

    def summary(self, detection: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return run_summary(self.config, self.history, self.data, detection=detection, aux=self.aux,
                           tau=self.optimizer.param_groups[0]["tau"],
                           estimated_rate=self.noise_estimate.rate if self.noise_estimate is not None else None,
                           engine=self.engine.name, device=str(self.device), world_size=self.dist.world_size)

