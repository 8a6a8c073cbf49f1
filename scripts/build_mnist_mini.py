"""Build the embedded mnist-mini dataset (cdr_fast/data/mnist_mini.npz) from the full MNIST.

A fixed, stratified subset of real MNIST: 600 training and 100 test images of each digit,
picked with a fixed seed, so the file is the same byte for byte on every run.

    python scripts/build_mnist_mini.py --mnist-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

import numpy as np

from cdr_fast.data.builtin import IDX_MD5, IDX_SIZES, find_idx_dir, idx_file, read_idx

TRAIN_PER_CLASS = 600
TEST_PER_CLASS = 100
SEED = 20210503
OUT = Path(__file__).resolve().parent.parent / "cdr_fast" / "data" / "mnist_mini.npz"


def stratified(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    picks = [rng.choice(np.flatnonzero(labels == k), per_class, replace=False) for k in range(10)]
    return np.sort(np.concatenate(picks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist-dir", default="../shared/data/mnist")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    folder = find_idx_dir("mnist", args.mnist_dir)
    a = {s: read_idx(idx_file(folder, s), IDX_SIZES[s], IDX_MD5["mnist"][s]) for s in IDX_SIZES}
    rng = np.random.default_rng(SEED)
    tr = stratified(a["train-labels-idx1-ubyte"], TRAIN_PER_CLASS, rng)
    te = stratified(a["t10k-labels-idx1-ubyte"], TEST_PER_CLASS, rng)
    arrays = {
        "train_images": a["train-images-idx3-ubyte"][tr],
        "train_labels": a["train-labels-idx1-ubyte"][tr],
        "test_images": a["t10k-images-idx3-ubyte"][te],
        "test_labels": a["t10k-labels-idx1-ubyte"][te],
        "train_source_index": tr.astype(np.int32),
        "test_source_index": te.astype(np.int32),
    }
    # Write the zip by hand with a fixed timestamp so that rebuilding gives identical bytes.
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(args.out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(2021, 5, 3, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue(), compresslevel=9)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): {len(tr)} train, {len(te)} test")


if __name__ == "__main__":
    main()
