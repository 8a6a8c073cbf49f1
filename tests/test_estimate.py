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


def test_warm_up_probabilities_are_the_mean_of_its_snapshots(monkeypatch, fresh_seed):
    """The 5-snapshot mean is a measured choice (README): each snapshot is recorded as it is taken,
    and the result must be their mean, not the last one."""
    import cdr_fast.estimate as estimate

    taken = []
    real = estimate.predict_probabilities

    def recording(*args, **kwargs):
        taken.append(torch.from_numpy(real(*args, **kwargs)))
        return taken[-1].numpy().copy()  # the caller may sum into what it gets

    monkeypatch.setattr(estimate, "predict_probabilities", recording)
    gen = torch.Generator().manual_seed(fresh_seed)
    x, y = torch.randn(96, 6, generator=gen), torch.randint(0, 3, (96,), generator=gen)
    torch.manual_seed(fresh_seed)
    probs = estimate.warm_up_probabilities(torch.nn.Linear(6, 3), x, y, steps=20, batch_size=16, lr=0.5, momentum=0.0,
                                           weight_decay=0.0, seed=fresh_seed, snapshots=5)
    assert len(taken) == 5 and not torch.equal(taken[0], taken[-1])
    torch.testing.assert_close(probs, torch.stack(taken).mean(0), rtol=1e-6, atol=1e-7)


def blobs(seed: int, n: int = 2000):
    """Four well-separated Gaussian classes with imbalanced priors (0.7, 0.1, 0.1, 0.1)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.multinomial(torch.tensor([0.7, 0.1, 0.1, 0.1]), n, replacement=True, generator=gen)
    centres = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0], [0.0, -4.0]])
    return centres[y] + torch.randn(n, 2, generator=gen), y


def test_tau_auto_end_to_end_on_a_known_transition(fresh_seed):
    """Warm-up, snapshot mean and anchors on data whose transition is known: class 0 sends 40% of
    its labels to class 1, the others keep theirs. The estimator's target is 1 - sum_i pi_i T_ii
    with pi the noisy priors (0.42, 0.38, 0.1, 0.1 here): 0.168 in expectation. Uniform priors would
    give 0.10, and the last snapshot alone, or probabilities not averaged, something else again."""
    from cdr_fast.estimate import warm_up_probabilities
    from cdr_fast.noise import noisify

    # 4,000 examples: at 2,000 about one seed in 30 put class 0's anchor far enough off (T_00 0.72,
    # the rate 0.052 low) to fail a bound that the estimator otherwise meets with room
    x, y = blobs(fresh_seed, n=4000)
    noisy = noisify(y, "asymmetric", 0.4, 4, fresh_seed + 1, class_map={0: 1}).labels
    true_t = torch.diag(torch.tensor([0.6, 1.0, 1.0, 1.0], dtype=torch.float64))
    priors = torch.bincount(noisy, minlength=4).double() / len(noisy)
    target = 1.0 - float((priors * true_t.diagonal()).sum())
    torch.manual_seed(fresh_seed)
    model = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    probs = warm_up_probabilities(model, x, noisy, steps=400, batch_size=128, lr=0.05, momentum=0.9,
                                  weight_decay=0.0, seed=fresh_seed)
    estimate = estimate_noise(probs, noisy)
    assert abs(estimate.rate - target) < 0.045, (estimate.rate, target)
    assert abs(float(estimate.transition[0, 0]) - 0.6) < 0.1 and float(estimate.transition[1, 1]) > 0.95
    uniform = 1.0 - float(estimate.transition.double().diagonal().mean())
    assert abs(uniform - target) > 0.05  # the test can tell the priors apart


def test_the_rate_weighs_each_class_by_its_noisy_prior():
    """A hand-computed case where the priors matter: labels 0,0,0,1 and T_00 = 0.5, T_11 = 1."""
    probs = torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1])
    estimate = estimate_noise(probs, labels, quantile=1.0)
    assert estimate.rate == pytest.approx(1 - (0.75 * 0.5 + 0.25 * 1.0))  # 0.375; uniform would say 0.25
