"""Compiled engine: the CPU twin of the Triton kernels, the same algorithms in C (``cpu_kernels.c``).

The threshold is the exact k-th largest of the scores, or of the systematic sample of
``cdr_fast.sampling`` (read in place by one C loop), found by a radix select over the float
bits; the update is one branch-free loop per (mask, momentum, RDI) combination, vectorised (AVX2
where the CPU has it) and split over torch's threads. Nothing is left to the host between the two:
the threshold goes from one call to the next through a 0-d tensor. The AUX operations are the
reference engine's: on the CPU the eager gather and ``index_add_`` are already O(batch x classes).

Why C and not ``torch.compile``: this engine's update used to be an Inductor loop above 131k
parameters. The C loop moves the same bytes as torch's own fused SGD step (1M parameters: 0.100
ms against 0.106; 11M: 2.00 against 2.02 ms, 2 threads) where Inductor's took 0.22 and 3.24 ms,
and it needs no 30-second compile on first use (bench/RESULTS.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..sampling import systematic_plan
from . import native
from .reference import ReferenceEngine


class CompiledEngine(ReferenceEngine):
    name = "compiled"
    device_types = ("cpu",)
    dtypes = (torch.float32,)
    always_exact = False

    def __init__(self) -> None:
        native.library()  # built (or found) now: no compiler is a one-line error before anything runs
        self._scratch = torch.empty(0, dtype=torch.int32)  # the select's work space, grown once: no per-step allocation

    def _scratch_for(self, n: int) -> Tensor:
        if self._scratch.numel() < n:
            self._scratch = torch.empty(n, dtype=torch.int32)
        return self._scratch

    def _select(self, w: Tensor, g: Tensor, k: int, thr: Tensor, *, exact: bool, seed: int) -> None:
        plan = systematic_plan(w.numel(), exact)
        if plan.exact:
            native.kth_largest(g, w, k, self._scratch_for(w.numel()), thr)
            return
        # The sample's scores in the first n_sample words of the scratch, the select's work space after
        # them (n_sample <= n / 3, so 2 * n_sample words fit in the n an exact select would use).
        m = plan.n_sample
        scratch = self._scratch_for(2 * m)
        sample = scratch[:m].view(torch.float32)
        native.systematic_sample(g, w, plan.windows, plan.window, plan.phase(seed), sample)
        native.kth_largest(sample, None, plan.rank(k), scratch[m : 2 * m], thr)

    def masked_update(self, w, g, buf, w0, thr, kept, *, n_scored, lr, momentum, weight_decay, rdi_coef, gradient_scale,
                      mask) -> None:
        if w.numel() == 0:
            return
        native.masked_update(w, g, buf, w0, thr, kept, n_scored=n_scored, lr=lr, momentum=momentum,
                             weight_decay=weight_decay, rdi_coef=rdi_coef, gradient_scale=gradient_scale, mask=mask)
