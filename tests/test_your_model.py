"""Your data, your model, as a new user brings them: feature vectors (find_labels.py, then
predict.py), a folder of RGB photos of mixed sizes with a pretrained backbone, a model factory of
your own, and the thread count a run records."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import find_labels
import predict
from cdr_fast import load_model
from cdr_fast.models import build_model
from cdr_fast.training import cli
from conftest import REPO

TINY = REPO / "tests" / "data"


def features_npz(path, seed: int, n: int = 400, d: int = 64, classes: int = 5, flip: float = 0.2):
    """Gaussian clusters in d dimensions (as embeddings of a pretrained network look), with a share
    ``flip`` of the training labels moved to another class."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(classes, d))
    clean = rng.integers(0, classes, n)
    test_y = rng.integers(0, classes, n // 4)
    noisy = clean.copy()
    flipped = rng.random(n) < flip
    noisy[flipped] = (clean[flipped] + rng.integers(1, classes, flipped.sum())) % classes
    np.savez(path, train_images=(centres[clean] + rng.normal(size=(n, d))).astype(np.float32), train_labels=noisy,
             train_clean_labels=clean, test_images=(centres[test_y] + rng.normal(size=(len(test_y), d))).astype(
                 np.float32), test_labels=test_y)
    return noisy, clean, test_y


def test_feature_vectors_train_with_the_mlp_find_their_flips_and_predict(tmp_path, fresh_seed, capsys):
    noisy, clean, test_y = features_npz(tmp_path / "emb.npz", fresh_seed)
    out = tmp_path / "run"
    assert find_labels.main(["--dataset", "npz", "--data-dir", str(tmp_path / "emb.npz"), "--method", "cdr", "--tau",
                             "0.2", "--epochs", "8", "--batch-size", "32", "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "mlp"  # the default for (n, d) data
    rows = list(csv.DictReader((out / "wrong_labels.csv").open()))
    assert not (out / "wrong_labels.png").exists()  # no picture of feature vectors
    precision = np.mean([noisy[int(r["index"])] != clean[int(r["index"])] for r in rows])
    assert precision > 2 * (noisy != clean).mean(), precision
    capsys.readouterr()
    assert predict.main(["--out", str(out)]) == 0
    assert "100 test examples of npz predicted" in capsys.readouterr().out
    probs = np.load(out / "predictions_test.npy")
    table = list(csv.DictReader((out / "predictions_test.csv").open()))
    assert probs.shape == (100, 5) and len(table) == 100
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert [int(r["predicted_label"]) for r in table] == probs.argmax(1).tolist()
    assert (probs.argmax(1) == test_y).mean() > 0.9  # well-separated clusters
    with torch.no_grad():  # cdr_fast.load_model is the same network
        from cdr_fast.data import load_dataset

        mine = torch.softmax(load_model(out)(load_dataset("npz", tmp_path / "emb.npz").test_images), 1).numpy()
    np.testing.assert_allclose(mine, probs, rtol=1e-5, atol=1e-6)


def photo_folder(root, seed: int):
    """3 classes of RGB photos of mixed sizes, told apart by their dominant colour."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", 10), ("test", 3)):
        for c, name in enumerate(("red", "green", "blue")):
            (root / split / name).mkdir(parents=True)
            for k in range(count):
                h, w = rng.integers(18, 40, 2)
                pixels = rng.integers(0, 90, (h, w, 3))
                pixels[..., c] += 150
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{k:03d}.png")


def test_photos_of_mixed_sizes_with_a_pretrained_backbone(tmp_path, capsys):
    photo_folder(tmp_path / "photos", seed=3)
    flags = ["--dataset", "folder", "--data-dir", str(tmp_path / "photos"), "--method", "sgd", "--epochs", "1",
             "--batch-size", "8", "--model", "resnet18", "--no-progress"]
    assert cli.main([*flags, "--out", str(tmp_path / "a")]) == 2
    assert "pass --image-size N to resize every image to N x N" in capsys.readouterr().err
    torch.manual_seed(0)
    torch.save(build_model("resnet18", 7, (3, 16, 16)).state_dict(), tmp_path / "backbone.pt")
    assert cli.main([*flags, "--image-size", "16", "--weights", str(tmp_path / "backbone.pt"), "--out",
                     str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "the classifier head linear is made anew (7 classes there, 3 here)" in out
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["input_shape"] == [3, 16, 16] and config["class_names"] == ["blue", "green", "red"]


def test_a_model_of_your_own_and_the_thread_count_are_recorded(tmp_path, capsys):
    threads = torch.get_num_threads()  # --threads sets the process's count: restored for the other tests
    out = tmp_path / "run"
    try:
        _own_model_and_threads(out, capsys)
    finally:
        torch.set_num_threads(threads)


def _own_model_and_threads(out, capsys):
    assert cli.main(["--dataset", "npz", "--data-dir", str(TINY / "tiny.npz"), "--method", "cdr", "--tau", "0.3",
                     "--model", "user_models:tiny", "--epochs", "1", "--batch-size", "64", "--threads", "1",
                     "--no-progress", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_built"] == "user_models:tiny" and config["threads"] == 1
    model = load_model(out)
    assert isinstance(model[1], torch.nn.Linear) and model[1].in_features == 28 * 28
    assert cli.main(["--resume", "--epochs", "2", "--threads", "2", "--no-progress", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "this run started at 1 thread(s) and continues at 2: it will not continue bit-identically" in err
    assert "CPU kernels" not in err  # the same machine
    assert config["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    config["cpu_capability"] = "ANOTHER"  # as a run begun on another kind of CPU records it
    (out / "config.json").write_text(json.dumps(config))
    assert cli.main(["--resume", "--epochs", "3", "--threads", "1", "--no-progress", "--out", str(out)]) == 0
    assert (f"this run started on torch's ANOTHER CPU kernels and continues on "
            f"{torch.backends.cpu.get_cpu_capability()} (another kind of CPU)") in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--out", "nowhere"], "nowhere/config.json: cannot read the run's settings"),
])
def test_predict_bad_input_is_one_line(capsys, argv, message):
    assert predict.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
