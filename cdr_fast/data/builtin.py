"""The built-in datasets: MNIST and Fashion-MNIST (IDX files), CIFAR-10 (torchvision's batches) and
mnist-mini (embedded in the package). Their labels are clean; ``cdr_fast.noise`` adds the noise.

Files are checked as they are read: a missing, truncated or corrupt file is a ``DatasetError``
that names the file and what was expected.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .base import Dataset, DatasetError

# Per-channel (mean, std) used to normalise inputs, as in the published CDR code.
NORMALISATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "mnist-mini": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
}

# Class names where the classes are not their digits (the picture of suspects captions with them).
CLASS_NAMES = {
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}

# The four IDX files of MNIST and Fashion-MNIST: uncompressed size and md5 of the uncompressed bytes.
IDX_SIZES = {
    "train-images-idx3-ubyte": 47040016,
    "train-labels-idx1-ubyte": 60008,
    "t10k-images-idx3-ubyte": 7840016,
    "t10k-labels-idx1-ubyte": 10008,
}
IDX_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
# Sub-folders of a data directory where the IDX files may sit: the folder itself, a raw/
# folder, and torchvision's root layout.
IDX_SUBDIRS = {"mnist": ("", "raw", "MNIST/raw"), "fashion-mnist": ("", "raw", "FashionMNIST/raw")}
DEFAULT_DIRS = {"mnist": ("data", "data/mnist"), "fashion-mnist": ("data", "data/fashion-mnist", "/usr/share/datasets/fashion-mnist")}
CIFAR10_DIRNAME = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = "test_batch"
MNIST_MINI = "mnist_mini.npz"


def normalise(images: np.ndarray, name: str) -> Tensor:
    """uint8 (n, C, H, W) -> float32 in [0, 1], then per-channel (x - mean) / std."""
    mean, std = NORMALISATION[name]
    x = torch.tensor(images).float().div_(255.0)  # copies: IDX arrays are read-only buffers
    return x.sub_(torch.tensor(mean).view(1, -1, 1, 1)).div_(torch.tensor(std).view(1, -1, 1, 1))


# --------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)


def read_idx(path: Path, expected_size: int | None = None, expected_md5: str | None = None) -> np.ndarray:
    """Parse one IDX file (gzipped or raw), checking its size, checksum and header."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DatasetError(f"{path}: cannot be read as {'gzip' if path.suffix == '.gz' else 'IDX'} ({err})") from None
    if expected_size is not None and len(raw) != expected_size:
        raise DatasetError(f"{path}: {len(raw)} bytes uncompressed, expected {expected_size} (truncated or wrong file?)")
    if expected_md5 is not None:
        digest = hashlib.md5(raw).hexdigest()
        if digest != expected_md5:
            raise DatasetError(f"{path}: md5 of the uncompressed bytes is {digest}, expected {expected_md5} (corrupt file?)")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DatasetError(f"{path}: {len(raw)} bytes, but its header {shape} implies {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def find_idx_dir(name: str, data_dir: str | Path | None) -> Path:
    """The folder holding the four IDX files of ``name``, searched as docs/design.md ("Data") says."""
    roots = [Path(data_dir)] if data_dir is not None else [Path(d) for d in DEFAULT_DIRS[name]]
    looked = []
    for root in roots:
        for sub in IDX_SUBDIRS[name]:
            folder = root / sub if sub else root
            looked.append(str(folder))
            if all(idx_file(folder, stem) is not None for stem in IDX_SIZES):
                return folder
    wanted = ", ".join(f"{s}[.gz]" for s in IDX_SIZES)
    hint = "" if data_dir is not None else " (pass --data-dir)"
    raise DatasetError(f"{name}: no folder with all four IDX files ({wanted}) among: {', '.join(looked)}{hint}")


def idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def load_idx_dataset(name: str, data_dir: str | Path | None) -> Dataset:
    folder = find_idx_dir(name, data_dir)
    arrays = {
        stem: read_idx(idx_file(folder, stem), IDX_SIZES[stem], IDX_MD5[name][stem]) for stem in IDX_SIZES
    }
    return Dataset(
        name,
        normalise(arrays["train-images-idx3-ubyte"][:, None], name),
        torch.from_numpy(arrays["train-labels-idx1-ubyte"].astype(np.int64)),
        normalise(arrays["t10k-images-idx3-ubyte"][:, None], name),
        torch.from_numpy(arrays["t10k-labels-idx1-ubyte"].astype(np.int64)),
        10,
        class_names=CLASS_NAMES.get(name),
    )


# --------------------------------------------------------------------------------------------
# mnist-mini (shipped inside the package; built by scripts/build_mnist_mini.py)


def load_mnist_mini() -> Dataset:
    ref = resources.files(__package__) / MNIST_MINI
    with resources.as_file(ref) as path:
        if not path.is_file():
            raise DatasetError(f"{path}: the embedded mnist-mini file is missing; rebuild it with scripts/build_mnist_mini.py")
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
    return Dataset(
        "mnist-mini",
        normalise(arrays["train_images"][:, None], "mnist-mini"),
        torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        normalise(arrays["test_images"][:, None], "mnist-mini"),
        torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        10,
    )


# --------------------------------------------------------------------------------------------
# CIFAR-10 in torchvision's format: <root>/cifar-10-batches-py/{data_batch_1..5,test_batch}


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DatasetError(f"{path}: missing CIFAR-10 batch file")
    try:
        with path.open("rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise DatasetError(f"{path}: not a CIFAR-10 batch ({type(err).__name__}: {err})") from None
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise DatasetError(f"{path}: expected data (n, 3072) and n labels; got {data.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(f"{path}: labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(data_dir: str | Path | None) -> Dataset:
    root = Path(data_dir) if data_dir is not None else Path("data")
    folder = root if root.name == CIFAR10_DIRNAME else root / CIFAR10_DIRNAME
    if not folder.is_dir():
        raise DatasetError(f"cifar10: folder {folder} not found (torchvision's layout: <data-dir>/{CIFAR10_DIRNAME}/)")
    parts = [_read_cifar_batch(folder / f) for f in CIFAR10_TRAIN]
    test_x, test_y = _read_cifar_batch(folder / CIFAR10_TEST)
    return Dataset(
        "cifar10",
        normalise(np.concatenate([p[0] for p in parts]), "cifar10"),
        torch.from_numpy(np.concatenate([p[1] for p in parts])),
        normalise(test_x, "cifar10"),
        torch.from_numpy(test_y),
        10,
        class_names=CLASS_NAMES["cifar10"],
    )
