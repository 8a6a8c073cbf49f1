"""Datasets: real MNIST/Fashion-MNIST from ../shared/data, the embedded mnist-mini, file checks."""

from __future__ import annotations

import gzip
import pickle
import shutil

import numpy as np
import pytest
import torch

from cdr_fast.data import DatasetError, load_dataset, random_crop_flip, validation_split
from cdr_fast.data.builtin import find_idx_dir, read_idx

IDX_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def test_full_mnist(mnist):
    assert mnist.train_images.shape == (60000, 1, 28, 28) and mnist.test_images.shape == (10000, 1, 28, 28)
    assert mnist.train_images.dtype == torch.float32 and mnist.train_labels.dtype == torch.int64
    assert torch.bincount(mnist.train_labels).tolist()[:2] == [5923, 6742]  # known MNIST class counts
    # Normalised with MNIST's own mean and std: the result is ~zero-mean, unit-std.
    assert abs(mnist.train_images.mean().item()) < 1e-3 and abs(mnist.train_images.std().item() - 1) < 1e-3


def test_fashion_mnist(shared_data):
    fm = load_dataset("fashion-mnist", shared_data / "fashion-mnist")
    assert fm.train_images.shape == (60000, 1, 28, 28)
    assert torch.bincount(fm.train_labels).tolist() == [6000] * 10


def test_mnist_mini_is_a_stratified_subset_of_real_mnist(mnist, mnist_mini):
    assert mnist_mini.train_images.shape == (6000, 1, 28, 28) and mnist_mini.test_images.shape == (1000, 1, 28, 28)
    assert torch.bincount(mnist_mini.train_labels).tolist() == [600] * 10
    assert torch.bincount(mnist_mini.test_labels).tolist() == [100] * 10
    from importlib import resources

    with resources.as_file(resources.files("cdr_fast.data") / "mnist_mini.npz") as path:
        src = np.load(path)["train_source_index"]
    assert torch.equal(mnist_mini.train_images, mnist.train_images[torch.from_numpy(src).long()])
    assert torch.equal(mnist_mini.train_labels, mnist.train_labels[torch.from_numpy(src).long()])


@pytest.mark.parametrize("layout", ["flat", "raw", "torchvision", "uncompressed"])
def test_folder_layouts(shared_data, tmp_path, layout):
    sub = {"flat": "", "raw": "raw", "torchvision": "MNIST/raw", "uncompressed": ""}[layout]
    folder = tmp_path / sub
    folder.mkdir(parents=True, exist_ok=True)
    for name in IDX_NAMES:
        src = shared_data / "mnist" / f"{name}.gz"
        if layout == "uncompressed":
            (folder / name).write_bytes(gzip.decompress(src.read_bytes()))
        else:
            (folder / f"{name}.gz").symlink_to(src)
    assert find_idx_dir("mnist", tmp_path) == folder
    assert load_dataset("mnist", tmp_path).train_images.shape[0] == 60000


def write_idx(path, array: np.ndarray, compress: bool):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return raw


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(tmp_path, fresh_seed, compress):
    arr = np.random.default_rng(fresh_seed).integers(0, 256, size=(7, 3, 5), dtype=np.uint8)
    path = tmp_path / ("x.gz" if compress else "x")
    write_idx(path, arr, compress)
    assert np.array_equal(read_idx(path), arr)


def test_truncated_file_names_file_and_size(shared_data, tmp_path):
    for name in IDX_NAMES:
        shutil.copy(shared_data / "mnist" / f"{name}.gz", tmp_path / f"{name}.gz")
    data = gzip.decompress((tmp_path / "train-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(data[:-100]))
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte\.gz.*59908 bytes.*expected 60008"):
        load_dataset("mnist", tmp_path)


def test_corrupt_file_names_checksum(shared_data, tmp_path):
    for name in IDX_NAMES:
        shutil.copy(shared_data / "mnist" / f"{name}.gz", tmp_path / f"{name}.gz")
    data = bytearray(gzip.decompress((tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    data[500] ^= 1
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte\.gz.*md5.*expected 27ae3e4e"):
        load_dataset("mnist", tmp_path)


def test_broken_gzip_and_bad_magic(tmp_path):
    (tmp_path / "a.gz").write_bytes(gzip.compress(b"x" * 100)[:30])
    with pytest.raises(DatasetError, match="a.gz"):
        read_idx(tmp_path / "a.gz")
    (tmp_path / "b").write_bytes(b"\x00\x00\x09\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(DatasetError, match="magic"):
        read_idx(tmp_path / "b")


def test_missing_folder_lists_where_it_looked(tmp_path):
    with pytest.raises(DatasetError, match=r"no folder with all four IDX files.*MNIST/raw"):
        load_dataset("mnist", tmp_path)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="valid choices: mnist-mini, mnist, fashion-mnist, cifar10"):
        load_dataset("svhn")


def write_cifar(root, fresh_seed, n=20):
    rng = np.random.default_rng(fresh_seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
        batches[name] = batch
    return batches


def test_cifar10_in_torchvision_format(tmp_path, fresh_seed):
    batches = write_cifar(tmp_path, fresh_seed)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.train_images.shape == (100, 3, 32, 32) and ds.test_images.shape == (20, 3, 32, 32)
    pixel = batches["data_batch_2"][b"data"][3].reshape(3, 32, 32)[1, 5, 7]
    assert ds.train_images[23, 1, 5, 7].item() == pytest.approx((pixel / 255 - 0.4822) / 0.1994, rel=1e-5)
    assert ds.test_labels.tolist() == batches["test_batch"][b"labels"]


def test_cifar10_corrupt_batch(tmp_path, fresh_seed):
    write_cifar(tmp_path, fresh_seed)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="data_batch_3"):
        load_dataset("cifar10", tmp_path)


@pytest.mark.parametrize("n", [1, 10, 12345])
def test_validation_split(n):
    train, val = validation_split(n, 0.1, seed=5)
    assert len(val) == round(n * 0.1)
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(n))
    assert torch.equal(validation_split(n, 0.1, seed=5)[1], val)


def test_random_crop_flip_against_slicing(fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    x = torch.randn(6, 3, 8, 8, generator=gen)
    out = random_crop_flip(x, 2, torch.Generator().manual_seed(fresh_seed))
    # Replay the same draws and cut each crop by hand.
    g = torch.Generator().manual_seed(fresh_seed)
    oy, ox = torch.randint(0, 5, (6, 1), generator=g), torch.randint(0, 5, (6, 1), generator=g)
    flip = torch.rand(6, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):
        crop = padded[i, :, oy[i, 0] : oy[i, 0] + 8, ox[i, 0] : ox[i, 0] + 8]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop)
