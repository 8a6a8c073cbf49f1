"""How many labels are wrong, and which of the flagged to relabel: both from the evidence itself.

- ``estimated_noise_rate``: confident learning's estimate, ``1 - trace(Q)`` of its calibrated
  joint of given and true labels (Northcutt et al.), computed on one reading of the evidence. The
  reading is chosen on the development half of the detection benchmark (``COUNT_READING``;
  results/detection-count/README.md): the final in-sample probabilities of a network that
  memorised its labels hide the flips, and the count falls towards zero at low noise.
- ``relabel_confidently``: a flagged example is relabelled only where the evidence names the
  other class with confidence: the suggested class is the most probable one, with probability
  above one half, in both the mean and the recent reading (a majority rule: no threshold is fitted
  to benchmark statistics). The rest of the flagged are for review (kept as given in a relabelled
  copy, or dropped with ``--fix drop``).
"""

from __future__ import annotations

import numpy as np

from .confident import confident_learning
from .evidence import Evidence

READINGS = ("probs", "probs_mean", "probs_ema")
COUNT_READING = "probs_mean"


def estimated_noise_rate(evidence: Evidence, reading: str = COUNT_READING) -> float:
    """The share of wrong labels, by confident learning's calibrated joint on ``reading``."""
    if reading not in READINGS:
        raise ValueError(f"unknown reading {reading!r}; valid choices: {', '.join(READINGS)}")
    return float(confident_learning(getattr(evidence, reading), evidence.given_label).noise_rate)


def relabel_confidently(evidence: Evidence, suggested: np.ndarray) -> np.ndarray:
    """(n,) bool: where the suggestion is the most probable class, above 1/2, in both the mean
    and the recent reading."""
    rows = np.arange(suggested.size)
    sure = np.ones(suggested.size, dtype=bool)
    for p in (evidence.probs_mean, evidence.probs_ema):
        sure &= (p.argmax(1) == suggested) & (p[rows, suggested] > 0.5)
    return sure
