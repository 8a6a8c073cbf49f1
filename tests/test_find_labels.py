"""find_labels.py as a new user meets it: a folder of images with known flips (tests/data: the
tiny npz's noisy labels as class folders, file NNNN.png being its example NNNN), and the npz."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import find_labels
from cdr_fast.data import load_dataset
from cdr_fast.detection import load_evidence
from cdr_fast.detection.count import canary_noise_rate
from conftest import REPO

TINY = REPO / "tests" / "data"
TRAIN = ["--method", "cdr", "--tau", "0.3", "--epochs", "10", "--batch-size", "16", "--no-progress"]


@pytest.fixture(scope="module")
def truth():
    with np.load(TINY / "tiny.npz") as z:
        return z["train_labels"], z["train_clean_labels"]


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("photos") / "run"
    assert find_labels.main(["--dataset", "folder", "--data-dir", str(TINY / "tiny_folder"), *TRAIN,
                             "--out", str(out)]) == 0
    return out


def example_of(file: str) -> int:
    return int(file.rsplit("/", 1)[1][:4])


def test_the_suspects_name_their_files_and_most_are_truly_wrong(folder_run, truth):
    noisy, clean = truth
    rows = list(csv.DictReader((folder_run / "wrong_labels.csv").open()))
    assert list(rows[0]) == ["rank", "index", "file", "split", "given_label", "given_class", "suggested_label",
                             "suggested_class", "score", "action"]  # no clean labels in a folder: no clean column
    assert {r["action"] for r in rows} <= {"relabel", "review"}
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    assert [float(r["score"]) for r in rows] == sorted((float(r["score"]) for r in rows), reverse=True)
    for r in rows:
        assert (TINY / "tiny_folder" / r["file"]).is_file()
        assert r["file"].split("/")[1] == r["given_class"] != r["suggested_class"]  # the class folder it sits in
    summary = json.loads((folder_run / "summary.json").read_text())
    evidence = load_evidence(folder_run)
    planted = round(find_labels.CANARIES * summary["num_train"])  # find_labels.py's default canaries
    assert int(evidence.canary.sum()) == planted and not evidence.canary[~evidence.trained].any()
    judged = summary["num_train"] + summary["num_val"] - planted  # every example but the canaries
    assert len(rows) == round(judged * evidence.flag_rate)
    assert not {int(r["index"]) for r in rows} & set(evidence.index[evidence.canary].tolist())
    assert {r["split"] for r in rows} <= {"train", "held_out"}
    examples = [example_of(r["file"]) for r in rows]
    assert all(noisy[i] == int(r["given_label"]) for i, r in zip(examples, rows))
    precision = np.mean([noisy[i] != clean[i] for i in examples])
    base_rate = (noisy != clean).mean()  # 0.32
    assert precision > 2 * base_rate, (precision, base_rate)
    right = [int(r["suggested_label"]) == clean[i] for i, r in zip(examples, rows) if noisy[i] != clean[i]]
    assert np.mean(right) > 0.5  # chance: 1 in 9


def test_the_picture_shows_the_top_suspects(folder_run):
    import matplotlib.image

    image = matplotlib.image.imread(folder_run / "wrong_labels.png")
    assert image.ndim == 3 and image.shape[0] > 600 and image.shape[1] > 1000  # 6 rows of 8 captioned images
    assert image[..., :3].std() > 0.1  # not blank


def test_the_cleaned_folder_relabels_only_what_it_is_sure_of_and_is_cleaner(folder_run, truth, tmp_path):
    noisy, clean = truth
    cleaned = load_dataset("folder", folder_run / "cleaned")
    original = load_dataset("folder", TINY / "tiny_folder")
    assert cleaned.class_names == original.class_names and len(cleaned.train_files) == len(original.train_files)
    assert sorted(map(example_of, cleaned.train_files)) == sorted(map(example_of, original.train_files))
    wrong_before = sum(noisy[example_of(f)] != clean[example_of(f)] for f in original.train_files)
    wrong_after = sum(int(f.split("/")[1]) != clean[example_of(f)] for f in cleaned.train_files)
    assert wrong_after <= wrong_before, (wrong_before, wrong_after)
    rows = list(csv.DictReader((folder_run / "wrong_labels.csv").open()))
    relabelled = [example_of(r["file"]) for r in rows if r["action"] == "relabel"]
    introduced = sum(noisy[i] == clean[i] for i in relabelled)  # a right label replaced by a wrong one
    removed = sum(noisy[i] != clean[i] and int(r["suggested_label"]) == clean[i]
                  for i, r in zip(relabelled, (r for r in rows if r["action"] == "relabel")))
    assert introduced <= max(1, removed / 10), (introduced, removed)
    for r in rows:  # a label kept for review stays in its folder
        if r["action"] == "review":
            assert (folder_run / "cleaned" / r["file"]).is_file()
    assert (cleaned.test_labels == original.test_labels).all()


def test_a_finished_run_gives_its_report_again_without_training_and_can_drop(folder_run, capsys):
    flagged = sum(1 for _ in (folder_run / "wrong_labels.csv").open()) - 1
    assert find_labels.main(["--out", str(folder_run), "--fix", "drop", "--top-images", "4", "--epochs", "99"]) == 0
    out, err = capsys.readouterr()
    assert "holds a finished run; the training flags (--epochs 99) are ignored" in err
    judged = 300 - int(load_evidence(folder_run).canary.sum())
    assert f"{flagged} suspects among {judged} examples (" in out and "the noise rate estimated from the evidence" in out
    assert "canaries are too few to count by, so by confident learning" in out  # 14 of them
    assert len(load_dataset("folder", folder_run / "cleaned").train_files) == 300 - flagged  # canaries kept
    assert find_labels.main(["--out", str(folder_run), "--flag", "0.5", "--top-images", "4"]) == 0
    half = round(judged / 2)
    assert f"{half} suspects among {judged} examples (50.0%, asked for)" in capsys.readouterr().out
    assert sum(1 for _ in (folder_run / "wrong_labels.csv").open()) == 1 + half
    find_labels.main(["--out", str(folder_run)])  # back to the estimate and relabel, for the other tests


def test_an_npz_gets_a_cleaned_npz_in_its_own_format(tmp_path, truth, capsys):
    noisy, clean = truth
    out = tmp_path / "run"
    assert find_labels.main(["--dataset", "npz", "--data-dir", str(TINY / "tiny.npz"), *TRAIN, "--canaries", "0.1",
                             "--out", str(out)]) == 0
    assert "measured against 27 planted canaries, whose labels are kept" in capsys.readouterr().out
    e = load_evidence(out)
    assert e.flag_rate == canary_noise_rate(e)  # 27 canaries: counted by them
    with np.load(out / "cleaned.npz") as z, np.load(TINY / "tiny.npz") as original:
        assert sorted(z.files) == sorted(original.files)
        assert (z["train_images"] == original["train_images"]).all()
        cleaned = z["train_labels"]
        assert (cleaned != clean).sum() <= (noisy != clean).sum()
        changed = cleaned != noisy  # only the relabelled, and they rarely break a right label
        assert ((noisy == clean) & changed).sum() <= max(1, ((noisy != clean) & changed & (cleaned == clean)).sum() / 10)
        assert (cleaned[e.canary] == noisy[e.canary]).all()  # a canary keeps its given label
    rows = list(csv.DictReader((out / "wrong_labels.csv").open()))
    assert "clean_label" in rows[0] and "file" not in rows[0]  # an npz with clean labels reports them
    assert not {int(r["index"]) for r in rows} & set(np.flatnonzero(e.canary).tolist())


@pytest.mark.parametrize("argv, message", [
    (["--fix", "nope", "--out", "x"], "argument --fix: invalid choice: 'nope' (choose from 'relabel', 'drop')"),
    ([], "the following arguments are required: --out"),
])
def test_bad_flags_are_argparse_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        find_labels.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"find_labels.py: error: {message}" in err


def test_bad_values_and_runs_without_evidence_are_one_line(tmp_path, capsys, folder_run):
    assert find_labels.main(["--out", str(folder_run), "--top-images", "0"]) == 2
    assert capsys.readouterr().err == "error: invalid top images: 0; must be a positive integer\n"
    assert find_labels.main(["--out", str(folder_run), "--flag", "1.5"]) == 2
    assert "error: invalid flag rate: 1.5" in capsys.readouterr().err
    (tmp_path / "summary.json").write_text("{}")
    assert find_labels.main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}: no finished run with its evidence (evidence.npz)" in err and len(err.splitlines()) == 1


def test_every_example_but_the_canaries_is_in_suspects_csv_with_its_file(folder_run):
    rows = list(csv.DictReader((folder_run / "suspects.csv").open()))
    files = load_dataset("folder", TINY / "tiny_folder").train_files
    e = load_evidence(folder_run)
    judged = [files[i] for i in e.index[e.judged]]
    assert sorted(r["file"] for r in rows) == sorted(judged)  # the validation split's examples too
    assert {r["split"] for r in rows} == {"train", "held_out"}
    assert all(r["file"] == files[int(r["index"])] for r in rows)
    assert all(r["file"].split("/")[1] == r["given_class"] for r in rows)  # class names, not numbers


def test_sigterm_during_the_report_is_one_line_and_status_143(tmp_path):
    """Trained in this process first (train.py's handlers were then directed at the run): a SIGTERM
    in the report afterwards must stop the process, not set a flag on the finished run."""
    import subprocess
    import sys

    code = ("import os, signal, sys, find_labels\n"
            "original = find_labels.label_report\n"
            "def report(*args, **kwargs):\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    return original(*args, **kwargs)\n"
            "find_labels.label_report = report\n"
            "sys.exit(find_labels.script_main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", code, "--dataset", "npz", "--data-dir", str(TINY / "tiny.npz"),
                           "--method", "cdr", "--tau", "0.3", "--epochs", "2", "--batch-size", "64", "--no-progress",
                           "--out", str(tmp_path / "run")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().splitlines() == ["stopped by SIGTERM: the run's folder holds what it had saved; the "
                                                "same command writes the report again"]
    assert (tmp_path / "run" / "summary.json").is_file() and not (tmp_path / "run" / "wrong_labels.csv").exists()


def test_a_failed_report_write_is_one_line_and_status_1(folder_run, capsys, monkeypatch):
    import errno

    import cdr_fast.wrong_labels.report as report

    def full(path, rows):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    before = (folder_run / "wrong_labels.csv").read_bytes()
    monkeypatch.setattr(report, "write_csv_atomic", full)
    assert find_labels.main(["--out", str(folder_run)]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: cannot write the report: {folder_run / 'wrong_labels.csv'} (No space left on device); "
                   "the run's own files are intact\n")
    assert (folder_run / "wrong_labels.csv").read_bytes() == before  # nothing written before it is lost
