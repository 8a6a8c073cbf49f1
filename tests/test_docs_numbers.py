"""The numbers the docs state, recomputed from the committed run files, so that README.md and
results/README.md cannot drift from the runs behind them."""

from __future__ import annotations

import csv
import json
import re

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
    """Every row of the anchor estimator's table, and the notebook's bound for symmetric and
    pairflip noise at 20-40%."""
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
    assert f"within {worst['mnist-mini']:.3f} of the realised rate on mnist-mini and {worst['mnist']:.3f} on MNIST" in NOTEBOOK


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


# ---------------------------------------------------------------- finding wrong labels

DETECTION = RESULTS / "detection"


@pytest.fixture(scope="module")
def detection_final():
    """Final average precision per (dataset, noise, rate) and detector, over seeds; and per seed."""
    rows = [r for r in csv.DictReader(open(DETECTION / "detection.csv")) if r["epoch"] == "final"]
    per_seed: dict = {}
    for r in rows:
        per_seed.setdefault((r["dataset"], r["noise_type"], float(r["noise_rate"])), {}).setdefault(
            r["detector"], {})[r["seed"]] = r
    return per_seed


def mean_of(runs: dict, key: str = "average_precision") -> float:
    return sum(float(r[key]) for r in runs.values()) / len(runs)


def lead(detectors: dict) -> float:
    return mean_of(detectors["adaptive_posterior"]) - max(mean_of(detectors[b]) for b in ("small_loss",
                                                                                          "confident_learning"))


def test_the_detection_benchmark_claims(detection_final):
    cells = detection_final
    wins = sum(lead(d) > 0 for d in cells.values())
    assert f"ahead of both small loss and confident learning in **{wins} of {len(cells)} cells**" in NOTEBOOK
    assert f"in {wins} of {len(cells)} cells" in (DETECTION / "detection.md").read_text()

    def ap(cell, detector):
        return f"{mean_of(cells[cell][detector]):.4f}"

    fp = ("fashion-mnist", "pairflip", 0.4)
    assert (f"Fashion-MNIST pairflip 40% {ap(fp, 'adaptive_posterior')} against {ap(fp, 'confident_learning')} "
            f"(confident learning) and {ap(fp, 'small_loss')} (small loss)") in NOTEBOOK
    leads = {noise: sorted(lead(d) for (_, n, _), d in cells.items() if n == noise) for noise in ("symmetric",
                                                                                                   "instance")}
    assert f"symmetric noise ({leads['symmetric'][0]:+.4f} to {leads['symmetric'][-1]:+.4f}" in NOTEBOOK
    assert f"instance-dependent noise ({leads['instance'][0]:+.4f} to {leads['instance'][-1]:+.4f}" in NOTEBOOK
    def seeds_behind(cell):
        d = cells[cell]
        return sum(float(d["adaptive_posterior"][s]["average_precision"]) <
                   max(float(d[b][s]["average_precision"]) for b in ("small_loss", "confident_learning"))
                   for s in d["adaptive_posterior"])

    instance, symmetric = ("fashion-mnist", "instance", 0.4), ("fashion-mnist", "symmetric", 0.4)
    assert (f"on Fashion-MNIST it trails in {seeds_behind(instance)} of 3 seeds at instance 40% (by" in NOTEBOOK
            and f"and in {seeds_behind(symmetric)} of 3 at symmetric 40%" in NOTEBOOK)
    others = [c for c in cells if c not in (instance, symmetric) and len(cells[c]["small_loss"]) == 3]
    assert [seeds_behind(c) for c in others] == [0] * len(others)  # every other seed of every other cell: ahead


def test_the_corrections_and_the_k_fold_claims(detection_final):
    structured = [d for (_, n, _), d in detection_final.items() if n in ("pairflip", "asymmetric")]
    ours = [mean_of(d["adaptive_posterior"], "correction_accuracy") for d in structured]
    theirs = [mean_of(d["confident_learning"], "correction_accuracy") for d in structured]
    assert (f"right for {100 * min(ours):.1f}-{100 * max(ours):.1f}% of the truly wrong flagged labels under "
            f"class-structured noise (confident learning's: {100 * min(theirs):.1f}-{100 * max(theirs):.1f}%")\
        in NOTEBOOK
    rows = list(csv.DictReader(open(DETECTION / "kfold.csv")))
    by = {(r["dataset"], r["noise_type"], r["detector"], r["probabilities"]): float(r["average_precision"])
          for r in rows}
    assert all(by[k[:3] + ("2-fold",)] < v for k, v in by.items() if k[3] == "in-sample")  # every one worse
    cells = {(r["dataset"], r["noise_type"]) for r in rows}
    assert f"On {len(cells)} cells, 2-fold cross-validation" in NOTEBOOK and "made every detector worse" in NOTEBOOK
    memorised = [json.loads(f.read_text())["memorised_noisy_last"]
                 for f in (DETECTION / "runs").glob("mnist_*/summary.json")]
    assert f"at most {max(memorised):.1f}% of the flipped MNIST labels" in NOTEBOOK


def test_the_notebooks_detection_section():
    table = (DETECTION / "detection.md").read_text().split("\n\n", 1)[1].strip()
    assert " ".join(table.split()) in NOTEBOOK  # the report's table, as committed
    kfold = {(r["dataset"], r["noise_type"], r["detector"], r["probabilities"]): float(r["average_precision"])
             for r in csv.DictReader(open(DETECTION / "kfold.csv"))}
    for (dataset, noise, detector, reading), ap in kfold.items():
        if reading == "in-sample":
            row = (f"| {dataset} {noise} 40% | {detector.replace('_', ' ')} | {ap:.4f} | "
                   f"{kfold[(dataset, noise, detector, '2-fold')]:.4f} |")
            assert row in NOTEBOOK, row
    curves: dict = {}
    for r in csv.DictReader(open(DETECTION / "detection.csv")):
        if r["detector"] == "small_loss" and r["epoch"] != "final":
            curves.setdefault((r["dataset"], r["noise_type"], r["noise_rate"], r["seed"]), {})[int(r["epoch"])] = \
                float(r["average_precision"])
    assert all(max(c, key=c.get) >= 11 and max(c.values()) - c[20] <= 0.004 for c in curves.values())
    assert "peaks at or after epoch 11 (the first at the lower learning rate) in every run and is at most 0.004" \
        in NOTEBOOK
    memorised = {f.parent.name: json.loads(f.read_text())["memorised_noisy_last"]
                 for f in (DETECTION / "runs").glob("*/summary.json")}
    fashion_asym = [v for k, v in memorised.items() if k.startswith("fashion-mnist_asymmetric40")]
    fashion_instance = max(v for k, v in memorised.items() if k.startswith("fashion-mnist_instance"))
    assert (f"{fashion_instance:.1f}% under Fashion-MNIST instance noise, {min(fashion_asym):.0f}-"
            f"{max(fashion_asym):.0f}% under Fashion-MNIST asymmetric 40%") in NOTEBOOK


def test_the_detectors_under_plain_sgd():
    rows = {(r["dataset"], r["detector"], r["epoch"]): r
            for r in csv.DictReader(open(RESULTS / "detection-sgd" / "detection.csv"))}

    def auroc(dataset, detector, epoch):
        return f"{float(rows[(dataset, detector, epoch)]['auroc']):.3f}"

    assert (f"small loss's AUROC is {auroc('mnist', 'small_loss', '11')} at epoch 11 and "
            f"{auroc('mnist', 'small_loss', 'final')} at the end, confident learning's "
            f"{auroc('mnist', 'confident_learning', '11')} and {auroc('mnist', 'confident_learning', 'final')}") \
        in NOTEBOOK
    assert (f"{auroc('mnist', 'adaptive_posterior', '11')} at epoch 11, "
            f"{auroc('mnist', 'adaptive_posterior', 'final')} at the end") in NOTEBOOK
    for dataset in ("mnist", "fashion-mnist"):
        ap = [f"{float(rows[(dataset, d, 'final')]['average_precision']):.4f}"
              for d in ("adaptive_posterior", "small_loss", "confident_learning")]
        assert f"{ap[0]} against {ap[1]}" in NOTEBOOK and f"{ap[2]}" in NOTEBOOK


def test_the_canary_count_and_tau_auto_claims():
    """The held-out halves the README quotes for the canary count and --tau auto's warm-up,
    recomputed from results/detection-canaries/cells.csv and results/tau-canaries/cells.jsonl."""
    from cdr_fast.detection.count import CANARY_QUANTILE, CANARY_READING
    from cdr_fast.estimate import WARMUP_QUANTILE

    rows = list(csv.DictReader(open(RESULTS / "detection-canaries" / "cells.csv")))
    held_out = "6"  # scripts/detection_count.py's HELD_OUT
    tau_held_out = 4  # scripts/tau_canaries.py's HELD_OUT

    def held(detector, measure):
        return [r for r in rows if r["seed"] == held_out and r["detector"] == detector and r["measure"] == measure]

    count = held(f"unexplained_{CANARY_READING}_{CANARY_QUANTILE:g}", "count")
    clean = held(f"unexplained_{CANARY_READING}_{CANARY_QUANTILE:g}", "clean")
    before = held(f"small_loss_{CANARY_READING}_{CANARY_QUANTILE:g}", "count")
    whole = held(f"mutual_{CANARY_READING}_{CANARY_QUANTILE:g}", "count")
    cl = held("confident_learning", "count")
    assert len(count) == len(clean) == len(before) == len(whole) == len(cl) == 120

    def within(rs):
        return sum(int(r["within_goal"]) for r in rs)

    def under(rs):
        return sum(int(r["value"]) < int(r["truly_wrong"]) / 2 for r in rs)

    def over(rs):
        return sum(int(r["value"]) > 2 * int(r["truly_wrong"]) for r in rs)

    mnist = within([r for r in count if r["dataset"] == "mnist"])
    assert (f"in **{within(count)} of 120** (the whole overlap taken out: {within(whole)}; small loss: "
            f"{within(before)}; confident learning: {within(cl)})") in README
    assert f"MNIST {mnist} of 60, Fashion-MNIST {within(count) - mnist} of 60" in README
    assert f"Under half the truth in {under(count)} cells (small loss: {under(before)})" in README
    assert f"over twice it in {over(count)} (before: {over(whole)})" in README
    rule_before = held("names_the_class", "clean_rule")
    assert len(rule_before) == 120
    assert f"in **{within(clean)} of 120** (the rule before: {within(rule_before)})" in README

    def moved(dataset):
        rs = [r for r in clean if r["dataset"] == dataset]
        return within(rs), sum(int(r["introduced"]) for r in rs), sum(int(r["value"]) for r in rs)

    assert "MNIST {}, {} introduced against {:,} removed".format(*moved("mnist")) in README
    assert "Fashion-MNIST {}, {} against {:,}".format(*moved("fashion-mnist")) in README
    report = (RESULTS / "detection-canaries" / "README.md").read_text()
    same = re.search(r"- fashion-mnist: the copy's (\d+) introduced wrong labels over 60 runs are \d+ images; the ten "
                     r"most often relabelled account for (\d+)", report)
    assert int(same[1]) == moved("fashion-mnist")[1] and f"{same[2]} of those are 10 images" in README
    tau = [json.loads(line) for line in (RESULTS / "tau-canaries" / "cells.jsonl").read_text().splitlines()]
    tau = [r for r in tau if r["seed"] == tau_held_out]
    assert all(r["tau_auto"] == r[f"unexplained_{WARMUP_QUANTILE:g}"] for r in tau)

    def near(name, rows=tau):
        return sum(abs(r[name] - r["realised"]) <= 0.15 * r["realised"] + 0.002 for r in rows)

    assert f"in {near('tau_auto')} of {len(tau)} held-out cells (before: {near('previous')}" in README
    rerun = [json.loads(line) for line in (RESULTS / "tau-canaries" / "rerun-avx512" / "cells.jsonl").read_text().splitlines()]
    rerun = [r for r in rerun if r["seed"] == tau_held_out]
    assert len(rerun) == len(tau) and f"on another kind of CPU {near('tau_auto', rerun)} of {len(rerun)}" in README
    assert f"the held-out half has {near('tau_auto', rerun)} of {len(rerun)} (previous {near('previous', rerun)}" in NOTEBOOK
    # the whole training sets: the table's own tally (its runs are not committed), quoted in the README
    full = (RESULTS / "detection-canaries" / "README.md").read_text()
    section = full.split("## The whole training sets")[1].split("\n## ")[0]
    table = [line.split(" | ") for line in section.splitlines()
             if line.startswith("| mnist") or line.startswith("| fashion-mnist")]
    judged = 60_000 - 2_700  # the training set less its canaries

    def held_count(column):
        return sum(abs(int(r[column]) - int(r[4])) <= 0.15 * int(r[4]) + 0.002 * judged for r in table)

    new, previous, small = sum(r[6] == "yes" for r in table), held_count(7), held_count(8)
    assert new == held_count(5)
    assert (f"Of {len(table)} cells: the count is within the goal in **{new}** (the count before: {previous}; "
            f"the small-loss canary count: {small})") in full
    assert f"the count holds in {new} of {len(table)} held-out cells (before: {previous}; small loss: {small})" in README


def test_the_second_opinion_on_the_floor():
    """The floor's second opinion (results/detection-canaries/second-opinion.md), as the README and
    the notebook quote it."""
    rows = {}
    for line in (RESULTS / "detection-canaries" / "second-opinion.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| fashion-mnist"):
            rows[cells[1]] = cells
    floor, rest = rows["the no-noise floor (both methods)"], rows["never flagged"]
    count_and_share = re.compile(r"(\d+) \((\S+)\)")
    disputed, share = count_and_share.fullmatch(floor[3]).groups()
    rest_share = count_and_share.fullmatch(rest[3])[2]
    assert (f"names another class for {round(100 * float(share))}% of them ({round(100 * float(rest_share))}% of "
            "the images no run flagged)") in README
    assert f"names another class (above 1/2) for {disputed} of the {floor[2]} ({share})" in NOTEBOOK
    assert f"gives their given label {floor[4]} on average; for the {int(rest[2]):,} subset images" in NOTEBOOK
    assert f"{rest_share} and {rest[4]}" in NOTEBOOK
    often = next(v for k, v in rows.items() if k.startswith("flagged clean at 1%") and "half" in k)
    assert f"The {often[2]} clean images flagged in at least half" in NOTEBOOK
    assert f"{count_and_share.fullmatch(often[3])[2]} and {often[4]}" in NOTEBOOK
