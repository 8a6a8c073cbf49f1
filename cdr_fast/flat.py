"""Flat buffers: the optimizer's parameters, gradients and state as views into one tensor per group.

``FlatGroup`` lays out one param group as ``[scored | pad | unscored | pad]``, each part padded to
a multiple of ``ALIGN`` elements, so that the fused kernels see 16-element-aligned lengths
(vector loads) and the scored part is one contiguous slice for the threshold. Padding stays zero
and is never scored. A complex parameter lives in the buffer as its real pairs
(``torch.view_as_real``): SGD's update is the same elementwise, and CDR scores each real number.

``FlatState`` is the lifecycle an optimizer runs over its groups: build the buffers at the first
step, adopt per-parameter state into them (and again after ``load_state_dict``), zero the
gradients in place, and run each step: the plan from ``cdr_fast.cdr_rule``, the arithmetic from
an ``Engine``, the sparse AUX rows from ``cdr_fast.aux_rows``.

Autograd accumulates into an existing ``.grad`` in place, so after ``zero_grad`` (which zeroes
the flat gradient instead of dropping it) backward writes straight into the flat buffer and the
step copies nothing. A post-accumulate-grad hook marks which parameters received a gradient since
``zero_grad(set_to_none=True)``: the others count as having none, as in torch, and are left
alone by the step. If user code replaces a ``.grad``, the step copies the new one in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .aux_rows import SparseTables, has_sparse_grad
from .cdr_rule import plan_step
from .distributed import SINGLE, Distributed
from .engines import Engine

ALIGN = 16


def _padded(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype.to_real() if dtype.is_complex else dtype


def real_numel(p: Tensor) -> int:
    """Elements ``p`` takes in a flat buffer: a complex number is two."""
    return p.numel() * (2 if p.is_complex() else 1)


def shaped_like(flat_part: Tensor, p: Tensor) -> Tensor:
    """A 1-d slice of a flat buffer as a tensor shaped (and, for complex ``p``, typed) like ``p``."""
    if p.is_complex():
        return torch.view_as_complex(flat_part.view(*p.shape, 2))
    return flat_part.view_as(p)


class FlatGroup:
    """One param group's tensors as views into flat weight, grad and momentum buffers."""

    def __init__(self, params: list[Tensor], scored: list[bool], extra: int = 0) -> None:
        """``extra``: room after the gradient in the buffer the all-reduce carries (``comm``),
        for rows that travel with it (``cdr_fast.aux_rows.RowSlots``)."""
        first = params[0]
        self.device, self.dtype = first.device, real_dtype(first.dtype)
        if any(real_dtype(p.dtype) != self.dtype or p.device != first.device for p in params):
            raise ValueError("flat buffers need one dtype and one device per param group; got "
                             f"{sorted({f'{p.dtype} on {p.device}' for p in params})}: put the others in a group "
                             "of their own")
        scored_params = [p for p, s in zip(params, scored) if s]
        unscored_params = [p for p, s in zip(params, scored) if not s]
        self.n_scored = sum(real_numel(p) for p in scored_params)
        start_unscored = _padded(self.n_scored)
        self.numel = _padded(start_unscored + sum(real_numel(p) for p in unscored_params))
        self.weights = torch.zeros(self.numel, dtype=self.dtype, device=self.device)
        self.comm = torch.zeros(self.numel + extra, dtype=self.dtype, device=self.device)
        self.grads, self.extra = self.comm[: self.numel], self.comm[self.numel :]
        self.momentum = torch.zeros_like(self.weights)
        self.initial: Tensor | None = None
        self.params: list[Tensor] = []
        self.slices: list[slice] = []
        self.scored: list[bool] = []
        self.grad_views: list[Tensor] = []  # made once: the per-step checks slice nothing
        # fresh[i]: parameter i received a gradient since the last zero_grad(set_to_none=True)
        self.fresh: list[bool] = []
        self.hooks: list[Any] = []  # a frozen parameter gets its hook once it requires grad (None until then)
        self.all_hooked = False
        self._index: dict[int, int] = {}
        offset = 0
        for p in scored_params:
            offset = self._adopt(p, offset, scored=True)
        offset = start_unscored
        for p in unscored_params:
            offset = self._adopt(p, offset, scored=False)
        self.scored_views = (self.weights[: self.n_scored], self.grads[: self.n_scored])  # what the threshold reads

    def _adopt(self, p: Tensor, offset: int, scored: bool) -> int:
        end = offset + real_numel(p)
        view = shaped_like(self.weights[offset:end], p)
        view.copy_(p.detach())
        p.data = view
        grad_view = shaped_like(self.grads[offset:end], p)
        if p.grad is not None:
            grad_view.copy_(p.grad.to_dense() if p.grad.is_sparse else p.grad)
            p.grad = grad_view
        i = len(self.params)
        self._index[id(p)] = i
        self.params.append(p)
        self.slices.append(slice(offset, end))
        self.scored.append(scored)
        self.grad_views.append(grad_view)
        self.fresh.append(p.grad is not None)
        self.hooks.append(None)
        self._hook(i)
        return end

    def _hook(self, i: int) -> None:
        p = self.params[i]
        if self.hooks[i] is not None or not p.requires_grad:
            return

        def mark_fresh(_: Tensor) -> None:
            self.fresh[i] = True

        self.hooks[i] = p.register_post_accumulate_grad_hook(mark_fresh)
        self.all_hooked = all(h is not None for h in self.hooks)

    def release(self) -> None:
        """Remove the hooks (the buffers are being rebuilt); the parameters keep their values."""
        for handle in self.hooks:
            if handle is not None:
                handle.remove()

    def view(self, buffer: Tensor, p: Tensor) -> Tensor:
        """``p``'s part of a flat buffer, shaped like ``p``."""
        return shaped_like(buffer[self.slices[self._index[id(p)]]], p)

    def present(self, replicated: bool = False) -> list[bool]:
        """Which parameters have a gradient this step (torch's ``p.grad is not None``); a ``.grad``
        that user code replaced is copied into the flat gradient first. ``replicated``: the
        gradient is about to be averaged over ranks, which must agree without asking each other,
        so every parameter with a gradient view counts (its zeros, if this rank produced none)."""
        if self.all_hooked and all(p.grad is view for p, view in zip(self.params, self.grad_views)):
            return [True] * len(self.params) if replicated else self.fresh  # the usual step: nothing replaced
        have = []
        for i, (p, view) in enumerate(zip(self.params, self.grad_views)):
            self._hook(i)
            g = p.grad
            if g is None:
                have.append(False)
            elif g is view or (g.data_ptr() == view.data_ptr() and g.shape == view.shape and g.dtype == view.dtype):
                have.append(self.fresh[i] or replicated)
            else:
                view.copy_(g.to_dense() if g.is_sparse else g)
                p.grad = view
                have.append(True)
        return have

    def zero_grads(self, set_to_none: bool) -> None:
        self.grads.zero_()
        for i, (p, view) in enumerate(zip(self.params, self.grad_views)):
            self._hook(i)
            # Re-attach a dropped or replaced .grad. Without a hook (frozen parameter) nothing would
            # tell whether backward wrote into the view, so it gets torch's None instead.
            p.grad = view if self.hooks[i] is not None or not set_to_none else None
            self.fresh[i] = not set_to_none  # zeros count as a gradient only when asked for


class Span(NamedTuple):
    """The flat tensors one update runs over (scored elements first), and, for gathered copies,
    how to write the results back."""

    w: Tensor
    g: Tensor
    buf: Tensor
    w0: Tensor
    n_scored: int
    write_back: Callable[[], None] | None
    scored_views: tuple[Tensor, Tensor] | None = None  # (w, g)[:n_scored], made once for a whole buffer


class FlatState:
    """The flat-buffer lifecycle of one optimizer (see the module docstring).

    Args:
        groups: the optimizer's param groups (read at every step: schedulers change ``lr``).
        state: the optimizer's per-parameter state; ``momentum_buffer`` and ``initial`` (RDI's
            w0) entries become views into the flat buffers.
        engine: computes the threshold and the update.
        is_scored: whether CDR ranks a parameter of a group.
        dist: the ranks whose gradients each step averages (``cdr_fast.distributed``).
    """

    def __init__(self, groups: list[dict[str, Any]], state: dict, engine: Engine,
                 is_scored: Callable[[dict[str, Any], Tensor], bool], dist: Distributed = SINGLE) -> None:
        self.groups, self.engine, self.dist = groups, engine, dist
        # Sparse-gradient parameters (the AUX table) step outside the flat buffers; under
        # torch.distributed their rows ride in the first dense group's all-reduce.
        dense = [[p for p in group["params"] if not has_sparse_grad(p)] for group in groups]
        host = next((i for i, params in enumerate(dense) if params), None)
        self.tables = SparseTables(groups, dist, real_dtype(dense[host][0].dtype) if host is not None else None)
        self.flats: list[FlatGroup | None] = [
            FlatGroup(params, [is_scored(group, p) for p in params], self.tables.extra if i == host else 0)
            if params else None for i, (group, params) in enumerate(zip(groups, dense))]
        if host is not None:
            self.tables.bind(self.flats[host].extra)
        for flat in self.flats:
            if flat is not None:
                engine.check_dtype(flat.dtype)
        scored = [f for f in self.flats if f is not None and f.n_scored]
        dtype = scored[0].dtype if scored else torch.float32
        device = scored[0].device if scored else groups[0]["params"][0].device
        self.thr, self.kept = engine.new_threshold(device, dtype)
        self.adopt(state)

    def release(self) -> None:
        for flat in self.flats:
            if flat is not None:
                flat.release()

    def adopt(self, state: dict) -> None:
        """Copy per-parameter state into the flat buffers and make the state entries views of them.
        A parameter without state gets no entry (torch's SGD makes none)."""
        for group, flat in zip(self.groups, self.flats):
            if flat is None:
                continue
            if group["rdi_lambda"] != 0 and flat.initial is None:
                flat.initial = flat.weights.clone()
            for p in flat.params:
                st = state.get(p, {})
                for key, buffer in (("momentum_buffer", flat.momentum), ("initial", flat.initial)):
                    if buffer is None:
                        continue
                    view = flat.view(buffer, p)
                    if key in st and st[key].data_ptr() != view.data_ptr():
                        view.copy_(st[key])
                    if key in st:
                        st[key] = view
        # Parameters whose momentum_buffer entry appears at their first step with a gradient, as
        # torch's SGD makes it then (the flat buffer holds zeros for them until that step).
        self._no_momentum_entry = [[i for i, p in enumerate(flat.params) if "momentum_buffer" not in state.get(p, {})]
                                   if flat is not None and group["momentum"] != 0 else []
                                   for group, flat in zip(self.groups, self.flats)]

    def _attach_momentum(self, state: dict, present: list[list[bool]]) -> None:
        """The ``momentum_buffer`` entries (views of the flat buffer) of the parameters stepped
        for the first time; only those still without one are looked at."""
        for pending, flat, have in zip(self._no_momentum_entry, self.flats, present):
            for i in [i for i in pending if have[i]]:
                state[flat.params[i]]["momentum_buffer"] = flat.view(flat.momentum, flat.params[i])
                pending.remove(i)

    def zero_grad(self, set_to_none: bool) -> None:
        for flat in self.flats:
            if flat is not None:
                flat.zero_grads(set_to_none)
        self.tables.zero_grad(set_to_none)

    def step(self, state: dict, *, exact: bool, seed: int) -> tuple[Tensor, Tensor, int] | None:
        """One step of every group; returns the threshold, the kept count and the scored count
        (the optimizer's to read; None if nothing was masked)."""
        present = [flat.present(self.dist.enabled) if flat is not None else [] for flat in self.flats]
        if any(self._no_momentum_entry):  # usually empty after the first step: no loop here
            self._attach_momentum(state, present)
        self.tables.send()
        for flat in self.flats:
            if flat is not None:  # one collective per group, on the buffer we step on (and the rows)
                self.dist.all_reduce_mean_and_sum_(flat.comm, flat.numel)
        whole = all(all(have) for have in present) and sum(bool(f and f.n_scored) for f in self.flats) <= 1
        # Usually every buffer as it is; when some parameter has no gradient this step, or several
        # groups are scored, copies of what takes part (torch leaves the others alone).
        spans = [self._whole(flat) if whole else self._gathered(flat, have) for flat, have in zip(self.flats, present)]
        scored = [(group, span) for group, span in zip(self.groups, spans) if span is not None and span.n_scored]
        plan = plan_step((group["tau"] for group, _ in scored), sum(span.n_scored for _, span in scored))
        if plan.masks:
            if len(scored) > 1:
                w = torch.cat([s.w[: s.n_scored] for _, s in scored])
                g = torch.cat([s.g[: s.n_scored] for _, s in scored])
            else:
                span = scored[0][1]
                w, g = span.scored_views or (span.w[: span.n_scored], span.g[: span.n_scored])
            self.kept.zero_()
            self.engine.threshold(w, g, plan.keep, self.thr, exact=exact, seed=seed)
        for group, span in zip(self.groups, spans):
            if span is not None:
                self.engine.masked_update(span.w, span.g, span.buf, span.w0, self.thr, self.kept,
                                          n_scored=span.n_scored, **plan.update_options(group, span.n_scored > 0))
                if span.write_back is not None:
                    span.write_back()
        self.tables.step(self.engine, state, self.thr, self.kept)
        return (self.thr, self.kept, plan.n_scored) if plan.masks else None

    @staticmethod
    def _whole(flat: FlatGroup | None) -> Span | None:
        if flat is None:
            return None
        w0 = flat.initial if flat.initial is not None else flat.weights
        return Span(flat.weights, flat.grads, flat.momentum, w0, flat.n_scored, None, flat.scored_views)

    @staticmethod
    def _gathered(flat: FlatGroup | None, have: list[bool]) -> Span | None:
        """Copies of the parameters that have a gradient, scored first, and how to write them back."""
        if flat is None or not any(have):
            return None
        slices = [s for s, h in zip(flat.slices, have) if h]
        w0_buffer = flat.initial if flat.initial is not None else flat.weights
        w, g, buf, w0 = (torch.cat([b[s] for s in slices]) for b in (flat.weights, flat.grads, flat.momentum, w0_buffer))
        n_scored = sum(s.stop - s.start for s, h, sc in zip(flat.slices, have, flat.scored) if h and sc)

        def write_back() -> None:
            offset = 0
            for s in slices:
                n = s.stop - s.start
                flat.weights[s] = w[offset : offset + n]
                flat.momentum[s] = buf[offset : offset + n]
                offset += n

        return Span(w, g, buf, w0, n_scored, write_back)
