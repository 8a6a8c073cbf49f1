"""A run's settings (``TrainConfig``), their validation, and the device they name."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from ..checks import check_choice, check_positive_int, check_range
from ..data import DATASETS
from ..engines import check_engine
from ..models import check_model
from ..noise import NOISE_TYPES


@dataclass(frozen=True)
class Method:
    """A training method: which parts it switches on, and how tables and figures name it."""

    name: str
    label: str
    cdr: bool = False
    aux: bool = False
    rdi: bool = False


# The registry, in the tables' row order. Adding a method is one entry here (plus its tests): the
# command lines, the grid and the report read their choices and labels from it.
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("sgd", "SGD"),
    Method("cdr", "CDR", cdr=True),
    Method("aux", "AUX", aux=True),
    Method("cdr_aux", "CDR+AUX", cdr=True, aux=True),
    Method("rdi", "RDI", rdi=True),
    Method("cdr_rdi", "CDR+RDI", cdr=True, rdi=True),
)}
LOSSES = ("ce", "mse")
READING_SETTINGS = ("stream", "memory_gb", "workers")  # how the data is read: never part of a result
DEFAULT_NOISE_TYPE, DEFAULT_NOISE_RATE = "symmetric", 0.4


@dataclass
class TrainConfig:
    """Everything that defines a run. Defaults: the seed report's setup on mnist-mini."""

    method: str = "cdr_aux"
    noise_type: str | None = None  # None: symmetric on the built-in datasets, none on your own data
    noise_rate: float | None = None  # None: 0.4, or 0 with noise type none
    tau: float | str | None = None  # CDR rate; None means the noise rate, "auto" estimates it
    tau_warmup_steps: int = 1500  # with tau "auto": plain-SGD steps before the estimate (docs/design.md)
    dataset: str = "mnist-mini"
    data_dir: str | None = None
    model: str | None = None  # a MODELS name or package.module:function; None: chosen by the data's shape
    weights: str | None = None  # start from this state dict or cdr-fast checkpoint (models.load_weights)
    image_size: int | None = None  # resize every image to image_size x image_size (None: as they are)
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
    # Cross-fitting (training/folds.py): this run is fold ``fold`` of ``folds``, whose held-out split
    # is that fold of the whole training set (val_fraction then unused); None: a plain run.
    fold: int | None = None
    folds: int | None = None
    # Planted flips (cdr_fast/detection/canaries.py): this share of the training split is trained on
    # a wrong label drawn at random, so that the evidence can count the wrong labels (find_labels.py
    # plants them by default; 0: none).
    canaries: float = 0.0
    eval_batch_size: int = 256  # measured fastest for LeNet on 2 CPU cores (1024 is ~2x slower)
    # How the data is read; none of these changes a result (a resume may change them).
    stream: bool | None = None  # decode image files as batches need them; None: where they would not fit
    memory_gb: float | None = None  # memory the images may take on the device (None: what the device has)
    workers: int | None = None  # DataLoader processes that decode a stream (None: one per core, at most 8)

    def __post_init__(self) -> None:
        """The defaults that depend on other settings: your own data comes with its noise, the
        built-in sets get some."""
        if self.noise_type is None:
            user_data = self.dataset in DATASETS and DATASETS[self.dataset].user_data
            self.noise_type = "none" if user_data else DEFAULT_NOISE_TYPE
        if self.noise_rate is None:
            self.noise_rate = 0.0 if self.noise_type == "none" else DEFAULT_NOISE_RATE

    @property
    def method_spec(self) -> Method:
        return METHODS[self.method]

    @property
    def estimates_tau(self) -> bool:
        return self.method_spec.cdr and self.tau == "auto"

    @property
    def cdr_rate(self) -> float:
        """The tau the optimizer starts with: 0 for methods without CDR, and with tau "auto" until
        the estimate replaces it (``Trainer.estimate_noise``)."""
        if not self.method_spec.cdr or self.tau == "auto":
            return 0.0
        return self.noise_rate if self.tau is None else self.tau

    def used_settings(self) -> dict:
        """The settings, less those the method does not use (AUX's lambda without AUX, say)."""
        from dataclasses import asdict

        settings = asdict(self)
        for key in READING_SETTINGS:
            settings.pop(key)
        if not self.estimates_tau:
            settings.pop("tau_warmup_steps")
        for part, keys in (("aux", ("aux_lambda", "aux_lr")), ("rdi", ("rdi_lambda",)), ("cdr", ("tau",))):
            if not getattr(self.method_spec, part):
                for key in keys:
                    settings.pop(key)
        return settings

    def validate(self) -> None:
        """Raise a ValueError naming the first bad value and the valid choices."""
        for name, valid in dict(method=METHODS, noise_type=NOISE_TYPES, dataset=DATASETS,
                                loss=LOSSES).items():
            check_choice(name.replace("_", " "), getattr(self, name), valid)
        check_engine(self.engine)
        if self.model is not None:
            check_model(self.model)
        if self.image_size is not None:
            check_positive_int("image_size", self.image_size)
        check_range("noise rate", self.noise_rate, 0.0, 1.0)
        if self.noise_type == "none" and self.noise_rate != 0:
            raise ValueError(f"noise type 'none' takes noise rate 0; got {self.noise_rate}")
        if self.tau == "auto":
            if not self.method_spec.cdr:
                raise ValueError(f"tau 'auto' estimates CDR's rate, but method {self.method!r} has no CDR")
        elif self.tau is not None:
            check_range("tau", self.tau, 0.0, 1.0)
        elif self.method_spec.cdr and self.noise_rate == 0:
            raise ValueError(f"method {self.method!r} with noise rate 0 needs an explicit tau (a rate, or 'auto' to "
                             "estimate it): CDR's rate defaults to the noise rate, and tau 0 would train plain SGD")
        for name in ("epochs", "batch_size", "eval_batch_size", "tau_warmup_steps"):
            check_positive_int(name, getattr(self, name))
        if self.stream is not None and not isinstance(self.stream, bool):
            raise ValueError(f"invalid stream: {self.stream!r}; True, False or None (stream where the data would not fit)")
        if self.stream and not DATASETS[self.dataset].streams:
            streaming = ", ".join(name for name, spec in DATASETS.items() if spec.streams)
            raise ValueError(f"dataset {self.dataset!r} cannot be streamed (--stream reads image files as batches need "
                             f"them: {streaming}); it loads whole")
        if self.memory_gb is not None:
            check_range("memory_gb", self.memory_gb, 0.0, open_low=True)
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 0):
            raise ValueError(f"invalid workers: {self.workers!r}; must be an integer >= 0 (0: decode in the training "
                             "process)")
        for name in ("lr", "weight_decay", "aux_lambda", "aux_lr", "rdi_lambda"):
            check_range(name, getattr(self, name), 0.0)
        check_range("momentum", self.momentum, 0.0, 1.0)
        check_range("gamma", self.gamma, 0.0, 1.0, closed=True, open_low=True)
        if sorted(self.milestones) != list(self.milestones) or any(m < 1 for m in self.milestones):
            raise ValueError(f"invalid milestones: {self.milestones!r}; must be increasing positive epochs")
        check_range("val_fraction", self.val_fraction, 0.0, 1.0)
        if (self.fold is None) != (self.folds is None):
            raise ValueError(f"fold and folds go together; got fold {self.fold!r} and folds {self.folds!r}")
        if self.folds is not None:
            if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2:
                raise ValueError(f"invalid folds: {self.folds!r}; cross-fitting needs an integer >= 2")
            if not isinstance(self.fold, int) or not 0 <= self.fold < self.folds:
                raise ValueError(f"invalid fold: {self.fold!r}; must be in 0 .. {self.folds - 1}")
        check_range("canaries", self.canaries, 0.0, 0.5)
        if self.canaries and self.folds is not None:
            raise ValueError(f"canaries ({self.canaries}) and folds ({self.folds}) do not combine: each fold would plant "
                             "its own; use one of them")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"invalid seed: {self.seed!r}; must be an integer >= 0")
        resolve_device(self.device)


def default_workers() -> int:
    """DataLoader workers for a stream: one per core this process may use, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cores)


def memory_budget(device: torch.device, memory_gb: float | None) -> int:
    """Bytes the run's images may take on ``device``: ``memory_gb`` if given, else the device's
    free memory (CUDA) or the host's available memory (CPU)."""
    if memory_gb is not None:
        return int(memory_gb * 2**30)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


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
