"""AUX's sparse rows: how a table with a row-sparse gradient is stepped, outside the flat buffers,
and how its rows travel between ranks (docs/design.md, "Beyond one device", AUX).

A param group's parameters whose ``.grad`` is sparse (``AuxBias``'s table) are ``SparseTables``:
plain SGD on the batch's rows only, O(batch x classes), whatever the number of examples. Under
torch.distributed every rank must apply every rank's rows, so that the replicated tables stay
identical. Two transports:

- ``RowSlots``: the rows ride in the gradient all-reduce the optimizer makes anyway. The host
  flat buffer gets a tail with one slot per rank of ``ceil(batch / world)`` rows (from the group's
  global ``batch_size``: no host sync), each row its values plus its index as base-4096 digits.
  Every rank zeroes the tail and writes its own slot; the sum brings every slot to every rank
  exactly (one writer per slot; the digits are small integers, exact in float32). One collective.
- ``all_gather_rows``: without a dense buffer to ride in (FSDP2, whose gradients FSDP reduces),
  the (index, row) pairs are all-gathered, the int64 index packed beside its row as raw bytes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .cdr_rule import rdi_coefficient
from .distributed import Distributed
from .engines import Engine

DIGIT_BITS = 12  # an index travels as base-4096 digits: small integers that float32 sums keep exact


def index_digits(num_rows: int) -> int:
    """How many base-4096 digits spell every index below ``num_rows``."""
    return max(1, -(-max(num_rows - 1, 1).bit_length() // DIGIT_BITS))


def has_sparse_grad(p: Tensor) -> bool:
    return p.grad is not None and p.grad.is_sparse


def is_plain_sgd(group: dict[str, Any]) -> bool:
    """A group whose parameters move only where they have a gradient: then a sparse gradient's
    update is sparse too."""
    return group["momentum"] == 0 and group["weight_decay"] == 0 and group["rdi_lambda"] == 0


def rows_per_rank(group: dict[str, Any], rows_here: int, dist: Distributed) -> int:
    """The padded row count each rank sends: from the group's global ``batch_size``
    (``AuxBias.param_group`` declares it), else this rank's rows (then every rank must hold as
    many, as with equal local batches)."""
    return dist.max_shard(group["batch_size"]) if group.get("batch_size") else rows_here


class RowSlots:
    """A table's batch rows carried by the gradient all-reduce: ``buffer`` holds one slot per rank
    of ``max_rows`` rows, each ``width`` values plus the row's index as base-4096 digits. Every
    rank zeroes the buffer, writes its own slot, and after the all-reduce (a sum: each slot has
    one writer, and adding zeros is exact) every rank reads every rank's rows. Padding rows are
    index 0 with zero values, which change nothing."""

    def __init__(self, buffer: Tensor, dist: Distributed, max_rows: int, width: int, num_rows: int) -> None:
        self.dist, self.max_rows, self.width = dist, max_rows, width
        self.digits = index_digits(num_rows)
        self.buffer = buffer
        self.table = buffer.view(dist.world_size * max_rows, width + self.digits)

    @staticmethod
    def size(dist: Distributed, max_rows: int, width: int, num_rows: int) -> int:
        """The buffer length the slots of a ``num_rows`` x ``width`` table need."""
        return dist.world_size * max_rows * (width + index_digits(num_rows))

    def write(self, idx: Tensor | None, rows: Tensor | None) -> None:
        """This rank's rows into its slot (None: it has none this step), every other slot zero."""
        n = 0 if idx is None else idx.numel()
        if n > self.max_rows:
            raise ValueError(f"this rank's batch has {n} rows but the AUX group allows {self.max_rows} per rank: "
                             "give AuxBias.param_group the global batch_size")
        self.buffer.zero_()
        if n == 0:
            return
        mine = self.table[self.dist.rank * self.max_rows : self.dist.rank * self.max_rows + n]
        mine[:, : self.width] = rows
        for d in range(self.digits):
            mine[:, self.width + d] = (idx >> (DIGIT_BITS * d)) & ((1 << DIGIT_BITS) - 1)

    def read(self) -> tuple[Tensor, Tensor]:
        """Every rank's (indices, rows), after the all-reduce."""
        digits = self.table[:, self.width :].long()
        idx = digits[:, 0].clone()
        for d in range(1, self.digits):
            idx += digits[:, d] << (DIGIT_BITS * d)
        return idx, self.table[:, : self.width]


def all_gather_rows(dist: Distributed, idx: Tensor, rows: Tensor, max_rows: int) -> tuple[Tensor, Tensor]:
    """Every rank's (index, row) pairs, in one all-gather: each index rides beside its row as raw
    bytes (an int64 viewed as the rows' dtype; the gather moves bytes, so it comes back exact).
    Each rank pads its pairs to ``max_rows`` with index 0 and zero rows (adding zero changes
    nothing), so every size is known without a host sync."""
    if not dist.enabled:
        return idx, rows
    if idx.numel() > max_rows:
        raise ValueError(f"this rank's batch has {idx.numel()} rows but the AUX group allows {max_rows} per "
                         "rank: give AuxBias.param_group the global batch_size")
    n, width = rows.shape
    packed = torch.zeros((max_rows, width + 8 // rows.element_size()), dtype=rows.dtype, device=rows.device)
    if n:
        packed[:n, :width] = rows
        packed[:n, width:] = idx.to(torch.int64).contiguous().view(rows.dtype).view(n, -1)
    out = dist.all_gather_into(packed)
    return out[:, width:].contiguous().view(torch.int64).view(-1), out[:, :width].contiguous()


class SparseTables:
    """The parameters of the param groups whose gradient is row-sparse at the first step (the
    AUX tables), and their step.

    ``ride``: the dtype of the flat buffer whose all-reduce the rows may ride in (None: no such
    buffer; the rows are all-gathered). ``extra`` is the room the riders need after that buffer's
    gradient; ``bind`` hands it over once the buffer exists.
    """

    def __init__(self, groups: list[dict[str, Any]], dist: Distributed, ride: torch.dtype | None) -> None:
        self.dist = dist
        self.members = [(group, p) for group in groups for p in group["params"] if has_sparse_grad(p)]
        self._riders = [(p, dist.max_shard(group["batch_size"])) for group, p in self.members
                        if dist.enabled and ride is not None and is_plain_sgd(group) and group.get("batch_size")
                        and p.dim() == 2 and p.dtype == ride]
        self._sizes = [RowSlots.size(dist, max_rows, p.shape[1], p.shape[0]) for p, max_rows in self._riders]
        self.slots: dict[int, RowSlots] = {}

    @property
    def extra(self) -> int:
        return sum(self._sizes)

    def bind(self, extra: Tensor) -> None:
        offset = 0
        for (p, max_rows), size in zip(self._riders, self._sizes):
            self.slots[id(p)] = RowSlots(extra[offset : offset + size], self.dist, max_rows, p.shape[1], p.shape[0])
            offset += size

    def send(self) -> None:
        """Write this rank's rows into their slots, before the all-reduce (a rank without rows this
        step still sends its empty slot)."""
        for _, p in self.members:
            slots = self.slots.get(id(p))
            if slots is not None:
                g = p.grad
                slots.write(*((g._indices()[0], g._values()) if g is not None else (None, None)))

    def zero_grad(self, set_to_none: bool) -> None:
        for _, p in self.members:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad = torch.zeros_like(p.grad)

    def step(self, engine: Engine, state: dict, thr: Tensor, kept: Tensor) -> None:
        for group, p in self.members:
            self._update(engine, group, state, p, thr, kept)

    def _update(self, engine: Engine, group: dict[str, Any], state: dict, p: Tensor, thr: Tensor,
                kept: Tensor) -> None:
        """Row-sparse SGD, O(batch x classes); every rank applies every rank's rows."""
        dist, slots = self.dist, self.slots.get(id(p))
        if slots is not None:
            idx, rows = slots.read()
            engine.aux_row_update(p.data, idx, rows, -group["lr"] / dist.world_size)
            return
        g = p.grad
        if g is None:
            return
        if g.is_sparse and is_plain_sgd(group):
            idx, rows = g._indices()[0], g._values()
            if dist.enabled:
                idx, rows = all_gather_rows(dist, idx, rows, rows_per_rank(group, idx.numel(), dist))
            engine.aux_row_update(p.data, idx, rows, -group["lr"] / dist.world_size)
            return
        if dist.enabled:
            raise ValueError("under torch.distributed a table with momentum, weight decay or RDI would need a dense "
                             f"all-reduce of {p.numel()} elements per step; give it plain SGD (AuxBias.param_group)")
        # Momentum, decay or RDI move every row at every step: the update is dense.
        if group["momentum"] != 0:
            state[p].setdefault("momentum_buffer", torch.zeros_like(p))
        st = state.get(p, {})  # no empty entry for a parameter without state, as torch's SGD
        w = p.data.view(-1)
        engine.masked_update(
            w, (g.to_dense() if g.is_sparse else g).reshape(-1), st.get("momentum_buffer", p.data).view(-1),
            st.get("initial", p.data).view(-1), thr, kept, n_scored=0, lr=group["lr"],
            momentum=group["momentum"], weight_decay=group["weight_decay"],
            rdi_coef=rdi_coefficient(group["rdi_lambda"]), gradient_scale=1.0, mask=False)
