"""Datasets as whole tensors (docs/design.md, "Data"), and the registry that names them.

Each dataset is loaded once into four tensors (normalised float32 images and int64 labels, for
train and test); the training loop moves them to its device and draws batches by index, so no
per-example Python or PIL work happens while training.

``DATASETS`` is the one list of datasets: a ``DatasetSpec`` each, with its loader and what the
rest of the run needs to know of it (whether its labels are clean, whether training augments
it, the class map of its asymmetric noise). Adding a dataset is one entry here, plus its loader
and tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..checks import check_choice
from .base import Dataset, DatasetError, ReadOptions
from .files import ImageFiles
from .builtin import NORMALISATION, load_cifar10, load_idx_dataset, load_mnist_mini
from .user import load_folder, load_npz

# MNIST's asymmetric map, as the published generator flips: 2 -> 7, 3 -> 8, 5 <-> 6.
MNIST_ASYMMETRIC = {2: 7, 3: 8, 5: 6, 6: 5}


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: how to load it, and what training needs to know of it."""

    name: str
    load: Callable[[str | Path | None, ReadOptions], Dataset]  # from --data-dir (None: the loader's default
    # places); a loader that cannot resize while decoding ignores options.image_size (load_dataset resizes)
    user_data: bool = False  # your own data: labels taken as given, possibly noisy, no noise added by default
    augment: bool = False  # random crop and flip in training
    # asymmetric noise: each source class keeps 1 - r of its examples and sends r to its target
    asymmetric_map: dict[int, int] | None = field(default=None, hash=False)
    streams: bool = False  # can be read from its files as batches need them (ReadOptions.stream)


def _user(load: Callable[[Path, ReadOptions], Dataset], what: str) -> Callable[[str | Path | None, ReadOptions],
                                                                              Dataset]:
    def load_user(data_dir: str | Path | None, options: ReadOptions) -> Dataset:
        if data_dir is None:
            raise DatasetError(f"this dataset needs --data-dir: {what}")
        return load(Path(data_dir), options)
    return load_user


DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec("mnist-mini", lambda data_dir, options: load_mnist_mini(), asymmetric_map=MNIST_ASYMMETRIC),
    DatasetSpec("mnist", lambda data_dir, options: load_idx_dataset("mnist", data_dir), asymmetric_map=MNIST_ASYMMETRIC),
    DatasetSpec("fashion-mnist", lambda data_dir, options: load_idx_dataset("fashion-mnist", data_dir),
                asymmetric_map={0: 6, 2: 4, 5: 7, 7: 5}),
    DatasetSpec("cifar10", lambda data_dir, options: load_cifar10(data_dir), augment=True,
                asymmetric_map={9: 1, 2: 0, 3: 5, 5: 3, 4: 7}),
    DatasetSpec("folder", _user(load_folder, "the folder holding train/ and test/"), user_data=True, streams=True),
    DatasetSpec("npz", _user(load_npz, "the npz file"), user_data=True),
)}
BUILT_IN = tuple(name for name, spec in DATASETS.items() if not spec.user_data)


def dataset_spec(name: str) -> DatasetSpec:
    return DATASETS[check_choice("dataset", name, DATASETS)]


def load_dataset(name: str, data_dir: str | Path | None = None, image_size: int | None = None, *,
                 stream: bool | None = False, memory_budget: int | None = None, workers: int = 0) -> Dataset:
    """Load a dataset by name (see ``DATASETS``) as CPU tensors, from ``data_dir`` (nothing is
    downloaded: point ``data_dir`` at torchvision's files if you have them), its images resized to
    ``image_size`` x ``image_size`` if given (bilinear, channels kept). A dataset of image files can
    be streamed instead (``ReadOptions``: ``stream``, ``memory_budget``, ``workers``)."""
    spec = dataset_spec(name)
    if stream and not spec.streams:
        streaming = ", ".join(n for n, s in DATASETS.items() if s.streams)
        raise DatasetError(f"dataset {name!r} cannot be streamed: streaming reads image files as batches need them "
                           f"({streaming}); {name} loads whole")
    data = spec.load(data_dir, ReadOptions(image_size, stream, memory_budget, workers))
    if image_size is not None and data.streamed is None and data.train_images.dim() == 4:
        data.train_images, data.test_images = (resized(x, image_size) for x in (data.train_images, data.test_images))
    if data.normalisation is None and name in NORMALISATION:
        mean, std = NORMALISATION[name]
        data.normalisation = (list(mean), list(std))
    if not spec.user_data and data.train_clean_labels is None:
        data.train_clean_labels = data.train_labels  # the built-in sets' labels are the clean ones
    return data


def resized(images: Tensor, size: int) -> Tensor:
    """(n, C, H, W) images as (n, C, size, size), bilinear; unchanged if they already are."""
    if images.shape[-2:] == (size, size) or images.shape[0] == 0:
        return images
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                                           antialias=True)


def validation_split(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded random split of ``range(n)`` into (train indices, held-out indices), each sorted."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) + 7919))
    n_val = int(round(n * fraction))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def random_crop_flip(images: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Batched random crop (after zero padding) and horizontal flip, on the images' device."""
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    dev = images.device
    oy = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator, device=dev)
    ox = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator, device=dev)
    rows = (oy + torch.arange(h, device=dev))[:, None, :, None]
    cols = (ox + torch.arange(w, device=dev))[:, None, None, :]
    flip = torch.rand(n, generator=generator, device=dev) < 0.5
    cols = torch.where(flip[:, None, None, None], cols.flip(-1), cols)
    batch = torch.arange(n, device=dev)[:, None, None, None]
    chan = torch.arange(images.shape[1], device=dev)[None, :, None, None]
    return padded[batch, chan, rows, cols]


__all__ = ["BUILT_IN", "DATASETS", "Dataset", "DatasetError", "DatasetSpec", "ImageFiles", "ReadOptions", "dataset_spec",
           "load_dataset", "random_crop_flip", "validation_split"]
