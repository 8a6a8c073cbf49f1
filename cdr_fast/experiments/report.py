"""Turn a grid's run folders into the combined CSV, the Table 1 Markdown and the figures."""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..atomic_io import write_bytes_atomic
from ..checks import check_choice
from ..detection import DETECTORS
from ..noise import NOISE_TYPES
from ..training import METHODS
from .seed_report import SEED_RATES, SEED_TABLE1

NOISE_ORDER = list(NOISE_TYPES)  # the registry's order is the seed report's block order
METHOD_LABELS = {name: method.label for name, method in METHODS.items()}
# Each detector's final measures (summary.json's "detection"), one column each, from the registry.
DETECTION_MEASURES = ("average_precision", "precision", "recall")
DETECTION_FIELDS = tuple(f"{d}_{m}" for d in DETECTORS for m in DETECTION_MEASURES)
CSV_FIELDS = ("cell", "dataset", "method", "noise_type", "noise_rate", "seed", "epochs", "aux_lambda", "aux_lr",
              "realised_noise_rate", "best_val_epoch", "best_val_acc", "test_acc_at_best_val", "test_acc_last",
              "memorised_noisy_last", "train_acc_noisy_aux_last", *DETECTION_FIELDS, "epoch_time_s_median", "engine",
              "device")


def summary_rows(summaries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for cell, s in sorted(summaries.items()):
        check_choice(f"method of run {cell}", s["method"], METHODS)  # never a run silently left out of a table
        check_choice(f"noise type of run {cell}", s["noise_type"], NOISE_TYPES)
        row = {"cell": cell, "aux_lambda": s["config"].get("aux_lambda"), "aux_lr": s["config"].get("aux_lr")}
        row.update({k: s[k] for k in CSV_FIELDS if k in s})
        for detector, measures in (s.get("detection") or {}).items():
            if isinstance(measures, dict):
                row.update({f"{detector}_{m}": measures.get(m) for m in DETECTION_MEASURES})
        rows.append({k: row.get(k) for k in CSV_FIELDS})
    return rows


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def table1_markdown(rows: list[dict[str, Any]], metric: str = "test_acc_at_best_val") -> str:
    """One block per noise type, one row per method, one column per rate; best of each column bold."""
    cells: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        cells[(r["noise_type"], r["method"], r["noise_rate"])].append(float(r[metric]))
    noise_types = sorted({k[0] for k in cells}, key=NOISE_ORDER.index)
    rates = sorted({k[2] for k in cells})
    methods = [m for m in METHOD_LABELS if any(k[1] == m for k in cells)]
    seeds = max(len(v) for v in cells.values())
    header = "| noise | method | " + " | ".join(f"{round(100 * r)}%" for r in rates) + " |"
    lines = [header, "|---|---|" + "---|" * len(rates)]
    for noise in noise_types:
        best = {rate: max((_mean_std(v)[0] for (n, _, r), v in cells.items() if n == noise and r == rate),
                          default=None) for rate in rates}
        for i, method in enumerate(m for m in methods if any(k[:2] == (noise, m) for k in cells)):
            entries = []
            for rate in rates:
                values = cells.get((noise, method, rate))
                if not values:
                    entries.append("")
                    continue
                mean, std = _mean_std(values)
                # A cell run once in a multi-seed table has no spread to show; "± 0.00" would claim one.
                if len(values) > 1:
                    text = f"{mean:.2f} ± {std:.2f}"
                else:
                    text = f"{mean:.2f} (n=1)" if seeds > 1 else f"{mean:.2f}"
                entries.append(f"**{text}**" if math.isclose(mean, best[rate]) else text)
            lines.append(f"| {noise if i == 0 else ''} | {METHOD_LABELS[method]} | " + " | ".join(entries) + " |")
    return "\n".join(lines) + "\n"


def seed_comparison_markdown(rows: list[dict[str, Any]], metric: str = "test_acc_at_best_val") -> str:
    """Our numbers beside the seed report's Table 1: 'ours (seed)' per cell, mean over our seeds."""
    ours: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        ours[(r["noise_type"], r["method"], float(r["noise_rate"]))].append(float(r[metric]))
    lines = ["| noise | method | 20% | 40% | 70% |", "|---|---|---|---|---|"]
    for noise, methods in SEED_TABLE1.items():
        for i, (method, seed_values) in enumerate(methods.items()):
            entries = []
            for rate, seed_value in zip(SEED_RATES, seed_values):
                values = ours.get((noise, method, rate))
                entries.append(f"{statistics.fmean(values):.2f} ({seed_value:.2f})" if values else f"- ({seed_value:.2f})")
            lines.append(f"| {noise if i == 0 else ''} | {METHOD_LABELS[method]} | " + " | ".join(entries) + " |")
    return "\n".join(lines) + "\n"


def read_metrics(folder: Path) -> list[dict[str, float]]:
    with open(folder / "metrics.csv") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def _save(fig, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    write_bytes_atomic(path, buf.getvalue())


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _epoch_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)


# Overlapping curves (methods that behave alike) stay visible with distinct dashes and markers.
STYLES = [dict(ls="-", marker="o"), dict(ls="--", marker="s"), dict(ls="-.", marker="^"), dict(ls=":", marker="D"),
          dict(ls="-", marker="v"), dict(ls="--", marker="x")]


def realised_rate(folder: Path, nominal: float) -> float:
    """The share of the run's training labels that are wrong; asymmetric noise flips only some
    classes, so at a nominal 40% it is about 16% on MNIST. The nominal rate where unknown."""
    try:
        realised = json.loads((folder / "summary.json").read_text())["realised_noise_rate"]
    except (FileNotFoundError, KeyError):
        return nominal
    return nominal if realised is None or math.isnan(realised) else realised


def figure_training_curves(runs: dict[tuple, Path], path: Path, method: str = "cdr_aux", noise: str = "") -> None:
    """Seed Figure 1: training accuracy on the noisy labels (of f(x), and of f(x) + lam B[i] with
    AUX) and validation accuracy against epochs, for ``method`` at each noise rate, with the ideal
    line 1 - realised rate. Markers keep a one-epoch run visible; a method other than CDR+AUX is
    named in the figure's title."""
    plt = _pyplot()
    rates = sorted(rate for (m, rate) in runs if m == method)
    fig, axes = plt.subplots(1, len(rates), figsize=(4.2 * len(rates), 3.4), squeeze=False, sharey=True)
    for ax, rate in zip(axes[0], rates):
        metrics = read_metrics(runs[(method, rate)])
        epochs = [m["epoch"] for m in metrics]
        ax.plot(epochs, [m["train_acc_noisy"] for m in metrics], marker="o", ms=3, label="train f(x) (noisy labels)")
        if not math.isnan(metrics[0].get("train_acc_noisy_aux", math.nan)):
            ax.plot(epochs, [m["train_acc_noisy_aux"] for m in metrics], marker="D", ms=3,
                    label="train f(x) + lam B[i] (noisy labels)")
        ax.plot(epochs, [m["val_acc"] for m in metrics], marker="s", ms=3, label="validation (noisy)")
        ax.plot(epochs, [m["train_acc_clean"] for m in metrics], ":", marker="^", ms=3, label="train (clean labels)")
        ax.axhline(100 * (1 - realised_rate(runs[(method, rate)], rate)), color="k", ls="--", lw=1,
                   label="ideal: 1 - realised noise rate")
        ax.set_title(" ".join(filter(None, (f"{METHOD_LABELS[method]}, {round(100 * rate)}%", noise, "noise"))))
        _epoch_axis(ax)
    axes[0][0].set_ylabel("accuracy (%)")
    if method != "cdr_aux":
        fig.suptitle(f"CDR+AUX is not in this grid: showing {METHOD_LABELS[method]}", fontsize=9, y=1.02)
    handles, labels = axes[0][0].get_legend_handles_labels()  # below the panels: never over a curve
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2 if len(rates) == 1 else 4,
               fontsize=8, frameon=False)
    _save(fig, path)
    plt.close(fig)


def curve_over_seeds(folders: list[Path], key: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """Epochs, and the mean, min and max of ``key`` over the runs in ``folders`` (one per seed),
    on the epochs every run has reached."""
    runs = [read_metrics(f) for f in folders]
    n = min(len(r) for r in runs)
    columns = [[r[e][key] for r in runs] for e in range(n)]
    return ([runs[0][e]["epoch"] for e in range(n)], [statistics.fmean(c) for c in columns],
            [min(c) for c in columns], [max(c) for c in columns])


def figure_memorisation(runs: dict[str, list[Path]], path: Path, title: str) -> None:
    """Why test accuracy falls: the share of noisy training examples whose noisy label the network
    predicts (left) and test accuracy (right) against epochs, per method. Each line is the mean
    over the method's seeds, with the band from the lowest to the highest seed."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    order = [m for m in METHOD_LABELS if m in runs]
    seeds = {len(folders) for folders in runs.values()}
    for ax, key, label in zip(axes, ("memorised_noisy", "test_acc"), ("noisy examples memorised (%)",
                                                                       "test accuracy (%)")):
        for method, style in zip(order, STYLES):
            epochs, mean, lo, hi = curve_over_seeds(runs[method], key)
            n = len(runs[method])
            name = METHOD_LABELS[method] + (f" ({n} seed{'s' if n > 1 else ''})" if len(seeds) > 1 else "")
            line, = ax.plot(epochs, mean, label=name, markersize=4, markevery=max(1, len(epochs) // 12), **style)
            if n > 1:
                ax.fill_between(epochs, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
        ax.set_ylabel(label)
        _epoch_axis(ax)
    if seeds == {1}:
        spread = "one seed"
    else:
        spread = (f"mean of {next(iter(seeds))} seeds" if len(seeds) == 1 else "mean over seeds") + ", band: lowest to highest"
    fig.suptitle(f"{title} ({spread})", fontsize=11)
    axes[0].legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)


AXIS_LABELS = {"aux_lambda": "AUX lambda", "aux_lr": "AUX table step size (aux_lr)"}


def figure_aux_sweep(rows: list[dict[str, Any]], baselines: list[dict[str, Any]], axis: str, path: Path,
                     metric: str = "test_acc_at_best_val") -> None:
    """Test accuracy against an AUX setting (the seed's Figure 2 for lambda), one curve per noise
    type and rate; each baseline method (no AUX) is a dashed line of the same colour."""
    plt = _pyplot()
    curves: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        curves[(r["method"], r["noise_type"], float(r["noise_rate"]))][float(r[axis])].append(float(r[metric]))
    flat: dict[tuple, list[float]] = defaultdict(list)
    for r in baselines:
        flat[(r["method"], r["noise_type"], float(r["noise_rate"]))].append(float(r[metric]))
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for (method, noise, rate), points in sorted(curves.items()):
        xs = sorted(points)
        line, = ax.plot(xs, [statistics.fmean(points[x]) for x in xs], "o-", ms=4,
                        label=f"{METHOD_LABELS[method]}, {noise} {round(100 * rate)}%")
        for (b_method, b_noise, b_rate), values in flat.items():
            if (b_noise, b_rate) == (noise, rate):
                ax.axhline(statistics.fmean(values), color=line.get_color(), ls="--", lw=1,
                           label=f"{METHOD_LABELS[b_method]}, {noise} {round(100 * rate)}%")
    ax.set_xscale("log")
    ticks = sorted({float(r[axis]) for r in rows})
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel(AXIS_LABELS[axis])
    ax.set_ylabel("test accuracy at best validation (%)")
    epochs = sorted({int(r["epochs"]) for r in rows})
    ax.set_title(f"{', '.join(map(str, epochs))} epochs; dashed: without AUX", fontsize=9)
    ax.grid(alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=7,
               frameon=False)
    _save(fig, path)
    plt.close(fig)
