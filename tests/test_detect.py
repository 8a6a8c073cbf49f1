"""The label detectors (cdr_fast.detection) on cases worked out by hand, and against brute-force
implementations of their definitions on random inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cdr_fast.detection import (
    EvidenceRecorder,
    accumulated_margin,
    auroc,
    aux_offsets,
    average_precision,
    confident_learning,
    adaptive_posterior,
    correction_accuracy,
    flip_targets,
    judge,
    noise_posterior,
    precision_recall,
    small_loss,
)
from cdr_fast.detection.confident import confident_joint
from cdr_fast.detection.scores import margin
from cdr_fast.detection.evidence import Evidence, load_evidence


# ---------------------------------------------------------------- the scores

def test_small_loss_is_minus_log_p_of_the_given_label_and_suggests_the_best_other_class():
    probs = np.array([[0.7, 0.2, 0.1],
                      [0.25, 0.25, 0.5],   # given 2; the others tie: the lowest index, 0
                      [0.1, 0.6, 0.3],
                      [0.0, 1.0, 0.0]])    # given 0 with probability 0: an infinite loss, ranked first
    labels = np.array([0, 2, 0, 0])
    score, suggested = small_loss(probs, labels)
    assert score[:3] == pytest.approx([-math.log(0.7), -math.log(0.5), -math.log(0.1)], rel=1e-12)
    assert score[3] == math.inf
    assert suggested.tolist() == [1, 0, 1, 1]


def test_aux_score_is_the_offsets_margin_for_the_given_label_and_the_suggestion_their_minimum():
    offsets = 0.5 * np.array([[2.0, -1.0, 0.5],    # given 0: margin 2 - 0.5 = 1.5; pushed down most: 1
                              [0.0, 0.0, 0.0],     # given 2: all equal, margin 0; suggestion: the first other, 0
                              [-1.0, 3.0, -2.0],   # given 1: margin 3 - (-1) = 4; pushed down most: 2
                              [1.0, 4.0, -3.0]])   # given 0: margin 1 - 4 = -3 (another label carries more)
    labels = torch.tensor([0, 2, 1, 0])  # a tensor works as well as an array
    score, suggested = aux_offsets(offsets, labels)
    assert score.tolist() == (0.5 * np.array([1.5, 0.0, 4.0, -3.0])).tolist()
    assert suggested.tolist() == [1, 0, 2, 2]


def test_the_accumulated_margin_is_the_mean_over_epochs_of_each_epochs_margin():
    labels = torch.tensor([0, 1])
    epoch1 = torch.tensor([[0.6, 0.3, 0.1], [0.5, 0.2, 0.3]])  # margins: 0.3 - 0.6 = -0.3; 0.5 - 0.2 = 0.3
    epoch2 = torch.tensor([[0.2, 0.1, 0.7], [0.1, 0.8, 0.1]])  # margins: 0.7 - 0.2 = 0.5; 0.1 - 0.8 = -0.7
    acc = EvidenceRecorder(2, 3, labels=labels)
    for epoch in (epoch1, epoch2):
        acc.record(torch.tensor([1, 0]), epoch[[1, 0]].log())  # logits whose softmax is the epoch's row
        acc.end_epoch()
    probs_mean, margin_mean, probs_ema = acc.means()
    np.testing.assert_allclose(margin_mean, [0.1, -0.2], rtol=1e-6)  # not the margin of the mean (0.3, -0.3)
    np.testing.assert_allclose(probs_mean, ((epoch1 + epoch2) / 2).double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(probs_ema, (0.7 * epoch1 + 0.3 * epoch2).double().numpy(), rtol=1e-6)
    score, suggested = accumulated_margin(margin_mean, probs_mean, labels)
    np.testing.assert_allclose(score, [0.1, -0.2], rtol=1e-6)
    assert suggested.tolist() == [2, 0]  # mean probabilities: [0.4, 0.2, 0.4] -> 2; [0.3, 0.5, 0.2] -> 0


def test_the_noise_posterior_by_hand():
    joint = np.array([[0.3, 0.1, 0.0],   # a tenth of everything is a true 1 labelled 0
                      [0.0, 0.3, 0.0],
                      [0.0, 0.0, 0.3]])
    # P(given 0 | true 0) = 1, P(given 0 | true 1) = 0.1 / 0.4 = 0.25, P(given 1 | true 1) = 0.75,
    # P(given 2 | true 2) = 1, every other 0
    probs = np.array([[0.5, 0.4, 0.1], [0.5, 0.4, 0.1], [0.2, 0.7, 0.1]])
    score, suggested = noise_posterior(probs, np.array([0, 1, 0]), joint, smoothing=0.0)
    # [0.5, 0.1, 0] / 0.6: 1/6 - 5/6; [0, 0.3, 0]: 0 - 1 (the others tie at 0: class 0);
    # [0.2, 0.175, 0] / 0.375: 7/15 - 8/15
    np.testing.assert_allclose(score, [-2 / 3, -1.0, -1 / 15], rtol=1e-12)
    assert suggested.tolist() == [1, 0, 1]


def test_the_noise_posterior_under_symmetric_noise_and_under_overwhelming_smoothing(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    m, rate, n = 4, 0.3, 200
    joint = (np.full((m, m), rate / (m - 1)) + np.eye(m) * (1 - rate - rate / (m - 1))) / m  # uniform priors
    probs = rng.dirichlet(np.ones(m), size=n)
    labels = rng.integers(0, m, n)
    rows = np.arange(n)
    # by hand: P(given y | true y) = 1 - r, P(given y | true j) = r / (m - 1)
    weight = np.where(np.eye(m)[labels] == 1, 1 - rate, rate / (m - 1))
    posterior = probs * weight / (probs * weight).sum(1, keepdims=True)
    others = np.where(np.eye(m)[labels] == 1, -1.0, posterior)
    score, suggested = noise_posterior(probs, labels, joint, smoothing=0.0)
    np.testing.assert_allclose(score, others.max(1) - posterior[rows, labels], rtol=1e-9, atol=1e-12)
    assert (suggested == others.argmax(1)).all() and (suggested != labels).all()
    # an overwhelming smoothing makes the noise uniform: the posterior is the probabilities themselves
    plain = noise_posterior(probs, labels, joint, smoothing=1e9).score
    np.testing.assert_allclose(plain, margin(probs, labels), rtol=1e-6, atol=1e-9)


def test_flip_targets_by_hand():
    joint = np.array([[0.3, 0.05, 0.0],
                      [0.1, 0.3, 0.0],
                      [0.0, 0.05, 0.2]])
    # true 0: its flips (0.1) all go to 1, one target; true 1: 0.05 to 0 and 0.05 to 2, two targets;
    # true 2: no flips. Weighted by the flips: (0.1 * 1 + 0.1 * 2) / 0.2
    assert flip_targets(joint) == pytest.approx(1.5)
    assert math.isnan(flip_targets(np.eye(3) / 3))  # no flips at all
    assert flip_targets(np.full((4, 4), 1 / 16)) == pytest.approx(3.0)  # every flip spread over the 3 others


def noisy_network_outputs(rng, flips: str, n: int = 3000, m: int = 10):
    """A network's probabilities for clean classes, and labels flipped 30% of the time: to the next
    class (pairflip), to any other class (symmetric) or to one of four classes that depend on the
    example (instance-like)."""
    clean = rng.integers(0, m, n)
    logits = rng.normal(size=(n, m)) + 4.0 * np.eye(m)[clean]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    flip = rng.random(n) < 0.3
    if flips == "pairflip":
        target = (clean + 1) % m
    elif flips == "symmetric":
        target = (clean + rng.integers(1, m, n)) % m
    else:
        target = (clean + 1 + 2 * rng.integers(0, 4, n)) % m
    return probs, np.where(flip, target, clean), clean


@pytest.mark.parametrize("flips, regime", [("pairflip", "class-structured"), ("symmetric", "symmetric"),
                                           ("instance", "instance")])
def test_the_adaptive_posterior_reads_the_noise_structure_and_scores_by_it(fresh_seed, flips, regime):
    rng = np.random.default_rng(fresh_seed)
    recent, labels, clean = noisy_network_outputs(rng, flips)
    mean = 0.5 * recent + 0.5 / recent.shape[1]  # another reading: flatter
    result = adaptive_posterior(recent, mean, labels)
    assert result.regime == regime, result.flip_targets
    joint = confident_learning(recent, labels).calibrated
    expected = {"class-structured": noise_posterior(recent, labels, joint),
                "symmetric": (-np.log(recent[np.arange(labels.size), labels]), small_loss(recent, labels).suggested),
                "instance": (margin(mean, labels), small_loss(mean, labels).suggested)}[regime]
    np.testing.assert_allclose(result.score, expected[0], rtol=1e-12)
    assert (result.suggested == expected[1]).all() and (result.suggested != labels).all()
    assert average_precision(result.score, labels != clean) > 0.8  # and it finds the flips


@pytest.mark.parametrize("probs, labels, message", [
    (np.ones((3,)), np.zeros(3, dtype=int), r"shape \(3,\)"),
    (np.ones((3, 1)), np.zeros(3, dtype=int), "at least 2 classes"),
    (np.full((2, 3), 1 / 3), np.array([0, 3]), "label 3 is outside the 3 classes"),
    (np.full((2, 3), 1 / 3), np.array([0, -1]), "label -1 is outside"),
    (np.full((2, 3), 1 / 3), np.array([0.0, 1.0]), "integers"),
    (np.full((2, 3), 1 / 3), np.array([0, 1, 2]), "2 integers"),
])
def test_bad_inputs_are_one_clear_error(probs, labels, message):
    for detector in (small_loss, confident_learning):
        with pytest.raises(ValueError, match=message):
            detector(probs, labels)


# ---------------------------------------------------------------- confident learning

HAND_PROBS = np.array([
    [0.8, 0.1, 0.1],  # 0: labelled 0
    [0.6, 0.3, 0.1],  # 1: labelled 0
    [0.1, 0.8, 0.1],  # 2: labelled 0, looks like a 1
    [0.2, 0.7, 0.1],  # 3: labelled 1
    [0.1, 0.9, 0.0],  # 4: labelled 1
    [0.7, 0.2, 0.1],  # 5: labelled 1, looks like a 0
    [0.1, 0.1, 0.8],  # 6: labelled 2
    [0.0, 0.4, 0.6],  # 7: labelled 2, below every threshold: not counted
])
HAND_LABELS = np.array([0, 0, 0, 1, 1, 1, 2, 2])


def test_confident_learning_on_a_case_worked_by_hand():
    cl = confident_learning(HAND_PROBS, HAND_LABELS)
    # t_j: the mean p_j over the examples labelled j
    np.testing.assert_allclose(cl.thresholds, [(0.8 + 0.6 + 0.1) / 3, (0.7 + 0.9 + 0.2) / 3, (0.8 + 0.6) / 2])
    # t = (0.5, 0.6, 0.7): examples 0, 1 -> 0; 2 -> 1; 3, 4 -> 1; 5 -> 0; 6 -> 2; 7 reaches none
    assert cl.joint.tolist() == [[2, 1, 0], [1, 2, 0], [0, 0, 1]]
    # rows rescaled to the label counts (3, 3, 2): [2, 1, 0], [1, 2, 0], [0, 0, 2]; sum 8
    np.testing.assert_allclose(cl.calibrated, np.array([[2, 1, 0], [1, 2, 0], [0, 0, 2]]) / 8)
    assert cl.noise_rate == pytest.approx(0.25)
    # n * Q = 1 for cells (0, 1) and (1, 0): the largest margins p1 - p0 among the 0s (example 2)
    # and p0 - p1 among the 1s (example 5)
    assert np.flatnonzero(cl.flagged).tolist() == [2, 5]
    assert cl.suggested.tolist() == [1, 1, 1, 0, 0, 0, 0, 1]  # flagged: their cell; others: best other class
    margins = [0.1 - 0.8, 0.3 - 0.6, 0.8 - 0.1, 0.2 - 0.7, 0.1 - 0.9, 0.7 - 0.2, 0.1 - 0.8, 0.4 - 0.6]
    np.testing.assert_allclose(cl.score, np.array(margins) + 2.0 * cl.flagged)


def test_the_confident_joint_counts_the_most_probable_of_several_classes_above_threshold():
    probs = np.array([[0.35, 0.6, 0.05], [0.5, 0.45, 0.05], [0.2, 0.2, 0.6]])
    joint, confident = confident_joint(probs, np.array([0, 0, 2]), np.array([0.3, 0.3, 0.9]))
    assert confident.tolist() == [1, 0, -1]  # both of 0 and 1 reach 0.3: the larger wins; 0.6 < 0.9
    assert joint.tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 0]]


def brute_force_confident_learning(p: np.ndarray, s: np.ndarray):
    """The paper's definitions, one example at a time."""
    n, m = p.shape
    t = [np.mean([p[x, j] for x in range(n) if s[x] == j]) for j in range(m)]
    C = np.zeros((m, m), dtype=int)
    for x in range(n):
        above = [j for j in range(m) if p[x, j] >= t[j]]
        if above:
            C[s[x], max(above, key=lambda j: p[x, j])] += 1
    Q = np.array([[C[i, j] / C[i].sum() * (s == i).sum() if C[i].sum() else 0.0 for j in range(m)]
                  for i in range(m)])
    Q /= Q.sum()
    flagged = set()
    for i in range(m):
        for j in range(m):
            if i != j:
                members = sorted((x for x in range(n) if s[x] == i), key=lambda x: -(p[x, j] - p[x, i]))
                flagged |= set(members[:int(round(n * Q[i, j]))])
    return C, Q, sorted(flagged)


@pytest.mark.parametrize("n, m", [(300, 4), (57, 3), (10, 2)])
def test_confident_learning_equals_the_definitions_one_example_at_a_time(fresh_seed, n, m):
    rng = np.random.default_rng(fresh_seed)
    labels = np.r_[np.arange(m), rng.integers(0, m, n - m)]  # every class labelled at least once
    logits = rng.normal(size=(n, m)) * 2 + 3 * np.eye(m)[labels] * (rng.random(n) > 0.3)[:, None]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    cl = confident_learning(probs, labels)
    C, Q, flagged = brute_force_confident_learning(probs, labels)
    assert cl.joint.tolist() == C.tolist()
    np.testing.assert_allclose(cl.calibrated, Q, rtol=1e-12)
    assert np.flatnonzero(cl.flagged).tolist() == flagged
    assert all(cl.suggested[x] != labels[x] for x in range(n))


def test_confident_learning_of_clean_confident_labels_flags_nothing():
    probs = np.eye(3)[[0, 1, 2, 1]] * 0.9 + 0.1 / 3
    cl = confident_learning(probs, np.array([0, 1, 2, 1]))
    assert not cl.flagged.any() and cl.noise_rate == pytest.approx(0.0)


def test_a_class_nobody_is_labelled_with_has_no_threshold_and_counts_nothing():
    probs = np.array([[0.1, 0.1, 0.8], [0.7, 0.2, 0.1]])
    cl = confident_learning(probs, np.array([0, 0]))  # no example is labelled 1 or 2
    assert np.isnan(cl.thresholds[1:]).all() and cl.thresholds[0] == pytest.approx(0.4)
    assert cl.joint.tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0]]


# ---------------------------------------------------------------- the measures

def brute_auroc(score, y):
    pos, neg = score[y], score[~y]
    return np.mean([(a > b) + 0.5 * (a == b) for a in pos for b in neg])


def brute_average_precision(score, y):
    return np.mean([(y & (score >= score[i])).sum() / (score >= score[i]).sum() for i in np.flatnonzero(y)])


def test_auroc_and_average_precision_by_hand():
    score, noisy = np.array([0.9, 0.8, 0.7, 0.6]), np.array([True, False, True, False])
    assert auroc(score, noisy) == pytest.approx(3 / 4)  # the pair (0.7, 0.8) is the one misordered
    assert average_precision(score, noisy) == pytest.approx((1 + 2 / 3) / 2)
    # a tie between a positive and a negative: half a pair; one threshold for both
    tied, noisy = np.array([0.5, 0.5, 0.1]), np.array([True, False, False])
    assert auroc(tied, noisy) == pytest.approx((0.5 + 1) / 2)
    assert average_precision(tied, noisy) == pytest.approx(1 / 2)


@pytest.mark.parametrize("n", [1, 2, 7, 500])
def test_auroc_and_average_precision_equal_their_definitions(fresh_seed, n):
    rng = np.random.default_rng(fresh_seed)
    score = rng.integers(0, 5, n).astype(float)  # many ties
    noisy = rng.random(n) < 0.4
    if noisy.any() and not noisy.all():
        assert auroc(score, noisy) == pytest.approx(brute_auroc(score, noisy), rel=1e-12)
    if noisy.any():
        assert average_precision(score, noisy) == pytest.approx(brute_average_precision(score, noisy), rel=1e-12)


def test_undefined_measures_are_nan_and_nan_scores_are_refused():
    assert math.isnan(auroc([0.1, 0.2], [True, True]))  # no clean example
    assert math.isnan(auroc([], []))
    assert math.isnan(average_precision([0.1, 0.2], [False, False]))  # nothing mislabelled
    with pytest.raises(ValueError, match="1 scores are NaN"):
        auroc([0.1, float("nan")], [True, False])
    with pytest.raises(ValueError, match="one length"):
        average_precision([0.1, 0.2], [True])


def test_precision_and_recall_of_the_top_flagged():
    score = np.array([0.9, 0.1, 0.8, 0.7, 0.2, 0.6])
    noisy = np.array([True, False, False, True, True, False])
    assert precision_recall(score, noisy, 3) == (pytest.approx(2 / 3), pytest.approx(2 / 3))  # 0, 2, 3 flagged
    assert precision_recall(score, noisy, 1) == (1.0, pytest.approx(1 / 3))
    assert precision_recall(score, noisy, 6) == (0.5, 1.0)
    assert precision_recall(score, noisy, 10) == (0.5, 1.0)  # more flags than examples: all of them
    p, r = precision_recall(score, noisy, 0)
    assert math.isnan(p) and math.isnan(r)
    p, r = precision_recall(score, np.zeros(6, dtype=bool), 2)  # nothing is noisy
    assert p == 0.0 and math.isnan(r)


def test_correction_accuracy_counts_only_flagged_examples_that_are_wrong():
    given, clean = np.array([0, 1, 2, 0, 1]), np.array([1, 1, 0, 2, 1])  # 0, 2, 3 are wrong
    flagged = np.array([True, True, True, False, False])  # 3 is wrong but not flagged; 1 is flagged but right
    suggested = np.array([1, 0, 1, 2, 0])  # right for 0, wrong for 2
    assert correction_accuracy(flagged, suggested, given, clean) == 0.5
    assert math.isnan(correction_accuracy(np.zeros(5, bool), suggested, given, clean))
    row = judge(np.array([3.0, 2.0, 1.0, 0.0, -1.0]), suggested, given, clean, flagged=3)
    assert row["precision"] == pytest.approx(2 / 3) and row["recall"] == pytest.approx(2 / 3)
    assert row["correction_accuracy"] == 0.5 and row["auroc"] == pytest.approx(4 / 6)


# ---------------------------------------------------------------- the evidence file

def test_evidence_round_trips_through_its_file_and_a_bad_file_is_one_line(tmp_path):
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=5)
    e = Evidence(index=np.arange(10, 15), given_label=np.array([0, 1, 2, 0, 1]), probs=p, probs_mean=p[::-1],
                 margin_mean=rng.normal(size=5), probs_ema=p[[1, 0, 2, 4, 3]], epochs=4,
                 clean_label=np.array([0, 1, 2, 2, 1]),
                 aux_offsets=rng.normal(size=(5, 3)), flag_rate=0.2, trained=np.array([1, 1, 0, 1, 0], bool),
                 class_names=["cat", "dog", "émeu"], files=[f"train/x/{i}.png" for i in range(5)])
    e.save(tmp_path / "evidence.npz")
    back = load_evidence(tmp_path)  # the run folder, or the file
    for name in ("index", "given_label", "clean_label"):
        assert getattr(back, name).tolist() == getattr(e, name).tolist()
    for name in ("probs", "probs_mean", "margin_mean", "probs_ema", "aux_offsets"):
        np.testing.assert_allclose(getattr(back, name), getattr(e, name), rtol=1e-6)  # stored as float32
    assert back.epochs == 4 and back.flag_rate == 0.2
    assert back.trained.tolist() == e.trained.tolist() and back.class_names == e.class_names and back.files == e.files
    assert back.truly_noisy.tolist() == [False, False, False, True, False]
    with pytest.raises(ValueError, match="cannot read the evidence"):
        load_evidence(tmp_path / "missing")
    np.savez(tmp_path / "other.npz", probs=p)
    with pytest.raises(ValueError, match="not a cdr-fast evidence file"):
        load_evidence(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="probs has 4 rows for 5 labels"):
        Evidence(index=np.arange(5), given_label=np.zeros(5, int), probs=p[:4], probs_mean=p, margin_mean=p[:, 0],
                 probs_ema=p, epochs=1)


# ---------------------------------------------------------------- the count and the cleaned copy

def test_the_count_is_confident_learnings_joint_on_the_chosen_reading():
    from cdr_fast.detection.count import COUNT_READING, estimated_noise_rate

    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(3), size=30)
    y = rng.integers(0, 3, 30)
    e = Evidence(index=np.arange(30), given_label=y, probs=p[::-1].copy(), probs_mean=p, margin_mean=np.zeros(30),
                 probs_ema=p, epochs=2)
    assert estimated_noise_rate(e, "probs_mean") == confident_learning(p, y).noise_rate
    assert estimated_noise_rate(e, "probs") == confident_learning(p[::-1], y).noise_rate
    assert estimated_noise_rate(e) == estimated_noise_rate(e, COUNT_READING)
    with pytest.raises(ValueError, match="unknown reading 'final'; valid choices: probs, probs_mean, probs_ema"):
        estimated_noise_rate(e, "final")


def test_only_a_suggestion_the_evidence_is_sure_of_is_relabelled():
    from cdr_fast.detection.count import relabel_confidently
    from cdr_fast.wrong_labels.fix import cleaned_labels, fix_actions

    mean = np.array([[0.1, 0.8, 0.1], [0.1, 0.6, 0.3], [0.3, 0.45, 0.25], [0.7, 0.2, 0.1]])
    ema = np.array([[0.1, 0.7, 0.2], [0.1, 0.4, 0.5], [0.2, 0.6, 0.2], [0.6, 0.3, 0.1]])
    e = Evidence(index=np.arange(4), given_label=np.array([0, 0, 0, 2]), probs=ema, probs_mean=mean,
                 margin_mean=np.zeros(4), probs_ema=ema, epochs=3)
    suggested = np.array([1, 1, 1, 0])
    # 0: sure in both; 1: the recent reading prefers 2; 2: the mean is below 1/2; 3: sure in both
    sure = relabel_confidently(e, suggested)
    assert sure.tolist() == [True, False, False, True]
    flagged = np.array([True, True, True, False])
    actions = fix_actions(flagged, sure, "relabel")
    assert actions.tolist() == ["relabel", "review", "review", ""]
    labels, keep = cleaned_labels(np.array([5, 0, 0, 0, 2]), np.array([1, 2, 3, 4]), actions, suggested)
    assert labels.tolist() == [5, 1, 0, 0, 2] and keep.all()  # index maps the scored rows into the dataset
    drop = fix_actions(flagged, sure, "drop")
    assert drop.tolist() == ["drop", "drop", "drop", ""]
    assert cleaned_labels(np.array([0, 0, 0, 2]), np.arange(4), drop, suggested)[1].tolist() == [False, False, False,
                                                                                                    True]


def test_the_detectors_work_block_by_block_with_the_same_answer(monkeypatch, fresh_seed):
    """Blocks of 7 rows (and of 1) give exactly what one block gives: nothing depends on the split,
    the uneven last block included; float32 input stays float32 (no n x m copy)."""
    import cdr_fast.detection.scores as scores
    from cdr_fast.detection import DETECTORS

    rng = np.random.default_rng(fresh_seed)
    p = rng.dirichlet(np.ones(6) * 0.5, size=103).astype(np.float32)
    y = rng.integers(0, 6, 103)
    e = Evidence(index=np.arange(103), given_label=y, probs=p, probs_mean=p[::-1].copy(), margin_mean=np.zeros(103),
                 probs_ema=p, epochs=2, aux_offsets=rng.normal(size=(103, 6)))
    whole = {name: d.suspects(e) for name, d in DETECTORS.items()}
    for elements in (7 * 6, 1):
        monkeypatch.setattr(scores, "BLOCK_ELEMENTS", elements)
        for name, d in DETECTORS.items():
            got = d.suspects(e)
            np.testing.assert_array_equal(got.score, whole[name].score, err_msg=name)
            np.testing.assert_array_equal(got.suggested, whole[name].suggested, err_msg=name)
    assert scores.as_probabilities(p) is p


def test_the_regime_at_its_boundaries_and_with_two_classes():
    from cdr_fast.detection.adaptive import STRUCTURED, SYMMETRIC, regime_of

    assert regime_of(STRUCTURED, 10) == "class-structured"
    assert regime_of(np.nextafter(STRUCTURED, np.inf), 10) == "instance"
    assert regime_of(SYMMETRIC * 9, 10) == "symmetric"
    assert regime_of(np.nextafter(SYMMETRIC * 9, 0), 10) == "instance"
    assert regime_of(float("nan"), 10) == "symmetric"  # no flips: small loss's ranking
    # two classes: every flip has the one other class as its target, and 1 >= 0.75 * (2 - 1)
    assert regime_of(flip_targets(np.array([[0.45, 0.1], [0.05, 0.4]])), 2) == "symmetric"


def test_the_flip_target_statistic_weighs_classes_by_their_flip_mass():
    """True class 0 sends 0.2 of mass to one class (1 target); true class 1 sends 0.05, split
    evenly over two (2 targets); class 2 does not flip: (0.2 * 1 + 0.05 * 2) / 0.25 = 1.2. An
    unweighted mean over the flipping classes would say 1.5."""
    joint = np.array([[0.10, 0.025, 0.0],
                      [0.20, 0.25, 0.0],
                      [0.00, 0.025, 0.40]])  # [given, true]: column j is true class j
    assert flip_targets(joint) == pytest.approx(1.2)
