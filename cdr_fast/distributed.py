"""This process's place in a data-parallel run: the rank, the batch split, and the collectives the
optimizer and the training loop need (docs/design.md, "Beyond one device").

``cdr_fast.launch`` joins the process group torchrun describes and leaves it; everything else
takes the resulting ``Distributed`` object. A single process gets ``SINGLE`` and every helper
here does nothing.

The scheme is data parallel with replicated state: every rank holds the whole model, the whole
optimizer state and the whole AUX table, and they stay identical because every rank applies the
same averaged update. What crosses the wire per step:

- the flat gradient of each param group, once, as one all-reduce over one contiguous buffer
  (``all_reduce_mean_and_sum_``, as DDP averages: divide, then sum): the buffer the optimizer
  steps on, so no bucket copies;
- the AUX table's batch rows, O(batch x classes), which ride in the same all-reduce or are
  all-gathered (``cdr_fast.aux_rows``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run: its rank, the world size and the group (None: one process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    group: Any = None  # torch.distributed.ProcessGroup

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def of_group(cls, group: Any) -> Distributed:
        """The ``Distributed`` of an initialised process group (``None``: the default group)."""
        group = group if group is not None else dist.group.WORLD
        return cls(dist.get_rank(group), dist.get_world_size(group), int(os.environ.get("LOCAL_RANK", "0")), group)

    # ---------------------------------------------------------------- the batch

    def shard(self, idx: Tensor) -> Tensor:
        """This rank's part of a global batch of example indices: contiguous, sizes differing by at
        most one (``torch.tensor_split``), so the global batch is the single-process one."""
        return torch.tensor_split(idx, self.world_size)[self.rank] if self.enabled else idx

    def max_shard(self, batch_size: int) -> int:
        """The largest part ``shard`` gives any rank of a batch of ``batch_size``."""
        return -(-batch_size // self.world_size)

    def loss_weight(self, shard_size: int, batch_size: int) -> float:
        """The factor on this rank's mean loss that makes the ranks' averaged gradient the gradient
        of the global batch's mean loss: ``shard_size * world / batch_size`` (1 for equal shards)."""
        return shard_size * self.world_size / batch_size if batch_size else 0.0

    # ---------------------------------------------------------------- reductions

    def all_reduce_mean_and_sum_(self, buffer: Tensor, n_mean: int) -> None:
        """One all-reduce of ``buffer``: its first ``n_mean`` elements become their mean over the
        ranks, the rest their sum (the row slots of ``RowSlots``, which only one rank fills)."""
        if not self.enabled:
            return
        buffer[:n_mean].div_(self.world_size)
        dist.all_reduce(buffer, group=self.group)

    def all_reduce_(self, tensor: Tensor, op: str = "sum") -> Tensor:
        """In-place all-reduce (``op``: sum or max); returns ``tensor``."""
        if self.enabled:
            dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op], group=self.group)
        return tensor

    def broadcast_(self, tensor: Tensor) -> Tensor:
        """``tensor`` <- rank 0's, in place."""
        if self.enabled:
            dist.broadcast(tensor, 0, group=self.group)
        return tensor

    def all_gather_into(self, tensor: Tensor) -> Tensor:
        """Every rank's ``tensor`` (the same shape on every rank), stacked along dim 0 in rank order."""
        if not self.enabled:
            return tensor
        out = tensor.new_empty((self.world_size * tensor.shape[0], *tensor.shape[1:]))
        dist.all_gather_into_tensor(out, tensor.contiguous(), group=self.group)
        return out

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (a host-side collective: for setup and errors, never in a step)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (host-side, as ``gather_objects``)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, 0, group=self.group)
        return box[0]

    def first_error(self, error: str | None) -> str | None:
        """Setup ends here on every rank: the first rank's error message, if any rank has one (a
        rank that fails alone, say on a missing file, is named), so every rank exits together."""
        for rank, message in enumerate(self.gather_objects(error)):
            if message is not None:
                return message if rank == 0 or not self.enabled else f"(rank {rank}) {message}"
        return None


SINGLE = Distributed()
