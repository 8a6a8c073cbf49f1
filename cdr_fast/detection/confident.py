"""Confident learning (Northcutt, Jiang and Chuang, "Confident Learning: Estimating Uncertainty in
Dataset Labels", JAIR 2021), written from the paper.

Given each example's predicted probabilities ``p`` (n x m) and its given label ``s``:

1. Per-class thresholds: ``t_j`` is the mean of ``p[x, j]`` over the examples labelled ``j``
   (the model's average self-confidence for class j).
2. The confident joint ``C[i][j]`` counts the examples labelled ``i`` that are confidently of
   class ``j``: ``p[x, j] >= t_j``. Where several classes reach their threshold, the one with the
   largest probability counts; an example reaching none is not counted.
3. Calibration: each row is rescaled to the number of examples with that label,
   ``Q~[i][j] = C[i][j] / sum_j C[i][j] * |{s = i}|``, and the whole divided by its sum. ``Q`` then
   estimates the joint distribution of (given label, true label); ``1 - trace(Q)`` the noise rate.
4. Pruning by noise rate: for every off-diagonal cell (i, j), the ``round(n * Q[i][j])`` examples
   labelled ``i`` with the largest margin ``p[x, j] - p[x, i]`` are flagged, with ``j`` as their
   suggested label (an example flagged from two cells keeps the larger margin's class).

The method wants out-of-sample probabilities (the paper uses K-fold cross-validation): the
in-sample probabilities of a network that has memorised its labels hide the flips. Which kind a
run gives it is written next to the result (``cdr_fast.detection.evidence``).

Confident learning flags a set; to rank (for AUROC and average precision) its flagged examples
come first, each set ordered by the margin of the best other class over the given label.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .scores import Suspects, as_labels, as_probabilities, best_other, row_blocks


class ConfidentLearning(NamedTuple):
    thresholds: np.ndarray  # (m,) t_j; NaN for a class no example is labelled with
    joint: np.ndarray  # (m, m) int64: the confident joint C[given][true]
    calibrated: np.ndarray  # (m, m) float64: Q, summing to 1 (zeros if C is empty)
    flagged: np.ndarray  # (n,) bool: the examples pruning by noise rate removes
    suggested: np.ndarray  # (n,) int64: the class a flagged example was pruned towards, else the best other class
    score: np.ndarray  # (n,) float64: the ranking, flagged first (see the module's docstring)

    @property
    def noise_rate(self) -> float:
        """The estimated share of wrong labels, 1 - trace(Q)."""
        return float(1.0 - np.trace(self.calibrated)) if self.calibrated.sum() > 0 else 0.0

    def suspects(self) -> Suspects:
        return Suspects(self.score, self.suggested)


def per_class_thresholds(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """t_j: the mean predicted probability of class j over the examples labelled j (NaN: none)."""
    m = probs.shape[1]
    counts = np.bincount(labels, minlength=m)
    sums = np.bincount(labels, weights=probs[np.arange(labels.size), labels].astype(np.float64), minlength=m)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def confident_joint(probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """C (m x m) and each example's confident class (-1: no class reaches its threshold)."""
    n, m = probs.shape
    bar = np.where(np.isnan(thresholds), np.inf, thresholds)[None, :]
    confident = np.empty(n, dtype=np.int64)
    for b in row_blocks(n, m):  # block by block: no n x m temporary
        masked = np.where(probs[b] >= bar, probs[b], -np.inf)
        best = masked.argmax(1)
        confident[b] = np.where(masked[np.arange(best.size), best] > -np.inf, best, -1)  # -1: no class reaches
    counted = confident >= 0
    joint = np.bincount(labels[counted] * m + confident[counted], minlength=m * m).reshape(m, m).astype(np.int64)
    return joint, confident


def calibrate(joint: np.ndarray, label_counts: np.ndarray) -> np.ndarray:
    """Q: each row of C rescaled to its label's count, then normalised to sum 1."""
    rows = joint.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = np.where(rows > 0, joint / np.maximum(rows, 1) * label_counts[:, None], 0.0)
    total = scaled.sum()
    return scaled / total if total > 0 else scaled


def prune_by_noise_rate(probs: np.ndarray, labels: np.ndarray, calibrated: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The flagged examples and the class each was pruned towards (-1: not flagged)."""
    n, m = probs.shape
    towards = np.full(n, -1, dtype=np.int64)
    counts = np.rint(n * calibrated).astype(np.int64)
    np.fill_diagonal(counts, 0)
    by_label = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[by_label], np.arange(m + 1))
    for i in np.flatnonzero(counts.sum(1) > 0):  # one block per given label: its members x classes
        members = by_label[starts[i]:starts[i + 1]]
        if members.size == 0:
            continue
        cols = np.flatnonzero(counts[i])  # only the cells that prune (ascending, so ties keep the first)
        own = probs[members, i].astype(np.float64)[:, None]
        margin = probs[members][:, cols].astype(np.float64) - own  # [r, c]: p_cols[c] - p_i
        # each column's rank of every member by descending margin (a stable sort: ties in index order)
        order = np.argsort(-margin, axis=0, kind="stable")
        rank = np.empty_like(order)
        rank[order, np.arange(cols.size)[None, :]] = np.arange(members.size)[:, None]
        chosen = rank < counts[i, cols][None, :]  # the round(n Q[i][j]) largest margins of column j
        # an example chosen by several cells keeps the larger margin's class (the first on ties)
        best = np.where(chosen, margin, -np.inf).argmax(1)
        picked = chosen.any(1)
        towards[members[picked]] = cols[best[picked]]
    return towards >= 0, towards


def calibrated_joint(probs, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1-3 alone: the thresholds, the confident joint C and its calibration Q."""
    p = as_probabilities(probs)
    s = as_labels(labels, p)
    thresholds = per_class_thresholds(p, s)
    joint, _ = confident_joint(p, s, thresholds)
    return thresholds, joint, calibrate(joint, np.bincount(s, minlength=p.shape[1]).astype(np.float64))


def confident_learning(probs, labels) -> ConfidentLearning:
    """Confident learning on predicted probabilities (n x m) and given labels (n,); see the module.
    Memory above the input: a few n-vectors and one block of rows at a time."""
    p = as_probabilities(probs)
    s = as_labels(labels, p)
    thresholds, joint, calibrated = calibrated_joint(p, s)
    flagged, towards = prune_by_noise_rate(p, s, calibrated)
    other, other_p = best_other(p, s)
    suggested = np.where(flagged, towards, other)
    margin = other_p - p[np.arange(s.size), s].astype(np.float64)  # in [-1, 1]
    score = margin + 2.0 * flagged  # flagged first
    return ConfidentLearning(thresholds, joint, calibrated, flagged, suggested, score)
