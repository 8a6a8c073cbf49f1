"""How the detectors fare against the known flips, and the best detector's ranking of a run."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .metrics import flagged_count, judge
from .scores import Suspects


def detection_rows(suspects: dict[str, Suspects], given, clean, rate: float, judged=None, **key) -> list[dict]:
    """One row per detector: ``key`` (epoch, ...), then auroc, average_precision, precision and
    recall of the top n * rate, and correction_accuracy among them; over the ``judged`` rows
    (default: all; ``Evidence.judged`` leaves the canaries out)."""
    j = slice(None) if judged is None else np.asarray(judged, dtype=bool)
    given, clean = np.asarray(given)[j], np.asarray(clean)[j]
    flagged = flagged_count(given.shape[0], rate)
    return [{**key, "detector": name, "flagged": flagged,
             **{k: (round(v, 6) if math.isfinite(v) else v)
                for k, v in judge(s.score[j], s.suggested[j], given, clean, flagged).items()}}
            for name, s in suspects.items()]


class Ranking(NamedTuple):
    """The best detector's verdict on a run: every example most suspect first, and the flagged."""

    order: np.ndarray  # the judged examples' positions, most suspect first
    score: np.ndarray
    suggested: np.ndarray
    flagged: np.ndarray  # (n,) bool: the top (judged examples) * rate

    @property
    def count(self) -> int:
        return int(self.flagged.sum())


def rank_suspects(best: Suspects, rate: float, judged=None) -> Ranking:
    """``best`` (BEST's scores and suggestions) ranked, flagging the top ``rate`` of the ``judged``
    examples (default: all; ``Evidence.judged`` leaves the canaries out, never flagged)."""
    score, suggested = best
    rows = np.arange(score.size) if judged is None else np.flatnonzero(judged)
    order = rows[np.argsort(-score[rows], kind="stable")]
    flagged = np.zeros(score.size, dtype=bool)
    flagged[order[:flagged_count(rows.size, rate)]] = True
    return Ranking(order, score, suggested, flagged)
