"""Label noise on real MNIST labels: realised rates, the structure of T, seeding, errors."""

from __future__ import annotations

import math

import pytest
import torch

from cdr_fast.noise import NOISE_TYPES, asymmetric_maps, noisify, transition_matrix

RATES = [0.2, 0.4, 0.7]


def binomial_tolerance(rate: float, n: int) -> float:
    return 5 * math.sqrt(rate * (1 - rate) / n) + 1e-9  # 5 sigma: fails only on a real bias


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("noise_type", ["symmetric", "pairflip"])
def test_realised_rate_and_structure(mnist, fresh_seed, noise_type, rate):
    y = mnist.train_labels
    noisy, realised, t = noisify(y, noise_type, rate, 10, fresh_seed)
    assert noisy.shape == y.shape and noisy.dtype == torch.int64
    assert realised == pytest.approx((noisy != y).double().mean().item())
    assert abs(realised - rate) < binomial_tolerance(rate, len(y))
    torch.testing.assert_close(t.sum(1), torch.ones(10, dtype=torch.float64))
    expected = transition_matrix(noise_type, rate, 10)
    assert (t - expected).abs().max() < 5 * math.sqrt(0.25 / 5000)  # every class has > 5000 examples
    if noise_type == "pairflip":  # moves only to i + 1 (mod c)
        allowed = torch.eye(10, dtype=torch.bool) | torch.eye(10, dtype=torch.bool).roll(1, dims=1)
        assert (t[~allowed] == 0).all()
        assert torch.equal(noisy[noisy != y], (y[noisy != y] + 1) % 10)


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_asymmetric_moves_only_along_its_map(mnist, fresh_seed, dataset, rate):
    y = mnist.train_labels  # real labels; the map is the dataset's
    noisy, realised, t = noisify(y, "asymmetric", rate, 10, fresh_seed, dataset=dataset)
    amap = asymmetric_maps()[dataset]
    changed = noisy != y
    targets = torch.tensor([amap.get(int(c), -1) for c in range(10)])
    assert torch.equal(noisy[changed], targets[y[changed]])  # every change follows the map
    sources = torch.tensor(sorted(amap))
    in_map = torch.isin(y, sources)
    assert not changed[~in_map].any()  # classes outside the map never change
    assert abs(changed[in_map].double().mean().item() - rate) < binomial_tolerance(rate, int(in_map.sum()))
    assert realised == pytest.approx(changed.double().mean().item())


def test_asymmetric_maps_are_the_published_generators_pairs():
    """Written out from the published noise generators (the CDR / Co-teaching code), not read back
    from the library: a dropped or changed pair fails here."""
    assert asymmetric_maps() == {
        "mnist-mini": {2: 7, 3: 8, 5: 6, 6: 5},  # 2 -> 7, 3 -> 8, 5 <-> 6
        "mnist": {2: 7, 3: 8, 5: 6, 6: 5},
        "fashion-mnist": {0: 6, 2: 4, 5: 7, 7: 5},  # T-shirt -> shirt, pullover -> coat, sandal <-> sneaker
        "cifar10": {9: 1, 2: 0, 3: 5, 5: 3, 4: 7},  # truck -> automobile, bird -> airplane, cat <-> dog, deer -> horse
    }


def test_cifar_maps():
    t10 = transition_matrix("asymmetric", 0.4, 10, "cifar10")
    assert t10[9, 1] == 0.4 and t10[3, 5] == 0.4 and t10[5, 3] == 0.4 and t10[0, 0] == 1.0
    # CIFAR-100's map as the Co-teaching/CDR code builds it: cyclic within superclass blocks of 5.
    t100 = transition_matrix("asymmetric", 0.3, 100, class_map={i: i // 5 * 5 + (i % 5 + 1) % 5 for i in range(100)})
    assert t100[4, 0] == 0.3 and t100[7, 8] == 0.3 and t100[99, 95] == 0.3  # cyclic within blocks of 5
    assert (t100.sum(1) - 1).abs().max() < 1e-12


@pytest.mark.parametrize("rate", RATES)
def test_instance_noise_depends_on_features(mnist, fresh_seed, rate):
    n = 20000
    x, y = mnist.train_images[:n], mnist.train_labels[:n]
    noisy, realised, t = noisify(y, "instance", rate, 10, fresh_seed, features=x)
    # The flip rate is a truncated normal around the rate, so the realised rate sits near it.
    assert abs(realised - rate) < 0.03
    # Other features, same seed and labels: a different set of flips.
    shuffled = x[torch.randperm(n, generator=torch.Generator().manual_seed(fresh_seed))]
    noisy2, _, _ = noisify(y, "instance", rate, 10, fresh_seed, features=shuffled)
    assert (noisy != noisy2).double().mean() > 0.1
    # Unlike symmetric noise, the flips concentrate: T's off-diagonal rows are far from uniform.
    off = t.clone().fill_diagonal_(0)
    assert (off.max(1).values / off.sum(1)).mean() > 0.2
    torch.testing.assert_close(t.sum(1), torch.ones(10, dtype=torch.float64))


@pytest.mark.parametrize("noise_type", ["symmetric", "pairflip", "instance", "random_matrix", "class_dependent",
                                        "confusion"])
def test_seeded_and_reproducible(mnist_mini, noise_type):
    y, x = mnist_mini.train_labels, mnist_mini.train_images
    a = noisify(y, noise_type, 0.4, 10, 3, features=x)
    b = noisify(y, noise_type, 0.4, 10, 3, features=x)
    c = noisify(y, noise_type, 0.4, 10, 4, features=x)
    assert torch.equal(a.labels, b.labels) and not torch.equal(a.labels, c.labels)


def test_none_and_zero_rate_keep_labels(mnist_mini):
    y = mnist_mini.train_labels
    for noise_type, rate in (("none", 0.0), ("symmetric", 0.0)):
        noisy, realised, t = noisify(y, noise_type, rate, 10, 0)
        assert torch.equal(noisy, y) and realised == 0.0 and torch.equal(t, torch.eye(10, dtype=torch.float64))


def test_empty_and_single_label():
    noisy, realised, _ = noisify(torch.zeros(0, dtype=torch.long), "symmetric", 0.5, 10, 0)
    assert noisy.numel() == 0 and realised == 0.0
    noisy, _, _ = noisify([4], "pairflip", 0.99, 10, 0)
    assert noisy.tolist() in ([4], [5])


def test_accepts_numpy_labels(mnist_mini):
    y = mnist_mini.train_labels
    assert torch.equal(noisify(y.numpy(), "symmetric", 0.2, 10, 1).labels, noisify(y, "symmetric", 0.2, 10, 1).labels)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(noise_type="symmetric", rate=1.0), r"\[0, 1\)"),
        (dict(noise_type="symmetric", rate=-0.1), r"\[0, 1\)"),
        (dict(noise_type="uniform", rate=0.2), "valid choices: " + ", ".join(NOISE_TYPES)),
        (dict(noise_type="asymmetric", rate=0.2), "valid choices"),
        (dict(noise_type="asymmetric", rate=0.2, dataset="svhn"), "svhn"),
        (dict(noise_type="instance", rate=0.2), "features"),
    ],
)
def test_bad_input_raises_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        noisify(torch.tensor([0, 1, 2]), num_classes=10, seed=0, **kwargs)


def test_labels_out_of_range():
    with pytest.raises(ValueError, match="labels must lie"):
        noisify(torch.tensor([0, 10]), "symmetric", 0.2, 10, 0)


@pytest.mark.parametrize("rate", [0.03, 0.3])
def test_a_random_matrix_sends_each_class_to_two_or_three_others(mnist, fresh_seed, rate):
    t = transition_matrix("random_matrix", rate, 10, seed=fresh_seed)
    torch.testing.assert_close(t.sum(1), torch.ones(10, dtype=torch.float64))
    torch.testing.assert_close(t.diagonal(), torch.full((10,), 1 - rate, dtype=torch.float64))
    targets = ((t > 0) & ~torch.eye(10, dtype=torch.bool)).sum(1)
    assert ((targets >= 2) & (targets <= 3)).all(), targets
    assert not torch.equal(t, transition_matrix("random_matrix", rate, 10, seed=fresh_seed + 1))
    noisy, realised, empirical = noisify(mnist.train_labels, "random_matrix", rate, 10, fresh_seed)
    assert abs(realised - rate) < binomial_tolerance(rate, len(noisy))
    assert (empirical[t == 0] == 0).all()  # flips only where the matrix allows
    with pytest.raises(ValueError, match="at least 3 classes"):
        transition_matrix("random_matrix", 0.2, 2)


def test_class_dependent_noise_leaves_half_the_classes_clean(mnist, fresh_seed):
    t = transition_matrix("class_dependent", 0.2, 10, seed=fresh_seed)
    clean = t.diagonal() == 1.0
    assert clean.sum() == 5 and torch.allclose(t.diagonal()[~clean], torch.full((5,), 0.6, dtype=torch.float64))
    off = t[~clean] * (1 - torch.eye(10, dtype=torch.float64)[~clean])
    assert torch.allclose(off.sum(1), torch.full((5,), 0.4, dtype=torch.float64))  # evenly to the other 9
    noisy, realised, _ = noisify(mnist.train_labels, "class_dependent", 0.2, 10, fresh_seed)
    flipped = noisy != mnist.train_labels
    assert not flipped[torch.isin(mnist.train_labels, torch.nonzero(clean).flatten())].any()
    assert abs(realised - 0.2) < 0.03  # classes differ in size, so about the rate


def test_confusion_noise_follows_the_nearest_class_mean(fresh_seed):
    """Hand-made classes: 0 and 1 overlap, 2 lies far off, 3 has no example. Class 0 flips only
    to 1 and 1 only to 0, in proportion to how often each is taken for the other; class 2, never
    confused, flips evenly; the matrix equals a brute-force nearest-mean count."""
    from cdr_fast.noise import confusion_transition

    gen = torch.Generator().manual_seed(fresh_seed)
    y = torch.tensor([0] * 40 + [1] * 40 + [2] * 20)
    centres = torch.tensor([[0.0, 0.0], [1.0, 0.0], [40.0, 40.0]], dtype=torch.float64)
    x = centres[y] + torch.randn(100, 2, generator=gen, dtype=torch.float64)
    rate = 0.3
    t = confusion_transition(y, x, rate, 4)
    torch.testing.assert_close(t.sum(1), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(t.diagonal()[:3], torch.full((3,), 1 - rate, dtype=torch.float64))
    assert t[0, 2] == t[0, 3] == t[1, 2] == t[1, 3] == 0.0
    assert t[0, 1].item() == pytest.approx(rate) and t[1, 0].item() == pytest.approx(rate)
    torch.testing.assert_close(t[2], torch.tensor([0.1, 0.1, 0.7, 0.1], dtype=torch.float64))
    torch.testing.assert_close(t[3], torch.tensor([0.1, 0.1, 0.1, 0.7], dtype=torch.float64))  # no example: evenly
    # brute force, example by example, with a weight on the confusions: 3 classes that all mix
    y = torch.arange(60) % 3
    x = torch.randn(60, 3, generator=gen, dtype=torch.float64) + torch.tensor([0.0, 0.5, 1.0],
                                                                              dtype=torch.float64)[y][:, None]
    z = (x - x.mean(0)) / (x.std(0, correction=0) + 1e-8)
    means = torch.stack([z[y == k].mean(0) for k in range(3)])
    counts = torch.zeros(3, 3, dtype=torch.float64)
    for xi, yi in zip(z, y):
        counts[yi, int(((means - xi) ** 2).sum(1).argmin())] += 1
    counts.fill_diagonal_(0)
    expected = 0.2 * counts / counts.sum(1, keepdim=True)
    expected += torch.diag(1 - expected.sum(1))
    torch.testing.assert_close(confusion_transition(y, x, 0.2, 3), expected, rtol=1e-12, atol=1e-12)


def test_confusion_noise_on_digits_flips_about_the_rate_towards_look_alikes(mnist_mini, fresh_seed):
    noisy, realised, _ = noisify(mnist_mini.train_labels, "confusion", 0.3, 10, fresh_seed,
                                 features=mnist_mini.train_images)
    assert abs(realised - 0.3) < 0.03
    with pytest.raises(ValueError, match="confusion noise needs features"):
        noisify(mnist_mini.train_labels, "confusion", 0.3, 10, fresh_seed)
    with pytest.raises(ValueError, match="comes from the data"):
        transition_matrix("confusion", 0.3, 10)
