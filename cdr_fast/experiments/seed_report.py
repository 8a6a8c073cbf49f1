"""The seed report's published numbers, which our tables are read against."""

from __future__ import annotations

import statistics

# The seed report's Table 1: test accuracy (%), LeNet on MNIST, batch 32, lr 0.01, momentum 0.9, wd 1e-3.
SEED_TABLE1 = {
    "instance": {"sgd": (98.14, 92.46, 29.23), "cdr": (98.45, 93.96, 30.89), "aux": (98.27, 94.21, 27.86),
                 "cdr_aux": (98.45, 94.46, 31.03)},
    "asymmetric": {"sgd": (99.05, 97.56, 63.86), "cdr": (99.18, 98.85, 63.67), "aux": (99.15, 98.76, 62.33),
                   "cdr_aux": (99.07, 98.91, 71.64)},
    "pairflip": {"sgd": (98.97, 95.34, 11.52), "cdr": (99.05, 97.91, 11.52), "aux": (99.14, 97.73, 14.29),
                 "cdr_aux": (99.16, 98.32, 11.52)},
    "symmetric": {"sgd": (98.74, 98.40, 96.06), "cdr": (98.88, 98.55, 96.63), "aux": (98.84, 98.59, 96.80),
                  "cdr_aux": (98.89, 98.63, 96.56)},
}
SEED_RATES = (0.2, 0.4, 0.7)


def seed_value(noise: str, rate: float, method: str) -> float | None:
    """The seed's Table 1 entry, or None for a cell it does not have."""
    values = SEED_TABLE1.get(noise, {}).get(method)
    if values is None or rate not in SEED_RATES:
        return None
    return values[SEED_RATES.index(rate)]


def seed_average_increase(baseline: str, cells: list[tuple[str, float]]) -> float | None:
    """The seed's own 'average increase' of CDR+AUX over ``baseline`` on the given (noise, rate)
    cells; over all 12 it is the report's headline (+1.44 over SGD, +0.76 over CDR, +0.89 over
    AUX). None when a cell is not in the seed's table."""
    diffs = []
    for noise, rate in cells:
        ours, theirs = seed_value(noise, rate, "cdr_aux"), seed_value(noise, rate, baseline)
        if ours is None or theirs is None:
            return None
        diffs.append(ours - theirs)
    return statistics.fmean(diffs) if diffs else None
