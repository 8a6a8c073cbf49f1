"""Run a grid of training runs (cells) in parallel worker processes, resumably, with progress.

Each cell is one ``TrainConfig`` and one folder. A re-run skips cells whose ``summary.json``
exists and continues an interrupted cell from its checkpoint (bit-identical, see
``cdr_fast.training``). Workers are separate processes with one intra-op thread each: on a small
CPU, two single-threaded LeNet runs side by side finish a grid faster than one run using both
cores (per-op overhead dominates at batch 32). On a CUDA machine the workers share the GPU
(each cell's config says ``device="auto"``), and each summary records where it ran.
"""

from __future__ import annotations

import csv
import os
import statistics
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from ..training import RunFolder, TrainConfig, Trainer


@dataclass(frozen=True)
class Cell:
    name: str  # folder name under the grid's runs/ folder
    config: TrainConfig
    keep_epoch_evidence: bool = False  # also keep each epoch's probabilities (the detection benchmark)


def run_cell(cell: Cell, folder: str) -> dict[str, Any]:
    """Worker: train one cell to the end (resuming if a checkpoint exists); returns its summary."""
    import torch

    torch.set_num_threads(1)
    run = RunFolder(folder)
    resuming = run.begin(resume=None)
    try:
        trainer = Trainer(cell.config, run, progress=False, log=lambda line: None,
                          keep_epoch_evidence=cell.keep_epoch_evidence)
        if resuming:
            trainer.resume()
        return trainer.fit()
    finally:
        run.release()


def _epochs_done(folder: Path) -> tuple[int, list[float]]:
    """Epochs finished and their durations, read from the cell's metrics.csv."""
    try:
        with open(folder / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        return 0, []
    return len(rows), [float(r["epoch_time_s"]) for r in rows]


def _fmt(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def run_grid(cells: list[Cell], runs_dir: Path, workers: int = 2, log=print) -> dict[str, dict[str, Any]]:
    """Train every cell (skipping finished ones); returns {cell name: summary}."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    summaries: dict[str, dict[str, Any]] = {}
    todo = []
    for cell in cells:
        run = RunFolder(runs_dir / cell.name)
        if run.is_finished():
            summaries[cell.name] = run.summary()
        else:
            todo.append(cell)
    log(f"grid: {len(cells)} cells, {len(cells) - len(todo)} already done, {len(todo)} to run on {workers} workers")
    if not todo:
        return summaries

    total_epochs = sum(c.config.epochs for c in todo)
    start = time.perf_counter()
    env_threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the spawned workers
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            running = {pool.submit(run_cell, c, str(runs_dir / c.name)): c for c in todo}
            done_cells = 0
            while running:
                finished, _ = wait(running, timeout=15, return_when=FIRST_COMPLETED)
                for future in finished:
                    cell = running.pop(future)
                    summaries[cell.name] = future.result()  # a failed cell raises here, naming itself below
                    done_cells += 1
                    s = summaries[cell.name]
                    log(f"[{done_cells}/{len(todo)}] {cell.name}: test {s['test_acc_at_best_val']:.2f}% at best val "
                        f"(epoch {s['best_val_epoch']}), {s['test_acc_last']:.2f}% last")
                _report_progress(todo, runs_dir, running.values(), total_epochs, start, workers, log)
    finally:
        if env_threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env_threads
    return summaries


def _report_progress(todo, runs_dir, running, total_epochs, start, workers, log) -> None:
    done_epochs, times = 0, []
    for cell in todo:
        n, t = _epochs_done(runs_dir / cell.name)
        done_epochs += n
        times += t
    if not times or not running:
        return
    per_epoch = statistics.median(times)
    eta_all = (total_epochs - done_epochs) * per_epoch / workers
    cells = []
    for cell in running:  # submitted cells; those without a folder yet are still queued
        if (runs_dir / cell.name).is_dir():
            n, _ = _epochs_done(runs_dir / cell.name)
            cells.append(f"{cell.name} {n}/{cell.config.epochs} (ETA {_fmt((cell.config.epochs - n) * per_epoch)})")
    log(f"  {done_epochs}/{total_epochs} epochs, {_fmt(time.perf_counter() - start)} elapsed, "
        f"overall ETA {_fmt(eta_all)}; running: {'; '.join(cells)}")

