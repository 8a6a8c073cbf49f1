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
        backend, timeout = "nccl" if use_cuda else "gloo", timedelta(seconds=timeout_s)
        restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        if restart and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            # After torchrun restarted the group (--max-restarts), the agent's store still holds the
            # previous attempt's addresses: a new rank connecting to a dead peer's port was seen to
            # fail the restart. Each attempt gets keys of its own.
            store = dist.PrefixStore(f"cdr_fast_attempt_{restart}", dist.TCPStore(
                os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=timeout))
            dist.init_process_group(backend, store=store, rank=int(os.environ["RANK"]),
                                    world_size=int(os.environ["WORLD_SIZE"]), timeout=timeout)
        else:
            dist.init_process_group(backend, timeout=timeout)
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank, dist.group.WORLD)


def leave(run: Distributed, wait: bool = True) -> None:
    """Leave the group. ``wait``: a barrier first, so that every rank has finished its
    collectives (a rank that tore gloo down while its peer still sent was seen to abort at exit),
    then the teardown. Pass False when the ranks may not all get here (an interrupt, a crash, a
    dead peer): the group is then left as it is for the process's end to take down."""
    if run.enabled and dist.is_initialized() and wait:
        try:
            dist.barrier(group=run.group)
        finally:
            dist.destroy_process_group()
    # Not waiting: the process is about to end, and tearing the group down could block on a peer
    # that died (torchrun would then wait 30 s to kill this rank before it can restart the group).


def exit_process(code: int) -> NoReturn:
    """End a process torchrun started, after ``leave``: flush and exit without the interpreter's
    teardown. Under load, gloo's worker threads were seen to abort that teardown (SIGABRT,
    "terminate called without an active exception") after every file was written, which torchrun
    then reports as a failed run."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
