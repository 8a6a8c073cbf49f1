"""The training loop and its protocol, as in the published CDR code (DESIGN.md section 2).

Noise is applied to the whole training set; 10% of it is then held out as a *noisy* validation
set. Each epoch records training accuracy against the noisy and the clean labels, the fraction
of noisy examples memorised, validation and test accuracy. The summary reports test accuracy at
the epoch of best validation accuracy and at the last epoch.

Training accuracy is measured on the fly: each example's prediction is the network's output
f(x) (without the AUX offset) when it was last trained on, as the published code reports it.
This costs no extra forward pass.

The dataset lives on the device as one tensor and batches are drawn by index; each epoch's
order comes from a generator seeded by (seed, epoch), so a resumed run continues exactly.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from .auxiliary import AuxBias
from .checkpoint import load_checkpoint, save_checkpoint, write_csv_atomic, write_json_atomic
from .data import DATASETS, Dataset, load_dataset, random_crop_flip, validation_split
from .models import MODELS, build_model
from .noise import NOISE_TYPES, check_rate, noisify
from .optim import CDRSGD

# Which parts each method switches on.
METHODS: dict[str, dict[str, bool]] = {
    "sgd": dict(cdr=False, aux=False, rdi=False),
    "cdr": dict(cdr=True, aux=False, rdi=False),
    "aux": dict(cdr=False, aux=True, rdi=False),
    "rdi": dict(cdr=False, aux=False, rdi=True),
    "cdr_aux": dict(cdr=True, aux=True, rdi=False),
    "cdr_rdi": dict(cdr=True, aux=False, rdi=True),
}
LOSSES = ("ce", "mse")
ENGINE_CHOICES = ("fused", "reference")
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


@dataclass
class TrainConfig:
    """Everything that defines a run. Defaults: the seed report's setup on mnist-mini."""

    method: str = "cdr_aux"
    noise_type: str = "symmetric"
    noise_rate: float = 0.4
    tau: float | None = None  # CDR rate; None means the noise rate
    dataset: str = "mnist-mini"
    data_dir: str | None = None
    model: str = "lenet"
    epochs: int = 40
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-3
    milestones: list[int] = field(default_factory=lambda: [10, 20])
    gamma: float = 0.1
    aux_lambda: float = 1.0
    rdi_lambda: float = 0.1
    loss: str = "ce"
    seed: int = 1
    device: str = "auto"
    engine: str = "fused"  # "fused" or "reference"
    val_fraction: float = 0.1
    eval_batch_size: int = 256  # measured fastest for LeNet on 2 CPU cores (1024 is ~2x slower)

    @property
    def cdr_rate(self) -> float:
        """The tau the optimizer uses: 0 for methods without CDR."""
        if not METHODS[self.method]["cdr"]:
            return 0.0
        return self.noise_rate if self.tau is None else self.tau

    def validate(self) -> None:
        """Raise a ValueError naming the first bad value and the valid choices."""
        choices = dict(method=tuple(METHODS), noise_type=NOISE_TYPES, dataset=DATASETS, model=MODELS,
                       loss=LOSSES, engine=ENGINE_CHOICES)
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"invalid {name}: {getattr(self, name)!r}; valid choices: {', '.join(valid)}")
        check_rate(self.noise_rate, "noise rate")
        if self.noise_type == "none" and self.noise_rate != 0:
            raise ValueError(f"noise type 'none' takes noise rate 0; got {self.noise_rate}")
        if self.tau is not None:
            check_rate(self.tau, "tau")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"invalid {name}: {value!r}; must be a positive integer")
        for name in ("lr", "momentum", "weight_decay", "aux_lambda", "rdi_lambda"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"invalid {name}: {value!r}; must be a finite number >= 0")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"invalid gamma: {self.gamma!r}; must be in (0, 1]")
        if sorted(self.milestones) != list(self.milestones) or any(m < 1 for m in self.milestones):
            raise ValueError(f"invalid milestones: {self.milestones!r}; must be increasing positive epochs")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"invalid val_fraction: {self.val_fraction!r}; must be in (0, 1)")
        resolve_device(self.device)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"invalid device {name!r}; valid choices: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"invalid device {name!r}; valid choices: auto, cpu, cuda, cuda:N")
    return device


@dataclass
class NoisySplit:
    """The noisy training set, its held-out noisy validation part and the clean test set."""

    train_x: Tensor
    train_y: Tensor  # noisy labels: what the model is trained on
    train_clean: Tensor
    val_x: Tensor
    val_y: Tensor  # noisy too, as in the published protocol
    test_x: Tensor
    test_y: Tensor
    realised_rate: float
    num_classes: int


def prepare_data(config: TrainConfig, device: torch.device) -> NoisySplit:
    data: Dataset = load_dataset(config.dataset, config.data_dir)
    noisy = noisify(
        data.train_labels, config.noise_type, config.noise_rate, data.num_classes, config.seed,
        features=data.train_images if config.noise_type == "instance" else None, dataset=config.dataset,
    )
    train_idx, val_idx = validation_split(len(noisy.labels), config.val_fraction, config.seed)
    x, y = data.train_images, noisy.labels
    return NoisySplit(
        train_x=x[train_idx].to(device), train_y=y[train_idx].to(device),
        train_clean=data.train_labels[train_idx].to(device),
        val_x=x[val_idx].to(device), val_y=y[val_idx].to(device),
        test_x=data.test_images.to(device), test_y=data.test_labels.to(device),
        realised_rate=noisy.realised_rate, num_classes=data.num_classes,
    )


def loss_fn(name: str, logits: Tensor, target: Tensor) -> Tensor:
    if name == "ce":
        return F.cross_entropy(logits, target)
    # Squared loss against one-hot targets (the AUX paper's): 1/2 ||z - e_y||^2, mean over the batch.
    one_hot = F.one_hot(target, logits.shape[1]).to(logits.dtype)
    return 0.5 * (logits - one_hot).pow(2).sum(1).mean()


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int) -> float:
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=images.device)
    for i in range(0, images.shape[0], batch_size):
        correct += (model(images[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum()
    return 100.0 * correct.item() / max(images.shape[0], 1)


class Trainer:
    """Builds a run from its config and trains it epoch by epoch, checkpointing each epoch."""

    def __init__(self, config: TrainConfig, out_dir: Path, progress: bool = True,
                 log: Callable[[str], None] = print) -> None:
        config.validate()
        self.config = config
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.log = log
        self.device = resolve_device(config.device)
        method = METHODS[config.method]

        self.data = prepare_data(config, self.device)
        torch.manual_seed(config.seed)
        shape = self.data.train_x.shape
        self.model = build_model(config.model, shape[1], self.data.num_classes, shape[-1]).to(self.device)
        groups: list[dict[str, Any]] = [{"params": list(self.model.parameters())}]
        self.aux: AuxBias | None = None
        if method["aux"]:
            self.aux = AuxBias(shape[0], self.data.num_classes, config.aux_lambda,
                               fused=config.engine == "fused").to(self.device)
            groups.append(self.aux.param_group())
        self.optimizer = CDRSGD(
            groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
            tau=config.cdr_rate, rdi_lambda=config.rdi_lambda if method["rdi"] else 0.0,
            fused=config.engine == "fused",
        )
        self.engine = self.optimizer.engine
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, config.milestones, config.gamma)
        self.epoch = 0  # epochs completed
        self.history: list[dict[str, Any]] = []
        self.augment = config.dataset == "cifar10"

    # ---------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": dataclasses.asdict(self.config),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "aux": self.aux.state_dict() if self.aux is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {state.get('format')!r} is not {CHECKPOINT_FORMAT}")
        saved = dict(state["config"])
        mine = dataclasses.asdict(self.config)
        saved["epochs"] = mine["epochs"]  # a run may be resumed with more epochs
        diffs = {k: (saved.get(k), v) for k, v in mine.items() if saved.get(k) != v}
        if diffs:
            detail = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diffs.items())
            raise ValueError(f"the checkpoint was made with other settings ({detail})")
        self.model.load_state_dict(state["model"])
        if self.aux is not None:
            self.aux.load_state_dict(state["aux"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = state["epoch"]
        self.history = list(state["history"])

    def resume(self) -> None:
        path = self.out_dir / CHECKPOINT
        if not path.is_file():
            raise FileNotFoundError(f"nothing to resume: {path} does not exist")
        self.load_state_dict(load_checkpoint(path))

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
        predicted = torch.full((n,), -1, dtype=torch.int64, device=self.device)
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
            idx = order[start : start + cfg.batch_size]
            x = d.train_x[idx]
            if self.augment:
                x = random_crop_flip(x, 4, gen)
            logits = self.model(x)
            predicted[idx] = logits.detach().argmax(1)
            if self.aux is not None:
                logits = self.aux(logits, idx)
            loss = loss_fn(cfg.loss, logits, d.train_y[idx])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach()
            if self.optimizer.last_kept_fraction is not None:
                kept_sum += self.optimizer.last_kept_fraction
            bar.update()
        bar.close()
        self.scheduler.step()
        train_time = time.perf_counter() - t0

        noisy_mask = d.train_y != d.train_clean
        memorised = (predicted[noisy_mask] == d.train_y[noisy_mask]).float().mean() if noisy_mask.any() else None
        stats = {
            "epoch": self.epoch + 1,
            "lr": lr,
            "train_loss": loss_sum.item() / steps,
            "train_acc_noisy": 100.0 * (predicted == d.train_y).float().mean().item(),
            "train_acc_clean": 100.0 * (predicted == d.train_clean).float().mean().item(),
            "memorised_noisy": 100.0 * memorised.item() if memorised is not None else float("nan"),
            "kept_fraction": kept_sum.item() / steps if cfg.cdr_rate > 0 else float("nan"),
            "val_acc": accuracy(self.model, d.val_x, d.val_y, cfg.eval_batch_size),
            "test_acc": accuracy(self.model, d.test_x, d.test_y, cfg.eval_batch_size),
            "train_time_s": train_time,
        }
        stats["epoch_time_s"] = time.perf_counter() - t0
        return stats

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs, writing metrics.csv, the checkpoint and summary.json."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        while self.epoch < self.config.epochs:
            stats = self.train_epoch()
            self.epoch += 1
            self.history.append(stats)
            # Checkpoint first: metrics.csv never lists an epoch the checkpoint lacks.
            save_checkpoint(self.out_dir / CHECKPOINT, self.state_dict())
            write_csv_atomic(self.out_dir / "metrics.csv", self.history)
            self.log(format_epoch(stats, self.config.epochs))
        summary = self.summary()
        write_json_atomic(self.out_dir / "summary.json", summary)
        return summary

    def summary(self) -> dict[str, Any]:
        cfg, h = self.config, self.history
        best = max(h, key=lambda s: s["val_acc"])  # first epoch reaching the best
        return {
            "method": cfg.method,
            "noise_type": cfg.noise_type,
            "noise_rate": cfg.noise_rate,
            "realised_noise_rate": self.data.realised_rate,
            "tau": cfg.cdr_rate,
            "dataset": cfg.dataset,
            "model": cfg.model,
            "epochs": cfg.epochs,
            "seed": cfg.seed,
            "engine": self.engine,
            "device": str(self.device),
            "num_train": int(self.data.train_x.shape[0]),
            "num_val": int(self.data.val_x.shape[0]),
            "num_test": int(self.data.test_x.shape[0]),
            "best_val_epoch": best["epoch"],
            "best_val_acc": best["val_acc"],
            "test_acc_at_best_val": best["test_acc"],
            "test_acc_last": h[-1]["test_acc"],
            "memorised_noisy_last": h[-1]["memorised_noisy"],
            "epoch_time_s_median": statistics.median(s["epoch_time_s"] for s in h),
            "config": dataclasses.asdict(cfg),
        }


def format_epoch(s: dict[str, Any], epochs: int) -> str:
    kept = "" if math.isnan(s["kept_fraction"]) else f"  kept {100 * s['kept_fraction']:5.1f}%"
    mem = "  n/a " if math.isnan(s["memorised_noisy"]) else f"{s['memorised_noisy']:5.1f}%"
    return (
        f"epoch {s['epoch']:>{len(str(epochs))}}/{epochs}  lr {s['lr']:.0e}  loss {s['train_loss']:.4f}  "
        f"train noisy {s['train_acc_noisy']:5.1f}%  clean {s['train_acc_clean']:5.1f}%  memorised {mem}  "
        f"val {s['val_acc']:5.2f}%  test {s['test_acc']:5.2f}%{kept}  {s['epoch_time_s']:.1f}s"
    )
