"""The optimizer step over FSDP2's sharded parameters: ``ShardedState``, ``FlatState``'s counterpart.

Under ``torch.distributed.fsdp.fully_shard`` every parameter is a DTensor spread over the ranks,
and its gradient arrives averaged and sharded (FSDP2 reduce-scatters it). Each rank steps on its
own shards, one tensor at a time with the engine's update (FSDP2 owns the storage, so there is no
flat buffer to build), and the global threshold comes from the distributed radix select
(``cdr_fast.distributed_select``): exact, whatever ``exact`` says, with three all-reduces of
2,048 counts and one of the kept count. The step's plan is ``cdr_fast.cdr_rule``'s, as for the
flat buffers. The optimizer state holds DTensors sharded like their parameters (momentum, RDI's
w0), so ``torch.distributed.checkpoint``'s optimizer state-dict helpers work with it. Parameters
outside FSDP2 (the AUX table, replicated) step as in ``FlatState`` (``cdr_fast.aux_rows``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .aux_rows import SparseTables, has_sparse_grad
from .cdr_rule import KEEP_NOTHING, plan_step
from .distributed import Distributed
from .distributed_select import sharded_threshold
from .engines import Engine


def is_sharded(p: Tensor) -> bool:
    """Whether ``p`` is a DTensor. Only fully_shard makes them, and it has imported
    torch.distributed.tensor by then: importing it here would cost every process 0.6 s at start."""
    dtensor = sys.modules.get("torch.distributed.tensor")
    return dtensor is not None and isinstance(p, dtensor.DTensor)


def local_flat(t: Tensor) -> Tensor:
    """This rank's shard of a DTensor (or a plain tensor) as a flat view of its storage."""
    shard = t.to_local() if is_sharded(t) else t
    if not shard.is_contiguous():
        raise ValueError(f"a local shard of shape {tuple(shard.shape)} is not contiguous; CDRSGD steps on "
                         "fully_shard's dim-0 shards, which are")
    return shard.view(-1)


def mesh_group(params: list[Tensor]) -> Any:
    """The process group of the (1-D) device mesh the sharded parameters live on."""
    return next(p for p in params if is_sharded(p)).device_mesh.get_group()


class ShardedState:
    """Steps FSDP2-sharded param groups (see the module docstring)."""

    def __init__(self, groups: list[dict[str, Any]], state: dict, engine: Engine,
                 is_scored: Callable[[dict[str, Any], Tensor], bool], dist: Distributed) -> None:
        self.groups, self.engine, self.is_scored, self.dist = groups, engine, is_scored, dist
        self.tables = SparseTables(groups, dist, ride=None)  # no flat buffer to ride in: all-gathered
        local_scored = 0
        for group in groups:
            for p in group["params"]:
                if has_sparse_grad(p):
                    continue
                if not is_sharded(p):
                    raise ValueError(f"a dense parameter of shape {tuple(p.shape)} is not sharded: with FSDP2, apply "
                                     "fully_shard to every module whose parameters this optimizer steps")
                engine.check_dtype(p.dtype)
                if is_scored(group, p):
                    local_scored += local_flat(p).numel()
        first = groups[0]["params"][0]
        device = first.to_local().device if is_sharded(first) else first.device
        total = dist.all_reduce_(torch.tensor(local_scored, dtype=torch.int64, device=device))
        self.n_scored = int(total.item())  # once, at the first step: the model's size does not change
        self.thr, self.kept = engine.new_threshold(device)

    def adopt(self, state: dict) -> None:
        """Nothing to adopt: the state's tensors are used as they are."""

    def release(self) -> None:
        """Nothing to release: no hooks, no buffers of its own."""

    @torch.no_grad()
    def step(self, state: dict, *, exact: bool, seed: int) -> tuple[Tensor, Tensor, int] | None:
        """One step of every group on this rank's shards; returns the threshold, the kept count
        over all ranks and the scored count (None if nothing was masked)."""
        dense = [(group, p) for group in self.groups for p in group["params"]
                 if p.grad is not None and not p.grad.is_sparse]
        plan = plan_step((group["tau"] for group, p in dense if self.is_scored(group, p)), self.n_scored)
        if plan.masks:
            self.kept.zero_()
            if plan.keep == 0:
                self.thr.fill_(KEEP_NOTHING)
            else:
                scored = [(local_flat(p), local_flat(p.grad)) for group, p in dense if self.is_scored(group, p)]
                sharded_threshold(scored, plan.keep, self.thr, self.dist)
        for group, p in dense:
            if group["momentum"] != 0 and "momentum_buffer" not in state.get(p, {}):
                state[p]["momentum_buffer"] = torch.zeros_like(p)  # a DTensor sharded like p
            st, w, scored = state.get(p, {}), local_flat(p), self.is_scored(group, p)
            self.engine.masked_update(
                w, local_flat(p.grad), local_flat(st["momentum_buffer"]) if "momentum_buffer" in st else w,
                local_flat(st["initial"]) if "initial" in st else w, self.thr, self.kept,
                n_scored=w.numel() if plan.masks and scored else 0, **plan.update_options(group, scored))
        self.tables.step(self.engine, state, self.thr, self.kept)
        if not plan.masks:
            return None
        return self.thr, self.dist.all_reduce_(self.kept.to(torch.int64)), self.n_scored
