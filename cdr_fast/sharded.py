"""The optimizer step over FSDP2's sharded parameters: ``ShardedState``, ``FlatState``'s counterpart.

Under ``torch.distributed.fsdp.fully_shard`` every parameter is a DTensor spread over the ranks,
and its gradient arrives averaged and sharded (FSDP2 reduce-scatters it). Each rank steps on its
own shards, one tensor at a time with the engine's update (FSDP2 owns the storage, so there is no
flat buffer to build), and the global threshold comes from the distributed radix select
(``cdr_fast.distributed_select``): exact, whatever ``exact`` says, with three all-reduces of
2,048 counts and one of the kept count. The optimizer state holds each rank's local shards as
plain tensors. Parameters outside FSDP2 (the AUX table, replicated) step as in ``FlatState``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.distributed.tensor import DTensor

from .cdr_rule import KEEP_NOTHING, gradient_scale, keep_count, rdi_coefficient
from .distributed import Distributed
from .distributed_select import sharded_threshold
from .engines import Engine
from .flat import outside_update


def is_sharded(p: Tensor) -> bool:
    return isinstance(p, DTensor)


def local_flat(t: Tensor) -> Tensor:
    """This rank's shard of a DTensor (or a plain tensor) as a flat view of its storage."""
    shard = t.to_local() if isinstance(t, DTensor) else t
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
        local_scored = 0
        for group in groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.is_sparse:
                    continue
                if not is_sharded(p):
                    raise ValueError(f"a dense parameter of shape {tuple(p.shape)} is not sharded: with FSDP2, apply "
                                     "fully_shard to every module whose parameters this optimizer steps")
                if is_scored(group, p):
                    local_scored += local_flat(p).numel()
        first = groups[0]["params"][0]
        device = first.to_local().device if is_sharded(first) else first.device
        total = dist.all_reduce_(torch.tensor(local_scored, dtype=torch.int64, device=device))
        self.n_scored = int(total.item())  # once, at the first step: the model's size does not change
        self.thr, self.kept = engine.new_threshold(device)

    def adopt(self, state: dict) -> None:
        """Nothing to adopt: the state's local tensors are used as they are."""

    @torch.no_grad()
    def step(self, state: dict, *, exact: bool, seed: int) -> tuple[Tensor, Tensor, int] | None:
        """One step of every group on this rank's shards; returns the threshold, the kept count
        over all ranks and the scored count (None if nothing was masked)."""
        dense = [(group, p, local_flat(p), local_flat(p.grad)) for group in self.groups for p in group["params"]
                 if p.grad is not None and not p.grad.is_sparse]
        taus = {group["tau"] for group, p, _, _ in dense if self.is_scored(group, p)}
        if len(taus) > 1:
            raise ValueError(f"scored param groups must share one tau (the threshold is global); got {sorted(taus)}")
        tau = taus.pop() if taus else 0.0
        mask = self.n_scored > 0 and tau > 0
        if mask:
            self.kept.zero_()
            scored = [(w, g) for group, p, w, g in dense if self.is_scored(group, p)]
            k = keep_count(tau, self.n_scored)
            if k == 0:
                self.thr.fill_(KEEP_NOTHING)
            else:
                sharded_threshold(scored, k, self.thr, self.dist)
        for group, p, w, g in dense:
            st = state[p]
            if group["momentum"] != 0 and "momentum_buffer" not in st:
                st["momentum_buffer"] = torch.zeros_like(w)
            masked = mask and self.is_scored(group, p)
            self.engine.masked_update(
                w, g, st.get("momentum_buffer", w), local_flat(st["initial"]) if "initial" in st else w, self.thr,
                self.kept, n_scored=w.numel() if masked else 0, lr=group["lr"], momentum=group["momentum"],
                weight_decay=group["weight_decay"], rdi_coef=rdi_coefficient(group["rdi_lambda"]),
                clip=gradient_scale(tau) if masked else 1.0, mask=masked)
        for group in self.groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.is_sparse:
                    outside_update(self.engine, self.dist, group, state, p, self.thr, self.kept)
        if not mask:
            return None
        return self.thr, self.dist.all_reduce_(self.kept.to(torch.int64)), self.n_scored
