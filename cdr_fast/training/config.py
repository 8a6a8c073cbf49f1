"""A run's settings (``TrainConfig``), their validation, and the device they name."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..data import DATASETS
from ..engines import ENGINE_CHOICES
from ..models import MODELS
from ..noise import NOISE_TYPES, check_rate

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


@dataclass
class TrainConfig:
    """Everything that defines a run. Defaults: the seed report's setup on mnist-mini."""

    method: str = "cdr_aux"
    noise_type: str = "symmetric"
    noise_rate: float = 0.4
    tau: float | str | None = None  # CDR rate; None means the noise rate, "auto" estimates it
    tau_warmup_steps: int = 1500  # with tau "auto": plain-SGD steps before the estimate (docs/design.md)
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
    aux_lr: float = 0.3  # the AUX table's per-example step size (docs/design.md, "AUX's step size")
    rdi_lambda: float = 0.1
    loss: str = "ce"
    seed: int = 1
    device: str = "auto"
    engine: str = "auto"  # one of cdr_fast.engines.ENGINE_CHOICES
    val_fraction: float = 0.1
    eval_batch_size: int = 256  # measured fastest for LeNet on 2 CPU cores (1024 is ~2x slower)

    @property
    def parts(self) -> dict[str, bool]:
        return METHODS[self.method]

    @property
    def estimates_tau(self) -> bool:
        return self.parts["cdr"] and self.tau == "auto"

    @property
    def cdr_rate(self) -> float:
        """The tau the optimizer starts with: 0 for methods without CDR, and with tau "auto" until
        the estimate replaces it (``Trainer.estimate_noise``)."""
        if not self.parts["cdr"] or self.tau == "auto":
            return 0.0
        return self.noise_rate if self.tau is None else self.tau

    def used_settings(self) -> dict:
        """The settings, less those the method does not use (AUX's lambda without AUX, say)."""
        from dataclasses import asdict

        settings = asdict(self)
        if not self.estimates_tau:
            settings.pop("tau_warmup_steps")
        for part, keys in (("aux", ("aux_lambda", "aux_lr")), ("rdi", ("rdi_lambda",)), ("cdr", ("tau",))):
            if not self.parts[part]:
                for key in keys:
                    settings.pop(key)
        return settings

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
        if self.tau == "auto":
            if not self.parts["cdr"]:
                raise ValueError(f"tau 'auto' estimates CDR's rate, but method {self.method!r} has no CDR")
        elif self.tau is not None:
            check_rate(self.tau, "tau")
        elif self.parts["cdr"] and self.noise_rate == 0:
            raise ValueError(f"method {self.method!r} with noise rate 0 needs an explicit tau (a rate, or 'auto' to "
                             "estimate it): CDR's rate defaults to the noise rate, and tau 0 would train plain SGD")
        for name in ("epochs", "batch_size", "eval_batch_size", "tau_warmup_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"invalid {name}: {value!r}; must be a positive integer")
        for name in ("lr", "weight_decay", "aux_lambda", "aux_lr", "rdi_lambda"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"invalid {name}: {value!r}; must be a finite number >= 0")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"invalid momentum: {self.momentum!r}; valid values are [0, 1)")
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
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"invalid device {name!r}; valid choices: auto, cpu, cuda, cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu")
    return device
