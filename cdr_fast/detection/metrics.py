"""How a detector is judged against the known flips (docs/design.md, "Finding wrong labels").

- ranking quality over all examples, the mislabelled ones as positives: AUROC (the chance that a
  random mislabelled example outscores a random clean one, ties counting half) and average
  precision (the mean, over the positives, of the precision at their score; tied scores form one
  threshold, as in the usual step-wise definition);
- the flagged set, the ``flagged`` highest scores: precision and recall;
- corrections: among the flagged examples that really are mislabelled, the share whose suggested
  label is the clean one.

Undefined values (no positives, no negatives, nothing flagged) are NaN.
"""

from __future__ import annotations

import math

import numpy as np

NAN = float("nan")


def _checked(score, truly_noisy) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(score, dtype=np.float64)
    y = np.asarray(truly_noisy, dtype=bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores and truth must be 1-d and of one length; got {s.shape} and {y.shape}")
    if np.isnan(s).any():
        raise ValueError(f"{int(np.isnan(s).sum())} scores are NaN; a detector must score every example")
    return s, y


def auroc(score, truly_noisy) -> float:
    s, y = _checked(score, truly_noisy)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return NAN
    # Mann-Whitney: average ranks over ties
    order = np.argsort(s, kind="stable")
    sorted_s = s[order]
    group = np.r_[0, np.cumsum(sorted_s[1:] != sorted_s[:-1])]  # each sorted position's tie group
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    ranks = np.empty(s.size)
    ranks[order] = ((starts + ends + 1) / 2.0)[group]  # 1-based ranks start+1 .. end, averaged
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def average_precision(score, truly_noisy) -> float:
    s, y = _checked(score, truly_noisy)
    pos = int(y.sum())
    if pos == 0:
        return NAN
    order = np.argsort(-s, kind="stable")
    sorted_s, hits = s[order], y[order]
    ends = np.r_[np.flatnonzero(sorted_s[1:] != sorted_s[:-1]), s.size - 1]  # last index of each tie group
    tp = np.cumsum(hits)[ends]
    precision = tp / (ends + 1)
    recall_gain = np.diff(np.r_[0, tp]) / pos
    return float((precision * recall_gain).sum())


def top(score, flagged: int) -> np.ndarray:
    """A mask of the ``flagged`` highest scores (ties broken by index)."""
    s = np.asarray(score, dtype=np.float64)
    mask = np.zeros(s.size, dtype=bool)
    mask[np.argsort(-s, kind="stable")[:max(flagged, 0)]] = True
    return mask


def precision_recall(score, truly_noisy, flagged: int) -> tuple[float, float]:
    """Precision and recall of the ``flagged`` highest-scoring examples."""
    s, y = _checked(score, truly_noisy)
    if flagged <= 0 or s.size == 0:
        return NAN, NAN
    chosen = top(s, flagged)
    hits = int((chosen & y).sum())
    return hits / int(chosen.sum()), (hits / int(y.sum()) if y.any() else NAN)


def correction_accuracy(flagged_mask, suggested, given, clean) -> float:
    """Among the flagged examples whose given label is wrong, the share whose suggestion is right."""
    mask = np.asarray(flagged_mask, dtype=bool) & (np.asarray(given) != np.asarray(clean))
    if not mask.any():
        return NAN
    return float((np.asarray(suggested)[mask] == np.asarray(clean)[mask]).mean())


def judge(score, suggested, given, clean, flagged: int) -> dict[str, float]:
    """Every measure of one detector: auroc, average_precision, precision, recall (of the top
    ``flagged``) and correction_accuracy (among them)."""
    truly_noisy = np.asarray(given) != np.asarray(clean)
    precision, recall = precision_recall(score, truly_noisy, flagged)
    return {
        "auroc": auroc(score, truly_noisy),
        "average_precision": average_precision(score, truly_noisy),
        "precision": precision,
        "recall": recall,
        "correction_accuracy": correction_accuracy(top(score, flagged), suggested, given, clean),
    }


def flagged_count(n: int, rate: float) -> int:
    """How many examples an estimated noise rate flags: round(n * rate)."""
    return int(round(n * rate)) if math.isfinite(rate) else 0
