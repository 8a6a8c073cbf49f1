"""scripts/published_grid.py: the plan of the 100-epoch grid, its STATUS.md, and the report made
again from committed runs (no data, no training)."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import shutil
import sys

import pytest

from conftest import REPO

COMMITTED = REPO / "results" / "mnist-long" / "runs"


@pytest.fixture(scope="module")
def grid():
    spec = importlib.util.spec_from_file_location("published_grid", REPO / "scripts" / "published_grid.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def status_counts(text: str) -> dict[str, tuple[int, int, int]]:
    rows = re.findall(r"^\| (.+?) \| (\d+) \| (\d+) \| (\d+) \|$", text, flags=re.M)
    return {phase: tuple(map(int, counts)) for phase, *counts in rows}


def test_plan_covers_the_seed_table_and_no_cell_twice(grid, tmp_path):
    cells = [name for _, name in grid.planned_cells("unused", tmp_path)]
    assert len(cells) == len(set(cells)) == 16 * 3 + 8 + 32  # 40% x 3 seeds, RDI pair at 40%, 20%/70% seed 1
    for noise in ("symmetric", "pairflip", "asymmetric", "instance"):
        for rate in (20, 40, 70):
            for method in ("sgd", "cdr", "aux", "cdr_aux"):
                assert any(c.startswith(f"mnist_{noise}{rate}_{method}_lam1") for c in cells), (noise, rate, method)


def test_status_counts_done_running_and_missing(grid, tmp_path):
    plan = grid.planned_cells("unused", tmp_path)
    (first_phase, done), (_, running) = plan[0], plan[1]
    (tmp_path / "runs" / done).mkdir(parents=True)
    (tmp_path / "runs" / done / "summary.json").write_text("{}")
    (tmp_path / "runs" / running).mkdir()
    (tmp_path / "runs" / running / "metrics.csv").write_text("epoch,test_acc\n1,50\n2,60\n3,70\n")
    text = grid.status("unused", tmp_path)
    phase_size = sum(1 for phase, _ in plan if phase == first_phase)
    counts = status_counts(text)
    assert counts[first_phase] == (1, 1, phase_size - 2)
    assert all(c == (0, 0, sum(1 for p, _ in plan if p == phase)) for phase, c in counts.items() if phase != first_phase)
    assert f"{running} (3/{grid.EPOCHS} epochs)" in text


@pytest.mark.skipif(not COMMITTED.is_dir(), reason="no committed runs")
def test_report_from_committed_runs_alone(grid, tmp_path, monkeypatch):
    """Two committed cells copied to a fresh folder: `report` rebuilds table1.csv from their
    summaries (and the figures from their metrics) with no data directory at all."""
    names = ["mnist_symmetric40_sgd_lam1_s1", "mnist_symmetric40_cdr_aux_lam1_alr0.3_s1"]
    for name in names:
        shutil.copytree(COMMITTED / name, tmp_path / "runs" / name,
                        ignore=shutil.ignore_patterns("checkpoint.pt", "suspects.csv"))
    monkeypatch.setattr(sys, "argv", ["published_grid.py", "report", "--out", str(tmp_path),
                                      "--data-dir", str(tmp_path / "no-such-dir")])
    grid.main()
    with open(tmp_path / "table1.csv") as f:
        rows = {r["cell"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(names)
    for name in names:
        summary = json.loads((tmp_path / "runs" / name / "summary.json").read_text())
        assert float(rows[name]["test_acc_at_best_val"]) == summary["test_acc_at_best_val"]
        assert int(rows[name]["epochs"]) == 100
    assert (tmp_path / "memorisation_symmetric40.png").stat().st_size > 0
    assert status_counts((tmp_path / "STATUS.md").read_text())["40% column, seed 1"] == (2, 0, 14)
