"""The data-parallel LeNet step on the CPU: our flat all-reduce against DDP's buckets.

    torchrun --standalone --nproc_per_node=2 bench/distributed_step.py --data-dir ../shared/data/mnist

Each process: one intra-op thread, LeNet, a global batch of 32 real MNIST images (16 per rank),
forward + backward + step. Variants, timed in alternating blocks of 50 steps so that drift hits
all alike (medians over rounds, ratios against the torch SGD + DDP block of the same round):

- ``torch_sgd_ddp``: ``torch.optim.SGD`` on a DDP-wrapped model (the usual data-parallel step);
- ``cdr_ddp``: ``CDRSGD`` (tau 0.4, no group) on a DDP-wrapped model: DDP reduces the gradient
  through its own buckets and copies it back into the optimizer's flat gradient;
- ``cdr_flat``: ``CDRSGD(process_group=...)``, no DDP: one all-reduce over the flat gradient the
  optimizer steps on;
- ``cdr_aux_flat``: the same with ``AuxBias``, its rows all-gathered (what train.py runs).

It also counts, with the profiler, the ``aten::copy_`` calls and the elements they move in one
step of each variant: the per-step copies that DDP's buckets add. Rank 0 prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.profiler import ProfilerActivity, profile

from cdr_fast import CDRSGD, AuxBias, launch
from cdr_fast.data import load_dataset
from cdr_fast.distributed import Distributed
from cdr_fast.models import LeNet

BLOCK, ROUNDS, BATCH = 50, 12, 32
VARIANTS = ["torch_sgd_ddp", "cdr_ddp", "cdr_flat", "cdr_aux_flat"]


def make(variant: str, n: int, dist: Distributed):
    torch.manual_seed(0)
    model = LeNet()
    if variant == "torch_sgd_ddp":
        return DDP(model), None, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3)
    aux = AuxBias(n, 10, lam=1.0) if variant == "cdr_aux_flat" else None
    groups = [{"params": list(model.parameters())}]
    if aux is not None:
        groups.append(aux.param_group(aux_lr=0.3, batch_size=BATCH))
    flat = variant.endswith("_flat")
    opt = CDRSGD(groups, lr=0.01, momentum=0.9, weight_decay=1e-3, tau=0.4, engine="auto",
                 process_group=dist.group if flat else None)
    return (model if flat else DDP(model)), aux, opt


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="../shared/data/mnist")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist = launch.join(use_cuda=False)
    data = load_dataset("mnist", args.data_dir)
    x_all, y_all = data.train_images, data.train_labels
    n = x_all.shape[0]
    runs = {v: make(v, n, dist) for v in VARIANTS}
    gen = torch.Generator().manual_seed(0)

    def one_step(variant: str) -> None:
        model, aux, opt = runs[variant]
        batch = torch.randint(0, n, (BATCH,), generator=gen)
        idx = dist.shard(batch)
        logits = model(x_all[idx])
        if aux is not None:
            logits = aux(logits, idx)
        loss = F.cross_entropy(logits, y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()

    for v in VARIANTS:  # warm up: flat buffers, DDP's buckets, compiled code
        for _ in range(10):
            one_step(v)
    times = {v: [] for v in VARIANTS}
    for _ in range(ROUNDS):
        for v in VARIANTS:
            start = time.perf_counter()
            for _ in range(BLOCK):
                one_step(v)
            times[v].append((time.perf_counter() - start) / BLOCK)
    copies = {}
    for v in VARIANTS:
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            one_step(v)
        events = [e for e in prof.events() if e.name == "aten::copy_"]
        moved = 0
        for e in events:
            shapes = e.input_shapes[0] if e.input_shapes else []
            numel = 1
            for s in shapes:
                numel *= s
            moved += numel if shapes else 0
        copies[v] = (len(events), moved)
    if dist.is_main:
        base = times["torch_sgd_ddp"]
        print(f"| variant ({dist.world_size} processes, 1 thread each) | step (ms, median) | x torch SGD + DDP | "
              "copy_ calls per step | elements copied |")
        print("|---|---:|---:|---:|---:|")
        for v in VARIANTS:
            ratio = statistics.median(t / b for t, b in zip(times[v], base))
            print(f"| {v} | {1e3 * statistics.median(times[v]):.3f} | {ratio:.3f} | {copies[v][0]} | {copies[v][1]:,} |")
    launch.leave(dist)
    launch.exit_process(0)


if __name__ == "__main__":
    main()
