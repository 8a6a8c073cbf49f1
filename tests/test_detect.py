"""The detectors of cdr_fast.detect on cases worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cdr_fast.detect import aux_suspects, precision_recall, small_loss_suspects


def test_aux_score_is_the_offsets_margin_for_the_given_label_and_the_suggestion_their_minimum():
    table = torch.tensor([[2.0, -1.0, 0.5],    # given 0: margin 2 - 0.5 = 1.5; pushed down most: 1
                          [0.0, 0.0, 0.0],     # given 2: all equal, margin 0; suggestion: the first other, 0
                          [-1.0, 3.0, -2.0],   # given 1: margin 3 - (-1) = 4; pushed down most: 2
                          [1.0, 4.0, -3.0]])   # given 0: margin 1 - 4 = -3 (another label carries more)
    labels = torch.tensor([0, 2, 1, 0])
    score, suggested = aux_suspects(table, labels, lam=0.5)
    torch.testing.assert_close(score, 0.5 * torch.tensor([1.5, 0.0, 4.0, -3.0]), rtol=0, atol=0)
    assert suggested.tolist() == [1, 0, 2, 2]
    assert all(s != y for s, y in zip(suggested.tolist(), labels.tolist()))  # never the given label


def test_aux_suspects_of_a_single_example_and_two_classes():
    score, suggested = aux_suspects(torch.tensor([[0.25, -0.75]]), torch.tensor([1]), lam=2.0)
    assert score.tolist() == [2.0 * (-0.75 - 0.25)] and suggested.tolist() == [0]


def test_small_loss_is_the_per_example_cross_entropy_and_the_prediction():
    model = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    x = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 3.0]])  # logits [2,0,0], [0,0,0], [0,3,0]
    labels = torch.tensor([0, 2, 0])
    score, predicted = small_loss_suspects(model, x, labels, batch_size=2)  # two batches, one of one
    expected = [math.log(1 + 2 * math.exp(-2)), math.log(3), 3 + math.log(1 + 2 * math.exp(-3))]
    torch.testing.assert_close(score, torch.tensor(expected), rtol=1e-6, atol=1e-6)
    assert predicted.tolist() == [0, 0, 1] and not model.training


def test_precision_and_recall_of_the_top_flagged():
    score = torch.tensor([0.9, 0.1, 0.8, 0.7, 0.2, 0.6])
    noisy = torch.tensor([True, False, False, True, True, False])
    assert precision_recall(score, noisy, 3) == (pytest.approx(2 / 3), pytest.approx(2 / 3))  # 0, 2, 3 flagged
    assert precision_recall(score, noisy, 1) == (1.0, pytest.approx(1 / 3))
    assert precision_recall(score, noisy, 6) == (0.5, 1.0)
    assert precision_recall(score, noisy, 10) == (0.5, 1.0)  # more flags than examples: all of them
    p, r = precision_recall(score, noisy, 0)
    assert math.isnan(p) and math.isnan(r)
    p, r = precision_recall(score, torch.zeros(6, dtype=torch.bool), 2)  # nothing is noisy
    assert p == 0.0 and math.isnan(r)
