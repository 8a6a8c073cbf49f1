"""Reference engine: eager PyTorch that does exactly what the published methods do.

Every function here works on lists of tensors and holds no optimizer state of its own, so the
optimizer (``cdr_fast.optim``) can hand the same lists to a fused engine instead. The op order
copies the published CDR code and ``torch.optim.SGD`` (single-tensor path) so that the results
agree bit for bit, not just to rounding.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def keep_count(tau: float, num_scored: int) -> int:
    """Number of parameters CDR keeps: ``int((1 - tau) * n)``, as the published code computes it."""
    return int((1.0 - tau) * num_scored)


def cdr_scores(params: list[Tensor], grads: list[Tensor]) -> Tensor:
    """Flat ``|g * w|`` over all scored tensors, concatenated in order (one global ranking)."""
    return torch.cat([g.reshape(-1) for g in grads]).mul_(torch.cat([w.reshape(-1) for w in params])).abs_()


def exact_threshold(scores: Tensor, k: int) -> Tensor:
    """The k-th largest score, found with a global ``torch.topk`` as the published code does.

    Returns a 0-d tensor. For ``k == 0`` nothing is kept: the threshold is NaN, and no score
    compares ``>=`` to NaN. (The published code would fail with an IndexError here.)
    """
    if k == 0:
        return torch.full((), math.nan, dtype=scores.dtype, device=scores.device)
    top_values, _ = torch.topk(scores, k)
    return top_values[-1]


def cdr_masked_grads(
    params: list[Tensor], grads: list[Tensor], tau: float
) -> tuple[list[Tensor], Tensor, Tensor]:
    """CDR's gradient rewrite over the scored tensors (DESIGN.md section 2, steps 1-3).

    Returns the new gradients ``(1 - tau) * [|g w| >= thr] * g``, the threshold and the kept
    fraction (both 0-d tensors on the parameters' device). The inputs are not modified.
    """
    scores = cdr_scores(params, grads)
    n = scores.numel()
    thr = exact_threshold(scores, keep_count(tau, n))
    keep = scores >= thr
    clip = 1.0 - tau
    masked = []
    offset = 0
    for g in grads:
        m = keep[offset : offset + g.numel()].view_as(g)
        offset += g.numel()
        # Published: mask = (score >= thr).float() * clip; grad = mask * grad
        masked.append(m.to(g.dtype).mul_(clip).mul_(g))
    kept_fraction = keep.sum(dtype=torch.float32) / max(n, 1)
    return masked, thr, kept_fraction


def sgd_update_(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    initial_params: list[Tensor | None],
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    rdi_lambda: float,
) -> list[Tensor | None]:
    """SGD with momentum and weight decay (dampening 0, no Nesterov), plus the RDI pull.

    ``d = g + wd * w + rdi_lambda**2 * (w - w0)``; ``buf = momentum * buf + d`` (``buf = d`` on
    the first step); ``w -= lr * buf``. Updates ``params`` in place and returns the momentum
    buffers, new ones where an entry of ``momentum_buffers`` was None.

    A sparse gradient (the AUX table's) with no decay, momentum or RDI is applied row-sparse;
    otherwise it is densified, because then the dense update touches every row.
    """
    new_buffers: list[Tensor | None] = []
    for w, g, buf, w0 in zip(params, grads, momentum_buffers, initial_params):
        if g.is_sparse:
            g = g.coalesce()
            if weight_decay == 0 and momentum == 0 and rdi_lambda == 0:
                w.add_(g, alpha=-lr)
                new_buffers.append(None)
                continue
            g = g.to_dense()
        d = g.add(w, alpha=weight_decay) if weight_decay != 0 else g
        if rdi_lambda != 0:
            d = d.add(w - w0, alpha=rdi_lambda * rdi_lambda)
        if momentum != 0:
            if buf is None:
                buf = torch.clone(d).detach()
            else:
                buf.mul_(momentum).add_(d)
            d = buf
        w.add_(d, alpha=-lr)
        new_buffers.append(buf)
    return new_buffers
