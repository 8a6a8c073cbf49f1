"""Cross-fitting (--folds K): every example scored by the network that never trained on it, the
folds' rows combined into one evidence file of the usual format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cdr_fast.detection import load_evidence
from cdr_fast.training import cli
from cdr_fast.training.split import fold_split
from conftest import REPO

TINY = REPO / "tests" / "data" / "tiny.npz"


def test_fold_split_is_a_balanced_seeded_partition():
    parts = [fold_split(11, 3, k, seed=5) for k in range(3)]
    held = torch.cat([h for _, h in parts]).sort().values
    assert torch.equal(held, torch.arange(11)) and sorted(len(h) for _, h in parts) == [3, 4, 4]
    for train, h in parts:
        assert not set(train.tolist()) & set(h.tolist()) and len(train) + len(h) == 11
    assert not torch.equal(fold_split(11, 3, 0, seed=6)[1], parts[0][1])


def test_each_example_comes_from_the_fold_that_held_it_out(tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--dataset", "npz", "--data-dir", str(TINY), "--method", "sgd", "--epochs", "2", "--batch-size", "32",
             "--no-progress", "--folds", "2", "--out", str(out)]
    assert cli.main(flags) == 0
    assert "every one of 300 examples scored out-of-sample" in capsys.readouterr().out
    combined = load_evidence(out)
    folds = [load_evidence(out / f"fold_{k}") for k in range(2)]
    assert not combined.trained.any() and combined.aux_offsets is None
    for part in folds:
        held = ~part.trained
        assert 100 < held.sum() < 200  # about half each
        for name in ("probs", "probs_mean", "probs_ema", "margin_mean"):
            np.testing.assert_array_equal(getattr(combined, name)[held], getattr(part, name)[held])
    assert (folds[0].trained ^ folds[1].trained).all()  # each example held out by exactly one fold
    summary = json.loads((out / "summary.json").read_text())
    assert summary["folds"] == 2 and len(summary["fold_summaries"]) == 2
    assert cli.main(flags) == 0  # again: both folds finished, only combined again


@pytest.mark.parametrize("argv, message", [(["--folds", "1", "--out", "x"], "needs to be 2 or more"),
                                           (["--folds", "3"], "needs --out DIR")])
def test_bad_folds_are_argparse_errors(capsys, argv, message):
    with pytest.raises(SystemExit):
        cli.main(argv)
    assert message in capsys.readouterr().err
