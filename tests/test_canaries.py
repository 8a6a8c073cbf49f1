"""Canaries (planted flips) and the count measured against them: the planting, the estimator on
cases whose answer is known, the ranking that never flags a canary, and a run that plants them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cdr_fast.detection import Suspects, load_evidence, rank_suspects
from cdr_fast.detection.canaries import plant_canaries
from cdr_fast.detection.count import (
    MIN_CANARIES,
    canary_noise_rate,
    confident_learning_rate,
    estimated_noise_rate,
)
from cdr_fast.detection.evidence import Evidence


# ---------------------------------------------------------------- planting

@pytest.mark.parametrize("n, share, classes", [(1000, 0.05, 10), (37, 0.1, 3), (5, 0.5, 2), (0, 0.05, 10),
                                               (200, 0.0, 10)])
def test_canaries_are_a_seeded_share_of_the_rows_each_moved_to_another_class(fresh_seed, n, share, classes):
    labels = torch.randint(0, classes, (n + 50,), generator=torch.Generator().manual_seed(fresh_seed))
    rows = torch.arange(50, 50 + n)  # the training split: the first 50 are another split's
    planted, chosen = plant_canaries(labels, rows, share, classes, seed=fresh_seed)
    assert chosen.numel() == round(share * n)
    assert chosen.tolist() == sorted(set(chosen.tolist())) and set(chosen.tolist()) <= set(rows.tolist())
    assert (planted[chosen] != labels[chosen]).all() and ((planted >= 0) & (planted < classes)).all()
    untouched = torch.ones(labels.numel(), dtype=torch.bool)
    untouched[chosen] = False
    assert torch.equal(planted[untouched], labels[untouched])
    again, same = plant_canaries(labels, rows, share, classes, seed=fresh_seed)
    assert torch.equal(again, planted) and torch.equal(same, chosen)  # every rank, every resume


def test_the_planted_classes_spread_evenly_over_the_others():
    labels = torch.zeros(90_000, dtype=torch.long)
    planted, chosen = plant_canaries(labels, torch.arange(90_000), 0.5, 10, seed=3)
    counts = torch.bincount(planted[chosen], minlength=10)
    assert counts[0] == 0
    assert (counts[1:] - 5000).abs().max() < 5 * 5000 ** 0.5  # 45,000 over 9 classes: 5,000 each, +- 5 sd


# ---------------------------------------------------------------- the estimator

def evidence_with(p_label: np.ndarray, labels: np.ndarray, planted: np.ndarray, suggested: np.ndarray,
                  m: int = 10) -> Evidence:
    """Evidence whose mean reading gives each example ``p_label`` on the label it was trained on
    (``planted`` where >= 0, else ``labels``) and the rest to ``suggested``."""
    n = labels.size
    trained_on = np.where(planted >= 0, planted, labels)
    assert (suggested != trained_on).all()
    p = np.zeros((n, m))
    p[np.arange(n), trained_on] = p_label
    p[np.arange(n), suggested] += 1 - p_label
    return Evidence(index=np.arange(n), given_label=labels, probs=p, probs_mean=p, margin_mean=np.zeros(n),
                    probs_ema=p, epochs=1, planted_label=planted)


def test_the_ratio_at_the_canaries_quantile_by_hand():
    # canaries score 0.9, 0.8, 0.7, 0.6 (1 - p); the score half of them reach is 0.8 (2 of 4); 2 of the
    # 8 others score at least 0.8: (2 / 8) / (2 / 4) = 0.5. The score 80% of them reach: 0.6 (all 4;
    # 3 of 4 is 75%); 4 of 8 others reach it: (4 / 8) / 1
    p_label = 1 - np.array([0.9, 0.8, 0.7, 0.6, 0.95, 0.85, 0.1, 0.2, 0.3, 0.05, 0.6, 0.79])
    labels = np.zeros(12, dtype=np.int64)
    planted = np.array([1, 2, 3, 4] + [-1] * 8)
    e = evidence_with(p_label, labels, planted, suggested=np.full(12, 5))
    assert canary_noise_rate(e, "probs_mean", 0.5) == pytest.approx(0.5, rel=1e-12)
    assert canary_noise_rate(e, "probs_mean", 0.8) == pytest.approx(4 / 8, rel=1e-12)
    assert canary_noise_rate(e, "probs_mean", 1.0) == pytest.approx(4 / 8, rel=1e-12)
    assert canary_noise_rate(e, "probs_mean", 0.25) == pytest.approx((1 / 8) / (1 / 4), rel=1e-12)
    # the other readings are read: the final one puts every canary far above the rest
    e.probs = np.full_like(e.probs, 0.1)
    e.probs[np.arange(12), np.where(planted >= 0, planted, labels)] = np.r_[np.zeros(4), np.full(8, 0.5)]
    assert canary_noise_rate(e, "probs", 0.8) == 0.0
    with pytest.raises(ValueError, match="unknown reading 'final'"):
        canary_noise_rate(e, "final")
    with pytest.raises(ValueError, match=r"invalid canary quantile: 0; valid values are \(0, 1\]"):
        canary_noise_rate(e, "probs", 0)


@pytest.mark.parametrize("quantile", [0.5, 0.8])
def test_where_wrong_labels_score_like_the_canaries_the_estimate_is_their_share(fresh_seed, quantile):
    rng = np.random.default_rng(fresh_seed)
    n, share, wrong_rate = 20_000, 0.05, 0.08
    labels = rng.integers(0, 10, n)
    canary = rng.random(n) < share
    wrong = ~canary & (rng.random(n) < wrong_rate)
    planted = np.where(canary, (labels + rng.integers(1, 10, n)) % 10, -1)
    # wrong labels and canaries: p on their label ~ U(0, 0.6); clean: ~ U(0.7, 1), all below the threshold
    p_label = np.where(canary | wrong, rng.uniform(0, 0.6, n), rng.uniform(0.7, 1, n))
    suggested = np.where(planted == (labels + 1) % 10, (labels + 2) % 10, (labels + 1) % 10)
    e = evidence_with(p_label, labels, planted, suggested)
    truth = wrong[~canary].mean()
    sd = np.sqrt(truth / (n * (1 - share)) / quantile + truth ** 2 * (1 - quantile) / (quantile * n * share))
    assert canary_noise_rate(e, "probs_mean", quantile) == pytest.approx(truth, abs=5 * sd)


def test_clean_examples_above_the_threshold_push_the_count_up_and_learnt_flips_pull_it_down():
    rng = np.random.default_rng(0)
    n_clean, n_wrong, n_can = 4000, 400, 400
    labels = rng.integers(0, 10, n_clean + n_wrong + n_can)
    planted = np.r_[np.full(n_clean + n_wrong, -1), (labels[-n_can:] + 1) % 10]
    canary_p, clean_p = rng.uniform(0, 0.2, n_can), rng.uniform(0.8, 1, n_clean)
    truth = n_wrong / (n_clean + n_wrong)
    like = evidence_with(np.r_[clean_p, rng.uniform(0, 0.2, n_wrong), canary_p], labels, planted, (labels + 2) % 10)
    confused = evidence_with(np.r_[np.where(np.arange(n_clean) < 400, 0.05, clean_p), rng.uniform(0, 0.2, n_wrong),
                                   canary_p], labels, planted, (labels + 2) % 10)
    learnt = evidence_with(np.r_[clean_p, rng.uniform(0.3, 0.5, n_wrong), canary_p], labels, planted, (labels + 2) % 10)
    assert canary_noise_rate(like, "probs_mean") == pytest.approx(truth, rel=0.1)
    assert canary_noise_rate(confused, "probs_mean") > 1.5 * truth
    assert canary_noise_rate(learnt, "probs_mean") == 0.0


def pattern_evidence(rng, n: int, m: int, flip: float, share: float = 0.05, spread: float = 0.02):
    """Evidence of a network that learned pairflip at rate ``flip`` as a pattern: every clean image of
    class k gets p[k + 1] = flip +- ``spread``, the rest on k; a share ``flip`` of class k carries
    label k + 1. Canaries (one-off flips) and flips alike are memorised a little beyond what the
    pattern gives their label: a share u ~ U(0, 0.04) of the rest, so both score 1 - u unexplained."""
    true = rng.integers(0, m, n)
    canary = rng.random(n) < share
    flipped = ~canary & (rng.random(n) < flip)
    labels = np.where(flipped, (true + 1) % m, true)
    planted = np.where(canary, (true + 2 + rng.integers(0, m - 2, n)) % m, -1)  # never k or k + 1
    trained = np.where(canary, planted, labels)
    memorised = rng.uniform(0, 0.04, n)
    pattern = np.where(flipped, flip, 0.0)  # what the pattern gives a flip's label (a canary's: nothing)
    on_label = np.where(canary | flipped, pattern + (1 - pattern) * memorised, 0.0)
    level = np.clip(flip + rng.uniform(-spread, spread, n), 0.0, 0.45)
    p = np.zeros((n, m))
    clean = ~canary & ~flipped
    p[clean, (true[clean] + 1) % m] = level[clean]
    p[clean, true[clean]] = 1 - level[clean]
    p[~clean, trained[~clean]] = on_label[~clean]
    p[~clean, true[~clean]] = 1 - on_label[~clean]
    e = Evidence(index=np.arange(n), given_label=labels, probs=p, probs_mean=p, margin_mean=np.zeros(n),
                 probs_ema=p, epochs=1, planted_label=planted, clean_label=true)
    return e, flipped[~canary].mean()


@pytest.mark.parametrize("flip", [0.1, 0.2, 0.4])
def test_flips_the_network_learned_as_a_class_pattern_are_counted_where_small_loss_misses_them(fresh_seed, flip):
    """The learned pattern puts p[k + 1] ~ flip on every image of class k, so a flipped one scores
    small loss about 1 - flip: far below the canaries' 0.96-1. With the overlap taken out it scores
    as a canary does, and the ratio is the flips' share (up to sampling: 1,000 canaries)."""
    from cdr_fast.detection.canaries import canary_ratio

    e, truth = pattern_evidence(np.random.default_rng(fresh_seed), 20_000, 10, flip)
    small_loss = 1 - e.probs_ema[np.arange(e.given_label.size), e.trained_label]
    pool = e.trained & ~e.canary
    assert canary_ratio(small_loss[e.canary], small_loss[pool], 0.8) < truth / 10  # the count the pattern hid
    assert canary_noise_rate(e) == pytest.approx(truth, rel=0.15)


def test_the_learned_overlap_and_the_unexplained_loss_by_hand():
    from cdr_fast.detection.scores import learned_overlap, unexplained_loss

    # class 0: three typical images (labelled and predicted 0) with p[1] = 0.1, 0.2, 0.4 -> median 0.2;
    # a fourth labelled 0 but predicted 1 is not typical. Class 1: one, p[0] = 0.3. Class 2: none.
    p = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.6, 0.4, 0.0], [0.3, 0.7, 0.0], [0.3, 0.7, 0.0],
                  [0.15, 0.2, 0.65]])
    labels = np.array([0, 0, 0, 0, 1, 0])
    overlap = learned_overlap(p, labels)
    np.testing.assert_allclose(overlap, [[0, 0.2, 0], [0.3, 0, 0], [0, 0, 0]], rtol=1e-12)
    score = unexplained_loss(p, labels, overlap)
    # row 0: best other 1, a = overlap[1, 0] = 0.3: (0.9 - 0.3) / 0.7 of p[0] is unexplained -> 1 - 6/7
    # row 3: best other 1, p[0] = 0.3 = a -> 1; row 4: label 1, best other 0, a = overlap[0, 1] = 0.2,
    # (0.7 - 0.2) / 0.8 -> 1 - 0.625; row 5: label 0, best other 2, a = 0 -> small loss 0.85
    np.testing.assert_allclose(score, [1 - 6 / 7, 1 - 5 / 7, 1 - 3 / 7, 1.0, 0.375, 0.85], rtol=1e-12)
    # without a learned overlap it is small loss's 1 - p[y]; below the overlap it is clipped at 1
    np.testing.assert_allclose(unexplained_loss(p, labels, np.zeros((3, 3))), 1 - p[np.arange(6), labels])
    assert unexplained_loss(np.array([[0.2, 0.8, 0.0]]), np.array([0]), np.full((3, 3), 0.45)).item() == 1.0
    # empty and float32 inputs
    assert learned_overlap(np.zeros((0, 3)), np.zeros(0, dtype=np.int64)).shape == (3, 3)
    assert unexplained_loss(np.zeros((0, 3)), np.zeros(0, dtype=np.int64), np.zeros((3, 3))).shape == (0,)
    np.testing.assert_allclose(unexplained_loss(p.astype(np.float32), labels, overlap), score, rtol=1e-6)


def test_the_one_way_overlap_by_hand():
    from cdr_fast.detection.scores import one_way_overlap

    # the by-hand case above: A = [[0, 0.2, 0], [0.3, 0, 0], [0, 0, 0]]; class 1 gets 0.3 of 0, class 0
    # returns 0.2 of it: one-way 0.1 from 1 to 0, nothing from 0 to 1
    p = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.6, 0.4, 0.0], [0.3, 0.7, 0.0], [0.3, 0.7, 0.0],
                  [0.15, 0.2, 0.65]])
    labels = np.array([0, 0, 0, 0, 1, 0])
    np.testing.assert_allclose(one_way_overlap(p, labels), [[0, 0, 0], [0.1, 0, 0], [0, 0, 0]], atol=1e-12)
    # a mutual overlap (two look-alike classes, 0.3 each way) has no one-way part
    mutual = np.array([[0.7, 0.3], [0.7, 0.3], [0.3, 0.7], [0.3, 0.7]])
    assert not one_way_overlap(mutual, np.array([0, 0, 1, 1])).any()
    assert one_way_overlap(np.zeros((0, 3)), np.zeros(0, dtype=np.int64)).shape == (3, 3)


def test_hard_images_of_look_alike_classes_do_not_pass_for_flips(fresh_seed):
    """Classes pair up as look-alikes (0 and 1, 2 and 3, ...): a typical image gets 0.3 of its
    partner, a hard one (a tenth of the clean) only 0.35 of its own class. Wrong labels and canaries
    are one-off flips, p on their label ~ U(0, 0.2). With the whole overlap taken out a hard image
    scores as high as a canary, and the count runs far over; its one-way part is nil here, and the
    count is the wrong labels' share."""
    from cdr_fast.detection.canaries import canary_ratio
    from cdr_fast.detection.scores import learned_overlap, unexplained_loss

    rng = np.random.default_rng(fresh_seed)
    n, m = 20_000, 10
    true = rng.integers(0, m, n)
    canary = rng.random(n) < 0.05
    wrong = ~canary & (rng.random(n) < 0.05)
    hard = ~canary & ~wrong & (rng.random(n) < 0.1)
    flip = (true + rng.integers(1, m, n)) % m
    labels = np.where(wrong, flip, true)
    planted = np.where(canary, flip, -1)
    trained = np.where(canary, planted, labels)
    partner = true ^ 1
    p = np.zeros((n, m))
    rows = np.arange(n)
    on_own = np.where(hard, 0.35, 0.7 + rng.uniform(-0.02, 0.02, n))
    p[rows, true] = on_own
    p[rows, partner] = 1 - on_own
    flipped = canary | wrong
    on_label = rng.uniform(0, 0.2, n)
    p[flipped] = 0.0
    p[rows[flipped], trained[flipped]] = on_label[flipped]
    p[rows[flipped], true[flipped]] = 1 - on_label[flipped]
    e = Evidence(index=rows, given_label=labels, probs=p, probs_mean=p, margin_mean=np.zeros(n), probs_ema=p,
                 epochs=1, planted_label=planted, clean_label=true)
    truth = wrong[~canary].mean()
    assert canary_noise_rate(e) == pytest.approx(truth, rel=0.15)
    whole = unexplained_loss(p, trained, learned_overlap(p, trained))
    assert canary_ratio(whole[canary], whole[~canary], 0.8) > 2 * truth  # the count before the one-way part


def test_the_count_uses_the_canaries_from_min_canaries_on_and_confident_learning_below(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    n = 400
    labels = rng.integers(0, 4, n)
    p = rng.dirichlet(np.ones(4), size=n)
    for planted_count, by_canaries in ((MIN_CANARIES, True), (MIN_CANARIES - 1, False), (0, False)):
        planted = np.full(n, -1)
        planted[:planted_count] = (labels[:planted_count] + 1) % 4
        e = Evidence(index=np.arange(n), given_label=labels, probs=p, probs_mean=p, margin_mean=np.zeros(n),
                     probs_ema=p, epochs=1, planted_label=planted)
        expected = canary_noise_rate(e) if by_canaries else confident_learning_rate(e)
        assert estimated_noise_rate(e) == expected
    with pytest.raises(ValueError, match="needs canaries"):
        canary_noise_rate(Evidence(index=np.arange(n), given_label=labels, probs=p, probs_mean=p,
                                   margin_mean=np.zeros(n), probs_ema=p, epochs=1))


def test_confident_learning_leaves_the_canaries_out():
    from cdr_fast.detection import confident_learning

    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(3), size=60)
    y = rng.integers(0, 3, 60)
    planted = np.where(np.arange(60) < 10, (y + 1) % 3, -1)
    e = Evidence(index=np.arange(60), given_label=y, probs=p, probs_mean=p, margin_mean=np.zeros(60), probs_ema=p,
                 epochs=1, planted_label=planted)
    assert confident_learning_rate(e) == confident_learning(p[10:], y[10:]).noise_rate


# ---------------------------------------------------------------- the evidence and the ranking

def test_canaries_round_trip_and_are_never_flagged(tmp_path):
    p = np.full((6, 3), 1 / 3)
    e = Evidence(index=np.arange(6), given_label=np.array([0, 1, 2, 0, 1, 2]), probs=p, probs_mean=p,
                 margin_mean=np.zeros(6), probs_ema=p, epochs=1, planted_label=np.array([-1, 2, -1, -1, 0, -1]))
    e.save(tmp_path / "evidence.npz")
    back = load_evidence(tmp_path)
    assert back.planted_label.tolist() == [-1, 2, -1, -1, 0, -1]
    assert back.canary.tolist() == [False, True, False, False, True, False]
    assert back.trained_label.tolist() == [0, 2, 2, 0, 0, 2] and back.given_label.tolist() == [0, 1, 2, 0, 1, 2]
    score = np.array([0.1, 9.0, 0.3, 0.2, 8.0, 0.4])  # the canaries score highest
    ranking = rank_suspects(Suspects(score, np.zeros(6, int)), 0.5, back.judged)
    assert ranking.order.tolist() == [5, 2, 3, 0] and ranking.flagged.tolist() == [False, False, True, False,
                                                                                    False, True]
    assert load_evidence_without_canaries(tmp_path).canary.tolist() == [False] * 6


def load_evidence_without_canaries(folder):
    e = load_evidence(folder)
    e.planted_label = None
    return e


# ---------------------------------------------------------------- a run that plants them

def test_a_run_trains_on_the_planted_labels_and_its_evidence_keeps_the_given_ones(tmp_path):
    from conftest import REPO
    from cdr_fast.training import RunFolder, TrainConfig, Trainer
    from cdr_fast.training.split import prepare_data

    tiny = REPO / "tests" / "data" / "tiny.npz"
    config = TrainConfig(dataset="npz", data_dir=str(tiny), method="sgd", epochs=2, batch_size=32, canaries=0.1,
                         seed=4)
    data = prepare_data(config, torch.device("cpu"))
    with np.load(tiny) as z:
        given = z["train_labels"]
    expected_rows = plant_canaries(torch.as_tensor(given), data.train_index, 0.1, 10, 4)[1]
    assert data.canaries.tolist() == expected_rows.tolist() and data.canaries.numel() == round(0.1 * 270)
    assert data.canary_labels.tolist() == given[data.canaries.numpy()].tolist()
    run = RunFolder(str(tmp_path / "run"))
    run.begin(resume=None)
    try:
        Trainer(config, run, progress=False, log=lambda line: None).fit()
    finally:
        run.release()
    e = load_evidence(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["canaries"] == 27
    assert e.given_label.tolist() == given.tolist()  # the dataset's labels, canaries' too
    rows = data.canaries.numpy()
    assert e.canary.nonzero()[0].tolist() == rows.tolist() and (e.planted_label[rows] != given[rows]).all()
    assert e.flag_rate == canary_noise_rate(e)  # 27 canaries: the count is theirs
    suspects = {int(line.split(",")[0]) for line in (tmp_path / "run" / "suspects.csv").read_text().splitlines()[1:]}
    assert suspects == set(range(300)) - set(rows.tolist())  # every example but the canaries


@pytest.mark.parametrize("value, message", [(0.5, r"invalid canaries: 0.5; valid values are \[0, 0.5\)"),
                                            (-0.1, "invalid canaries: -0.1")])
def test_bad_canary_shares_are_one_line(value, message):
    from cdr_fast.training import TrainConfig

    with pytest.raises(ValueError, match=message):
        TrainConfig(dataset="mnist-mini", canaries=value).validate()
    with pytest.raises(ValueError, match="canaries .* and folds .* do not combine"):
        TrainConfig(dataset="mnist-mini", canaries=0.05, folds=2, fold=0).validate()


def test_with_canaries_a_suggestion_is_named_only_if_as_sure_as_a_canarys_true_class():
    from cdr_fast.detection.count import names_the_class, relabel_confidently

    n_can, m = MIN_CANARIES + 1, 3
    # the canaries: the mean reading gives their true (given) class 0.5 + k / 100, median 0.6
    can_true = 0.5 + np.arange(n_can) / 100
    others = np.array([0.55, 0.6, 0.65, 0.45])  # four suspects, each suggestion 1 at this probability
    p = np.zeros((n_can + 4, m))
    p[:n_can, 0], p[:n_can, 2] = can_true, 1 - can_true
    p[n_can:, 1], p[n_can:, 0] = others, 1 - others
    given = np.r_[np.zeros(n_can, int), np.full(4, 2)]
    planted = np.r_[np.full(n_can, 2), np.full(4, -1)]
    e = Evidence(index=np.arange(n_can + 4), given_label=given, probs=p, probs_mean=p, margin_mean=np.zeros(n_can + 4),
                 probs_ema=p, epochs=1, planted_label=planted)
    suggested = np.r_[np.zeros(n_can, int), np.ones(4, int)]
    assert np.median(can_true) == pytest.approx(0.6)
    # 0.55: the most probable, above 1/2, but less sure than the canaries' median; 0.45: not above 1/2
    assert relabel_confidently(e, suggested)[n_can:].tolist() == [False, True, True, False]
    e.planted_label = None  # no canaries: the majority rule alone
    assert relabel_confidently(e, suggested)[n_can:].tolist() == [True, True, True, False]
    assert names_the_class(e, suggested)[n_can:].tolist() == [True, True, True, False]


def test_a_suggestion_is_relabelled_only_where_the_given_label_is_fitted_no_better_than_a_canarys():
    """By hand: the one-way part of the learned overlap is allowed for, a mutual one is not."""
    from cdr_fast.detection.count import fitted_like_a_canary, names_the_class, relabel_confidently

    rng = np.random.default_rng()
    n_can = MIN_CANARIES + 1
    # canaries: true (given) class 0, planted 2; the mean reading gives the planted label f, median 0.15
    f = 0.05 + rng.permutation(n_can) / 100
    canaries = np.stack([0.9 - f, np.full(n_can, 0.1), f], 1)
    # typical images (labelled and predicted alike): 0 and 1 look alike both ways (0.2 each way);
    # a share of class 1 carries label 2 (0.35), and class 2 gives 1 only 0.05: one way, 0.30
    typical = np.repeat(np.array([[0.7, 0.2, 0.1], [0.2, 0.45, 0.35], [0.05, 0.05, 0.9]]), 3, axis=0)
    typical_label = np.repeat(np.arange(3), 3)
    # suspects (given, suggested): each named surely (0.8, above the canaries' median of their true class, 0.75)
    suspects = np.array([[0.0, 0.8, 0.2],  # 2 from 1: 0.2 - 0.30 <= 0.15, a learned pattern: relabel
                         [0.8, 0.2, 0.0],  # 1 from 0: 0.2 - 0 (they look alike both ways) > 0.15: review
                         [0.8, 0.1, 0.1],  # 1 from 0: 0.1 <= 0.15: relabel
                         [0.8, 0.01, 0.19],  # 2 from 0: one way 0.1 - 0.05; 0.19 - 0.05 <= 0.15: relabel
                         [0.8, 0.0, 0.21]])  # 2 from 0: 0.21 - 0.05 > 0.15: review
    p = np.concatenate([canaries, typical, suspects])
    given = np.r_[np.zeros(n_can, int), typical_label, [2, 1, 1, 2, 2]]
    planted = np.r_[np.full(n_can, 2), np.full(len(typical) + 5, -1)]
    n = len(p)
    e = Evidence(index=np.arange(n), given_label=given, probs=p, probs_mean=p, margin_mean=np.zeros(n),
                 probs_ema=p, epochs=1, planted_label=planted)
    suggested = np.r_[np.zeros(n_can, int), typical_label, [1, 0, 0, 0, 0]]
    rows = slice(n - 5, n)
    assert np.median(p[:n_can, 2]) == pytest.approx(0.15)
    assert names_the_class(e, suggested)[rows].all()
    assert fitted_like_a_canary(e, suggested)[rows].tolist() == [True, False, True, True, False]
    assert relabel_confidently(e, suggested)[rows].tolist() == [True, False, True, True, False]
    e.planted_label = None  # no canaries: no reference fit, the majority rule alone
    assert relabel_confidently(e, suggested)[rows].all()
    with pytest.raises(ValueError, match="no canaries"):
        fitted_like_a_canary(e, suggested)
