"""Inputs and float64 references shared by the kernel and compiled-engine tests."""

from __future__ import annotations

import math

import torch

SIZES = [1, 5, 1023, 1025, 4097, 70001]  # 1, and sizes that are not multiples of any block


def score_inputs(kind: str, n: int, gen: torch.Generator):
    w = torch.randn(n, generator=gen)
    if kind == "normal":
        g = torch.randn(n, generator=gen)
    elif kind == "ties":  # a handful of distinct scores, each shared by many parameters
        w = torch.ones(n)
        g = torch.randint(0, 6, (n,), generator=gen).float() * 0.25
    elif kind == "zeros":  # 40% exact zeros, as dead units give
        g = torch.randn(n, generator=gen) * (torch.rand(n, generator=gen) > 0.4)
    elif kind == "heavy_tail":  # Cauchy gradients: scores over many orders of magnitude
        g = torch.tan(math.pi * (torch.rand(n, generator=gen) - 0.5))
    elif kind == "tiny":  # subnormal and near-underflow scores
        g = torch.randn(n, generator=gen) * 1e-38
    else:
        raise ValueError(kind)
    return w, g


def reference_step(w, g, buf, w0, thr, n_scored, lr, momentum, wd, rdi_coef, gradient_scale, mask):
    """The fused step's contract: the mask from the float32 scores against the float32 threshold
    (as every engine and the published code compute them: a score within rounding of the
    threshold is decided there), the arithmetic in float64."""
    keep = torch.zeros(w.shape, dtype=torch.bool)
    if mask:
        scores = torch.mul(g[:n_scored].float(), w[:n_scored].float()).abs()
        keep[:n_scored] = scores >= torch.as_tensor(thr, dtype=torch.float32)
    w, g, buf, w0 = (t.double() for t in (w, g, buf, w0))
    if mask:
        g = g.clone()
        g[:n_scored] = torch.where(keep[:n_scored], gradient_scale * g[:n_scored], 0.0)
    d = g + wd * w + rdi_coef * (w - w0)
    if momentum != 0:
        d = momentum * buf + d
    return (w - lr * d).float(), d.float(), int(keep.sum())


def kept_fraction_range(scores: torch.Tensor, k: int, slack: float = 0.005) -> tuple[float, float]:
    """Kept fractions of the exact thresholds at ranks k -+ slack * n.

    The approximate threshold is, with overwhelming probability, the exact top-k' threshold for
    some k' within 0.5% of n of k: its kept fraction must lie in this range. Without ties at the
    boundary the range is (1 - tau) -+ 0.005; when a tied value straddles rank k, the exact
    threshold itself keeps all of it, and so may the estimate.
    """
    n = scores.numel()
    ordered = scores.sort(descending=True).values

    def kept(rank: int) -> float:
        rank = min(max(rank, 1), n)
        return (scores >= ordered[rank - 1]).float().mean().item()

    return kept(k - int(slack * n)), kept(k + int(slack * n))
