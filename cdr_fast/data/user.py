"""Your own data: an image-folder tree or an npz file, with its labels taken as given.

    --dataset folder --data-dir DIR    DIR/train/<class>/<image>, DIR/test/<class>/<image>
                                       (class folders named alike in both; sorted names give the
                                       class indices, as torchvision's ImageFolder does)
    --dataset npz --data-dir FILE      arrays train_images, train_labels, test_images,
                                       test_labels, and optionally train_clean_labels and
                                       num_classes (a scalar declaring the classes)

Images: (n, H, W), (n, H, W, C) or (n, C, H, W) arrays of uint8 (0-255) or floats (0-1), any
channel count; feature vectors: (n, d) arrays (embeddings from a pretrained network, say). Image
files are decoded with Pillow, resized to ``image_size`` if given (a folder of photos of mixed
sizes needs it): once, at load time, into tensors that live on the device like the built-in sets;
or, streamed (``files``), on DataLoader workers as each batch needs them. Everything is
normalised per channel (or per feature) with the training set's mean and standard deviation.

The labels are taken as they are, noisy or not; synthetic noise is added only if asked for.
Clean labels, where an npz has them, feed the clean-label metrics and the detector's scores.
Anything malformed is a ``DatasetError`` naming the file or the key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .base import Dataset, DatasetError, ReadOptions
from .files import ImageFiles, decode, folder_normalisation, normalised, scan_folder

NPZ_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


def _as_examples(images: np.ndarray, where: str) -> np.ndarray:
    """(n, C, H, W) float32 images, or (n, d) float32 feature vectors."""
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3, 4) and images.shape[1] > 4:
        images = images.transpose(0, 3, 1, 2)  # channels last, as image libraries store them
    if images.ndim not in (2, 4):
        raise DatasetError(f"{where}: images must be (n, H, W), (n, H, W, C) or (n, C, H, W), or feature vectors "
                           f"(n, d); got shape {images.shape}")
    if images.dtype == np.uint8 and images.ndim == 4:
        return images.astype(np.float32) / 255.0
    if not (np.issubdtype(images.dtype, np.floating) or np.issubdtype(images.dtype, np.integer)):
        raise DatasetError(f"{where}: images must be uint8 or float; got {images.dtype}")
    images = images.astype(np.float32)
    finite = np.isfinite(images).reshape(len(images), -1).all(1)
    if not finite.all():  # found now, not as a diverged loss after an epoch
        bad = np.flatnonzero(~finite)
        raise DatasetError(f"{where}: {bad.size} of {len(images)} images hold NaN or infinite values (the first: "
                           f"image {int(bad[0])}); replace or drop them")
    return images


def _normalised(train: np.ndarray, test: np.ndarray) -> tuple[Tensor, Tensor, tuple[list[float], list[float]]]:
    """Both splits standardised with the training set's mean and deviation, per channel (images) or
    per feature (vectors), and those (mean, std)."""
    axes = (0, *range(2, train.ndim))
    mean = train.mean(axis=axes, keepdims=True)
    std = train.std(axis=axes, keepdims=True) + 1e-8
    stats = (mean.reshape(-1).tolist(), std.reshape(-1).tolist())
    return torch.from_numpy((train - mean) / std), torch.from_numpy((test - mean) / std), stats


def _labels(values: np.ndarray, where: str, n: int) -> np.ndarray:
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
        raise DatasetError(f"{where}: labels must be a 1-d integer array; got {values.dtype} of shape {values.shape}")
    if values.shape[0] != n:
        raise DatasetError(f"{where}: {values.shape[0]} labels for {n} images")
    if values.size and values.min() < 0:
        raise DatasetError(f"{where}: label {int(values.min())} is negative; labels must be 0 .. classes - 1")
    return values.astype(np.int64)


def _class_count(arrays: dict[str, np.ndarray], path: Path, train_y: np.ndarray, test_y: np.ndarray,
                 clean: np.ndarray | None) -> int:
    """The number of classes: the npz's ``num_classes`` if it declares one (every label must lie
    below it), else one more than the largest training label, and then every class must occur in
    training and every test label be one of them (a label out of range is a mistake, not a class)."""
    labelled = [("train_labels", train_y), ("test_labels", test_y), ("train_clean_labels", clean)]
    if "num_classes" in arrays:
        declared = arrays["num_classes"]
        if declared.shape != () or not np.issubdtype(declared.dtype, np.integer) or int(declared) < 1:
            raise DatasetError(f"{path}[num_classes]: must be one positive integer; got {declared!r}")
        for key, labels in labelled:
            if labels is not None and labels.size and labels.max() >= int(declared):
                raise DatasetError(f"{path}[{key}]: label {int(labels.max())} is not below num_classes "
                                   f"{int(declared)}")
        return int(declared)
    seen = np.unique(train_y)
    count = int(seen.max()) + 1 if seen.size else 0
    missing = sorted(set(range(count)) - set(seen.tolist()))
    if missing:
        raise DatasetError(f"{path}[train_labels]: class(es) {missing} never occur among the labels 0..{count - 1}; "
                           "add the array num_classes to declare the classes, or relabel them 0..n-1")
    for key, labels in labelled[1:]:
        if labels is not None and labels.size and labels.max() >= count:
            raise DatasetError(f"{path}[{key}]: label {int(labels.max())} never occurs in train_labels (classes "
                               f"0..{count - 1}); add num_classes to declare the classes")
    return count


def load_npz(path: Path, options: ReadOptions = ReadOptions()) -> Dataset:
    """An npz dataset (its images resized afterwards by ``load_dataset`` if ``options.image_size`` is given)."""
    if path.is_dir():
        raise DatasetError(f"{path}: a folder, not an npz file (for an image tree, use --dataset folder)")
    if not path.is_file():
        raise DatasetError(f"{path}: no such npz file")
    with open(path, "rb") as f:
        head = f.read(6)
    if head[:2] != b"PK":  # an npz is a zip archive of .npy arrays
        what = "a single .npy array" if head == b"\x93NUMPY" else "not a zip archive"
        raise DatasetError(f"{path}: not an npz file ({what}); write one with numpy.savez(path, train_images=..., "
                           f"train_labels=..., test_images=..., test_labels=...)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as err:  # noqa: BLE001 - anything numpy cannot read is a bad file
        raise DatasetError(f"{path}: cannot be read as npz ({type(err).__name__}: {err})") from None
    missing = [k for k in NPZ_KEYS if k not in arrays]
    if missing:
        raise DatasetError(f"{path}: missing array(s) {', '.join(missing)}; an npz dataset holds {', '.join(NPZ_KEYS)} "
                           "and optionally train_clean_labels")
    train_x = _as_examples(arrays["train_images"], f"{path}[train_images]")
    test_x = _as_examples(arrays["test_images"], f"{path}[test_images]")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DatasetError(f"{path}: train_images are {train_x.shape[1:]} but test_images {test_x.shape[1:]}")
    train_y = _labels(arrays["train_labels"], f"{path}[train_labels]", len(train_x))
    test_y = _labels(arrays["test_labels"], f"{path}[test_labels]", len(test_x))
    clean = None
    if "train_clean_labels" in arrays:
        clean = _labels(arrays["train_clean_labels"], f"{path}[train_clean_labels]", len(train_x))
    num_classes = _class_count(arrays, path, train_y, test_y, clean)
    if len(train_x) == 0:
        raise DatasetError(f"{path}[train_images]: no training images")
    train_t, test_t, stats = _normalised(train_x, test_x)
    return Dataset("npz", train_t, torch.from_numpy(train_y), test_t, torch.from_numpy(test_y), num_classes,
                   torch.from_numpy(clean) if clean is not None else None, normalisation=stats)


def load_folder(root: Path, options: ReadOptions = ReadOptions()) -> Dataset:
    """A folder dataset (see ``files``), decoded into memory, or streamed from its files with
    ``options.stream`` (None: when the images as float32 tensors would take more than half of
    ``options.memory_budget``; the dataset's ``streamed`` says why)."""
    scan = scan_folder(root, options.image_size)
    stream = options.stream
    if stream is None:
        stream = options.memory_budget is not None and 2 * scan.image_bytes > options.memory_budget
    train_y, test_y = torch.tensor(scan.train.labels), torch.tensor(scan.test.labels)
    if stream:
        mean, std = folder_normalisation(scan, workers=options.workers)
        train_x, test_x = (ImageFiles(split.paths, scan.mode, scan.image_size, scan.shape, mean, std, options.workers)
                           for split in (scan.train, scan.test))
        why = "as asked (--stream)" if options.stream else (
            f"the images as float32 would take {_size(scan.image_bytes)}, more than half of the "
            f"{_size(options.memory_budget)} the run may use")
        streamed = f"{why}; " + (f"decoding on {options.workers} worker process(es)" if options.workers
                                 else "decoding in the training process")
    else:
        train_raw = [decode(p, scan.mode, scan.image_size) for p in scan.train.paths]
        mean, std = folder_normalisation(scan, decoded=train_raw)
        train_x = torch.from_numpy(normalised(np.stack(train_raw), mean, std))
        del train_raw
        test_x = torch.from_numpy(normalised(np.stack([decode(p, scan.mode, scan.image_size) for p in scan.test.paths]),
                                             mean, std))
        streamed = None
    stats = (mean.reshape(-1).tolist(), std.reshape(-1).tolist())
    return Dataset("folder", train_x, train_y, test_x, test_y, len(scan.classes), class_names=scan.classes,
                   train_files=scan.train.names, normalisation=stats, streamed=streamed)


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"
