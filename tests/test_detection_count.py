"""scripts/detection_count.py's --cells: the cells a rerun trains, chosen by shell patterns over
their folder names (no data, no training)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def script():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import detection_count
    finally:
        sys.path.remove(str(REPO / "scripts"))
    return detection_count


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
