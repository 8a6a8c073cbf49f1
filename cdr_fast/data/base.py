"""What every loader returns: a ``Dataset`` of whole tensors, or a ``DatasetError`` naming the file."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


class DatasetError(ValueError):
    """A dataset file is missing, truncated or corrupt."""


@dataclass
class Dataset:
    name: str
    train_images: Tensor  # (n, C, H, W) float32, normalised
    train_labels: Tensor  # (n,) int64, as given: clean for the built-in sets, possibly noisy for yours
    test_images: Tensor
    test_labels: Tensor
    num_classes: int
    # The true training labels where known: the built-in sets' own labels; for your data, the
    # npz's optional train_clean_labels; None when unknown.
    train_clean_labels: Tensor | None = None
    class_names: list[str] | None = None  # None: the classes are their numbers
    train_files: list[str] | None = None  # a folder dataset's image files, relative to its folder
    # (mean, std) per channel (images, on the [0, 1] scale) or per feature: x_stored = (x - mean) / std
    normalisation: tuple[list[float], list[float]] | None = None
