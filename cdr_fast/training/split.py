"""The data protocol of the published CDR code: noise on the whole training set, then 10% held out
as a *noisy* validation set; the clean test set. The images land on the device as whole tensors,
or stay image files decoded as batches need them (streamed: ``cdr_fast.data.files``); labels are
always on the device."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..data import Dataset, ImageFiles, dataset_spec, load_dataset, validation_split
from ..data.batches import Examples
from ..detection.canaries import plant_canaries
from ..noise import NOISE, noisify
from .config import TrainConfig, default_workers, memory_budget


@dataclass
class NoisySplit:
    """The noisy training set, its held-out noisy validation part and the clean test set."""

    train_x: Examples  # a tensor on the device, or ImageFiles
    train_y: Tensor  # noisy labels: what the model is trained on
    train_index: Tensor  # each training example's index in the dataset's training set
    train_clean: Tensor | None  # the true labels, where known (None for your own data without them)
    val_x: Examples
    val_y: Tensor  # noisy too, as in the published protocol
    val_index: Tensor  # each validation example's index in the dataset's training set
    val_clean: Tensor | None
    test_x: Examples
    test_y: Tensor
    canaries: Tensor  # indices (in the dataset's training set) of the planted flips: train_y holds their
    # planted labels, canary_labels their given ones (detection/canaries.py); empty without canaries
    canary_labels: Tensor
    realised_rate: float  # the share of training labels that differ from the clean ones (NaN if unknown)
    num_classes: int
    class_names: list[str] | None = None  # as the dataset names its classes (None: their numbers)
    files: list[str] | None = None  # a folder dataset: each training-set example's file, by dataset index
    normalisation: tuple[list[float], list[float]] | None = None  # the dataset's (mean, std): data.base
    streamed: str | None = None  # why the images are read from their files (None: they are on the device)

    @property
    def num_examples(self) -> int:
        """The dataset's training set: the training split and the validation split."""
        return self.train_index.numel() + self.val_index.numel()

    def whole(self, train: Tensor, val: Tensor) -> Tensor:
        """Per-example values of the two splits, as one tensor in the dataset's order."""
        out = train.new_empty((self.num_examples, *train.shape[1:]))
        out[self.train_index.to(train.device)] = train
        out[self.val_index.to(train.device)] = val.to(train.device)
        return out


def noisy_labels(config: TrainConfig, data: Dataset) -> Tensor:
    """The whole training set's labels as the run trains on them: the given ones, plus the
    configured synthetic noise (the same draw every time for one seed)."""
    if NOISE[config.noise_type].needs_features and data.streamed is not None:
        raise ValueError(f"noise type {config.noise_type!r} draws each flip from the images, which this run streams "
                         f"from their files; use another noise type, or --no-stream if the images fit in memory")
    return noisify(
        data.train_labels, config.noise_type, config.noise_rate, data.num_classes, config.seed,
        features=data.train_images if NOISE[config.noise_type].needs_features else None,
        class_map=dataset_spec(config.dataset).asymmetric_map,
    ).labels


def fold_split(n: int, folds: int, fold: int, seed: int) -> tuple[Tensor, Tensor]:
    """(train indices, held-out indices) of fold ``fold``: a seeded, balanced assignment of
    ``range(n)`` to ``folds`` folds, each index sorted."""
    assignment = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) + 104_729)) % folds
    return torch.nonzero(assignment != fold).flatten(), torch.nonzero(assignment == fold).flatten()


def _placed(x: Tensor | ImageFiles, index: Tensor | None, device: torch.device) -> Examples:
    """The examples at ``index`` (None: all): on the device, or still files."""
    if isinstance(x, ImageFiles):
        return x if index is None else x.subset(index)
    return (x if index is None else x[index]).to(device)


def prepare_data(config: TrainConfig, device: torch.device) -> NoisySplit:
    workers = config.workers if config.workers is not None else default_workers()
    data = load_dataset(config.dataset, config.data_dir, config.image_size, stream=config.stream,
                        memory_budget=memory_budget(device, config.memory_gb), workers=workers)
    y = noisy_labels(config, data)
    clean = data.train_clean_labels
    if clean is None and config.noise_type != "none":  # your labels, noise added: they are what it flipped
        clean = data.train_labels
    if config.folds is not None:  # cross-fitting: the held-out split is one fold of the whole training set
        train_idx, val_idx = fold_split(len(y), config.folds, config.fold, config.seed)
    else:
        train_idx, val_idx = validation_split(len(y), config.val_fraction, config.seed)
    given = y
    y, canaries = plant_canaries(y, train_idx, config.canaries, data.num_classes, config.seed)
    x = data.train_images
    return NoisySplit(
        train_x=_placed(x, train_idx, device), train_y=y[train_idx].to(device), train_index=train_idx,
        train_clean=clean[train_idx].to(device) if clean is not None else None,
        val_x=_placed(x, val_idx, device), val_y=y[val_idx].to(device), val_index=val_idx,
        val_clean=clean[val_idx].to(device) if clean is not None else None,
        test_x=_placed(data.test_images, None, device), test_y=data.test_labels.to(device),
        canaries=canaries, canary_labels=given[canaries],
        realised_rate=(given != clean).double().mean().item() if clean is not None else float("nan"),
        num_classes=data.num_classes, class_names=data.class_names, files=data.train_files,
        normalisation=data.normalisation, streamed=data.streamed,
    )
