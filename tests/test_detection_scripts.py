"""The detection benchmarks' scripts without training: detection_count.py's --cells (the cells a
rerun trains, by shell patterns over their folder names), its subset's rows, and user_folder_trial.py's folder (the
dataset's own images as PNG files, each under its given class, the flips as the trial names them)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO


def import_script(name: str):
    """A module of scripts/, imported as the scripts import each other (scripts/ on the path)."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(REPO / "scripts"))


@pytest.fixture(scope="module")
def script():
    return import_script("detection_count")


@pytest.fixture(scope="module")
def trial():
    return import_script("user_folder_trial")


def jobs_for(script, names):
    """detection_count's job tuples: (data, folder, kind, rate, method, seed, canaries)."""
    jobs = []
    for name in names:
        k = script.key_of(name)
        jobs.append((Path("data.npz"), Path("/out/runs") / name, k["kind"], k["rate"], k["method"], k["seed"], 0.05))
    return jobs


def test_the_patterns_pick_their_cells_and_nothing_else(script):
    names = [script.cell_name(d, k, r, m, s) for d in ("mnist", "fashion-mnist") for k in ("symmetric", "pairflip")
             for r in (0.01, 0.2) for m in ("cdr_aux", "sgd") for s in (1, 6)]
    jobs = jobs_for(script, names)
    picked = [Path(j[1]).name for j in script.select_cells(jobs, ["fashion-mnist_symmetric01_*_s6",
                                                                   "mnist_pairflip20_sgd_s1"])]
    assert picked == ["mnist_pairflip20_sgd_s1", "fashion-mnist_symmetric01_cdr_aux_s6",
                      "fashion-mnist_symmetric01_sgd_s6"]
    # "mnist_*" is MNIST's alone: the pattern matches the whole name, not a part of it
    assert all(Path(j[1]).name.startswith("mnist_") for j in script.select_cells(jobs, ["mnist_*"]))
    assert len(script.select_cells(jobs, ["*"])) == len(jobs)


def test_a_pattern_that_matches_nothing_names_a_valid_cell(script):
    jobs = jobs_for(script, ["mnist_symmetric01_cdr_aux_s1"])
    with pytest.raises(ValueError, match=r"--cells cifar_\* matches no cell; cells are named like "
                                         r"mnist_symmetric01_cdr_aux_s1"):
        script.select_cells(jobs, ["cifar_*"])


def test_the_command_line_turns_it_into_a_usage_error(script, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(script, "subset", lambda dataset, out, full=False: tmp_path / f"{dataset}.npz")
    with pytest.raises(SystemExit) as stop:
        script.main(["--out", str(tmp_path), "--canaries", "0.05", "--cells", "nothing_*"])
    assert stop.value.code == 2
    assert "--cells nothing_* matches no cell" in capsys.readouterr().err


def test_the_subset_is_stratified_and_the_same_every_time(script):
    """The rows every cell trains on, and the rows floor_opinion.py's second opinion leaves out: a
    tenth of SIZE from each class, sorted, distinct, drawn the same way every time."""
    labels = np.random.default_rng().integers(0, 10, size=5_000)
    keep, test = script.subset_rows(labels, 1_500)
    assert np.array_equal(np.bincount(labels[keep], minlength=10), [script.SIZE // 10] * 10)
    assert np.all(np.diff(keep) > 0) and np.all(np.diff(test) > 0)
    assert test.size == script.TEST_SIZE and test.max() < 1_500
    again = script.subset_rows(labels, 1_500)
    assert np.array_equal(again[0], keep) and np.array_equal(again[1], test)


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
