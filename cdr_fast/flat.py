"""Flat buffers for a param group: every parameter and its ``.grad`` become views into one tensor.

Layout: ``[scored | pad | unscored | pad]``, each part padded to a multiple of ``ALIGN``
elements so that the fused kernels see 16-element-aligned lengths (vector loads) and the scored
part is one contiguous slice for the threshold. Padding stays zero and is never scored.

Autograd accumulates into an existing ``.grad`` in place, so after ``zero_grad`` (which zeroes
the flat gradient instead of dropping it) backward writes straight into the flat buffer and the
step copies nothing. If user code replaces a ``.grad`` or sets it to None, ``sync_grads`` notices
and copies the new gradient in (or reports the missing one).
"""

from __future__ import annotations

import torch
from torch import Tensor

ALIGN = 16


def _padded(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


class FlatGroup:
    """One param group's tensors as views into flat weight, grad and momentum buffers."""

    def __init__(self, params: list[Tensor], scored: list[bool]) -> None:
        first = params[0]
        self.device, self.dtype = first.device, first.dtype
        self.scored_params = [p for p, s in zip(params, scored) if s]
        self.unscored_params = [p for p, s in zip(params, scored) if not s]
        self.n_scored = sum(p.numel() for p in self.scored_params)
        start_unscored = _padded(self.n_scored)
        self.numel = _padded(start_unscored + sum(p.numel() for p in self.unscored_params))
        self.weights = torch.zeros(self.numel, dtype=self.dtype, device=self.device)
        self.grads = torch.zeros_like(self.weights)
        self.momentum = torch.zeros_like(self.weights)
        self.initial: Tensor | None = None
        self.slots: list[tuple[Tensor, slice]] = []
        self._grad_views: list[Tensor] = []  # made once: the per-step checks slice nothing
        self._index: dict[int, int] = {}
        offset = 0
        for p in self.scored_params:
            offset = self._adopt(p, offset)
        offset = start_unscored
        for p in self.unscored_params:
            offset = self._adopt(p, offset)

    def _adopt(self, p: Tensor, offset: int) -> int:
        end = offset + p.numel()
        view = self.weights[offset:end].view_as(p)
        view.copy_(p.detach())
        p.data = view
        grad_view = self.grads[offset:end].view_as(p)
        if p.grad is not None:  # a missing .grad stays missing: sync_grads reports it
            grad_view.copy_(p.grad)
            p.grad = grad_view
        self._grad_views.append(grad_view)
        self._index[id(p)] = len(self.slots)
        self.slots.append((p, slice(offset, end)))
        return end

    @property
    def params(self) -> list[Tensor]:
        return [p for p, _ in self.slots]

    def holds(self, p: Tensor) -> bool:
        return id(p) in self._index

    def view(self, buffer: Tensor, p: Tensor) -> Tensor:
        """``p``'s part of a flat buffer, shaped like ``p``."""
        return buffer[self.slots[self._index[id(p)]][1]].view_as(p)

    def _is_attached(self, g: Tensor, view: Tensor) -> bool:
        return g is view or (g.data_ptr() == view.data_ptr() and g.shape == view.shape)

    def sync_grads(self) -> bool:
        """Make every ``.grad`` a view into the flat gradient again; False if some ``.grad`` is None."""
        complete = True
        for (p, _), view in zip(self.slots, self._grad_views):
            g = p.grad
            if g is None:
                complete = False
            elif not self._is_attached(g, view):
                view.copy_(g.to_dense() if g.is_sparse else g)
                p.grad = view
        return complete

    def zero_grads(self) -> None:
        self.grads.zero_()
        for (p, _), view in zip(self.slots, self._grad_views):  # re-attach a dropped or replaced .grad
            if p.grad is None or not self._is_attached(p.grad, view):
                p.grad = view
