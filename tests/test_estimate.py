"""The anchor-point noise estimator against hand-built posteriors, and --tau auto end to end."""

from __future__ import annotations

import pytest
import torch

from cdr_fast.estimate import anchor_transition, estimate_noise
from cdr_fast.noise import transition_matrix


def noisy_posteriors(true_labels: torch.Tensor, transition: torch.Tensor, gen: torch.Generator, blur: float):
    """p(noisy label | x) for examples of known class: row y of T, blurred a little towards uniform
    by a per-example amount, so that the most confident examples of each class are the anchors."""
    rows = transition[true_labels]
    weight = blur * torch.rand(len(true_labels), 1, generator=gen, dtype=torch.float64)
    return (1 - weight) * rows + weight / transition.shape[1]


def test_anchor_rows_are_the_confident_examples_below_the_percentile():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]], dtype=torch.float64)
    # quantile 1.0: no filter, the most confident example per class
    assert torch.equal(anchor_transition(probs, quantile=1.0), torch.tensor([[0.9, 0.1], [0.2, 0.8]],
                                                                           dtype=torch.float64))
    # quantile 0.9 ('higher' interpolation: the top value of each column) is cut, the next one is the anchor
    assert torch.equal(anchor_transition(probs, quantile=0.9), torch.tensor([[0.8, 0.2], [0.3, 0.7]],
                                                                           dtype=torch.float64))
    # quantile 0.75 cuts the top two (values at or above the cut go, as in the published code)
    assert torch.equal(anchor_transition(probs, quantile=0.75), torch.tensor([[0.6, 0.4], [0.6, 0.4]],
                                                                            dtype=torch.float64))


@pytest.mark.parametrize("noise_type,rate", [("symmetric", 0.2), ("symmetric", 0.4), ("pairflip", 0.3)])
def test_estimate_recovers_the_transition_from_exact_posteriors(fresh_seed, noise_type, rate):
    gen = torch.Generator().manual_seed(fresh_seed)
    true = torch.randint(0, 10, (5000,), generator=gen)
    t_true = transition_matrix(noise_type, rate, 10).double()
    probs = noisy_posteriors(true, t_true, gen, blur=0.02)
    noisy = torch.multinomial(probs.float(), 1, generator=gen).squeeze(1)
    estimate = estimate_noise(probs, noisy)
    torch.testing.assert_close(estimate.transition.double(), t_true, atol=0.02, rtol=0)
    realised = (noisy != true).double().mean().item()
    assert abs(estimate.rate - realised) < 0.03


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="non-empty"):
        estimate_noise(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="noisy_labels must have shape"):
        estimate_noise(torch.full((4, 2), 0.5), torch.zeros(3, dtype=torch.long))
