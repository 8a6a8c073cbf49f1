"""Flat buffers: the optimizer's parameters, gradients and state as views into one tensor per group.

``FlatGroup`` lays out one param group as ``[scored | pad | unscored | pad]``, each part padded to
a multiple of ``ALIGN`` elements, so that the fused kernels see 16-element-aligned lengths
(vector loads) and the scored part is one contiguous slice for the threshold. Padding stays zero
and is never scored.

``FlatState`` is the lifecycle an optimizer runs over its groups: build the buffers at the first
step, adopt per-parameter state into them (and again after ``load_state_dict``), zero the
gradients in place, and run each step through an ``Engine``.

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

from .cdr_rule import gradient_scale, keep_count, rdi_coefficient
from .distributed import SINGLE, Distributed, RowSlots
from .engines import Engine

ALIGN = 16


def _padded(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


class FlatGroup:
    """One param group's tensors as views into flat weight, grad and momentum buffers."""

    def __init__(self, params: list[Tensor], scored: list[bool], extra: int = 0) -> None:
        """``extra``: room after the gradient in the buffer the all-reduce carries (``comm``),
        for rows that travel with it (``cdr_fast.distributed.RowSlots``)."""
        first = params[0]
        if any(p.dtype != first.dtype or p.device != first.device for p in params):
            raise ValueError("flat buffers need one dtype and one device per param group; got "
                             f"{sorted({f'{p.dtype} on {p.device}' for p in params})}")
        self.device, self.dtype = first.device, first.dtype
        scored_params = [p for p, s in zip(params, scored) if s]
        unscored_params = [p for p, s in zip(params, scored) if not s]
        self.n_scored = sum(p.numel() for p in scored_params)
        start_unscored = _padded(self.n_scored)
        self.numel = _padded(start_unscored + sum(p.numel() for p in unscored_params))
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
        self.hooked: list[bool] = []  # a frozen parameter gets its hook once it requires grad
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
        end = offset + p.numel()
        view = self.weights[offset:end].view_as(p)
        view.copy_(p.detach())
        p.data = view
        grad_view = self.grads[offset:end].view_as(p)
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
        self.hooked.append(False)
        self._hook(i)
        return end

    def _hook(self, i: int) -> None:
        p = self.params[i]
        if self.hooked[i] or not p.requires_grad:
            return

        def mark_fresh(_: Tensor) -> None:
            self.fresh[i] = True

        p.register_post_accumulate_grad_hook(mark_fresh)
        self.hooked[i] = True
        self.all_hooked = all(self.hooked)

    def view(self, buffer: Tensor, p: Tensor) -> Tensor:
        """``p``'s part of a flat buffer, shaped like ``p``."""
        return buffer[self.slices[self._index[id(p)]]].view_as(p)

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
            elif g is view or (g.data_ptr() == view.data_ptr() and g.shape == view.shape):
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
            p.grad = view if self.hooked[i] or not set_to_none else None
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
        dense = [[p for p in group["params"] if not (p.grad is not None and p.grad.is_sparse)] for group in groups]
        # sparse-gradient parameters (the AUX table), stepped outside the flat buffers
        self.outside = [[p for p in group["params"] if p.grad is not None and p.grad.is_sparse] for group in groups]
        # Under torch.distributed the sparse rows ride in the first dense group's all-reduce.
        host = next((i for i, params in enumerate(dense) if params), None)
        riders = [(p, dist.max_shard(group["batch_size"])) for group, outside in zip(groups, self.outside)
                  for p in outside if dist.enabled and host is not None and self._can_ride(group, p, dense[host][0])]
        sizes = [RowSlots.size(dist, max_rows, p.shape[1], p.shape[0]) for p, max_rows in riders]
        self.flats: list[FlatGroup | None] = [
            FlatGroup(params, [is_scored(group, p) for p in params], sum(sizes) if i == host else 0) if params else None
            for i, (group, params) in enumerate(zip(groups, dense))]
        self.slots: dict[int, RowSlots] = {}
        offset = 0
        for (p, max_rows), size in zip(riders, sizes):
            self.slots[id(p)] = RowSlots(self.flats[host].extra[offset : offset + size], dist, max_rows, p.shape[1],
                                         p.shape[0])
            offset += size
        scored = [f for f in self.flats if f is not None and f.n_scored]
        dtype = scored[0].dtype if scored else torch.float32
        device = scored[0].device if scored else groups[0]["params"][0].device
        self.thr, self.kept = engine.new_threshold(device, dtype)
        self.adopt(state)

    def adopt(self, state: dict) -> None:
        """Copy per-parameter state into the flat buffers and make the state entries views of them."""
        for group, flat in zip(self.groups, self.flats):
            if flat is None:
                continue
            if group["rdi_lambda"] != 0 and flat.initial is None:
                flat.initial = flat.weights.clone()
            for p in flat.params:
                st = state[p]
                for key, buffer in (("momentum_buffer", flat.momentum), ("initial", flat.initial)):
                    if buffer is None:
                        continue
                    view = flat.view(buffer, p)
                    if key in st and st[key].data_ptr() != view.data_ptr():
                        view.copy_(st[key])
                    if key in st or (key == "momentum_buffer" and group["momentum"] != 0):
                        st[key] = view

    def zero_grad(self, set_to_none: bool) -> None:
        for flat, outside in zip(self.flats, self.outside):
            if flat is not None:
                flat.zero_grads(set_to_none)
            for p in outside:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad = torch.zeros_like(p.grad)

    def step(self, state: dict, *, exact: bool, seed: int) -> tuple[Tensor, Tensor, int] | None:
        """One step of every group; returns the threshold, the kept count and the scored count
        (the optimizer's to read; None if nothing was masked)."""
        present = [flat.present(self.dist.enabled) if flat is not None else [] for flat in self.flats]
        if self.slots:  # a rank without rows this step still sends its (empty) slot
            for p in (p for outside in self.outside for p in outside if id(p) in self.slots):
                g = p.grad
                self.slots[id(p)].write(*((g._indices()[0], g._values()) if g is not None else (None, None)))
        for flat in self.flats:
            if flat is not None:  # one collective per group, on the buffer we step on (and the rows)
                self.dist.all_reduce_mean_and_sum_(flat.comm, flat.numel)
        whole = all(all(have) for have in present) and sum(bool(f and f.n_scored) for f in self.flats) <= 1
        # Usually every buffer as it is; when some parameter has no gradient this step, or several
        # groups are scored, copies of what takes part (torch leaves the others alone).
        spans = [self._whole(flat) if whole else self._gathered(flat, have) for flat, have in zip(self.flats, present)]
        taus = {g["tau"] for g, span in zip(self.groups, spans) if span is not None and span.n_scored}
        if len(taus) > 1:
            raise ValueError(f"scored param groups must share one tau (the threshold is global); got {sorted(taus)}")
        tau = taus.pop() if taus else 0.0
        scored = [span for span in spans if span is not None and span.n_scored]
        n_scored = sum(span.n_scored for span in scored)
        mask = n_scored > 0 and tau > 0
        if mask:
            if len(scored) > 1:
                w, g = torch.cat([s.w[: s.n_scored] for s in scored]), torch.cat([s.g[: s.n_scored] for s in scored])
            else:
                w, g = scored[0].scored_views or (scored[0].w[:n_scored], scored[0].g[:n_scored])
            self.kept.zero_()
            self.engine.threshold(w, g, keep_count(tau, n_scored), self.thr, exact=exact, seed=seed)
        for group, span, outside in zip(self.groups, spans, self.outside):
            if span is not None:
                masked = mask and span.n_scored > 0
                self.engine.masked_update(
                    span.w, span.g, span.buf, span.w0, self.thr, self.kept, n_scored=span.n_scored, lr=group["lr"],
                    momentum=group["momentum"], weight_decay=group["weight_decay"],
                    rdi_coef=rdi_coefficient(group["rdi_lambda"]), clip=gradient_scale(tau) if masked else 1.0,
                    mask=masked)
                if span.write_back is not None:
                    span.write_back()
            for p in outside:
                outside_update(self.engine, self.dist, group, state, p, self.thr, self.kept, self.slots.get(id(p)))
        return (self.thr, self.kept, n_scored) if mask else None

    @staticmethod
    def _can_ride(group: dict[str, Any], p: Tensor, host_param: Tensor) -> bool:
        """Whether a sparse table's rows can travel in the gradient all-reduce: a plain-SGD table
        (AuxBias.param_group, which records the global batch size) of the host buffer's dtype."""
        plain = group["momentum"] == 0 and group["weight_decay"] == 0 and group["rdi_lambda"] == 0
        return plain and bool(group.get("batch_size")) and p.dim() == 2 and p.dtype == host_param.dtype

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


def rows_per_rank(group: dict[str, Any], idx: Tensor, dist: Distributed) -> int:
    """The padded row count of the AUX all-gather: from the group's global ``batch_size``
    (``AuxBias.param_group`` records it), else this rank's rows (then every rank must hold as
    many, as with equal local batches)."""
    batch_size = group.get("batch_size")
    return dist.max_shard(batch_size) if batch_size else idx.numel()


def outside_update(engine: Engine, dist: Distributed, group: dict[str, Any], state: dict, p: Tensor, thr: Tensor,
                   kept: Tensor, slots: RowSlots | None = None) -> None:
    """A parameter outside the flat buffers (the AUX table): row-sparse SGD, O(batch x classes).
    ``slots``: where the gradient all-reduce brought every rank's rows (else they are all-gathered)."""
    if slots is not None:  # every rank applies every rank's rows: the tables stay identical
        idx, rows = slots.read()
        engine.aux_row_update(p.data, idx, rows, -group["lr"] / dist.world_size)
        return
    g = p.grad
    if g is None:
        return
    if g.is_sparse and group["momentum"] == 0 and group["weight_decay"] == 0 and group["rdi_lambda"] == 0:
        idx, rows = g._indices()[0], g._values()
        if dist.enabled:
            idx, rows = dist.all_gather_rows(idx, rows, rows_per_rank(group, idx, dist))
        engine.aux_row_update(p.data, idx, rows, -group["lr"] / dist.world_size)
        return
    if dist.enabled:
        raise ValueError("under torch.distributed a table with momentum, weight decay or RDI would need a dense "
                         f"all-reduce of {p.numel()} elements per step; give it plain SGD (AuxBias.param_group)")
    # Momentum, decay or RDI move every row at every step: the update is dense.
    st = state[p]
    if group["momentum"] != 0:
        st.setdefault("momentum_buffer", torch.zeros_like(p))
    w = p.data.view(-1)
    engine.masked_update(
        w, (g.to_dense() if g.is_sparse else g).reshape(-1), st.get("momentum_buffer", p.data).view(-1),
        st.get("initial", p.data).view(-1), thr, kept, n_scored=0, lr=group["lr"],
        momentum=group["momentum"], weight_decay=group["weight_decay"],
        rdi_coef=rdi_coefficient(group["rdi_lambda"]), clip=1.0, mask=False)
