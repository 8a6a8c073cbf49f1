"""Label noise as the noisy-label literature generates it (docs/design.md, "Label noise").

Every generator is seeded and vectorised (the only Python loop is over classes, never over
examples) and runs on the CPU in float64, so a seed gives the same labels on any machine.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

NOISE_TYPES = ("none", "symmetric", "pairflip", "asymmetric", "instance")

# Class maps of the asymmetric noise: each source keeps 1 - r of its examples and sends r to its
# target. Keys are dataset names; mnist-mini uses MNIST's map.
ASYMMETRIC_MAPS: dict[str, dict[int, int]] = {
    "mnist": {2: 7, 3: 8, 5: 6, 6: 5},
    "fashion-mnist": {0: 6, 2: 4, 5: 7, 7: 5},
    "cifar10": {9: 1, 2: 0, 3: 5, 5: 3, 4: 7},
    # CIFAR-100: cyclic within each superclass, taken as 5 consecutive class ids, as the
    # Co-teaching/CDR code builds it (i -> i + 1 within its block of 5).
    "cifar100": {i: (i // 5) * 5 + (i % 5 + 1) % 5 for i in range(100)},
}
ASYMMETRIC_MAPS["mnist-mini"] = ASYMMETRIC_MAPS["mnist"]

INSTANCE_FLIP_STD = 0.1


class NoisyLabels(NamedTuple):
    labels: Tensor  # int64, same length as the clean labels
    realised_rate: float  # fraction of labels that changed
    transition: Tensor  # (c, c) float64 empirical T[i, j] = P(noisy = j | clean = i)


def check_rate(rate: float, name: str = "noise rate") -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (0.0 <= rate < 1.0):
        raise ValueError(f"invalid {name}: {rate!r}; valid values are in [0, 1)")
    return float(rate)


def transition_matrix(noise_type: str, rate: float, num_classes: int, dataset: str | None = None) -> Tensor:
    """The noise's transition matrix T (rows: clean class, columns: noisy class), float64.

    Instance noise has no single T (it depends on each example's features); asking for it is an error.
    """
    rate = check_rate(rate)
    c = num_classes
    if noise_type == "none":
        return torch.eye(c, dtype=torch.float64)
    if noise_type == "symmetric":
        if c < 2:
            raise ValueError("symmetric noise needs at least 2 classes")
        t = torch.full((c, c), rate / (c - 1), dtype=torch.float64)
        t.fill_diagonal_(1.0 - rate)
        return t
    if noise_type == "pairflip":
        t = torch.eye(c, dtype=torch.float64) * (1.0 - rate)
        t[torch.arange(c), (torch.arange(c) + 1) % c] += rate
        return t
    if noise_type == "asymmetric":
        if dataset not in ASYMMETRIC_MAPS:
            raise ValueError(
                f"asymmetric noise has no class map for dataset {dataset!r}; "
                f"valid choices: {', '.join(sorted(ASYMMETRIC_MAPS))}"
            )
        t = torch.eye(c, dtype=torch.float64)
        for src, dst in ASYMMETRIC_MAPS[dataset].items():
            if src >= c or dst >= c:
                raise ValueError(f"asymmetric map of {dataset!r} names class {max(src, dst)}, but num_classes is {c}")
            t[src, src] = 1.0 - rate
            t[src, dst] = rate
        return t
    if noise_type == "instance":
        raise ValueError("instance noise has no fixed transition matrix; it depends on each example's features")
    raise ValueError(f"unknown noise type {noise_type!r}; valid choices: {', '.join(NOISE_TYPES)}")


def _sample_rows(probs: Tensor, generator: torch.Generator) -> Tensor:
    """One draw per row of a (n, c) row-stochastic matrix, by inverse CDF."""
    cdf = probs.cumsum(1)
    u = torch.rand(probs.shape[0], 1, generator=generator, dtype=torch.float64) * cdf[:, -1:]
    return (u >= cdf).sum(1).clamp_(max=probs.shape[1] - 1)


def _truncated_normal(n: int, mean: float, std: float, generator: torch.Generator) -> Tensor:
    """n draws of N(mean, std) truncated to [0, 1], by inverse CDF."""
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    lo = normal.cdf(torch.tensor((0.0 - mean) / std, dtype=torch.float64))
    hi = normal.cdf(torch.tensor((1.0 - mean) / std, dtype=torch.float64))
    u = lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)
    return (mean + std * torch.special.ndtri(u)).clamp_(0.0, 1.0)


def instance_probabilities(
    labels: Tensor, features: Tensor, rate: float, num_classes: int, generator: torch.Generator
) -> Tensor:
    """Per-example noisy-label distributions of the CDR code's instance-dependent generator.

    q_i ~ TruncNormal(rate, 0.1, [0, 1]); W ~ N(0, 1) of shape (c, d, c);
    p_i = q_i * softmax(x_i^T W[y_i]) with y_i masked out, plus (1 - q_i) on y_i.
    """
    n, c = labels.shape[0], num_classes
    x = features.reshape(n, -1).to(torch.float64)
    flip = _truncated_normal(n, rate, INSTANCE_FLIP_STD, generator)
    w = torch.randn(c, x.shape[1], c, generator=generator, dtype=torch.float64)
    scores = torch.empty(n, c, dtype=torch.float64)
    for k in range(c):  # a loop over classes, each a single matmul
        rows = labels == k
        scores[rows] = x[rows] @ w[k]
    own = torch.nn.functional.one_hot(labels, c).bool()
    scores.masked_fill_(own, -math.inf)
    probs = flip[:, None] * torch.softmax(scores, dim=1)
    probs[own] += 1.0 - flip
    return probs


def noisify(
    labels: Tensor | np.ndarray,
    noise_type: str,
    rate: float,
    num_classes: int,
    seed: int,
    features: Tensor | None = None,
    *,
    dataset: str | None = None,
) -> NoisyLabels:
    """Corrupt ``labels`` with the named noise; returns (noisy labels, realised rate, empirical T).

    Args:
        labels: clean labels, ints in [0, num_classes).
        noise_type: one of ``NOISE_TYPES``.
        rate: noise rate in [0, 1).
        num_classes: number of classes c.
        seed: seed of the draw; the same seed gives the same labels.
        features: (n, ...) inputs, needed by ``instance`` noise (the CDR code uses the
            normalised images, flattened).
        dataset: dataset name, needed by ``asymmetric`` noise to pick its class map.
    """
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"unknown noise type {noise_type!r}; valid choices: {', '.join(NOISE_TYPES)}")
    rate = check_rate(rate)
    clean = torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels).cpu().long().reshape(-1)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"invalid num_classes: {num_classes!r}; must be a positive int")
    if clean.numel() and (int(clean.min()) < 0 or int(clean.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}); got [{int(clean.min())}, {int(clean.max())}]")
    generator = torch.Generator().manual_seed(int(seed))

    if noise_type == "none" or rate == 0.0:
        noisy = clean.clone()
    elif noise_type == "instance":
        if features is None or features.shape[0] != clean.shape[0]:
            raise ValueError("instance noise needs features with one row per label")
        noisy = _sample_rows(instance_probabilities(clean, features.cpu(), rate, num_classes, generator), generator)
    else:
        t = transition_matrix(noise_type, rate, num_classes, dataset)
        noisy = _sample_rows(t[clean], generator)

    counts = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    counts.index_put_((clean, noisy), torch.ones(clean.shape[0], dtype=torch.float64), accumulate=True)
    empirical = counts / counts.sum(1, keepdim=True).clamp_(min=1.0)
    realised = float((noisy != clean).double().mean()) if clean.numel() else 0.0
    return NoisyLabels(noisy, realised, empirical)
