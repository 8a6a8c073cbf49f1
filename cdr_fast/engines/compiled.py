"""Compiled engine: the CPU twin of the Triton kernels, the same single-pass algorithms in torch ops.

``torch.compile`` (Inductor) turns the masked update into one vectorised C++ loop over the flat
buffers. The threshold is the exact k-th largest of the scores (or of the sample), found by a
radix select in C (``cpu_kernels.c``: the same three-level select as the Triton kernel); below
``COMPILE_MIN_NUMEL`` parameters the update is that file's C loop too. On the CPU there is no
device to keep the threshold on. The approximate threshold reads the systematic sample
of ``cdr_fast.sampling``. The AUX operations are the reference engine's: on the CPU the eager
gather and ``index_add_`` are already O(batch x classes).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..sampling import VEC, SamplePlan, systematic_plan
from . import native
from .reference import ReferenceEngine


def _update(w: Tensor, g: Tensor, buf: Tensor, w0: Tensor, thr: Tensor, hyper: Tensor,
            mask: bool, has_momentum: bool, has_rdi: bool) -> Tensor:
    """``kernels.cdr_step``'s pass in torch ops, written for Inductor to fuse into one loop; with
    ``mask`` every element is scored (the caller passes the scored slice and the rest apart)."""
    lr, momentum, weight_decay, rdi_coef, clip = hyper.unbind()
    kept = torch.zeros((), dtype=torch.int64)
    if mask:
        keep = (g * w).abs() >= thr
        g = (keep * clip) * g  # the published mask: g * ((score >= thr) * clip)
        kept = keep.sum()
    d = g + weight_decay * w
    if has_rdi:
        d = d + rdi_coef * (w - w0)
    if has_momentum:
        d = momentum * buf + d
        buf.copy_(d)
    w.copy_(w - lr * d)
    return kept


def _sample(w: Tensor, g: Tensor, plan: SamplePlan, seed: int) -> Tensor:
    """The scores of the systematic sample: the VEC-chunk at this step's phase in every whole window.

    Strided views, no gather (see ``cdr_fast.sampling``).
    """
    phase = plan.phase(seed)
    shape = (plan.windows, plan.window)
    end = plan.windows * plan.window
    return (g[:end].view(shape)[:, phase : phase + VEC] * w[:end].view(shape)[:, phase : phase + VEC]).abs().flatten()


# Below this many elements the C loop wins: a compiled call pays its guards and wrapper (about
# 0.1 ms on the project's CPU) and a compile costs seconds (about 30 s cold); above it Inductor's
# vectorised, multi-threaded loop wins.
COMPILE_MIN_NUMEL = 2**17

# dynamic=True: one compiled loop serves every buffer size (several optimizers, or a test suite, would
# otherwise hit the recompile limit); hyperparameters travel as a tensor so a
# learning-rate schedule does not recompile.
_update_compiled = torch.compile(_update, dynamic=True, fullgraph=True)


class CompiledEngine(ReferenceEngine):
    name = "compiled"

    def __init__(self) -> None:
        self._scratch = torch.empty(0, dtype=torch.int32)  # the select's work space, grown once: no per-step allocation

    def _scratch_for(self, n: int) -> Tensor:
        if self._scratch.numel() < n:
            self._scratch = torch.empty(n, dtype=torch.int32)
        return self._scratch

    def _select(self, w: Tensor, g: Tensor, k: int, thr: Tensor, *, exact: bool, seed: int) -> None:
        plan = systematic_plan(w.numel(), exact)
        if plan.exact:
            native.kth_largest(g, w, k, self._scratch_for(w.numel()), thr)
        else:
            sample = _sample(w, g, plan, seed)
            native.kth_largest(sample, None, plan.rank(k), self._scratch_for(sample.numel()), thr)

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
            # The scored slice and the rest in two calls: no per-element "is it scored" test.
            split = n_scored if mask else 0
            if split:
                count = _update_compiled(w[:split], g[:split], buf[:split], w0[:split], thr, hyper, True,
                                         momentum != 0, rdi_coef != 0)
                kept += count.to(kept.dtype)
            if split < w.numel():
                _update_compiled(w[split:], g[split:], buf[split:], w0[split:], thr, hyper, False, momentum != 0,
                                 rdi_coef != 0)
        else:
            native.masked_update(w, g, buf, w0, thr, kept, n_scored=n_scored, lr=lr, momentum=momentum,
                                 weight_decay=weight_decay, rdi_coef=rdi_coef, clip=clip, mask=mask)
