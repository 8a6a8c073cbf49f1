"""What the detection benchmarks' scripts share: a cell's folder name and back, the cells.csv file
and the count's score (detection_count.py, canary_report.py)."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
METHODS = ("cdr_aux", "sgd")


def cell_name(dataset, kind, rate, method, seed) -> str:
    return f"{dataset}_{kind}{round(rate * 100):02d}_{method}_s{seed}"


def key_of(name: str) -> dict:
    """``cell_name``'s parts back from a folder's name."""
    rest, seed = name.rsplit("_s", 1)
    method = next(m for m in METHODS if rest.endswith("_" + m))
    dataset, kind_rate = rest[: -len(method) - 1].split("_", 1)
    return {"dataset": dataset, "kind": kind_rate[:-2], "rate": int(kind_rate[-2:]) / 100, "method": method,
            "seed": int(seed)}


def shown(out: Path) -> Path:
    """``out`` as a report's command line names it: relative to the repository where it lies inside it
    (the committed results), else as given (a run elsewhere)."""
    return out.relative_to(REPO) if out.is_relative_to(REPO) else out


def mean(values) -> float:
    return statistics.fmean(values) if values else float("nan")


def write_cells(out: Path, rows: list[dict], keys: list[str]) -> None:
    """cells.csv: one row per run and measure; ``keys`` name what the measure was taken on."""
    fields = ["dataset", "kind", "rate", "method", "seed", "measure", *keys, "detector", "value", "truly_wrong",
              "within_goal", "introduced", "reviewed"]
    with open(out / "cells.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows({k: r.get(k, "") for k in fields} for r in rows)


def goal_and_error(counts: list[dict]) -> tuple[int, float]:
    """Count rows: how many are within the goal, and minus their mean relative error (larger: better)."""
    return (sum(r["within_goal"] for r in counts),
            -mean([abs(r["value"] - r["truly_wrong"]) / max(r["truly_wrong"], 1) for r in counts]))


def write_readme(out: Path, lines: list[str]) -> str:
    """The report's lines as out/README.md; returns its text."""
    text = "\n".join(lines) + "\n"
    (out / "README.md").write_text(text)
    return text
