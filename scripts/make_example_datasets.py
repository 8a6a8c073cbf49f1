"""Build the tiny example datasets in tests/data/ from the embedded mnist-mini, as a user would.

    python scripts/make_example_datasets.py

- tests/data/tiny.npz: 30 training and 10 test digits per class; the training labels carry 30%
  symmetric noise (seeded), and train_clean_labels holds the true ones.
- tests/data/tiny_folder/{train,test}/<digit>/<n>.png: the same images as PNG files, each
  training image filed under its noisy label, as a mislabelled folder tree would be.

The output is deterministic: rerunning rewrites the same bytes.
"""

from __future__ import annotations

import argparse
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cdr_fast import noisify

REPO = Path(__file__).resolve().parent.parent


def pick(labels: np.ndarray, per_class: int) -> np.ndarray:
    return np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "data")
    args = parser.parse_args()
    with resources.as_file(resources.files("cdr_fast.data") / "mnist_mini.npz") as path, np.load(path) as z:
        train_x, train_y, test_x, test_y = (z[k] for k in ("train_images", "train_labels", "test_images",
                                                            "test_labels"))
    train = pick(train_y, 30)
    test = pick(test_y, 10)
    train_x, clean, test_x, test_y = train_x[train], train_y[train].astype(np.int64), test_x[test], test_y[test]
    noisy = noisify(torch.from_numpy(clean), "symmetric", 0.3, 10, seed=0).labels.numpy()
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "tiny.npz", train_images=train_x, train_labels=noisy, train_clean_labels=clean,
                        test_images=test_x, test_labels=test_y.astype(np.int64))
    folder = args.out / "tiny_folder"
    shutil.rmtree(folder, ignore_errors=True)
    for split, images, labels in (("train", train_x, noisy), ("test", test_x, test_y)):
        for i, (image, label) in enumerate(zip(images, labels)):
            target = folder / split / str(int(label))
            target.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(target / f"{i:04d}.png", optimize=True)
    print(f"wrote {args.out / 'tiny.npz'} and {folder}: {len(train)} training images "
          f"({int((noisy != clean).sum())} mislabelled), {len(test)} test images")


if __name__ == "__main__":
    main()
