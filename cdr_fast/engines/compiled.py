"""Compiled engine: the CPU twin of the Triton kernels, the same single-pass algorithms in torch ops.

``torch.compile`` (Inductor) turns the masked update into one vectorised C++ loop over the flat
buffers. The threshold picks the k-th largest of the scores with ``numpy.partition``
(introselect: linear time, about 15x faster than ``torch.kthvalue`` on this project's CPU); on
the CPU there is no device to keep it on. The approximate threshold reads the systematic sample
of ``cdr_fast.sampling``. The AUX operations are the reference engine's: on the CPU the eager
gather and ``index_add_`` are already O(batch x classes).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..sampling import VEC, SamplePlan, systematic_plan
from .reference import ReferenceEngine


def _update(w: Tensor, g: Tensor, buf: Tensor, w0: Tensor, thr: Tensor, hyper: Tensor, n_scored: int,
            mask: bool, has_momentum: bool, has_rdi: bool) -> Tensor:
    """``kernels.cdr_step``'s pass in torch ops, written for Inductor to fuse into one loop."""
    lr, momentum, weight_decay, rdi_coef, clip = hyper.unbind()
    kept = torch.zeros((), dtype=torch.int64)
    if mask:
        scored = torch.arange(w.numel()) < n_scored
        keep = scored & ((g * w).abs() >= thr)
        g = torch.where(scored, torch.where(keep, clip * g, 0.0), g)
        kept = keep.sum()
    d = g + weight_decay * w
    if has_rdi:
        d = d + rdi_coef * (w - w0)
    if has_momentum:
        d = momentum * buf + d
        buf.copy_(d)
    w.copy_(w - lr * d)
    return kept


def _update_eager(w: Tensor, g: Tensor, buf: Tensor, w0: Tensor, thr: Tensor, n_scored: int, lr: float,
                  momentum: float, weight_decay: float, rdi_coef: float, clip: float, mask: bool) -> Tensor | None:
    """``_update`` for small buffers, uncompiled: the same arithmetic in few in-place ops, since eager
    torch pays per op, not per byte, at this size."""
    d = torch.mul(w, weight_decay)
    kept = None
    if mask:
        gs = g[:n_scored]
        keep = (torch.mul(gs, w[:n_scored]).abs_() >= thr).to(w.dtype)
        d[:n_scored].addcmul_(keep, gs, value=clip)  # + clip * g where kept (torch.where is 10x slower)
        d[n_scored:].add_(g[n_scored:])
        kept = keep.sum()
    else:
        d.add_(g)
    if rdi_coef != 0:
        d.add_(w - w0, alpha=rdi_coef)
    if momentum != 0:
        d = buf.mul_(momentum).add_(d)
    w.add_(d, alpha=-lr)
    return kept


def _sample(w: Tensor, g: Tensor, plan: SamplePlan, seed: int) -> Tensor:
    """The scores of the systematic sample: the VEC-chunk at this step's phase in every whole window.

    Strided views, no gather (see ``cdr_fast.sampling``).
    """
    phase = plan.phase(seed)
    shape = (plan.windows, plan.window)
    end = plan.windows * plan.window
    return (g[:end].view(shape)[:, phase : phase + VEC] * w[:end].view(shape)[:, phase : phase + VEC]).abs().flatten()


# Below this many elements the eager ops win: measured on the project's 2-core CPU, a LeNet-sized
# pass (61,706 parameters) takes about 0.1 ms eager against 0.14 ms compiled, and a compile costs
# seconds (about 30 s cold); at 1M parameters it is 7 ms eager against 0.34 ms compiled.
COMPILE_MIN_NUMEL = 2**17

# dynamic=True: one compiled loop serves every buffer size (several optimizers, or a test suite, would
# otherwise hit the recompile limit); hyperparameters travel as a tensor so a
# learning-rate schedule does not recompile.
_update_compiled = torch.compile(_update, dynamic=True, fullgraph=True)


class CompiledEngine(ReferenceEngine):
    name = "compiled"

    def _select(self, w: Tensor, g: Tensor, k: int, thr: Tensor, *, exact: bool, seed: int) -> None:
        plan = systematic_plan(w.numel(), exact)
        scores = (g * w).abs() if plan.exact else _sample(w, g, plan, seed)
        values = scores.numpy()
        k_s = plan.rank(k)
        thr.fill_(float(np.partition(values, values.size - k_s)[values.size - k_s]))

    def masked_update(self, w, g, buf, w0, thr, kept, *, n_scored, lr, momentum, weight_decay, rdi_coef, clip,
                      mask, compile: bool | None = None) -> None:
        """See ``Engine.masked_update``. ``compile``: None compiles from ``COMPILE_MIN_NUMEL`` elements
        on; True/False force it (the tests use both)."""
        if w.numel() == 0:
            return
        if compile is None:
            compile = w.numel() >= COMPILE_MIN_NUMEL
        if compile:
            hyper = torch.tensor([lr, momentum, weight_decay, rdi_coef, clip], dtype=w.dtype)
            count = _update_compiled(w, g, buf, w0, thr, hyper, n_scored, mask, momentum != 0, rdi_coef != 0)
        else:
            count = _update_eager(w, g, buf, w0, thr, n_scored, lr, momentum, weight_decay, rdi_coef, clip, mask)
        if mask:
            kept += count.to(kept.dtype)
