"""What a run shows while it trains: a progress bar per epoch on a terminal, one line per epoch in
the log; at the start a warning for classes too small to learn, and at the end one if CDR masked
much less than tau said over most of the run."""

from __future__ import annotations

import sys
import time
from typing import Any

import torch
from tqdm import tqdm

from .advice import masking_warning, small_classes_warning
from .metrics import format_epoch
from .observers import Observer


# Without a terminal (a log file), a line at most this often within a long epoch.
LOG_EVERY_S = 60.0


class Progress(Observer):
    def __init__(self, bars: bool) -> None:
        self.bars = bars and sys.stderr.isatty()  # a redirected log gets lines instead of bars
        self._bar: tqdm | None = None
        self._last_line = 0.0

    def on_run_start(self, run) -> None:
        counts = torch.bincount(run.data.train_y.cpu(), minlength=run.data.num_classes).tolist()
        run.warn(small_classes_warning(counts, run.data.class_names))

    def on_epoch_start(self, run) -> None:
        self._bar = tqdm(total=run.steps_per_epoch, initial=run.step, desc=f"epoch {run.epoch + 1}/{run.config.epochs}",
                         leave=False, disable=not self.bars, unit="step", dynamic_ncols=True)
        self._last_line = time.monotonic()

    def on_step_end(self, run, step) -> None:
        self._bar.update()
        if not self.bars and time.monotonic() - self._last_line >= LOG_EVERY_S:
            self._last_line = time.monotonic()
            run.log(f"epoch {run.epoch + 1}/{run.config.epochs}: step {run.step}/{run.steps_per_epoch} "
                    f"({100 * run.step / run.steps_per_epoch:.0f}%)")

    def on_epoch_end(self, run, stats: dict[str, Any]) -> None:
        self._bar.close()
        run.log(format_epoch(stats, run.config.epochs))

    def on_run_end(self, run) -> None:
        run.warn(masking_warning([s["kept_pct"] for s in run.history], run.optimizer.param_groups[0]["tau"]))
