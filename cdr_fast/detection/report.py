"""Every detector on one reading of a run's evidence, and how each fares against the known flips."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .adaptive import adaptive_posterior
from .confident import confident_learning
from .evidence import Evidence
from .metrics import flagged_count, judge, top
from .scores import Suspects, accumulated_margin, aux_offsets, small_loss

# The detectors in the tables' order; BEST is the one suspects.csv ranks by (README, "Finding
# wrong labels", shows where it wins and where it does not).
DETECTORS = ("small_loss", "confident_learning", "aux_offsets", "accumulated_margin", "adaptive_posterior")
BEST = "adaptive_posterior"


def run_detectors(labels, probs, probs_mean, margin_mean, probs_ema, offsets=None) -> dict[str, Suspects]:
    """Each detector's scores and suggestions: small loss and confident learning read ``probs`` (one
    reading of the network); the accumulated margin and the adaptive posterior the readings over
    epochs (``cdr_fast.detection.evidence``); AUX its offsets."""
    out = {"small_loss": small_loss(probs, labels),
           "confident_learning": confident_learning(probs, labels).suspects()}
    if offsets is not None:
        out["aux_offsets"] = aux_offsets(offsets, labels)
    out["accumulated_margin"] = accumulated_margin(margin_mean, probs_mean, labels)
    out["adaptive_posterior"] = adaptive_posterior(probs_ema, probs_mean, labels).suspects()
    return out


def evidence_detectors(e: Evidence) -> dict[str, Suspects]:
    """``run_detectors`` on a run's final evidence (``evidence.npz``)."""
    return run_detectors(e.given_label, e.probs, e.probs_mean, e.margin_mean, e.probs_ema, e.aux_offsets)


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
