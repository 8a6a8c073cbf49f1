"""The anchor-point noise estimator against hand-built posteriors, and --tau auto end to end."""

from __future__ import annotations

import numpy as np
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

    # 8,000 examples: at 2,000 about one seed in 30 put class 0's anchor far enough off (T_00 0.72,
    # the rate 0.052 low) to fail a bound that the estimator otherwise meets with room, and at 4,000
    # seed 2088291191 still did (T_00 0.7025)
    x, y = blobs(fresh_seed, n=8000)
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


def test_the_warm_ups_canaries_count_the_noise_and_their_flips_are_undone_in_the_transition(fresh_seed):
    """A warm-up's probabilities by hand: the given labels carry 8% wrong ones, and 5% canaries
    (planted flips); wrong labels and canaries get p(label) ~ U(0, 0.3), clean ones ~ U(0.6, 1). The
    rate is the canaries' ratio (the truth, up to sampling); the anchors (examples whose
    probabilities are a row of T C, C the canaries' uniform flips) give back T."""
    from cdr_fast.detection.canaries import plant_canaries
    from cdr_fast.estimate import estimate_with_canaries

    gen = torch.Generator().manual_seed(fresh_seed)
    n, m, share = 20_000, 4, 0.05
    given = torch.randint(0, m, (n,), generator=gen)
    wrong = torch.rand(n, generator=gen) < 0.08
    planted, canaries = plant_canaries(given, torch.arange(n), share, m, fresh_seed)
    is_canary = torch.zeros(n, dtype=torch.bool)
    is_canary[canaries] = True
    low = wrong | is_canary
    p_label = torch.where(low, 0.3 * torch.rand(n, generator=gen, dtype=torch.float64),
                          0.6 + 0.4 * torch.rand(n, generator=gen, dtype=torch.float64))
    probs = torch.zeros(n, m, dtype=torch.float64)
    probs[torch.arange(n), planted] = p_label
    probs[torch.arange(n), (planted + 1) % m] += 1 - p_label
    estimate = estimate_with_canaries(probs, planted, canaries, share, quantile=0.8)
    truth = wrong[~is_canary].double().mean().item()
    assert estimate.rate == pytest.approx(truth, abs=0.01)
    # the transition: every example of class i predicts row i of T C (its labels' flips, then the
    # canaries'), blurred a little towards uniform (at most 0.02), so its anchors are near-exact rows;
    # undoing C gives back T
    t = torch.tensor([[0.9, 0.1, 0.0, 0.0], [0.0, 0.8, 0.2, 0.0], [0.0, 0.0, 1.0, 0.0], [0.05, 0.0, 0.0, 0.95]],
                     dtype=torch.float64)
    mix = (1 - share) * torch.eye(m, dtype=torch.float64) + share * (1 - torch.eye(m, dtype=torch.float64)) / (m - 1)
    true_class = torch.randint(0, m, (n,), generator=gen)
    estimate = estimate_with_canaries(noisy_posteriors(true_class, t @ mix, gen, blur=0.02), planted, canaries, share)
    torch.testing.assert_close(estimate.transition.double(), t, atol=0.02, rtol=0)
    assert not torch.allclose(estimate.transition.double(), t @ mix, atol=0.02, rtol=0)  # C was undone


@pytest.mark.parametrize("flip", [0.2, 0.4])
def test_the_warm_ups_count_takes_out_the_flip_pattern_it_learned(fresh_seed, flip):
    """A warm-up that learned pairflip as a pattern: every image of class k gets p[k + 1] = flip, a
    flip (class k labelled k + 1) a little more, u ~ U(0, 0.04) of the rest, as a canary (a one-off
    flip) gets u. Small loss puts the flips far below the canaries; the unexplained loss does not."""
    from cdr_fast.detection.canaries import canary_ratio, plant_canaries
    from cdr_fast.estimate import estimate_with_canaries

    gen = torch.Generator().manual_seed(fresh_seed)
    n, m, share = 20_000, 10, 0.05
    true = torch.randint(0, m, (n,), generator=gen)
    flipped = torch.rand(n, generator=gen) < flip
    given = torch.where(flipped, (true + 1) % m, true)
    planted, canaries = plant_canaries(given, torch.arange(n), share, m, fresh_seed)
    is_canary = torch.zeros(n, dtype=torch.bool)
    is_canary[canaries] = True
    flipped &= ~is_canary
    u = 0.04 * torch.rand(n, generator=gen, dtype=torch.float64)
    rows = torch.arange(n)
    probs = torch.zeros(n, m, dtype=torch.float64)
    probs[rows, (true + 1) % m] = flip
    probs[rows, true] = 1 - flip
    probs[flipped] = 0.0
    probs[flipped, true[flipped]] = (1 - flip) * (1 - u[flipped])
    probs[flipped, planted[flipped]] = flip + (1 - flip) * u[flipped]
    probs[is_canary] = 0.0
    probs[is_canary, planted[is_canary]] = u[is_canary]  # (one planted on k + 1 scores 1: below the pattern)
    probs[is_canary, true[is_canary]] += 1 - u[is_canary]
    truth = flipped[~is_canary].double().mean().item()
    small_loss = (1 - probs[rows, planted]).numpy()
    assert canary_ratio(small_loss[is_canary.numpy()], small_loss[~is_canary.numpy()], 0.8) < truth / 10
    assert estimate_with_canaries(probs, planted, canaries, share).rate == pytest.approx(truth, rel=0.15)


def test_tau_auto_plants_canaries_in_its_warm_up_only(tmp_path):
    from cdr_fast.training import RunFolder, TrainConfig, Trainer

    lines = []
    gen = np.random.default_rng(0)  # 500 random images: 450 to train on, enough for 22 canaries
    np.savez(tmp_path / "data.npz", train_images=gen.integers(0, 256, (500, 28, 28), dtype=np.uint8),
             train_labels=gen.integers(0, 10, 500), test_images=gen.integers(0, 256, (20, 28, 28), dtype=np.uint8),
             test_labels=gen.integers(0, 10, 20))
    config = TrainConfig(dataset="npz", data_dir=str(tmp_path / "data.npz"), method="cdr", tau="auto",
                         tau_warmup_steps=30, epochs=1, seed=2)
    run = RunFolder(str(tmp_path / "run"))
    run.begin(resume=None)
    try:
        trainer = Trainer(config, run, progress=False, log=lines.append)
        given = trainer.data.train_y.clone()
        trainer.fit()
    finally:
        run.release()
    planted = round(0.05 * given.numel())
    assert any(f"warm-up steps, against {planted} canaries planted in its labels: tau = " in line for line in lines)
    assert torch.equal(trainer.data.train_y, given) and trainer.data.canaries.numel() == 0  # the run's own: none


def test_with_the_runs_own_canaries_the_warm_up_plants_among_the_others(tmp_path, monkeypatch):
    import cdr_fast.training.tau_auto as tau_auto
    from cdr_fast.training import TrainConfig, Trainer

    drawn = []
    real = tau_auto.plant_canaries

    def recording(labels, rows, share, classes, seed):
        out = real(labels, rows, share, classes, seed)
        drawn.append(out[1])
        return out

    monkeypatch.setattr(tau_auto, "plant_canaries", recording)
    gen = np.random.default_rng(1)
    np.savez(tmp_path / "data.npz", train_images=gen.integers(0, 256, (500, 28, 28), dtype=np.uint8),
             train_labels=gen.integers(0, 10, 500), test_images=gen.integers(0, 256, (20, 28, 28), dtype=np.uint8),
             test_labels=gen.integers(0, 10, 20))
    config = TrainConfig(dataset="npz", data_dir=str(tmp_path / "data.npz"), method="cdr", tau="auto",
                         tau_warmup_steps=10, epochs=1, seed=3, canaries=0.1)
    trainer = Trainer(config, None, progress=False, log=lambda line: None)
    trainer.tau.estimate_noise(trainer, config.tau_warmup_steps)
    own = set(torch.nonzero(torch.isin(trainer.data.train_index, trainer.data.canaries)).flatten().tolist())
    assert len(own) == 45 and len(drawn) == 1 and drawn[0].numel() == round(0.05 * 450)
    assert not own & set(drawn[0].tolist())  # the run's own canaries stay wrong labels to count
