"""The fused CDR step: score, mask and SGD-update every parameter of a model in one pass.

Over flat buffers laid out as [scored | unscored], element j computes

    g_j  <- (1 - tau) * [|g_j * w_j| >= thr] * g_j      if j < n_scored, else g_j unchanged
    d_j   = g_j + weight_decay * w_j (+ rdi_coef * (w_j - w0_j))
    buf_j = momentum * buf_j + d_j                      (buf starts at zero: the first step gives d)
    w_j  -= lr * buf_j

and counts the kept scored elements. It reads g, w and buf and writes w and buf: 20 bytes per
fp32 parameter (24 with RDI's w0). The threshold is read from device memory, so the step needs
no host sync and can be captured in a CUDA graph.
"""

from __future__ import annotations

import triton
import triton.language as tl

BLOCK = 1024
NUM_WARPS = 4


@triton.jit
def _cdr_sgd_kernel(
    w_ptr, g_ptr, buf_ptr, w0_ptr, thr_ptr, kept_ptr,
    n_scored, n, lr, momentum, weight_decay, rdi_coef, gradient_scale,
    MASK: tl.constexpr, HAS_MOMENTUM: tl.constexpr, HAS_RDI: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    w = tl.load(w_ptr + offs, mask=inside, other=0.0)
    g = tl.load(g_ptr + offs, mask=inside, other=0.0)
    if MASK:
        thr = tl.load(thr_ptr)
        scored = offs < n_scored
        keep = scored & (tl.abs(g * w) >= thr)
        g = tl.where(scored, tl.where(keep, gradient_scale * g, 0.0), g)
        tl.atomic_add(kept_ptr, tl.sum(keep.to(tl.int32), axis=0))
    d = g + weight_decay * w
    if HAS_RDI:
        d += rdi_coef * (w - tl.load(w0_ptr + offs, mask=inside, other=0.0))
    if HAS_MOMENTUM:
        d = momentum * tl.load(buf_ptr + offs, mask=inside, other=0.0) + d
        tl.store(buf_ptr + offs, d, mask=inside)
    tl.store(w_ptr + offs, w - lr * d, mask=inside)


def cdr_sgd_step(
    w, g, buf, w0, thr, kept, *, n_scored: int, lr: float, momentum: float, weight_decay: float,
    rdi_coef: float, gradient_scale: float, mask: bool,
) -> None:
    """Launch the fused step over flat fp32 buffers (updated in place).

    Args:
        w, g: parameters and gradients, flat; elements ``[0, n_scored)`` are the scored ones.
        buf: momentum buffer (zero before the first step); unused when ``momentum == 0``.
        w0: RDI anchor; unused when ``rdi_coef == 0``.
        thr: 0-d float32 threshold; kept: int32 counter the kept count is added to.
        gradient_scale: ``1 - tau``; mask: whether to mask at all (False: plain SGD, thr and kept unused).
    """
    n = w.numel()
    if n == 0:
        return
    _cdr_sgd_kernel[(triton.cdiv(n, BLOCK),)](
        w, g, buf, w0, thr, kept, n_scored, n, lr, momentum, weight_decay, rdi_coef, gradient_scale,
        MASK=mask, HAS_MOMENTUM=momentum != 0, HAS_RDI=rdi_coef != 0, BLOCK=BLOCK, num_warps=NUM_WARPS,
    )
