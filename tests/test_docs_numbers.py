"""The numbers the docs state, recomputed from the committed run files, so that README.md and
results/README.md cannot drift from the runs behind them."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from cdr_fast.experiments.cli import TABLE1_METHODS, finished_runs
from cdr_fast.experiments.report import summary_rows
from cdr_fast.experiments.stats import claim_summary
from conftest import REPO

RESULTS = REPO / "results"


def text(path) -> str:
    """The document with its typographic minus signs read as hyphens, and its line breaks as spaces."""
    return " ".join(path.read_text().replace("\u2212", "-").split())


README, NOTEBOOK = text(REPO / "README.md"), text(RESULTS / "README.md")


def interval(c: dict) -> str:
    return f"{c['mean_diff']:+.2f} [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]"


@pytest.fixture(scope="module")
def published_rows():
    rows = summary_rows(finished_runs(RESULTS / "mnist-long" / "runs"))
    return [r for r in rows if r["method"] in TABLE1_METHODS]


def test_the_seed_headline_margins(published_rows):
    best = {(c["baseline"], c["scope"]): interval(c) for c in claim_summary(published_rows, "test_acc_at_best_val")}
    last = {(c["baseline"], c["scope"]): interval(c) for c in claim_summary(published_rows, "test_acc_last")}
    every, column = "all cells, seed 1", "40% column, over seeds"
    for baseline in ("sgd", "cdr", "aux"):
        assert best[(baseline, every)] in README, baseline
        assert best[(baseline, column)] in README, baseline
    assert last[("sgd", column)] in README
    for baseline in ("sgd", "cdr", "aux"):  # the notebook's whole-table reading, at both epochs
        assert f"{best[(baseline, every)]} | {last[(baseline, every)]} |" in NOTEBOOK, baseline
        assert f"{best[(baseline, column)]} | {last[(baseline, column)]} |" in NOTEBOOK, baseline


def test_the_aux_defaults_gains_over_cdr():
    rows = {(r["method"], r["noise_type"], r["aux_lr"]): r for r in csv.DictReader(open(RESULTS / "mnist-aux" / "aux.csv"))}

    def gain(noise: str, metric: str) -> str:
        return f"+{float(rows[('cdr_aux', noise, '0.3')][metric]) - float(rows[('cdr', noise, '')][metric]):.1f}"

    claim = (f"{gain('pairflip', 'test_acc_at_best_val')} (pairflip) and {gain('instance', 'test_acc_at_best_val')} "
             f"points (instance) over CDR alone at the best epoch, and {gain('instance', 'test_acc_last')} at the last")
    assert claim in README


def test_the_estimators_errors():
    """Every row of the estimator's table, and the README's bound for symmetric and pairflip
    noise at 20-40%."""
    runs = {ds: list(csv.DictReader(open(RESULTS / "noise-estimates" / f"estimates_{ds}.csv")))
            for ds in ("mnist-mini", "mnist")}
    worst = {}
    for ds, rows in runs.items():
        for r in rows:
            realised, estimated = float(r["realised_rate"]), float(r["estimated_rate"])
            cells = f"{realised:.3f} | {estimated:.3f} | {estimated - realised:+.3f}"
            assert cells.replace("+0.000", "-0.000") in NOTEBOOK or cells in NOTEBOOK, (ds, r["noise_type"], r["noise_rate"])
            if r["noise_type"] in ("symmetric", "pairflip") and float(r["noise_rate"]) <= 0.4:
                worst[ds] = max(worst.get(ds, 0.0), abs(estimated - realised))
    assert f"within {worst['mnist-mini']:.3f} of the realised rate on mnist-mini and {worst['mnist']:.3f} on MNIST" in README


def test_the_default_run_and_the_25_epoch_table():
    for folder in sorted((RESULTS / "default-job").iterdir()):
        s = json.loads((folder / "summary.json").read_text())
        threads = folder.name.rsplit("threads", 1)[1]
        row = (f"| `{s['method']}` | {threads} | {s['test_acc_at_best_val']:.2f} ({s['best_val_epoch']}) | "
               f"{s['test_acc_last']:.2f} | {s['memorised_noisy_last']:.1f}% |")
        assert row in NOTEBOOK, folder.name
    for folder in sorted((RESULTS / "mnist-25" / "runs").iterdir()):
        s = json.loads((folder / "summary.json").read_text())
        assert s["engine"] == "reference" and s["epochs"] == 25
        row = (f"| `{s['method']}` | {s['test_acc_at_best_val']:.2f} ({s['best_val_epoch']}) | {s['test_acc_last']:.2f} | "
               f"{s['memorised_noisy_last']:.1f}% |")
        assert row in NOTEBOOK, folder.name


def test_asymmetric_noise_facts(published_rows, mnist):
    """'a realised rate of about 0.39 r on MNIST', and the 61.1% cap at asymmetric 70%."""
    ratios = {round(float(r["realised_noise_rate"]) / float(r["noise_rate"]), 2)
              for r in published_rows if r["noise_type"] == "asymmetric"}
    assert ratios == {0.39}
    untouched = ~torch.isin(mnist.test_labels, torch.tensor([2, 3, 5, 6]))
    assert f"exceed {100 * untouched.double().mean().item():.1f}%" in README
