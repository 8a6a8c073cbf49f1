"""Every detector on one reading of a run's evidence, and how each fares against the known flips."""

from __future__ import annotations

import math

import numpy as np

from .confident import confident_learning
from .metrics import flagged_count, judge
from .scores import Suspects, accumulated_margin, aux_offsets, noise_posterior, small_loss

# The detectors in the tables' order; BEST is the one suspects.csv ranks by (README, "Finding
# wrong labels", shows where it wins and where it does not).
DETECTORS = ("small_loss", "confident_learning", "aux_offsets", "accumulated_margin", "noise_posterior")
BEST = "noise_posterior"


def run_detectors(labels, probs, probs_mean, margin_mean, offsets=None) -> dict[str, Suspects]:
    """Each detector's scores and suggestions: small loss and confident learning read ``probs`` (one
    reading of the network); the accumulated margin and the noise posterior the means over epochs
    (the posterior with confident learning's joint estimated from them); AUX its offsets."""
    out = {"small_loss": small_loss(probs, labels),
           "confident_learning": confident_learning(probs, labels).suspects()}
    if offsets is not None:
        out["aux_offsets"] = aux_offsets(offsets, labels)
    out["accumulated_margin"] = accumulated_margin(margin_mean, probs_mean, labels)
    out["noise_posterior"] = noise_posterior(probs_mean, labels, confident_learning(probs_mean, labels).calibrated)
    return out


def detection_rows(suspects: dict[str, Suspects], given, clean, rate: float, **key) -> list[dict]:
    """One row per detector: ``key`` (epoch, ...), then auroc, average_precision, precision and
    recall of the top n * rate, and correction_accuracy among them."""
    n = np.asarray(given).shape[0]
    flagged = flagged_count(n, rate)
    return [{**key, "detector": name, "flagged": flagged,
             **{k: (round(v, 6) if math.isfinite(v) else v)
                for k, v in judge(s.score, s.suggested, given, clean, flagged).items()}}
            for name, s in suspects.items()]
