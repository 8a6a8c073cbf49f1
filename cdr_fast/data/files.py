"""A folder of image files, read two ways from one scan: decoded whole into memory, or streamed.

``scan_folder`` reads only the files' headers: the classes, every file and its label, the colour
mode and the one image shape (mixed sizes need ``image_size``). From the scan, ``decode`` turns a
file into a (C, H, W) uint8 array, the same way on both paths, and ``ImageFiles`` is a torch
``Dataset`` of the normalised images that decodes each one when asked: what ``--stream`` trains
on, on DataLoader workers (``batches.batches``).

The normalisation is the same on both paths, so a streamed run is bit for bit the in-memory run:
the per-channel mean and standard deviation come from exact integer sums of the pixels of a fixed
sample of the training images (all of them up to ``STATS_SAMPLE``; beyond, a seeded sample of that
many, so a dataset larger than memory is not decoded twice at start).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import DatasetError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
STATS_SAMPLE = 10_000  # images whose pixels give the normalisation
HEADER_SAMPLE = 1_000  # headers read for the colour mode when --image-size makes sizes irrelevant
GREY_MODES = ("1", "L", "I", "I;16", "F")


@dataclass
class SplitScan:
    """One split of a folder dataset: its files, their labels and names, as found."""

    paths: list[Path]
    labels: list[int]
    names: list[str]  # "train/<class>/<file>", as suspects.csv names them


@dataclass
class FolderScan:
    """A folder dataset, from its files' headers only."""

    root: Path
    classes: list[str]
    train: SplitScan
    test: SplitScan
    mode: str  # "L" (greyscale) or "RGB": every image is converted to it
    image_size: int | None  # resize to image_size x image_size (None: as they are)
    shape: tuple[int, int, int]  # (C, H, W) of every decoded image

    @property
    def image_bytes(self) -> int:
        """Both splits' images as float32 tensors, in bytes."""
        c, h, w = self.shape
        return (len(self.train.paths) + len(self.test.paths)) * c * h * w * 4


def _scan_split(folder: Path, classes: list[str] | None) -> tuple[SplitScan, list[str]]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: missing; a folder dataset holds train/<class>/ and test/<class>/ image folders")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if classes is None:
        classes = found
        if not classes:
            raise DatasetError(f"{folder}: no class folders")
    elif set(found) - set(classes):
        raise DatasetError(f"{folder}: class folder(s) {sorted(set(found) - set(classes))} are not in train/")
    scan = SplitScan([], [], [])
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) \
            if (folder / name).is_dir() else []
        if not files and folder.name == "train":
            raise DatasetError(f"{folder / name}: empty class folder (no images ending in "
                               f"{', '.join(sorted(IMAGE_SUFFIXES))})")
        for file in files:
            scan.paths.append(file)
            scan.labels.append(label)
            scan.names.append(f"{folder.name}/{name}/{file.name}")
    return scan, classes


def scan_folder(root: Path, image_size: int | None = None) -> FolderScan:
    """The folder's classes and files, and the mode and shape its images decode to, from headers
    only. Without ``image_size`` every file's header is read (an unreadable file, or a size unlike
    the others, is a ``DatasetError`` naming it before any training); with it, sizes do not matter
    and a spread sample of ``HEADER_SAMPLE`` headers is read (at ImageNet's 1.28M files a full scan
    takes minutes; a file that does not decode is named when it is read). The colour mode is RGB if
    any header read is in colour, else greyscale."""
    from PIL import Image, UnidentifiedImageError

    if root.is_file():
        raise DatasetError(f"{root}: a file, not a folder of train/<class>/ and test/<class>/ images"
                           + (" (for an npz file, use --dataset npz)" if root.suffix == ".npz" else ""))
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    train, classes = _scan_split(root / "train", None)
    test, _ = _scan_split(root / "test", classes)
    if not test.paths:
        raise DatasetError(f"{root / 'test'}: no test images")
    files = train.paths + test.paths
    if image_size is not None and len(files) > HEADER_SAMPLE:
        files = [files[i] for i in np.linspace(0, len(files) - 1, HEADER_SAMPLE).round().astype(int)]
    colour, size = False, None
    for file in files:
        try:
            with Image.open(file) as img:  # the header only: nothing is decoded here
                colour |= img.mode not in GREY_MODES
                found = img.size if image_size is None else (image_size, image_size)
        except (UnidentifiedImageError, OSError) as err:
            raise DatasetError(f"{file}: not a readable image ({err})") from None
        if size is None:
            size = found
        elif found != size:
            raise DatasetError(f"{file}: image of {found[0]}x{found[1]} pixels, but the others are {size[0]}x{size[1]}; "
                               "pass --image-size N to resize every image to N x N")
    mode = "RGB" if colour else "L"
    return FolderScan(root, classes, train, test, mode, image_size, (3 if colour else 1, size[1], size[0]))


def decode(path: Path, mode: str, image_size: int | None) -> np.ndarray:
    """One image file as a (C, H, W) uint8 array: converted to ``mode``, resized (bilinear) to
    ``image_size`` x ``image_size`` if given and not already."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            if image_size is not None and img.size != (image_size, image_size):
                img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
            array = np.asarray(img)
    except (UnidentifiedImageError, OSError) as err:
        raise DatasetError(f"{path}: not a readable image ({err})") from None
    # contiguous (C, H, W): a transposed view would make the stacked tensor channels-last in memory,
    # and convolutions round differently on it than on the streamed batches
    return array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))


def stats_sample(n: int) -> np.ndarray:
    """The training images whose pixels give the normalisation: all, or a fixed seeded sample."""
    if n <= STATS_SAMPLE:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, STATS_SAMPLE, replace=False))


class PixelSums:
    """Exact per-channel sums of uint8 pixels and of their squares (int64), and the (mean, std)
    they give on the [0, 1] scale: the same numbers however the images were read."""

    def __init__(self, channels: int) -> None:
        self.total = np.zeros(channels, np.int64)
        self.squares = np.zeros(channels, np.int64)
        self.pixels = 0

    def add(self, image: np.ndarray) -> None:
        """One (C, H, W) uint8 image."""
        flat = image.reshape(image.shape[0], -1).astype(np.int64)
        self.total += flat.sum(1)
        self.squares += (flat * flat).sum(1)
        self.pixels += flat.shape[1]

    def normalisation(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) per channel, float32, shaped (C, 1, 1); std has 1e-8 added, as for npz data."""
        mean = self.total / (255.0 * self.pixels)
        var = np.maximum(self.squares / (255.0 ** 2 * self.pixels) - mean ** 2, 0.0)
        shape = (-1, 1, 1)
        return mean.astype(np.float32).reshape(shape), (np.sqrt(var) + 1e-8).astype(np.float32).reshape(shape)


def normalised(image: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """A (C, H, W) or (n, C, H, W) uint8 array as float32 on the [0, 1] scale, standardised."""
    return (image.astype(np.float32) / 255.0 - mean) / std


class ImageFiles(torch.utils.data.Dataset):
    """Normalised images decoded from their files when asked: a lazily read (n, C, H, W) float32
    tensor. ``[i]`` is one image; ``subset(index)`` the files at those positions. Batches of it come
    from ``batches.batches`` (DataLoader workers, in order)."""

    def __init__(self, paths: list[Path], mode: str, image_size: int | None, shape: tuple[int, int, int],
                 mean: np.ndarray, std: np.ndarray, workers: int = 0) -> None:
        self.paths, self.mode, self.image_size = list(paths), mode, image_size
        self.image_shape = tuple(shape)
        self.mean, self.std = mean, std
        self.workers = workers  # DataLoader worker processes that decode (0: this process)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.paths), *self.image_shape)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tensor:
        return torch.from_numpy(normalised(decode(self.paths[i], self.mode, self.image_size), self.mean, self.std))

    def subset(self, index: Tensor | np.ndarray) -> ImageFiles:
        positions = np.asarray(index.cpu() if isinstance(index, Tensor) else index, dtype=np.int64)
        return ImageFiles([self.paths[i] for i in positions], self.mode, self.image_size, self.image_shape,
                          self.mean, self.std, self.workers)


def folder_normalisation(scan: FolderScan, decoded: list[np.ndarray] | None = None,
                         workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The (mean, std) of ``stats_sample``'s training images: from the decoded ones if given, else
    decoded now (on ``workers`` processes)."""
    sums = PixelSums(scan.shape[0])
    sample = stats_sample(len(scan.train.paths))
    if decoded is not None:
        for i in sample:
            sums.add(decoded[i])
        return sums.normalisation()
    raw = _RawFiles([scan.train.paths[i] for i in sample], scan.mode, scan.image_size)
    loader = torch.utils.data.DataLoader(raw, batch_size=64, num_workers=workers, collate_fn=list,
                                         generator=torch.Generator())  # the global generator untouched
    for images in worker_batches(loader):
        for image in images:
            sums.add(image)
    return sums.normalisation()


def worker_batches(loader: torch.utils.data.DataLoader) -> Iterator[Any]:
    """The loader's batches; a DatasetError raised in a worker is one line again (DataLoader wraps
    it in the worker's traceback), and the workers are shut down as soon as the loop ends, however
    it ends (an error's traceback would otherwise keep them, and their shutdown then waits)."""
    batches = iter(loader)
    try:
        yield from batches
    except DatasetError as err:
        lines = [line for line in str(err).strip().splitlines() if line.strip()]
        raise DatasetError((lines[-1] if lines else str(err)).split("DatasetError: ", 1)[-1]) from None
    finally:
        shutdown = getattr(batches, "_shutdown_workers", None)  # the multi-process iterator's own
        if shutdown is not None:
            shutdown()


class _RawFiles(torch.utils.data.Dataset):
    """Decoded uint8 images, for the normalisation's sums."""

    def __init__(self, paths: list[Path], mode: str, image_size: int | None) -> None:
        self.paths, self.mode, self.image_size = paths, mode, image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return decode(self.paths[i], self.mode, self.image_size)
