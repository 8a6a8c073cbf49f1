"""The run: a plain epoch and step loop, as in the published CDR code (docs/design.md, "Training
protocol"), with everything else it does in observers (``observers``).

Each epoch draws its order from a generator seeded by (seed, epoch), so a resumed run continues
exactly; the dataset lives on the device as one tensor and batches are drawn by index (or it is
streamed, below). A step is the batch, the forward pass (with AUX's offsets), the loss, the
backward pass and the optimizer step. After the epoch's last step the learning rate steps, the
validation and test sets are evaluated, and the observers close the epoch: its metrics, the label
evidence, the detectors' progress, the checkpoint, the progress line.

Under torchrun (``dist``, see ``cdr_fast.distributed``) every rank draws the same order and
trains on its contiguous share of each global batch; the optimizer averages the gradients, the
epoch's metrics and evidence are reduced over the ranks and evaluation is sharded. Only the main
rank has a run folder and writes.
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..auxiliary import AuxBias
from ..data import dataset_spec, random_crop_flip
from ..data.batches import batches
from ..distributed import SINGLE, Distributed
from ..engines import resolve_engine
from ..estimate import NoiseEstimate
from ..models import build_model, default_model, load_weights
from ..optim import CDRSGD
from .checkpoint import CHECKPOINT_FORMAT, Checkpoints, check_compatible
from .config import TrainConfig, resolve_device
from .detection_log import DetectionLog
from .evidence_keeper import EvidenceKeeper
from .metrics import TrainingMetrics, accuracy
from .observers import Observer, Step
from .progress import Progress
from .run_folder import RunFolder
from .split import NoisySplit, prepare_data
from .summary import run_summary
from .tau_auto import TauEstimate


class TrainingDiverged(ValueError):
    """The loss or the weights became non-finite; the last good checkpoint is kept."""


def loss_fn(name: str, logits: Tensor, target: Tensor) -> Tensor:
    if name == "ce":
        return F.cross_entropy(logits, target)
    # Squared loss against one-hot targets (the AUX paper's): 1/2 ||z - e_y||^2, mean over the batch.
    one_hot = F.one_hot(target, logits.shape[1]).to(logits.dtype)
    return 0.5 * (logits - one_hot).pow(2).sum(1).mean()


def _key(observer: Observer) -> str:
    """An observer's key in a mid-epoch checkpoint's per-rank state."""
    return observer.name or type(observer).__name__


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
        self.log = log if dist.is_main else (lambda line: None)
        self.device = resolve_device(config.device)
        if dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", dist.local_rank)  # one GPU per process
        self.engine = resolve_engine(config.engine, self.device)  # once; the optimizer and AUX share it

        # the config's split, or one given (a cross-validation fold: cdr_fast.experiments.kfold)
        self.data = prepare_data(config, self.device) if data is None else data
        if self.data.streamed is not None:
            self.log(f"streaming the images from their files: {self.data.streamed}")
        if self.data.canaries.numel():
            self.log(f"planted {self.data.canaries.numel()} canaries ({config.canaries:.0%} of the training split, each "
                     "trained on a label drawn from the other classes) to count the wrong labels by; they are never "
                     "flagged and keep their labels")
        n_train = self.data.train_x.shape[0]
        if config.batch_size > n_train:
            raise ValueError(f"batch size {config.batch_size} is larger than the training set ({n_train} examples after "
                             f"the validation split): an epoch would be one step; use at most {n_train}")
        # the model the config names, or the one for the data's shape (MODELS)
        self.model_name = config.model or default_model(self.input_shape)
        torch.manual_seed(config.seed)
        self.model = self.new_model(announce=True)
        groups: list[dict[str, Any]] = [{"params": list(self.model.parameters())}]
        self.aux: AuxBias | None = None
        if config.method_spec.aux:
            self.aux = AuxBias(n_train, self.data.num_classes, config.aux_lambda, engine=self.engine).to(self.device)
            groups.append(self.aux.param_group(aux_lr=config.aux_lr, batch_size=config.batch_size))
        self.optimizer = CDRSGD(
            groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
            tau=config.cdr_rate, rdi_lambda=config.rdi_lambda if config.method_spec.rdi else 0.0, engine=self.engine,
            process_group=dist.group if dist.enabled else None,
        )
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, config.milestones, config.gamma)
        self.augment = dataset_spec(config.dataset).augment
        self.steps_per_epoch = math.ceil(n_train / config.batch_size)

        self.epoch = 0  # epochs completed
        self.step = 0  # steps of the current epoch completed
        self.history: list[dict[str, Any]] = []  # one metrics row per epoch
        self.saved_epoch = 0  # the epoch of the run folder's checkpoint (0: none) ...
        self.saved_step = 0  # ... and the step of the next epoch it holds (0: the epoch's end)
        self.stop_signal: str | None = None  # set by a signal handler: save and stop after this step
        # Each run has an id, in config.json and in every checkpoint: a checkpoint of another run is refused.
        self.run_id = (folder.run_id() if folder is not None else None) or uuid.uuid4().hex
        self._generator: torch.Generator | None = None  # the epoch's, once it has begun
        self._elapsed = 0.0  # seconds the epoch had run before a mid-epoch checkpoint

        # The observers, in the order they are called (observers.py).
        self.tau = TauEstimate()
        self.metrics = TrainingMetrics(n_train, self.device)
        # decided alike on every rank (``folder``, not ``self.folder``): the evidence merge is collective
        judged = folder is not None and self.data.train_clean is not None
        self.evidence = EvidenceKeeper(self.data, self.device, keep_epochs=keep_epoch_evidence,
                                       want_epoch_probs=judged, sharded=dist.enabled)
        self.detection = DetectionLog(self.evidence)
        self.progress = Progress(progress and dist.is_main)
        self.checkpoints = Checkpoints(checkpoint_every, checkpoint_minutes)
        self.observers: list[Observer] = [self.tau, self.metrics, self.evidence, self.detection, self.progress,
                                          self.checkpoints]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's shape: (C, H, W) for images, (d,) for feature vectors."""
        return tuple(self.data.train_x.shape[1:])

    def new_model(self, announce: bool = False) -> nn.Module:
        """The run's model, freshly initialised (or from ``config.weights``); ``announce``: say so."""
        model = build_model(self.model_name, self.data.num_classes, self.input_shape)
        if self.config.weights is not None:
            load_weights(model, self.config.weights, self.log if announce else (lambda line: None))
        return model.to(self.device)

    def run_description(self) -> dict[str, Any]:
        """What ``config.json`` records besides the settings: what a later reader (``load_model``,
        ``predict.py``) needs to rebuild the model and name its outputs, and what a resume needs to
        say whether it can continue bit-identically (the thread count, and the CPU kernels torch
        dispatches to: AVX2 and AVX-512 machines sum floats differently)."""
        return {"run_id": self.run_id, "model_built": self.model_name, "input_shape": list(self.input_shape),
                "num_classes": self.data.num_classes, "class_names": self.data.class_names,
                "normalisation": self.data.normalisation, "threads": torch.get_num_threads(),
                "cpu_capability": torch.backends.cpu.get_cpu_capability()}

    # ---------------------------------------------------------------- the loop

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs, saving each to the run folder; returns the summary."""
        if self.folder is not None:
            self.folder.make()
            if not (self.folder.path / "config.json").is_file():
                self.folder.write_config({**dataclasses.asdict(self.config), **self.run_description()})
        for tensor in self.model.state_dict().values():  # the same seed (or checkpoint) made the
            self.dist.broadcast_(tensor)                  # replicas equal; make sure, as DDP does
        self._notify("on_run_start")
        while self.epoch < self.config.epochs:
            self.train_epoch()
        self._notify("on_run_end")
        summary = self.summary()
        if self.folder is not None:
            self.folder.write_summary(summary)
        return summary

    def train_epoch(self) -> dict[str, Any]:
        """One epoch (or the rest of one a mid-epoch checkpoint holds); returns its metrics row."""
        d = self.data
        gen = self._epoch_generator()
        order = torch.randperm(d.train_x.shape[0], generator=gen, device=self.device)
        if self._generator is not None:  # resumed mid-epoch: the generator as it was after that step
            gen.set_state(self._generator.get_state())
        self._generator = gen
        lr = self.optimizer.param_groups[0]["lr"]
        self.model.train()
        if self.aux is not None:
            self.aux.train()
        t0 = time.perf_counter() - self._elapsed
        self._notify("on_epoch_start")
        for batch, idx, x in self._batches(order, gen):
            logits = self.model(x)
            logits_aux = self.aux(logits, idx) if self.aux is not None else None
            loss = self._loss(logits_aux if logits_aux is not None else logits, d.train_y[idx], batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            self._elapsed = time.perf_counter() - t0
            self._notify("on_step_end", Step(idx, logits, logits_aux, loss))
        self.scheduler.step()
        self._sync_buffers()
        train_time = time.perf_counter() - t0
        stats = {"epoch": self.epoch + 1, "lr": lr, **self._evaluate(), "train_time_s": train_time}
        stats["epoch_time_s"] = time.perf_counter() - t0
        self.epoch, self.step, self._generator, self._elapsed = self.epoch + 1, 0, None, 0.0
        self._notify("on_epoch_end", stats)  # the metrics observer completes the row first
        return stats

    def _epoch_generator(self) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.config.seed * 100_003 + self.epoch)
        return gen

    def _batches(self, order: Tensor, gen: torch.Generator) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """The rest of the epoch's steps: each global batch of the order, this rank's share of it (the
        whole batch in a single process) and its inputs, from the device or decoded on workers."""
        bs = self.config.batch_size
        global_batches = [order[start:start + bs] for start in range(self.step * bs, order.numel(), bs)]
        shares = [self.dist.shard(batch) for batch in global_batches]
        if self.augment:  # drawn for the global batch, so the crops do not depend on the ranks
            for batch, idx in zip(global_batches, shares):
                crops = random_crop_flip(self.data.train_x[batch], 4, gen)
                yield batch, idx, crops[self.dist.shard(torch.arange(batch.numel()))]
            return
        yield from zip(global_batches, shares, batches(self.data.train_x, shares, self.device))

    def _loss(self, logits: Tensor, target: Tensor, batch: Tensor) -> Tensor:
        loss = loss_fn(self.config.loss, logits, target)
        weight = self.dist.loss_weight(target.numel(), batch.numel())
        if weight != 1.0:  # unequal shards (or an empty one): weigh to the global batch's mean
            loss = loss * weight if target.numel() else logits.sum() * 0.0
        return loss

    def _sync_buffers(self) -> None:
        if self.dist.enabled:
            for buffer in self.model.buffers():  # BatchNorm's running statistics: rank 0's, as DDP keeps them
                self.dist.broadcast_(buffer)

    def _evaluate(self) -> dict[str, float]:
        """Validation accuracy (each batch's logits are the held-out examples' evidence) and test accuracy."""
        d, batch = self.data, self.config.eval_batch_size
        held_out = lambda rows, logits: self._notify("on_held_out", rows, logits)  # noqa: E731
        return {"val_acc": accuracy(self.model, d.val_x, d.val_y, batch, self.dist, on_logits=held_out),
                "test_acc": accuracy(self.model, d.test_x, d.test_y, batch, self.dist)}

    def _notify(self, moment: str, *args: Any) -> None:
        for observer in self.observers:
            getattr(observer, moment)(self, *args)

    # ---------------------------------------------------------------- what observers ask of the run

    def check_finite(self, mean_loss: float) -> None:
        params = list(self.model.parameters()) + ([self.aux.weight] if self.aux is not None else [])
        finite_weights = all(bool(torch.isfinite(p).all()) for p in params)
        if math.isfinite(mean_loss) and finite_weights:
            return
        what = f"the training loss became {mean_loss}" if not math.isfinite(mean_loss) else "the weights became non-finite"
        done = self.epoch - 1
        kept = f"the checkpoint of epoch {done} is kept" if done else "no epoch was saved"
        raise TrainingDiverged(f"epoch {self.epoch}: {what}; stopped ({kept}). Lower --lr, or check --momentum "
                               f"and --weight-decay (now lr {self.config.lr}, momentum {self.config.momentum})")

    def warn(self, line: str | None) -> bool:
        if line is not None:
            self.log(f"warning: {line}")
        return line is not None

    @property
    def noise_estimate(self) -> NoiseEstimate | None:
        """With tau "auto": the estimate that became tau."""
        return self.tau.estimate

    @property
    def known_noise_rate(self) -> float:
        """The noise rate the run knows, at which detection.csv judges the detectors: the estimate
        with tau "auto", else, under synthetic noise, the share it flipped (asymmetric noise at 40%
        flips 40% of 4 classes), else NaN (the evidence's estimate serves). The number flagged for
        the user never comes from here: it is the evidence's own estimate (detection/count.py)."""
        if self.noise_estimate is not None:
            return self.noise_estimate.rate
        return self.data.realised_rate if self.config.noise_type != "none" else float("nan")

    # ---------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        state = {
            "format": CHECKPOINT_FORMAT,
            "run_id": self.run_id,
            "config": dataclasses.asdict(self.config),
            "world_size": self.dist.world_size,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "aux": self.aux.state_dict() if self.aux is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": self.history,
        }
        state.update({o.name: o.state_dict() for o in self.observers if o.name})
        return state

    def epoch_states(self) -> dict[str, Any]:
        """This rank's share of the epoch in progress: each observer's (a mid-epoch checkpoint)."""
        return {_key(o): o.epoch_state() for o in self.observers}

    def partial_state(self, ranks: list[dict[str, Any]]) -> dict[str, Any]:
        """Where the epoch stands: its step, its generator, its time so far and every rank's ``epoch_states``."""
        return {"step": self.step, "generator": self._generator.get_state(), "elapsed_s": self._elapsed,
                "ranks": ranks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_compatible(state, self.config, self.dist.world_size)
        self.run_id = state["run_id"]  # the folder checked it is its own (RunFolder.checkpoint)
        self.model.load_state_dict(state["model"])
        if self.aux is not None:
            self.aux.load_state_dict(state["aux"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = self.saved_epoch = state["epoch"]
        self.history = list(state["history"])
        for o in self.observers:
            if o.name:
                o.load_state_dict(state[o.name])
        partial = state.get("partial")  # a mid-epoch checkpoint: the epoch continues at its step
        self.step = self.saved_step = partial["step"] if partial is not None else 0
        if partial is not None:
            self._generator = torch.Generator(device=self.device)
            self._generator.set_state(partial["generator"])
            self._elapsed = partial["elapsed_s"]
            mine = partial["ranks"][self.dist.rank]
            for o in self.observers:
                o.load_epoch_state(mine[_key(o)])

    def resume(self) -> None:
        """Continue from the folder's checkpoint."""
        self.load_state_dict(self.folder.checkpoint())

    def summary(self) -> dict[str, Any]:
        return run_summary(self.config, self.history, self.data, detection=self.detection.rows + self.detection.final_rows,
                           aux=self.aux, tau=self.optimizer.param_groups[0]["tau"],
                           estimated_rate=self.noise_estimate.rate if self.noise_estimate is not None else None,
                           engine=self.engine.name, device=str(self.device), world_size=self.dist.world_size,
                           model=self.model_name)
