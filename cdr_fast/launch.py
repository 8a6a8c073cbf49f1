"""Joining and leaving the process group that torchrun describes, and ending its processes.

cdr-fast has no launcher of its own. Under ``torchrun`` the environment names the rank and the
world size; ``join`` joins the group (gloo on the CPU, NCCL on CUDA, one GPU per process) and
returns the ``Distributed`` that everything else takes; a single process gets ``SINGLE``.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from typing import NoReturn

import torch
import torch.distributed as dist

from .distributed import SINGLE, Distributed

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """Whether torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(use_cuda: bool, timeout_s: float = 600.0) -> Distributed:
    """Join the process group torchrun describes (gloo, or NCCL when ``use_cuda``); ``SINGLE``
    when this is the only process."""
    if not launched():
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
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank, dist.group.WORLD)


def leave(run: Distributed, wait: bool = True) -> None:
    """Leave the group. ``wait``: a barrier first, so that every rank has finished its
    collectives (a rank that tore gloo down while its peer still sent was seen to abort at exit).
    Pass False when the ranks may not all get here (an interrupt, a crash): a barrier then could
    meet a peer's pending collective and hang."""
    if run.enabled and dist.is_initialized():
        try:
            if wait:
                dist.barrier(group=run.group)
        finally:
            dist.destroy_process_group()


def exit_process(code: int) -> NoReturn:
    """End a process torchrun started, after ``leave``: flush and exit without the interpreter's
    teardown. Under load, gloo's worker threads were seen to abort that teardown (SIGABRT,
    "terminate called without an active exception") after every file was written, which torchrun
    then reports as a failed run."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
