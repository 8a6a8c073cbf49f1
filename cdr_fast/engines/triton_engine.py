"""Triton engine: the kernels of ``cdr_fast.kernels`` on CUDA tensors (or on CPU tensors under
``TRITON_INTERPRET=1``, which is how the tests run them without a GPU).

This file supplies what the kernels are not allowed to know: the stratified sample's geometry
and rank (``cdr_fast.sampling``), and the scratch buffers the radix select reuses.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..kernels import aux_gather, cdr_step, cdr_threshold
from ..sampling import HASH_MULTIPLIER, VEC, stratified_plan
from . import interpreting
from .base import Engine


class TritonEngine(Engine):
    name = "triton"
    dtypes = (torch.float32,)

    @classmethod
    def check_device(cls, device: torch.device) -> None:
        if device.type != "cuda" and not interpreting():
            raise ValueError(f"engine 'triton' needs CUDA tensors (or TRITON_INTERPRET=1); got {device.type} tensors")

    def __init__(self) -> None:
        # Radix-select scratch, made once per (device, scores, plan) and reused at every step: a
        # step allocates nothing, so it can be captured in a CUDA graph.
        self._scratch: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}

    def _buffers(self, device: torch.device, plan) -> tuple[Tensor, Tensor, Tensor]:
        key = (device, plan)
        if key not in self._scratch:
            self._scratch[key] = (
                torch.empty(cdr_threshold.scratch_size(plan.windows, VEC), device=device),
                torch.zeros(3 * cdr_threshold.BINS, dtype=torch.int32, device=device),  # kept zero by the kernels
                torch.empty(2, dtype=torch.int64, device=device),
            )
        return self._scratch[key]

    def _select(self, w: Tensor, g: Tensor, k: int, thr: Tensor, *, exact: bool, seed: int) -> None:
        plan = stratified_plan(w.numel(), exact)
        scratch, hist, state = self._buffers(w.device, plan)
        cdr_threshold.cdr_threshold(w, g, plan.rank(k), scratch, hist, state, thr, stride=plan.window,
                                    n_windows=plan.windows, vec=VEC, hash_multiplier=HASH_MULTIPLIER, seed=seed)

    def masked_update(self, w, g, buf, w0, thr, kept, *, n_scored, lr, momentum, weight_decay, rdi_coef, gradient_scale,
                      mask) -> None:
        cdr_step.cdr_sgd_step(w, g, buf, w0, thr, kept, n_scored=n_scored, lr=lr, momentum=momentum,
                              weight_decay=weight_decay, rdi_coef=rdi_coef, gradient_scale=gradient_scale, mask=mask)

    def aux_gather_add(self, logits: Tensor, table: Tensor, idx: Tensor, lam: float) -> Tensor:
        return aux_gather.AuxGatherAdd.apply(logits, table, idx, lam)

    def aux_row_update(self, table: Tensor, idx: Tensor, rows: Tensor, alpha: float) -> None:
        aux_gather.scatter_add_rows(table, idx, rows, alpha)
