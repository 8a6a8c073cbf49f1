"""The seed report's Table 1 on the published schedule (100 epochs, milestones 10 and 20), in
priority order, resumable; and which of its cells are done.

    python scripts/published_grid.py run --data-dir ../shared/data/mnist      # hours; re-run resumes
    python scripts/published_grid.py status                                   # writes STATUS.md
    python scripts/published_grid.py report        # the tables and figures again, from the finished runs

The phases, most wanted first: every 40% cell with seed 1; seeds 2 and 3 of the 40% column (the
paired statistics); RDI and CDR+RDI at 40% with seed 1 (8 cells: the seed's remark on them, answered
in under an hour); the 20% and 70% columns with seed 1 (32 cells, about 3 hours on 2 cores). Each
phase is one ``python -m cdr_fast.experiments table1`` command into the same folder, so the
report (table1.csv, table1_stats.md, the figures) covers every finished cell after each phase.
CI never runs this.
"""

from __future__ import annotations

import argparse
import csv
import itertools
from pathlib import Path

from cdr_fast.atomic_io import write_bytes_atomic
from cdr_fast.experiments import cli

OUT = Path("results/mnist-long")
EPOCHS = 100
SCHEDULE = ["--epochs", str(EPOCHS), "--milestones", "10", "20"]
PHASES = [
    ("40% column, seed 1", ["--rates", "0.4", "--seeds", "1"]),
    ("40% column, seeds 2 and 3", ["--rates", "0.4", "--seeds", "2", "3"]),
    ("RDI and CDR+RDI at 40%, seed 1", ["--methods", "rdi", "cdr_rdi", "--rates", "0.4", "--seeds", "1"]),
    ("20% and 70% columns, seed 1", ["--rates", "0.2", "0.7", "--seeds", "1"]),
]


def phase_argv(extra: list[str], data_dir: str, out: Path) -> list[str]:
    return ["table1", "--dataset", "mnist", "--data-dir", data_dir, *SCHEDULE, "--out", str(out), *extra]


def planned_cells(data_dir: str, out: Path) -> list[tuple[str, str]]:
    """(phase, cell name) for every cell of the plan."""
    cells = []
    for phase, extra in PHASES:
        args = cli.build_parser().parse_args(phase_argv(extra, data_dir, out))
        cells += [(phase, c.name) for c in cli.table1_cells(args)]
    return cells


def epochs_done(folder: Path) -> int:
    try:
        with open(folder / "metrics.csv") as f:
            return sum(1 for _ in csv.DictReader(f))
    except FileNotFoundError:
        return 0


def status(data_dir: str, out: Path) -> str:
    lines = ["# Published-schedule grid: status", "",
             "Made by `python scripts/published_grid.py status`; the plan and its order are in that script.", "",
             "| phase | done | in progress | not started |", "|---|---:|---:|---:|"]
    detail = []
    for phase, group in itertools.groupby(planned_cells(data_dir, out), key=lambda pc: pc[0]):
        done, running, todo = [], [], []
        for _, name in group:
            folder = out / "runs" / name
            if (folder / "summary.json").is_file():
                done.append(name)
            elif epochs_done(folder):
                running.append(f"{name} ({epochs_done(folder)}/{EPOCHS} epochs)")
            else:
                todo.append(name)
        lines.append(f"| {phase} | {len(done)} | {len(running)} | {len(todo)} |")
        detail += [f"- {phase}: in progress: {', '.join(running) or 'none'}; not started: {', '.join(todo) or 'none'}"]
    return "\n".join(lines + [""] + detail) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("run", "status", "report"))
    parser.add_argument("--data-dir", default="../shared/data/mnist")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.action == "run":
        for phase, extra in PHASES:
            print(f"== {phase}", flush=True)
            code = cli.main(phase_argv(extra, args.data_dir, args.out))
            if code:
                raise SystemExit(code)
    elif args.action == "report":  # from the committed summaries alone: no data, no training
        cli.report_table1(args.out)
        print(f"report in {args.out}")
    write_bytes_atomic(args.out / "STATUS.md", status(args.data_dir, args.out).encode())
    print(f"status in {args.out / 'STATUS.md'}")


if __name__ == "__main__":
    main()
