"""Grids of runs and their report: the seed report's Table 1, Figure 1, Figure 2 and memorisation.

    python -m cdr_fast.experiments table1 --dataset mnist --data-dir ../shared/data/mnist \\
        --epochs 10 --milestones 4 8 --out results/mnist
    python -m cdr_fast.experiments aux --dataset mnist --data-dir ../shared/data/mnist \\
        --aux-lrs 0.1 0.3 1 3 --baselines cdr --epochs 20 --milestones 10 20 --out results/mnist-aux
    python -m cdr_fast.experiments detection --data-root ../shared/data --out results/detection

Each command trains every cell it has not finished yet (a re-run resumes), then writes into
--out: runs/<cell>/ (metrics, summary, checkpoint), the combined CSV, the Markdown table and the
figures (PNG).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from collections import defaultdict
from pathlib import Path

from ..atomic_io import write_bytes_atomic, write_csv_atomic
from ..checks import check_choice, check_positive_int
from ..data import BUILT_IN, DatasetError
from ..noise import NOISE_TYPES
from ..training import METHODS, TrainConfig
from ..training.flags import INTEGER, NUMBER, HelpFormatter, add_config_flags
from .detection import report_detection
from .grid import Cell, run_grid
from .kfold import kfold_report
from .report import (
    METHOD_LABELS,
    figure_aux_sweep,
    figure_memorisation,
    figure_training_curves,
    seed_comparison_markdown,
    summary_rows,
    table1_markdown,
)
from .stats import paired_differences, stats_markdown

TABLE1_METHODS = ["sgd", "cdr", "aux", "cdr_aux"]
TABLE1_NOISE = ["instance", "asymmetric", "pairflip", "symmetric"]
TABLE1_RATES = [0.2, 0.4, 0.7]
DETECTION_NOISE = ["symmetric", "pairflip", "instance", "asymmetric"]
STATS_METRICS = {"test_acc_at_best_val": "Test accuracy at the best validation epoch",
                 "test_acc_last": "Test accuracy at the last epoch"}


def cell_name(c: TrainConfig) -> str:
    aux = f"_alr{c.aux_lr:g}" if c.method_spec.aux else ""
    return f"{c.dataset}_{c.noise_type}{round(100 * c.noise_rate)}_{c.method}_lam{c.aux_lambda:g}{aux}_s{c.seed}"


def base_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs, milestones=args.milestones,
                       engine=args.engine, device=args.device)


def grid_cells(base: TrainConfig, **axes: list) -> list[Cell]:
    """One cell per combination of the axes' values (TrainConfig fields), in order."""
    cells = []
    for values in itertools.product(*axes.values()):
        config = dataclasses.replace(base, **dict(zip(axes, values)))
        cells.append(Cell(cell_name(config), config))
    return cells


def table1_cells(args: argparse.Namespace) -> list[Cell]:
    return grid_cells(base_config(args), noise_type=args.noise_types, method=args.methods, noise_rate=args.rates,
                      seed=args.seeds)


def aux_cells(args: argparse.Namespace) -> list[Cell]:
    """Every AUX method at every (lambda, aux_lr); each baseline (a method without AUX) once."""
    swept = grid_cells(base_config(args), method=args.methods, noise_type=args.noise_types, aux_lambda=args.lambdas,
                       aux_lr=args.aux_lrs, noise_rate=args.rates, seed=args.seeds)
    baselines = grid_cells(base_config(args), method=args.baselines, noise_type=args.noise_types,
                           noise_rate=args.rates, seed=args.seeds)
    return swept + baselines


def detection_cells(args: argparse.Namespace) -> list[Cell]:
    """Every (dataset, noise type, rate) with the first seed; the other seeds at ``--all-seeds-rates``.
    Each run keeps every epoch's evidence, so the report can recompute any detector per epoch."""
    cells = []
    for dataset, noise, rate, seed in itertools.product(args.datasets, args.noise_types, args.rates, args.seeds):
        if seed != args.seeds[0] and rate not in args.all_seeds_rates:
            continue
        data_dir = str(args.data_root / dataset) if args.data_root is not None else None
        config = TrainConfig(method=args.method, dataset=dataset, data_dir=data_dir, noise_type=noise,
                             noise_rate=rate, seed=seed, epochs=args.epochs, milestones=args.milestones,
                             engine=args.engine, device=args.device)
        cells.append(Cell(cell_name(config), config, keep_epoch_evidence=True))
    return cells


def finished_runs(runs: Path) -> dict[str, dict]:
    """Summaries of every finished run under ``runs``: several commands may fill one results folder."""
    return {f.parent.name: json.loads(f.read_text()) for f in sorted(runs.glob("*/summary.json"))}


def report_table1(out: Path) -> None:
    summaries = finished_runs(out / "runs")
    rows = summary_rows(summaries)
    write_csv_atomic(out / "table1.csv", rows)
    write_bytes_atomic(out / "table1.md", table1_markdown(rows).encode())
    if {s["dataset"] for s in summaries.values()} == {"mnist"}:
        write_bytes_atomic(out / "table1_vs_seed.md", seed_comparison_markdown(rows).encode())
    main_rows = [r for r in rows if r["method"] in TABLE1_METHODS]
    write_csv_atomic(out / "table1_paired.csv", [{"metric": metric, **d} for metric in STATS_METRICS
                                                 for d in paired_differences(main_rows, metric)])
    write_bytes_atomic(out / "table1_stats.md", "\n".join(
        f"## {title}\n\n" + stats_markdown(main_rows, METHOD_LABELS, metric)
        for metric, title in STATS_METRICS.items()).encode())
    runs = out / "runs"
    every_seed = defaultdict(list)  # (noise, method, rate): run folders, lowest seed first
    for name, s in sorted(summaries.items(), key=lambda item: item[1]["seed"]):
        every_seed[(s["noise_type"], s["method"], s["noise_rate"])].append(runs / name)
    by_key = {key: folders[0] for key, folders in every_seed.items()}  # Figure 1 shows one seed
    for noise in sorted({k[0] for k in by_key}):
        curves = {(m, r): f for (n, m, r), f in by_key.items() if n == noise}
        method = "cdr_aux" if any(m == "cdr_aux" for m, _ in curves) else next(iter(curves))[0]
        figure_training_curves(curves, out / f"fig1_{noise}.png", method, noise)
        for rate in sorted({r for _, r in curves}):
            per_method = {m: folders for (n, m, r), folders in every_seed.items() if n == noise and r == rate}
            figure_memorisation(per_method, out / f"memorisation_{noise}{round(100 * rate)}.png",
                                f"{noise} noise, {round(100 * rate)}%")


def report_aux(out: Path) -> None:
    rows = summary_rows(finished_runs(out / "runs"))
    write_csv_atomic(out / "aux.csv", rows)
    swept = [r for r in rows if r["aux_lambda"] is not None]
    baselines = [r for r in rows if r["aux_lambda"] is None]
    for axis, name in (("aux_lambda", "fig2_lambda.png"), ("aux_lr", "aux_lr_sweep.png")):
        if len({r[axis] for r in swept}) > 1:
            figure_aux_sweep(swept, baselines, axis, out / name)
    # The seed's Figure 1 at the default settings, one panel per rate.
    default = TrainConfig()
    at_default = [r for r in swept if r["method"] == "cdr_aux" and r["aux_lambda"] == default.aux_lambda
                  and r["aux_lr"] == default.aux_lr and r["seed"] == min(x["seed"] for x in swept)]
    for noise in sorted({r["noise_type"] for r in at_default}):
        curves = {("cdr_aux", r["noise_rate"]): out / "runs" / r["cell"] for r in at_default if r["noise_type"] == noise}
        figure_training_curves(curves, out / f"fig1_{noise}.png", noise=noise)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cdr_fast.experiments", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("table1", "aux", "detection"):
        s = sub.add_parser(name, formatter_class=HelpFormatter)
        dataset = ("dataset", "data_dir") if name != "detection" else ()  # detection: --datasets, --data-root
        add_config_flags(s, (*dataset, "epochs", "milestones", "engine", "device"), dataset="mnist",
                         epochs=10, milestones=[4, 8])
        s.add_argument("--rates", type=NUMBER, nargs="+", default=TABLE1_RATES, help="noise rates")
        s.add_argument("--seeds", type=int, nargs="+", default=[1], help="one run per seed")
        s.add_argument("--workers", type=INTEGER, default=2, help="parallel runs (one thread each on the CPU)")
        s.add_argument("--out", type=Path, required=True, help="results folder%(default).0s")
    t = sub.choices["table1"]
    t.add_argument("--methods", nargs="+", choices=tuple(METHODS), default=TABLE1_METHODS, help="methods")
    t.add_argument("--noise-types", nargs="+", choices=NOISE_TYPES, default=TABLE1_NOISE, help="noise types")
    aux = sub.choices["aux"]
    defaults = TrainConfig()
    aux.add_argument("--lambdas", type=float, nargs="+", default=[defaults.aux_lambda], help="AUX lambdas")
    aux.add_argument("--aux-lrs", type=float, nargs="+", default=[defaults.aux_lr], help="AUX step sizes")
    aux.add_argument("--methods", nargs="+", choices=[m for m, spec in METHODS.items() if spec.aux],
                     default=["cdr_aux"])
    aux.add_argument("--baselines", nargs="*", choices=[m for m, spec in METHODS.items() if not spec.aux], default=[],
                     help="methods without AUX to run once per noise type and rate, for comparison")
    aux.add_argument("--noise-types", nargs="+", choices=NOISE_TYPES, default=["symmetric"], help="noise types")
    det = sub.choices["detection"]
    det.set_defaults(rates=[0.2, 0.4], seeds=[1, 2, 3], epochs=20, milestones=[10, 20])
    det.add_argument("--datasets", nargs="+", choices=BUILT_IN, default=["mnist", "fashion-mnist"], help="datasets")
    det.add_argument("--data-root", type=Path, default=None,
                     help="folder holding one folder per dataset (mnist/, fashion-mnist/)%(default).0s")
    det.add_argument("--method", choices=tuple(METHODS), default="cdr_aux", help="what each run trains with")
    det.add_argument("--noise-types", nargs="+", choices=NOISE_TYPES, default=DETECTION_NOISE, help="noise types")
    det.add_argument("--all-seeds-rates", type=NUMBER, nargs="*", default=[0.4],
                     help="rates that get every seed; the others get the first")
    det.add_argument("--kfold", nargs="*", default=[], metavar="CELL",
                     help="after the grid: K-fold out-of-sample probabilities for these finished cells (runs/ "
                          "folder names), against their in-sample evidence (kfold.csv; K trainings each)")
    det.add_argument("--folds", type=INTEGER, default=2, help="K, with --kfold")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cells = {"table1": table1_cells, "aux": aux_cells, "detection": detection_cells}[args.command](args)
    try:
        check_positive_int("workers", args.workers)
        for cell in cells:
            cell.config.validate()
        for name in getattr(args, "kfold", []):
            check_choice("--kfold cell", name, [c.name for c in cells])
        if getattr(args, "kfold", None) and args.folds < 2:
            raise ValueError(f"invalid --folds: {args.folds}; K-fold needs at least 2")
        run_grid(cells, args.out / "runs", workers=args.workers)
    except (ValueError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume", file=sys.stderr)
        return 130
    {"table1": report_table1, "aux": report_aux, "detection": report_detection}[args.command](args.out)
    if getattr(args, "kfold", None):
        kfold_report([args.out / "runs" / name for name in args.kfold], args.out, args.folds, args.workers)
    print(f"results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
