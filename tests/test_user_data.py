"""Your own data (folder tree and npz), made as a user would by scripts/make_example_datasets.py
from mnist-mini, trained end to end; and bad files, each a one-line error naming the culprit."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from cdr_fast.training import cli
from cdr_fast.data import DatasetError, load_dataset
from conftest import REPO

TINY = REPO / "tests" / "data"


def test_npz_keeps_its_labels_and_clean_labels():
    data = load_dataset("npz", TINY / "tiny.npz")
    with np.load(TINY / "tiny.npz") as z:
        assert (data.train_labels.numpy() == z["train_labels"]).all()
        assert (data.train_clean_labels.numpy() == z["train_clean_labels"]).all()
        assert data.train_images.shape == (300, 1, 28, 28) and data.test_images.shape == (100, 1, 28, 28)
        assert (z["train_labels"] != z["train_clean_labels"]).mean() > 0.25  # the example is noisy
    assert data.num_classes == 10
    assert abs(data.train_images.mean().item()) < 1e-4 and abs(data.train_images.std().item() - 1) < 1e-2


def test_folder_labels_are_the_folders():
    """The folder tree holds the npz's training images, each filed under its (noisy) label: the
    same (label, image) pairs come back, in another order."""
    folder = load_dataset("folder", TINY / "tiny_folder")
    npz = load_dataset("npz", TINY / "tiny.npz")
    assert folder.train_clean_labels is None and folder.num_classes == 10

    def pairs(data):  # each image's pixel sum, back on the 0-255 scale of its file
        mean, std = (torch.tensor(v, dtype=torch.float64).reshape(-1, 1, 1) for v in data.normalisation)
        pixels = ((data.train_images.double() * std + mean) * 255).round()
        return sorted(zip(data.train_labels.tolist(), pixels.flatten(1).sum(1).long().tolist()))

    assert pairs(folder) == pairs(npz)


@pytest.mark.parametrize("dataset,path,flags", [
    ("npz", TINY / "tiny.npz", ["--method", "cdr", "--tau", "auto", "--tau-warmup-steps", "20"]),
    ("folder", TINY / "tiny_folder", ["--method", "cdr_aux", "--tau", "0.3"]),
])
def test_trains_end_to_end(tmp_path, dataset, path, flags):
    out = tmp_path / "run"
    code = cli.main(["--dataset", dataset, "--data-dir", str(path), *flags, "--epochs", "2", "--batch-size", "16",
                     "--no-progress", "--out", str(out)])
    assert code == 0
    text = (out / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda name: pytest.fail(f"summary.json holds {name}: not JSON"))
    assert summary["config"]["noise_type"] == "none"  # labels as given: no synthetic noise on top
    if dataset == "npz":  # clean labels known: the realised rate and the estimate are real numbers
        assert abs(summary["realised_noise_rate"] - 95 / 300) < 0.05
        assert 0.0 <= summary["estimated_noise_rate"] < 1.0 and summary["tau"] == summary["estimated_noise_rate"]
        assert (out / "transition_estimated.csv").read_text().startswith("class,p0,")
    else:  # no clean labels: the clean-label metrics are unknown, not invented
        assert summary["realised_noise_rate"] is None and summary["memorised_noisy_last"] is None  # null, not NaN
        assert (out / "suspects.csv").read_text().startswith("index,file,split,given_label,given_class,suggested_label,"
                                                             "suggested_class,score,flagged")


def bad_npz(tmp_path, **changes):
    with np.load(TINY / "tiny.npz") as z:
        arrays = {k: z[k] for k in z.files}
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


def nan_images(*bad: int, size: int = 300) -> np.ndarray:
    """float images with a NaN (first) or an infinity (the others) in the images ``bad``."""
    images = np.random.default_rng(0).random((size, 28, 28), dtype=np.float32)
    for k, i in enumerate(bad):
        images[i, 3, 4] = np.nan if k == 0 else np.inf
    return images


@pytest.mark.parametrize("make,message", [
    (lambda tmp: bad_npz(tmp, train_labels=None), "missing array(s) train_labels"),
    (lambda tmp: bad_npz(tmp, train_labels=np.full(300, -1)), "[train_labels]: label -1 is negative"),
    (lambda tmp: bad_npz(tmp, test_labels=np.zeros(99, dtype=np.int64)), "[test_labels]: 99 labels for 100 images"),
    (lambda tmp: bad_npz(tmp, train_images=np.zeros((300, 5, 2, 2, 2), dtype=np.uint8)), "[train_images]: images must be"),
    (lambda tmp: bad_npz(tmp, train_images=np.zeros((300, 5), dtype=np.float32)), "train_images are (5,) but test_images (1, 28, 28)"),
    (lambda tmp: (tmp / "x.npz").write_bytes(b"not a zip") and tmp / "x.npz", "not an npz file (not a zip archive)"),
    (lambda tmp: np.save(tmp / "x.npy", np.zeros(3)) or tmp / "x.npy", "not an npz file (a single .npy array)"),
    (lambda tmp: (tmp / "t.npz").write_bytes(b"PK\x03\x04 truncated") and tmp / "t.npz", "cannot be read as npz"),
    (lambda tmp: bad_npz(tmp, train_images=nan_images(1, 7)), "[train_images]: 2 of 300 images hold NaN or infinite "
                                                                "values (the first: image 1)"),
    (lambda tmp: bad_npz(tmp, test_images=nan_images(0, 0, size=100)), "[test_images]: 1 of 100 images hold NaN"),
    # a label out of range is a mistake, not a class: one 12 among 0..9
    (lambda tmp: bad_npz(tmp, train_labels=np.where(np.arange(300) == 5, 12, np.arange(300) % 10)),
     "[train_labels]: class(es) [10, 11] never occur"),
    (lambda tmp: bad_npz(tmp, test_labels=np.where(np.arange(100) == 3, 10, np.arange(100) % 10)),
     "[test_labels]: label 10 never occurs in train_labels"),
    (lambda tmp: bad_npz(tmp, num_classes=np.array(8)), "[train_labels]: label 9 is not below num_classes 8"),
    (lambda tmp: bad_npz(tmp, num_classes=np.array([10, 10])), "[num_classes]: must be one positive integer"),
    (lambda tmp: tmp, "a folder, not an npz file (for an image tree, use --dataset folder)"),
])
def test_bad_npz_files_are_named(tmp_path, capsys, make, message):
    path = make(tmp_path)
    assert cli.main(["--dataset", "npz", "--data-dir", str(path), "--method", "sgd", "--no-progress", "--out",
                     str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err and len(err.strip().splitlines()) == 1


def test_an_npz_may_declare_classes_that_training_never_shows(tmp_path):
    """Classes 0..9 in the labels, 12 declared: the network gets 12 outputs, and nothing is refused."""
    from cdr_fast.data import load_dataset

    data = load_dataset("npz", bad_npz(tmp_path, num_classes=np.array(12)))
    assert data.num_classes == 12 and int(data.train_labels.max()) == 9


def test_a_folder_dataset_given_an_npz_file_says_which_flag_reads_it(tmp_path, capsys):
    assert cli.main(["--dataset", "folder", "--data-dir", str(TINY / "tiny.npz"), "--method", "sgd", "--out",
                     str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "tiny.npz: a file, not a folder" in err and "use --dataset npz" in err and len(err.strip().splitlines()) == 1


def copy_folder(tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(TINY / "tiny_folder", root)
    return root


def corrupt_image(root):
    victim = next((root / "train" / "4").glob("*.png"))
    victim.write_bytes(b"\x89PNG broken")
    return victim


def empty_class(root):
    shutil.rmtree(root / "train" / "7")
    (root / "train" / "7").mkdir()
    return root / "train" / "7"


def odd_size(root):
    from PIL import Image

    victim = next((root / "test" / "2").glob("*.png"))
    Image.new("L", (20, 20)).save(victim)
    return victim


@pytest.mark.parametrize("damage,message", [(corrupt_image, "not a readable image"), (empty_class, "empty class folder"),
                                            (odd_size, "image of 20x20 pixels, but the others are 28x28")])
def test_bad_folders_are_named(tmp_path, capsys, damage, message):
    root = copy_folder(tmp_path)
    culprit = damage(root)
    assert cli.main(["--dataset", "folder", "--data-dir", str(root), "--method", "sgd", "--no-progress", "--out",
                     str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(culprit) in err and len(err.strip().splitlines()) == 1


def test_missing_data_dir_and_missing_tau_are_explained(capsys):
    with pytest.raises(DatasetError, match="needs --data-dir"):
        load_dataset("npz", None)
    # CDR on data with no synthetic noise has no rate to default to: say so, and offer 'auto'.
    assert cli.main(["--dataset", "npz", "--data-dir", str(TINY / "tiny.npz"), "--method", "cdr"]) == 2
    assert "'auto'" in capsys.readouterr().err


def test_noise_added_to_your_labels_is_measured_against_them(tmp_path):
    """A folder has no clean labels, but with --noise-type pairflip the labels before the added noise
    are known: the realised rate and the clean-label metrics are measured against them."""
    out = tmp_path / "run"
    assert cli.main(["--dataset", "folder", "--data-dir", str(TINY / "tiny_folder"), "--method", "sgd",
                     "--noise-type", "pairflip", "--noise-rate", "0.3", "--epochs", "1", "--batch-size", "32",
                     "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert abs(summary["realised_noise_rate"] - 0.3) < 0.08 and summary["memorised_noisy_last"] is not None
    import csv

    row = next(csv.DictReader(open(out / "metrics.csv")))
    assert 0 <= float(row["train_acc_clean"]) <= 100  # measured, not n/a


def test_a_class_with_a_single_example_is_named_in_a_warning(tmp_path, capsys):
    labels = np.arange(300) % 10
    labels[0] = 10  # one example of an eleventh class
    path = bad_npz(tmp_path, train_labels=labels, num_classes=np.array(11))
    assert cli.main(["--dataset", "npz", "--data-dir", str(path), "--method", "sgd", "--epochs", "1", "--batch-size",
                     "64", "--no-progress", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "warning: 1 class(es) have fewer than 2 training examples after the validation split: '10' (" in out
