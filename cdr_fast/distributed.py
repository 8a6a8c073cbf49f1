"""torch.distributed, as torchrun sets it up: the process group, the batch split, and the reductions
the optimizer and the training loop need (docs/design.md, "Beyond one device").

cdr-fast has no launcher of its own. Under ``torchrun`` the environment names the rank and the
world size; ``Distributed.from_env`` joins the group (gloo on the CPU, NCCL on CUDA, one GPU per
process) and everything else takes the resulting ``Distributed`` object. A single process gets
``SINGLE`` and every helper here does nothing.

The scheme is data parallel with replicated state: every rank holds the whole model, the whole
optimizer state and the whole AUX table, and they stay identical because every rank applies the
same averaged update. What crosses the wire per step:

- the flat gradient of each param group, once, as one all-reduce over one contiguous buffer
  (``all_reduce_mean_and_sum_``, as DDP averages: divide, then sum): the buffer the optimizer
  steps on, so no bucket copies;
- the AUX table's batch rows: each rank's (index, row gradient) pairs, O(batch x classes), padded
  to a size every rank knows without asking. They ride in the same all-reduce, each rank writing
  its own slot of a tail of the gradient buffer (``RowSlots``), so a step makes one collective;
  without a dense buffer to ride in they are all-gathered (``all_gather_rows``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn

import torch
import torch.distributed as dist
from torch import Tensor

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


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

    @staticmethod
    def launched() -> bool:
        """Whether torchrun started this process as one of several."""
        return int(os.environ.get("WORLD_SIZE", "1")) > 1

    @classmethod
    def from_env(cls, use_cuda: bool, timeout_s: float = 600.0) -> Distributed:
        """Join the process group torchrun describes (gloo, or NCCL when ``use_cuda``); ``SINGLE``
        when this is the only process."""
        if not cls.launched():
            return SINGLE
        missing = [v for v in TORCHRUN_VARIABLES if v not in os.environ]
        if missing:
            raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} are not set: "
                             "start several processes with torchrun (torchrun --nproc_per_node=N train.py ...)")
        local_rank = int(os.environ["LOCAL_RANK"])
        if use_cuda:
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(seconds=timeout_s))
        return cls(dist.get_rank(), dist.get_world_size(), local_rank, dist.group.WORLD)

    @staticmethod
    def exit(code: int) -> NoReturn:
        """End a process torchrun started, after ``close``: flush and leave without the
        interpreter's teardown. Under load, gloo's worker threads were seen to abort that teardown
        (SIGABRT, "terminate called without an active exception") after every file was written,
        which torchrun then reports as a failed run."""
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    def close(self, wait: bool = True) -> None:
        """Leave the group. ``wait``: a barrier first, so that every rank has finished its
        collectives (a rank that tore gloo down while its peer still sent was seen to abort at
        exit). Pass False when the ranks may not all get here (an interrupt, a crash): a barrier
        then could meet a peer's pending collective and hang."""
        if self.enabled and dist.is_initialized():
            try:
                if wait:
                    dist.barrier(group=self.group)
            finally:
                dist.destroy_process_group()

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

    def all_gather_rows(self, idx: Tensor, rows: Tensor, max_rows: int) -> tuple[Tensor, Tensor]:
        """Every rank's (index, row) pairs, in one all-gather: each index rides beside its row as
        raw bytes (an int64 viewed as the rows' dtype; the gather moves bytes, so it comes back
        exact). Each rank pads its pairs to ``max_rows`` with index 0 and zero rows (adding zero
        changes nothing), so every size is known without a host sync."""
        if not self.enabled:
            return idx, rows
        if idx.numel() > max_rows:
            raise ValueError(f"this rank's batch has {idx.numel()} rows but the AUX group allows {max_rows} per "
                             "rank: give AuxBias.param_group the global batch_size")
        n, width = rows.shape
        packed = torch.zeros((max_rows, width + 8 // rows.element_size()), dtype=rows.dtype, device=rows.device)
        if n:
            packed[:n, :width] = rows
            packed[:n, width:] = idx.to(torch.int64).contiguous().view(rows.dtype).view(n, -1)
        out = packed.new_empty((self.world_size * max_rows, packed.shape[1]))
        dist.all_gather_single(out, packed, group=self.group)
        return out[:, width:].contiguous().view(torch.int64).view(-1), out[:, :width].contiguous()

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

DIGIT_BITS = 12  # an index travels as base-4096 digits: small integers that float32 sums keep exact


def index_digits(num_rows: int) -> int:
    """How many base-4096 digits spell every index below ``num_rows``."""
    return max(1, -(-max(num_rows - 1, 1).bit_length() // DIGIT_BITS))


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
