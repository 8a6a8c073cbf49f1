"""What every loader returns: a ``Dataset`` of whole tensors (or image files read as needed), or a
``DatasetError`` naming the file; and the ``ReadOptions`` a loader is given."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .errors import DatasetError
from .files import ImageFiles


@dataclass
class Dataset:
    name: str
    train_images: Tensor | ImageFiles  # (n, C, H, W) float32, normalised (image files: decoded when read)
    train_labels: Tensor  # (n,) int64, as given: clean for the built-in sets, possibly noisy for yours
    test_images: Tensor | ImageFiles
    test_labels: Tensor
    num_classes: int
    # The true training labels where known: the built-in sets' own labels; for your data, the
    # npz's optional train_clean_labels; None when unknown.
    train_clean_labels: Tensor | None = None
    class_names: list[str] | None = None  # None: the classes are their numbers
    train_files: list[str] | None = None  # a folder dataset's image files, relative to its folder
    # (mean, std) per channel (images, on the [0, 1] scale) or per feature: x_stored = (x - mean) / std
    normalisation: tuple[list[float], list[float]] | None = None
    streamed: str | None = None  # why the images are read from their files as batches need them (None: in memory)


@dataclass(frozen=True)
class ReadOptions:
    """How a dataset is read: its images resized to ``image_size`` x ``image_size`` (None: as they
    are); streamed from their files (``stream`` True), kept in memory (False) or streamed where they
    would take more than half of ``memory_budget`` bytes as float32 tensors (None); and the
    DataLoader ``workers`` that decode a stream."""

    image_size: int | None = None
    stream: bool | None = False
    memory_budget: int | None = None
    workers: int = 0


__all__ = ["Dataset", "DatasetError", "ReadOptions"]
