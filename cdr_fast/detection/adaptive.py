"""The adaptive posterior: the noise posterior under the noise model the run's evidence supports.

Confident learning's calibrated joint ``Q`` (of the given label and the true one) says how the
flips spread. For each true class j, its flips go to given labels in proportions
``Q[i, j] / sum_{i != j} Q[i, j]``; their effective number ``1 / sum(proportions^2)`` is 1 when
every flip of j lands on one class (pairflip, asymmetric) and m - 1 when they land evenly on all
the others (symmetric). ``flip_targets`` averages it over the classes, weighted by their flips.

- **class-structured noise** (at most ``STRUCTURED`` targets): Bayes' rule with the estimated
  noise process (``noise_posterior``) on the recent probabilities (``probs_ema``). It weighs the
  class the flips come from, which small loss cannot.
- **symmetric noise** (at least ``SYMMETRIC`` of the m - 1 possible targets, or no flips at all):
  under symmetric noise the posterior of the given label increases with its probability, so the
  posterior's ranking is small loss's, ``-log p[y]``, read from the recent probabilities. An
  estimated structure would only add its estimation error (the network's own confusions, such
  as Fashion-MNIST's shirts and T-shirts, look like structure).
- **between the two** (instance-dependent noise: flips depend on the image, no class-level
  process describes them): the margin of the best other class over the given label on the
  probabilities averaged over all epochs, the posterior with an uninformative noise process.
  Instance flips fall on examples the network fits late, so the early epochs weigh too.

The regime and its thresholds were chosen on the detection benchmark (results/README.md, "Finding
wrong labels"), where the three kinds of noise fall far apart (1.0-1.5, 3.6-4.3 and 8.1-9.0
targets of 9); the regime a run used is reported with its suspects.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .confident import calibrated_joint
from .scores import Suspects, as_labels, as_probabilities, best_other, margin, noise_posterior

STRUCTURED = 2.5  # at most this many effective flip targets per class: class-structured noise
SYMMETRIC = 0.75  # at least this share of the m - 1 possible targets: symmetric noise


class AdaptivePosterior(NamedTuple):
    score: np.ndarray
    suggested: np.ndarray
    regime: str  # "class-structured", "symmetric" or "instance"
    flip_targets: float  # the effective number of given labels a true class's flips go to

    def suspects(self) -> Suspects:
        return Suspects(self.score, self.suggested)


def flip_targets(joint: np.ndarray) -> float:
    """The flips' effective number of targets per true class (NaN: no flips)."""
    q = np.asarray(joint, dtype=np.float64)
    off = q * (1 - np.eye(q.shape[0]))
    flips = off.sum(0)
    if flips.sum() <= 0:
        return float("nan")
    share = off / np.maximum(flips, np.finfo(np.float64).tiny)
    targets = 1.0 / np.maximum((share ** 2).sum(0), np.finfo(np.float64).tiny)
    return float((flips / flips.sum() * targets)[flips > 0].sum())


def regime_of(targets: float, num_classes: int) -> str:
    if not np.isfinite(targets) or targets >= SYMMETRIC * (num_classes - 1):
        return "symmetric"
    return "class-structured" if targets <= STRUCTURED else "instance"


def adaptive_posterior(probs_ema, probs_mean, labels) -> AdaptivePosterior:
    """Scores and suggestions from the recent (``probs_ema``) and the all-epoch mean
    (``probs_mean``) probabilities; see the module's docstring."""
    recent, mean = as_probabilities(probs_ema), as_probabilities(probs_mean)
    y = as_labels(labels, recent)
    joint = calibrated_joint(recent, y)[2]  # no pruning needed: the joint alone says how flips spread
    targets = flip_targets(joint)
    regime = regime_of(targets, recent.shape[1])
    if regime == "class-structured":
        score, suggested = noise_posterior(recent, y, joint)
    elif regime == "symmetric":
        with np.errstate(divide="ignore"):
            score = -np.log(recent[np.arange(y.size), y].astype(np.float64))
        suggested = best_other(recent, y)[0]
    else:
        score, suggested = margin(mean, y), best_other(mean, y)[0]
    return AdaptivePosterior(score, suggested, regime, targets)


# Below this estimated share of wrong labels, the joint confident learning estimates is mostly the
# network's genuine confusions, and the posterior built on it ranks worse than small loss. Chosen on
# the development half of results/detection-count (the one threshold fitted there; its held-out
# half is reported in that README).
LOW_NOISE = 0.15


def small_loss_or_posterior(probs_mean, labels, noise_rate: float) -> Suspects:
    """Small loss on the mean reading where the evidence estimates fewer than ``LOW_NOISE`` wrong
    labels (``noise_rate``), else the adaptive posterior on the mean reading."""
    mean = as_probabilities(probs_mean)
    y = as_labels(labels, mean)
    if noise_rate < LOW_NOISE:
        with np.errstate(divide="ignore"):
            score = -np.log(mean[np.arange(y.size), y].astype(np.float64))
        return Suspects(score, best_other(mean, y)[0])
    return adaptive_posterior(mean, mean, y).suspects()
