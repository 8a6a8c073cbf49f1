"""What a run shows while it trains: a progress bar per epoch on a terminal, one line per epoch
(and any warning the epoch raises) in the log."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

from .advice import masking_warning
from .metrics import format_epoch
from .observers import Observer


class Progress(Observer):
    def __init__(self, bars: bool) -> None:
        self.bars = bars and sys.stderr.isatty()  # a redirected log gets the epoch lines only
        self._bar: tqdm | None = None
        self._warned_masking = False  # CDR masking less than tau: said once

    def on_epoch_start(self, run) -> None:
        self._bar = tqdm(total=run.steps_per_epoch, initial=run.step, desc=f"epoch {run.epoch + 1}/{run.config.epochs}",
                         leave=False, disable=not self.bars, unit="step", dynamic_ncols=True)

    def on_step_end(self, run, step) -> None:
        self._bar.update()

    def on_epoch_end(self, run, stats: dict[str, Any]) -> None:
        self._bar.close()
        run.log(format_epoch(stats, run.config.epochs))
        if not self._warned_masking:
            self._warned_masking = run.warn(masking_warning(stats["kept_pct"], run.optimizer.param_groups[0]["tau"]))
