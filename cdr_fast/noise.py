"""Label noise as the noisy-label literature generates it (docs/design.md, "Label noise").

Every generator is seeded and vectorised (the only Python loop is over classes, never over
examples) and runs on the CPU in float64, so a seed gives the same labels on any machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from .checks import check_choice, check_positive_int, check_range
from .data import DATASETS


@dataclass(frozen=True)
class NoiseType:
    """One kind of synthetic label noise: what its generator needs."""

    name: str
    needs_features: bool = False  # drawn per example from its inputs (no fixed transition matrix)
    seeded_matrix: bool = False  # its transition matrix is itself drawn from the seed


# The registry, in the seed report's block order (the tables follow it). Adding a noise type is one
# entry here and its branch in ``transition_matrix`` (or ``noisify``'s per-example draw).
NOISE: dict[str, NoiseType] = {n.name: n for n in (
    NoiseType("instance", needs_features=True),
    NoiseType("asymmetric"),  # along the dataset's class map (cdr_fast.data.DatasetSpec)
    NoiseType("pairflip"),
    NoiseType("symmetric"),
    NoiseType("random_matrix", seeded_matrix=True),  # each class flips to 2 or 3 random others, unevenly
    NoiseType("class_dependent", seeded_matrix=True),  # half the classes clean, the others twice as noisy
    NoiseType("confusion", needs_features=True),  # towards the classes a quick model confuses each class with
    NoiseType("none"),
)}
NOISE_TYPES = tuple(NOISE)


def asymmetric_maps() -> dict[str, dict[int, int]]:
    """Every dataset's asymmetric class map, by dataset name (from the dataset registry)."""
    return {name: spec.asymmetric_map for name, spec in DATASETS.items() if spec.asymmetric_map is not None}


INSTANCE_FLIP_STD = 0.1


class NoisyLabels(NamedTuple):
    labels: Tensor  # int64, same length as the clean labels
    realised_rate: float  # fraction of labels that changed
    transition: Tensor  # (c, c) float64 empirical T[i, j] = P(noisy = j | clean = i)


def check_rate(rate: float, name: str = "noise rate") -> float:
    return check_range(name, rate, 0.0, 1.0)


def transition_matrix(noise_type: str, rate: float, num_classes: int, dataset: str | None = None,
                      class_map: dict[int, int] | None = None, seed: int = 0) -> Tensor:
    """The noise's transition matrix T (rows: clean class, columns: noisy class), float64.

    Asymmetric noise follows ``class_map`` (source -> target), else the map of ``dataset``.
    ``random_matrix``: each class keeps 1 - rate and sends rate to 2 or 3 other classes drawn from
    ``seed``, in proportions drawn from a flat Dirichlet. ``class_dependent``: half the classes
    (drawn from ``seed``) stay clean; the others flip at 2 rate (at most 0.95), evenly to the rest,
    so the average rate over classes is about ``rate``.

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
        if class_map is None:
            maps = asymmetric_maps()
            if dataset not in maps:
                raise ValueError(f"asymmetric noise has no class map for dataset {dataset!r}; valid choices: "
                                 f"{', '.join(maps)} (or pass class_map)")
            class_map = maps[dataset]
        t = torch.eye(c, dtype=torch.float64)
        for src, dst in class_map.items():
            if src >= c or dst >= c:
                raise ValueError(f"the asymmetric map names class {max(src, dst)}, but num_classes is {c}")
            t[src, src] = 1.0 - rate
            t[src, dst] = rate
        return t
    if noise_type in ("random_matrix", "class_dependent"):
        if c < 3 and noise_type == "random_matrix":
            raise ValueError("random_matrix noise needs at least 3 classes (2 or 3 targets per class)")
        gen = torch.Generator().manual_seed(int(seed) + 15_485_863)
        t = torch.zeros(c, c, dtype=torch.float64)
        if noise_type == "random_matrix":
            for i in range(c):  # a loop over classes, never examples
                others = torch.tensor([j for j in range(c) if j != i])
                k = min(int(torch.randint(2, 4, (1,), generator=gen)), others.numel())
                targets = others[torch.randperm(others.numel(), generator=gen)[:k]]
                share = -torch.log(torch.rand(k, generator=gen, dtype=torch.float64))  # flat Dirichlet
                t[i, targets] = rate * share / share.sum()
        else:
            noisy = torch.randperm(c, generator=gen)[: c // 2]
            flip = min(2 * rate, 0.95)
            t[noisy] = flip / (c - 1)
        t += torch.diag(1.0 - t.sum(1))
        return t
    if noise_type == "instance":
        raise ValueError("instance noise has no fixed transition matrix; it depends on each example's features")
    if noise_type == "confusion":
        raise ValueError("confusion noise's transition matrix comes from the data: confusion_transition(labels, "
                         "features, rate, num_classes)")
    check_choice("noise type", noise_type, NOISE_TYPES)
    raise AssertionError(f"noise type {noise_type!r} is registered but has no generator")


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


def confusion_transition(labels: Tensor, features: Tensor, rate: float, num_classes: int) -> Tensor:
    """``confusion`` noise's transition matrix: each class keeps 1 - rate and sends rate to the
    classes a quickly trained model confuses it with, in proportion to how often it does. The model
    is the nearest class mean on the standardised, flattened features (closed form, float64: no
    seed and no training loop, so the same data gives the same matrix anywhere). A class it never
    confuses sends rate evenly to the others. The flips go towards look-alike classes, as people's
    labelling mistakes tend to, rather than to a fixed partner or uniformly."""
    rate = check_rate(rate)
    c, n = num_classes, labels.shape[0]
    x = features.reshape(n, -1).to(torch.float64)
    x = (x - x.mean(0)) / (x.std(0, correction=0) + 1e-8)
    counts = torch.bincount(labels, minlength=c).to(torch.float64)
    means = torch.zeros(c, x.shape[1], dtype=torch.float64).index_add_(0, labels, x) / counts.clamp(min=1)[:, None]
    # ||x - m||^2 up to the row's own ||x||^2; a class with no example is never the nearest
    distance = (means * means).sum(1)[None, :] - 2.0 * x @ means.T
    distance[:, counts == 0] = math.inf
    predicted = distance.argmin(1)
    confused = torch.zeros(c, c, dtype=torch.float64)
    confused.index_put_((labels, predicted), torch.ones(n, dtype=torch.float64), accumulate=True)
    confused.fill_diagonal_(0.0)
    never = confused.sum(1) == 0
    confused[never] = 1.0
    confused.fill_diagonal_(0.0)
    t = rate * confused / confused.sum(1, keepdim=True).clamp(min=1e-300)
    return t + torch.diag(1.0 - t.sum(1))


def noisify(
    labels: Tensor | np.ndarray,
    noise_type: str,
    rate: float,
    num_classes: int,
    seed: int,
    features: Tensor | None = None,
    *,
    dataset: str | None = None,
    class_map: dict[int, int] | None = None,
) -> NoisyLabels:
    """Corrupt ``labels`` with the named noise; returns (noisy labels, realised rate, empirical T).

    Args:
        labels: clean labels, ints in [0, num_classes).
        noise_type: one of ``NOISE_TYPES``.
        rate: noise rate in [0, 1).
        num_classes: number of classes c.
        seed: seed of the draw; the same seed gives the same labels.
        features: (n, ...) inputs, needed by ``instance`` noise (the CDR code uses the
            normalised images, flattened) and ``confusion`` noise.
        dataset: dataset name, whose class map ``asymmetric`` noise follows (``cdr_fast.data``).
        class_map: ``asymmetric`` noise's map (source class -> target), instead of the dataset's.
    """
    check_choice("noise type", noise_type, NOISE_TYPES)
    rate = check_rate(rate)
    clean = torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels).cpu().long().reshape(-1)
    check_positive_int("num_classes", num_classes)
    if clean.numel() and (int(clean.min()) < 0 or int(clean.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}); got [{int(clean.min())}, {int(clean.max())}]")
    generator = torch.Generator().manual_seed(int(seed))

    if noise_type == "none" or rate == 0.0:
        noisy = clean.clone()
    elif NOISE[noise_type].needs_features:
        if features is None or features.shape[0] != clean.shape[0]:
            raise ValueError(f"{noise_type} noise needs features with one row per label")
        if noise_type == "instance":
            probs = instance_probabilities(clean, features.cpu(), rate, num_classes, generator)
        else:
            probs = confusion_transition(clean, features.cpu(), rate, num_classes)[clean]
        noisy = _sample_rows(probs, generator)
    else:
        t = transition_matrix(noise_type, rate, num_classes, dataset, class_map, seed=seed)
        noisy = _sample_rows(t[clean], generator)

    counts = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    counts.index_put_((clean, noisy), torch.ones(clean.shape[0], dtype=torch.float64), accumulate=True)
    empirical = counts / counts.sum(1, keepdim=True).clamp_(min=1.0)
    realised = float((noisy != clean).double().mean()) if clean.numel() else 0.0
    return NoisyLabels(noisy, realised, empirical)
