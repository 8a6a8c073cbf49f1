"""Detectors of mislabelled examples: each turns one run's evidence into a score per example
(larger: more likely mislabelled) and a suggested label (never the given one).

Inputs are arrays (numpy, or CPU tensors): ``probs`` (n x m) predicted probabilities, ``labels``
(n,) the given labels, ``offsets`` (n x m) AUX's per-example logit offsets ``lam * B``.

- ``small_loss``: the network's cross-entropy on the given label, ``-log p[y]`` (the usual
  baseline: Co-teaching and others). It suggests the most probable other class.
- ``aux_offsets``: AUX's offsets absorb what the network will not fit. A visit moves example i's
  offsets by ``-rate * (softmax(z_i) - e_y)``: up on the given label y, down where the model puts
  its probability. The score is the offsets' margin for the given label,
  ``o[y] - max_{j != y} o[j]``; the suggestion is the class pushed down most.
- ``confident_learning``: see ``cdr_fast.detection.confident``.
- ``accumulated_margin``: the margin of the best other class over the given label,
  ``max_{j != y} p[j] - p[y]``, averaged over every epoch's probabilities, as "area under the
  margin" (Pleiss et al., 2020) does with logits. Early epochs, before the network memorises,
  carry the most evidence; a last-epoch reading loses it.
- ``unexplained_loss``: small loss less what a class-level flip pattern the network has learned
  explains (``learned_overlap``, or its one-way part, ``one_way_overlap``); the canary count's
  score (``cdr_fast.detection.count``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Suspects(NamedTuple):
    score: np.ndarray  # (n,) float64, larger: more likely mislabelled
    suggested: np.ndarray  # (n,) int64, the label the evidence argues for


# Rows per block where a detector needs an n x m temporary: about 4M elements (32 MB in float64), so
# that a detector's memory above its input stays small at any n (ImageNet: 1.28M x 1,000).
BLOCK_ELEMENTS = 1 << 22


def row_blocks(n: int, m: int):
    """Slices of ``range(n)`` of about ``BLOCK_ELEMENTS / m`` rows each."""
    step = max(1, BLOCK_ELEMENTS // max(m, 1))
    return (slice(i, min(i + step, n)) for i in range(0, n, step))


def as_probabilities(probs) -> np.ndarray:
    """``probs`` as a 2-d float array, without a copy where it already is one (float32 stays float32)."""
    p = np.asarray(probs)
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must be an (examples x classes) array with at least 2 classes; got shape "
                         f"{p.shape}")
    return p


def as_labels(labels, probs: np.ndarray) -> np.ndarray:
    s = np.asarray(labels)
    if s.shape != (probs.shape[0],) or (s.size and not np.issubdtype(s.dtype, np.integer)):
        raise ValueError(f"labels must be {probs.shape[0]} integers, one per row of the probabilities; got "
                         f"{s.dtype} of shape {s.shape}")
    if s.size and (s.min() < 0 or s.max() >= probs.shape[1]):
        bad = int(s.min()) if s.min() < 0 else int(s.max())
        raise ValueError(f"label {bad} is outside the {probs.shape[1]} classes (0 .. {probs.shape[1] - 1})")
    return s.astype(np.int64)


def best_other(values: np.ndarray, labels: np.ndarray, largest: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The class other than the given label with the largest (or smallest) value, and that value
    (float64). Ties go to the lowest class index. Block by block: no n x m temporary."""
    n, m = values.shape
    cls, best = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.float64)
    for b in row_blocks(n, m):
        masked = values[b].copy()
        rows = np.arange(masked.shape[0])
        masked[rows, labels[b]] = -np.inf if largest else np.inf
        cls[b] = masked.argmax(1) if largest else masked.argmin(1)
        best[b] = masked[rows, cls[b]]
    return cls, best


def small_loss(probs, labels) -> Suspects:
    p = as_probabilities(probs)
    s = as_labels(labels, p)
    with np.errstate(divide="ignore"):
        loss = -np.log(p[np.arange(s.size), s].astype(np.float64))
    return Suspects(loss, best_other(p, s)[0])


def aux_offsets(offsets, labels) -> Suspects:
    o = as_probabilities(offsets)
    s = as_labels(labels, o)
    _, other_max = best_other(o, s)
    return Suspects(o[np.arange(s.size), s].astype(np.float64) - other_max, best_other(o, s, largest=False)[0])


def margin(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``max_{j != y} p[j] - p[y]`` per example: positive where another class is more probable."""
    return best_other(probs, labels)[1] - probs[np.arange(labels.size), labels].astype(np.float64)


def accumulated_margin(margin_mean, probs_mean, labels) -> Suspects:
    """The mean over epochs of ``margin`` (computed epoch by epoch, ``Evidence``), suggesting the
    best other class of the mean probabilities."""
    p = as_probabilities(probs_mean)
    s = as_labels(labels, p)
    return Suspects(np.asarray(margin_mean, dtype=np.float64), best_other(p, s)[0])


def noise_posterior(probs, labels, joint, smoothing: float = 1e-6) -> Suspects:
    """Each label's chance of being right once the noise is accounted for, by Bayes' rule.

    ``joint`` (m x m, summing to 1) is the estimated joint of (given label, true label), confident
    learning's calibrated ``Q``; it gives the noise process ``P(given = i | true = j)`` (its column
    j, normalised), after adding ``smoothing`` to every cell: a class-level estimate describes
    instance-dependent noise only on average. With ``probs`` read as the true-class probabilities
    (a network trained not to fit the noise: CDR, AUX),
    ``posterior[j] ~ probs[j] * P(given = y | true = j)``. The score is the posterior's margin of
    the best other class over the given label; the suggestion is that class. Under symmetric noise
    the posterior ranks as the probability of the given label does; under pairflip it weighs the
    class the flips come from."""
    p = as_probabilities(probs)
    s = as_labels(labels, p)
    q = np.asarray(joint, dtype=np.float64) + smoothing
    given_if_true = q / q.sum(0, keepdims=True)  # [i, j]: P(given = i | true = j)
    score, cls = np.empty(s.size), np.empty(s.size, dtype=np.int64)
    for b in row_blocks(*p.shape):  # block by block: no n x m temporary
        posterior = p[b] * given_if_true[s[b], :]
        posterior /= np.maximum(posterior.sum(1, keepdims=True), np.finfo(np.float64).tiny)
        cls[b], other = best_other(posterior, s[b])
        score[b] = other - posterior[np.arange(posterior.shape[0]), s[b]]
    return Suspects(score, cls)


def learned_overlap(probs, labels) -> np.ndarray:
    """(m, m) float64: ``[k, j]`` is the median of ``p[j]`` over the examples labelled k that the
    reading also puts in class k, how much of label j the network gives a typical image of class k
    (0 on the diagonal, and in the row of a class no example is both labelled and predicted).

    Where a share of class k carries label j (pairflip, a confusing annotator) the network learns
    that share as a pattern: a typical k gets it as ``p[j]``, and so does a k labelled j, which then
    scores far below a one-off flip. Where k and j merely look alike, the typical k gets a little
    of j too; the two are the same to any in-sample evidence."""
    p = as_probabilities(probs)
    s = as_labels(labels, p)
    m = p.shape[1]
    overlap = np.zeros((m, m))
    typical = np.flatnonzero(s == p.argmax(1))  # labelled and predicted alike (argmax makes no n x m copy)
    typical = typical[np.argsort(s[typical], kind="stable")]  # grouped by class: one pass, any m
    bounds = np.searchsorted(s[typical], np.arange(m + 1))
    for k in np.flatnonzero(np.diff(bounds)):
        overlap[k] = np.median(p[typical[bounds[k]:bounds[k + 1]]].astype(np.float64), axis=0)
    np.fill_diagonal(overlap, 0.0)
    return overlap


def one_way_overlap(probs, labels) -> np.ndarray:
    """(m, m) float64: the one-way part of ``learned_overlap`` A, ``max(A[k, j] - A[j, k], 0)``.

    A flip pattern runs one way: where a share of class k carries label j, a typical k gets p[j]
    near that share, while a typical j gets little of k. Two classes that merely look alike (a
    shirt and a T-shirt) give each other about as much, and that mutual part is no pattern of
    wrong labels: taken out of a score, it would let a hard image of either class pass for a
    pattern-following flip."""
    overlap = learned_overlap(probs, labels)
    return np.clip(overlap - overlap.T, 0.0, None)


def unexplained_loss(probs, labels, overlap: np.ndarray) -> np.ndarray:
    """(n,) float64 in [0, 1]: ``1 - p[y]`` with the learned overlap taken out. With k the most
    probable other class and ``a = overlap[k, y]`` (``learned_overlap`` or ``one_way_overlap``),
    the share of ``p[y]`` above a is ``(p[y] - a) / (1 - a)``, and the score is 1 minus it,
    clipped to [0, 1]. A one-off flip (a near 0) scores its small loss ``1 - p[y]``; a flip that
    follows a learned pattern scores as high, where small loss would call it half fitted."""
    p = as_probabilities(probs)
    s = as_labels(labels, p)
    other, _ = best_other(p, s)
    a = np.asarray(overlap, dtype=np.float64)[other, s]
    fitted = (p[np.arange(s.size), s].astype(np.float64) - a) / (1.0 - a)
    return 1.0 - np.clip(fitted, 0.0, 1.0)
