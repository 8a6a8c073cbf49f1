"""Canaries: planted flips that show how this run's wrong labels look, so that the evidence can
count them (``cdr_fast.detection.count``).

A share of the training split gets a label drawn uniformly from the other classes before training
(seeded: the same canaries on every rank and every resume). The network trains on them as on any
label; afterwards they are examples whose labels are known to be wrong. Their scores are the
reference distribution of a wrong label *in this run*, with its architecture, schedule, method and
memorisation. The same idea gives the Area Under the Margin its threshold (Pleiss et al., NeurIPS
2020: "threshold samples").

A canary's own label cannot be judged (the network was taught another one): canaries are never
flagged, and the cleaned copy keeps their labels as given. They also add their share of noise to
the training, which is why only the detection run (``find_labels.py``) plants them by default.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

SEED_OFFSET = 7_919  # their own stream: the noise draw and the split are not moved


def plant_canaries(labels: Tensor, rows: Tensor, share: float, num_classes: int, seed: int) -> tuple[Tensor, Tensor]:
    """(labels with the canaries planted, the canaries' indices, sorted): ``round(share * len(rows))``
    of ``rows``, each relabelled to a uniformly drawn other class."""
    count = round(share * rows.numel()) if num_classes > 1 else 0
    g = torch.Generator().manual_seed(int(seed) + SEED_OFFSET)
    chosen = rows[torch.randperm(rows.numel(), generator=g)[:count]].sort().values
    shift = torch.randint(1, max(num_classes, 2), (count,), generator=g)
    planted = labels.clone()
    planted[chosen] = (labels[chosen] + shift) % num_classes
    return planted, chosen


def canary_ratio(canary_scores: np.ndarray, other_scores: np.ndarray, quantile: float) -> float:
    """The share of wrong labels among ``other_scores``, measured against the canaries' scores
    (larger: more suspect): (share of the others at or above t) / (share of the canaries there),
    t the score that at least a share ``quantile`` of the canaries reach. If the wrong labels score
    like the canaries and no clean example reaches t, that is their share (mixture proportion
    estimation with a known component); capped at 1."""
    canaries = np.sort(np.asarray(canary_scores, dtype=np.float64))[::-1]
    others = np.asarray(other_scores, dtype=np.float64)
    if canaries.size == 0 or others.size == 0:
        raise ValueError(f"canary_ratio: needs canaries and other examples; got {canaries.size} and {others.size}")
    t = canaries[max(math.ceil(quantile * canaries.size) - 1, 0)]
    return float(min((others >= t).mean() / (canaries >= t).mean(), 1.0))
