"""scripts/user_folder_trial.py's folder: the dataset's own images as PNG files, each filed under
its given class, the flips as the trial names them (no training)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO


@pytest.fixture(scope="module")
def trial():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import user_folder_trial
    finally:
        sys.path.remove(str(REPO / "scripts"))
    return user_folder_trial


@pytest.mark.parametrize("dataset, kind, rate", [("mnist", "pattern", 0.2), ("fashion-mnist", "symmetric", 0.03)])
def test_the_folder_holds_the_datasets_own_bytes_under_the_given_classes(trial, tmp_path, dataset, kind, rate):
    from cdr_fast.data.builtin import find_idx_dir, idx_file, read_idx

    truth = trial.build(tmp_path, dataset, kind, rate)
    idx = find_idx_dir(dataset, REPO.parent / "shared" / "data" / dataset)
    x, y = read_idx(idx_file(idx, "train-images-idx3-ubyte")), read_idx(idx_file(idx, "train-labels-idx1-ubyte"))
    by_class = [{image.tobytes() for image in x[y == c]} for c in range(10)]
    files = sorted((tmp_path / "train").glob("*/*.png"))
    assert len(files) == len(truth) == 10 * trial.PER_CLASS
    flipped = 0
    for f in files:
        pixels = np.asarray(Image.open(f))
        assert pixels.dtype == np.uint8 and pixels.shape == (28, 28)
        assert pixels.tobytes() in by_class[truth[f.name]]  # its true class's image, byte for byte
        given = int(f.parent.name)
        flipped += given != truth[f.name]
        if kind == "pattern" and given != truth[f.name]:
            assert given == (truth[f.name] + 1) % 10
    share = flipped / len(files)
    assert abs(share - rate) < 4 * (rate * (1 - rate) / len(files)) ** 0.5  # binomial: +- 4 sd
    assert len(list((tmp_path / "test").glob("*/*.png"))) == trial.TEST_IMAGES
