"""The grid runner and its report: a small real grid, an interrupted cell, the table layout."""

from __future__ import annotations

import dataclasses

import csv
import math

import numpy as np

import pytest

from cdr_fast.detection import DETECTORS
from cdr_fast.experiments import cli as experiments
from cdr_fast.experiments.grid import Cell, run_grid
from cdr_fast.experiments.report import curve_over_seeds, figure_memorisation, table1_markdown
from cdr_fast.training import TrainConfig


def row(noise, method, rate, seed, acc):
    return {"noise_type": noise, "method": method, "noise_rate": rate, "seed": seed, "test_acc_at_best_val": acc}


def test_table_layout_bold_and_seeds():
    rows = [row("symmetric", "sgd", 0.2, 1, 90.0), row("symmetric", "sgd", 0.2, 2, 92.0),
            row("symmetric", "cdr", 0.2, 1, 93.0), row("symmetric", "cdr", 0.2, 2, 93.0),
            row("symmetric", "sgd", 0.4, 1, 80.0), row("symmetric", "sgd", 0.4, 2, 82.0),
            row("pairflip", "cdr", 0.4, 1, 70.0), row("pairflip", "cdr", 0.4, 2, 72.0),
            row("pairflip", "sgd", 0.2, 1, 75.5)]
    lines = table1_markdown(rows).splitlines()
    assert lines[0] == "| noise | method | 20% | 40% |"
    assert lines[2] == "| pairflip | SGD | **75.50 (n=1)** |  |"
    assert lines[3] == "|  | CDR |  | **71.00 ± 1.41** |"
    assert lines[4] == "| symmetric | SGD | 91.00 ± 1.41 | **81.00 ± 1.41** |"
    assert lines[5] == "|  | CDR | **93.00 ± 0.00** |  |"


def test_single_seed_has_no_spread():
    text = table1_markdown([row("symmetric", "sgd", 0.2, 1, 90.0), row("symmetric", "aux", 0.2, 1, 91.5)])
    assert "| symmetric | SGD | 90.00 |" in text and "| AUX | **91.50** |" in text


def write_metrics(folder, memorised):
    folder.mkdir()
    with open(folder / "metrics.csv", "w") as f:
        f.write("epoch,memorised_noisy,test_acc\n")
        f.writelines(f"{e},{m},{100 - m}\n" for e, m in enumerate(memorised, start=1))
    return folder


def test_memorisation_curves_over_seeds(tmp_path):
    """Mean, lowest and highest seed per epoch, on the epochs every seed has reached."""
    seeds = [write_metrics(tmp_path / "s1", [4.0, 10.0, 30.0]), write_metrics(tmp_path / "s2", [6.0, 2.0]),
             write_metrics(tmp_path / "s3", [5.0, 0.0, 1.0])]
    assert curve_over_seeds(seeds, "memorised_noisy") == ([1.0, 2.0], [5.0, 4.0], [4.0, 0.0], [6.0, 10.0])
    assert curve_over_seeds(seeds[:1], "test_acc") == ([1.0, 2.0, 3.0], [96.0, 90.0, 70.0], [96.0, 90.0, 70.0],
                                                        [96.0, 90.0, 70.0])
    figure_memorisation({"sgd": seeds, "cdr": seeds[:1]}, tmp_path / "m.png", "symmetric noise, 40%")
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_small_grid_end_to_end(tmp_path):
    out = tmp_path / "results"
    argv = ["table1", "--dataset", "mnist-mini", "--epochs", "2", "--milestones", "1", "--methods", "sgd", "cdr_aux",
            "--noise-types", "symmetric", "--rates", "0.2", "0.4", "--out", str(out)]
    assert experiments.main(argv) == 0
    rows = list(csv.DictReader((out / "table1.csv").open()))
    assert {(r["method"], float(r["noise_rate"])) for r in rows} == {(m, r) for m in ("sgd", "cdr_aux")
                                                                      for r in (0.2, 0.4)}
    table = (out / "table1.md").read_text()
    # Bold marks the best method of each rate column (every method that ties for it).
    for rate in (0.2, 0.4):
        accs = {r["method"]: float(r["test_acc_at_best_val"]) for r in rows if float(r["noise_rate"]) == rate}
        column = [line.split("|")[3 if rate == 0.2 else 4].strip() for line in table.splitlines()[2:]]
        bold = {m for m, cell in zip(("sgd", "cdr_aux"), column) if cell.startswith("**")}
        assert bold == {m for m, a in accs.items() if a == max(accs.values())}, (rate, column)
    for png in ("fig1_symmetric.png", "memorisation_symmetric20.png", "memorisation_symmetric40.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    # A re-run trains nothing and rewrites the same table.
    before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/summary.json")}
    assert experiments.main(argv) == 0
    assert before == {p: p.stat().st_mtime_ns for p in out.glob("runs/*/summary.json")}
    assert (out / "table1.md").read_text() == table


@pytest.mark.slow
def test_interrupted_cell_continues_from_its_checkpoint(tmp_path):
    # epoch 2 runs after the milestone: the resumed cell must bring the scheduler's state along
    config = TrainConfig(method="cdr", dataset="mnist-mini", epochs=2, milestones=[1], batch_size=64, engine="auto")
    # The uninterrupted run goes through the grid too: the same single-threaded worker, since the
    # thread count changes the order of reductions in conv backward.
    # With it, in the same grid, the "interrupted" cell: one epoch done and checkpointed, no summary.
    runs = tmp_path / "runs"
    expected = run_grid([Cell("straight", config), Cell("cell", TrainConfig(**{**config.__dict__, "epochs": 1}))],
                        runs, workers=1, log=lambda s: None)["straight"]
    (runs / "cell" / "summary.json").unlink()
    summaries = run_grid([Cell("cell", config)], runs, workers=1, log=lambda s: None)
    assert len(list(csv.DictReader((runs / "cell" / "metrics.csv").open()))) == 2
    for key in ("test_acc_last", "best_val_epoch", "test_acc_at_best_val", "memorised_noisy_last"):
        assert summaries["cell"][key] == expected[key]


def test_aux_sweep_command_and_bad_input(tmp_path, capsys):
    """Two lambdas x two table step sizes of CDR+AUX, and the CDR baseline once: five cells."""
    assert experiments.main(["aux", "--dataset", "mnist-mini", "--epochs", "1", "--milestones", "--lambdas", "1",
                             "3", "--aux-lrs", "0.3", "1", "--baselines", "cdr", "--rates", "0.4", "--workers", "1",
                             "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "aux.csv").open()))
    swept = sorted((float(r["aux_lambda"]), float(r["aux_lr"])) for r in rows if r["method"] == "cdr_aux")
    assert swept == [(1.0, 0.3), (1.0, 1.0), (3.0, 0.3), (3.0, 1.0)]
    assert [r["aux_lambda"] for r in rows if r["method"] == "cdr"] == [""]  # the baseline uses no lambda
    for png in ("fig2_lambda.png", "aux_lr_sweep.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    assert experiments.main(["table1", "--rates", "1.5", "--out", str(tmp_path / "bad")]) == 2
    assert "invalid noise rate: 1.5; valid values are [0, 1)" in capsys.readouterr().err


def test_seed_comparison_puts_ours_beside_the_seed():
    from cdr_fast.experiments.report import seed_comparison_markdown

    text = seed_comparison_markdown([row("symmetric", "cdr", 0.4, 1, 98.0), row("symmetric", "cdr", 0.4, 2, 99.0)])
    assert "| symmetric | SGD | - (98.74) | - (98.40) | - (96.06) |" in text
    assert "|  | CDR | - (98.88) | 98.50 (98.55) | - (96.63) |" in text


# ---------------------------------------------------------------- statistics over seeds

def _seed_table_rows():
    from cdr_fast.experiments.seed_report import SEED_RATES, SEED_TABLE1

    return [{"noise_type": n, "noise_rate": r, "method": m, "seed": 1, "test_acc_at_best_val": v}
            for n, methods in SEED_TABLE1.items() for m, values in methods.items()
            for r, v in zip(SEED_RATES, values)]


def test_claim_summary_reproduces_the_seed_reports_own_numbers_from_its_table():
    """The seed: 'an average increase of 1.44 points over SGD, 0.76 over CDR and 0.89 over AUX'."""
    from cdr_fast.experiments.stats import claim_summary

    over_all = {c["baseline"]: c for c in claim_summary(_seed_table_rows()) if c["scope"].startswith("all")}
    assert {b: round(c["mean_diff"], 2) for b, c in over_all.items()} == {"sgd": 1.44, "cdr": 0.76, "aux": 0.89}
    assert all(c["n"] == 12 for c in over_all.values())
    # read against itself, the seed column equals ours on every scope
    assert all(c["seed_report"] == pytest.approx(c["mean_diff"]) for c in claim_summary(_seed_table_rows()))


def test_seed_column_averages_the_seeds_table_over_the_same_cells():
    """Hand-computed from the seed's 40% column: CDR+AUX - SGD is (2.00 + 1.35 + 2.98 + 0.23) / 4."""
    from cdr_fast.experiments.stats import claim_summary

    rows = [r | {"seed": s, "test_acc_at_best_val": 90.0 + s + (r["method"] == "cdr_aux")}
            for r in _seed_table_rows() if r["noise_rate"] == 0.4 for s in (1, 2)]
    summary = {(c["baseline"], c["scope"]): c for c in claim_summary(rows)}
    assert summary[("sgd", "40% column, over seeds")]["seed_report"] == pytest.approx(6.56 / 4)
    assert summary[("sgd", "all cells, seed 1")]["seed_report"] == pytest.approx(6.56 / 4)
    assert summary[("sgd", "40% column, over seeds")]["mean_diff"] == pytest.approx(1.0)
    # another dataset's grid has no seed column: the seed's table is MNIST's
    fashion = [r | {"dataset": "fashion-mnist"} for r in rows]
    assert all(c["seed_report"] is None for c in claim_summary(fashion))


def test_mean_interval_is_the_hand_computed_t_interval():
    from cdr_fast.experiments.stats import mean_interval, t975

    iv = mean_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t(2) = 4.303
    assert iv.mean == 2.0 and iv.n == 3
    assert iv.low == pytest.approx(2 - 4.303 / 3 ** 0.5) and iv.high == pytest.approx(2 + 4.303 / 3 ** 0.5)
    single = mean_interval([5.0])
    assert single.mean == 5.0 and math.isnan(single.low) and math.isnan(single.high)
    assert t975(35) == 2.042  # between tabulated df: the smaller df's, a slightly wider interval
    with pytest.raises(ValueError):
        mean_interval([])


def test_paired_differences_pair_runs_by_seed():
    from cdr_fast.experiments.stats import paired_differences

    def row(method, seed, value):
        return {"noise_type": "pairflip", "noise_rate": 0.4, "method": method, "seed": seed, "test_acc_last": value}

    # seed 3 has SGD only: it must not enter the CDR - SGD difference
    rows = [row("sgd", 1, 90.0), row("sgd", 2, 80.0), row("sgd", 3, 10.0), row("cdr", 1, 91.0), row("cdr", 2, 83.0)]
    (d,) = [d for d in paired_differences(rows, "test_acc_last") if d["method"] == "cdr"]
    assert d["seeds"] == 2 and d["mean_diff"] == 2.0  # (1 + 3) / 2, not the unpaired 87 - 60
    assert d["ci_low"] == pytest.approx(2 - 12.706 * (2 ** 0.5) / 2 ** 0.5, abs=1e-3)


def test_detection_benchmark_recomputes_what_each_run_measured(tmp_path):
    """Two seeds at 40% and one at 20%, two epochs each: the report, recomputed from the evidence
    the runs kept, equals the rows each run measured while training (detection.csv)."""
    assert experiments.main(["detection", "--datasets", "mnist-mini", "--noise-types", "pairflip", "--rates", "0.2",
                             "0.4", "--seeds", "1", "2", "--epochs", "2", "--milestones", "--workers", "2",
                             "--kfold", "mnist-mini_pairflip20_cdr_aux_lam1_alr0.3_s1", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "detection.csv").open()))
    assert list(rows[0])[:6] == ["dataset", "noise_type", "noise_rate", "seed", "detector", "epoch"]
    assert list(rows[0])[7:] == ["auroc", "average_precision", "precision", "recall", "correction_accuracy"]
    runs = sorted((tmp_path / "runs").iterdir())
    assert [r.name for r in runs] == ["mnist-mini_pairflip20_cdr_aux_lam1_alr0.3_s1",
                                      "mnist-mini_pairflip40_cdr_aux_lam1_alr0.3_s1",
                                      "mnist-mini_pairflip40_cdr_aux_lam1_alr0.3_s2"]  # seed 2 only at 40%
    for run in runs:
        measured = list(csv.DictReader((run / "detection.csv").open()))
        seed, rate = int(run.name[-1]), float(run.name.split("pairflip")[1][:2]) / 100
        mine = [{k: v for k, v in r.items() if k not in ("dataset", "noise_type", "noise_rate", "seed")}
                for r in rows if int(r["seed"]) == seed and float(r["noise_rate"]) == rate]
        assert mine == measured
        detectors = len(DETECTORS)  # every registry entry, AUX's offsets included (a CDR+AUX cell)
        assert [r["epoch"] for r in measured] == ["1"] * detectors + ["2"] * detectors + ["final"] * detectors
        assert len(list((run / "evidence").glob("epoch_*.npz"))) == 2
    table = (tmp_path / "detection.md").read_text()
    assert "| mnist-mini | pairflip | 40% | 2 |" in table and "| mnist-mini | pairflip | 20% | 1 |" in table
    assert (tmp_path / "detection_epochs_mnist-mini.png").read_bytes()[:4] == b"\x89PNG"
    # K-fold: the same cell's detectors on in-sample and on 2-fold out-of-sample probabilities
    kfold = list(csv.DictReader((tmp_path / "kfold.csv").open()))
    assert [(r["probabilities"], r["detector"]) for r in kfold] == [
        (reading, d) for reading in ("in-sample", "2-fold") for d in DETECTORS if d != "aux_offsets"]
    in_sample = {r["detector"]: r for r in kfold if r["probabilities"] == "in-sample"}
    from cdr_fast.detection import average_precision, load_evidence

    e = load_evidence(runs[0])  # the in-sample reading is the run's own final one, on the examples it trained on
    y, wrong, probs = e.given_label[e.trained], e.truly_noisy[e.trained], e.probs[e.trained]
    for d in ("small_loss", "confident_learning"):
        score = DETECTORS[d].suspects(dataclasses.replace(e, given_label=y, probs=probs, index=y, probs_mean=probs,
                                                          probs_ema=probs, margin_mean=y, trained=None, files=None,
                                                          clean_label=None, aux_offsets=None)).score
        assert float(in_sample[d]["average_precision"]) == pytest.approx(average_precision(score, wrong), abs=1e-6)
    assert all(0.5 < float(r["auroc"]) <= 1 for r in kfold)  # two epochs of out-of-sample LeNet still rank


def test_kfold_folds_are_balanced_and_seeded():
    from cdr_fast.experiments.kfold import fold_of

    folds = fold_of(11, 3, seed=5)
    assert sorted(np.bincount(folds).tolist()) == [3, 4, 4]
    assert (fold_of(11, 3, seed=5) == folds).all() and not (fold_of(11, 3, seed=6) == folds).all()
