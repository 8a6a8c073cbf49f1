"""How many labels are wrong, and which of the flagged to relabel: both from the evidence itself.

- ``estimated_noise_rate``: the share of wrong labels. With canaries (planted flips,
  ``detection/canaries.py``; find_labels.py plants 5% of the training split), the canary count:
  how many trained examples score like the canaries do, once the class-level flip patterns the
  network has learned are taken out of the score (``canary_noise_rate``). Without them,
  confident learning's estimate, ``1 - trace(Q)`` of its calibrated joint of given and true labels
  (Northcutt et al.) on the mean reading, which counts a network's genuine confusions as wrong
  labels (Fashion-MNIST: about 10 times too many at 1% noise) and misses the ones it memorised.
- ``relabel_confidently``: a flagged example is relabelled only where the evidence names the
  other class with confidence (``names_the_class``) and, with canaries, where the network has
  fitted its given label no better than it fits a typical canary's planted one
  (``fitted_like_a_canary``). No threshold is fitted to benchmark statistics: both compare with
  the run's canaries at their median. The rest of the flagged are for review (kept as given in a
  relabelled copy, or dropped with ``--fix drop``).

Measured on a development and a held-out half: results/detection-canaries (the canary count),
results/detection-count (confident learning's).
"""

from __future__ import annotations

import numpy as np

from ..checks import check_range
from .canaries import canary_ratio
from .confident import confident_learning
from .evidence import Evidence
from .scores import one_way_overlap, unexplained_loss

READINGS = ("probs", "probs_mean", "probs_ema")
COUNT_READING = "probs_mean"
MIN_CANARIES = 20  # fewer: too few to stand for the wrong labels; the count falls back to confident learning
# The canary count's reading and threshold (the canaries' score reached by this share of them),
# chosen on the development half of results/detection-canaries.
CANARY_READING = "probs_ema"
CANARY_QUANTILE = 0.8


def estimated_noise_rate(evidence: Evidence, reading: str = COUNT_READING) -> float:
    """The share of wrong labels: from the canaries where the run planted at least MIN_CANARIES
    (``canary_noise_rate``), else confident learning's calibrated joint on ``reading``."""
    if int(evidence.canary.sum()) >= MIN_CANARIES:
        return canary_noise_rate(evidence)
    return confident_learning_rate(evidence, reading)


def confident_learning_rate(evidence: Evidence, reading: str = COUNT_READING) -> float:
    """1 - trace of confident learning's calibrated joint on ``reading``, over the judged examples."""
    if reading not in READINGS:
        raise ValueError(f"unknown reading {reading!r}; valid choices: {', '.join(READINGS)}")
    j = evidence.judged
    return float(confident_learning(getattr(evidence, reading)[j], evidence.given_label[j]).noise_rate)


def canary_noise_rate(evidence: Evidence, reading: str = CANARY_READING, quantile: float = CANARY_QUANTILE) -> float:
    """The share of wrong labels among the trained examples, measured against the canaries.

    Every trained example is scored under the label it was trained on by ``unexplained_loss``:
    small loss, ``1 - p[label]``, less what a class-level pattern the network has learned explains
    (``one_way_overlap``, over the trained examples: how much of label j a typical image of class k
    gets, beyond what a typical j gets of k). If the dataset's own wrong labels score like
    the canaries, the share of them at or above a threshold t is the canaries' share q there, so
    (share of the other trained examples at or above t) / q estimates the noise rate: mixture
    proportion estimation with a known component (Blanchard, Lee and Scott, JMLR 2010). t is the
    canaries' score that a share ``quantile`` of them reaches.

    Why not small loss itself: canaries are one-off flips, but where a share of a class carries
    another label (pairflip, random transitions, a confusing annotator at 10-40%) the network learns
    that share, and the flips' small loss falls far below the canaries'. On the whole of MNIST at
    20% pairflip small loss counted 10 of 11,391 wrong labels; taking the learned overlap out, 8,536
    (results/README.md, "The canary count").

    Why only the one-way part: two classes that look alike (Fashion-MNIST's shirts and T-shirts)
    give each other about as much, a flip pattern runs one way. With the whole overlap taken out, a
    hard image of a look-alike class scored like a canary: on the development half the count
    flagged 3.2 times Fashion-MNIST's wrong labels at 1% noise (one-way: 2.4), and on the held-out
    half 3.9 (one-way: 3.2). The price: flips that swap two classes both ways (confusion-derived
    noise at 20-40%) look like resemblance and are undercounted (results/README.md, "The canary
    count").

    How it errs: a network's genuine confusions above t (hard images of look-alike classes, and
    Fashion-MNIST's own wrong labels, which the benchmark counts as clean: with no noise added it
    flags about 1.7% of a 3,000-image Fashion-MNIST subset, and a network that never trained on
    those images names another class for half of them: results/detection-canaries/second-opinion.md)
    push it up; flips memorised past their class's pattern, and flips that run both ways between
    two classes, pull it down.
    ``CANARY_QUANTILE`` and ``CANARY_READING`` are the development half's balance."""
    if reading not in READINGS:
        raise ValueError(f"unknown reading {reading!r}; valid choices: {', '.join(READINGS)}")
    check_range("canary quantile", quantile, 0.0, 1.0, open_low=True, closed=True)
    can = evidence.canary
    pool = evidence.trained & ~can
    if not can.any() or not pool.any():
        raise ValueError("canary_noise_rate: the evidence needs canaries and other trained examples")
    y, trained = evidence.trained_label, evidence.trained
    probs = getattr(evidence, reading)
    score = unexplained_loss(probs, y, one_way_overlap(probs[trained], y[trained]))
    return canary_ratio(score[can], score[pool], quantile)


def relabel_confidently(evidence: Evidence, suggested: np.ndarray) -> np.ndarray:
    """(n,) bool: where the cleaned copy may give an example its ``suggested`` label:
    ``names_the_class``, and, where the run planted at least MIN_CANARIES, ``fitted_like_a_canary``."""
    sure = names_the_class(evidence, suggested)
    if int(evidence.canary.sum()) >= MIN_CANARIES:
        sure &= fitted_like_a_canary(evidence, suggested)
    return sure


def names_the_class(evidence: Evidence, suggested: np.ndarray) -> np.ndarray:
    """(n,) bool: the suggestion is the most probable class, above 1/2, in both the mean and the
    recent reading (a majority rule); with canaries, the mean reading is also at least as sure of
    it as it is, at the canaries' median, of a canary's true class (its given label): a wrong label
    is only as recognisable as the network makes its planted ones."""
    rows = np.arange(suggested.size)
    sure = np.ones(suggested.size, dtype=bool)
    for p in (evidence.probs_mean, evidence.probs_ema):
        sure &= (p.argmax(1) == suggested) & (p[rows, suggested] > 0.5)
    can = evidence.canary
    if int(can.sum()) >= MIN_CANARIES:
        typical = np.median(evidence.probs_mean[rows[can], evidence.given_label[can]])
        sure &= evidence.probs_mean[rows, suggested] >= typical
    return sure


def fitted_like_a_canary(evidence: Evidence, suggested: np.ndarray) -> np.ndarray:
    """(n,) bool: the mean reading gives the example's given label y no more than it gives a
    canary its planted label, at the canaries' median, once a flip pattern from the suggested
    class s to y is allowed for.

    Why: a clean image of a class that looks like another (a shirt like a T-shirt) can be named as
    the other class as surely as a flip is, but the network has fitted its label as it fits clean
    labels, more than it manages to fit a planted wrong one. Where a share of class s carries label
    y (pairflip, a confusing annotator) the network learns that share, and a flip from s to y gets
    ``p[y]`` near it. That pattern is one-way, while two classes' resemblance is mutual, so the
    allowance is the one-way part of the learned overlap ``A`` (``one_way_overlap``, over the
    trained examples): ``max(A[s, y] - A[y, s], 0)``.

    Chosen on the development half of results/detection-canaries (results/README.md), at the count
    of the time (the whole overlap taken out): over its 60 Fashion-MNIST cells the copy had
    introduced 2,081 wrong labels against 7,241 removed, and with this rule 433 against 4,261; on
    MNIST 173 against 9,040, now 57 against 5,676. It relabels fewer flips (those fitted like the
    canaries above their median go to review) for far fewer clean images moved."""
    p, y, trained = evidence.probs_mean, evidence.trained_label, evidence.trained
    can = evidence.canary
    if not can.any():
        raise ValueError("fitted_like_a_canary: the evidence has no canaries")
    rows = np.arange(y.size)
    one_way = one_way_overlap(p[trained], y[trained])
    typical = np.median(p[rows[can], y[can]].astype(np.float64))
    given = evidence.given_label
    return p[rows, given].astype(np.float64) - one_way[suggested, given] <= typical
