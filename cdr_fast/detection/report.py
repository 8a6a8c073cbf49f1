"""How the detectors fare against the known flips, and the best detector's ranking of a run."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .metrics import flagged_count, judge, top
from .scores import Suspects


def detection_rows(suspects: dict[str, Suspects], given, clean, rate: float, **key) -> list[dict]:
    """One row per detector: ``key`` (epoch, ...), then auroc, average_precision, precision and
    recall of the top n * rate, and correction_accuracy among them."""
    n = np.asarray(given).shape[0]
    flagged = flagged_count(n, rate)
    return [{**key, "detector": name, "flagged": flagged,
             **{k: (round(v, 6) if math.isfinite(v) else v)
                for k, v in judge(s.score, s.suggested, given, clean, flagged).items()}}
            for name, s in suspects.items()]


class Ranking(NamedTuple):
    """The best detector's verdict on a run: every example most suspect first, and the flagged."""

    order: np.ndarray  # example positions, most suspect first
    score: np.ndarray
    suggested: np.ndarray
    flagged: np.ndarray  # (n,) bool: the top n * rate

    @property
    def count(self) -> int:
        return int(self.flagged.sum())


def rank_suspects(best: Suspects, rate: float) -> Ranking:
    """``best`` (BEST's scores and suggestions) ranked, flagging the top n times ``rate``."""
    score, suggested = best
    return Ranking(np.argsort(-score, kind="stable"), score, suggested, top(score, flagged_count(score.size, rate)))
