"""A few steps of every method through the library's data-parallel paths, for tests/test_distributed.py.

    torchrun --standalone --nproc_per_node=2 tests/ddp_lockstep.py OUT SEED

Each rank trains LeNet on mnist-mini on its share of a global batch of 33 (so the shares are
unequal: 17 and 16), replicated (``CDRSGD(process_group=...)``) or sharded by FSDP2
(``fully_shard``), with ``AuxBias`` where the method has AUX, and saves its parameters, AUX table
and thresholds to ``OUT/<case>_rank<r>.pt``. It also runs the distributed radix select on shards
of one score vector (``OUT/select_rank<r>.pt``). The test runs the same cases in one process and
compares. Importable: ``train_case`` is the one loop both sides run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.distributed.fsdp import fully_shard

from cdr_fast import CDRSGD, AuxBias
from cdr_fast.data import load_dataset
from cdr_fast.distributed import SINGLE, Distributed
from cdr_fast.models import LeNet

STEPS = 5
BATCH = 33
LR, MOMENTUM = 0.01, 0.9
# method: (tau, aux, rdi_lambda)
METHODS = {"sgd": (0.0, False, 0.0), "cdr": (0.4, False, 0.0), "aux": (0.0, True, 0.0),
           "rdi": (0.0, False, 0.1), "cdr_aux": (0.4, True, 0.0), "cdr_rdi": (0.4, False, 0.1)}
# (method, engine, layout): replicated ("ddp") or sharded by FSDP2 ("fsdp")
CASES = ([(m, e, "ddp") for e in ("reference", "compiled") for m in METHODS] + [("cdr_aux", "triton", "ddp")]
         + [(m, e, "fsdp") for m, e in (("cdr", "reference"), ("cdr_aux", "compiled"), ("cdr_rdi", "compiled"))])
SELECT_KS = (1, 2, 7, 500, 1000, 2999, 3000)


def select_scores(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One score vector with ties, zeros, NaN and Inf, the same on every rank."""
    gen = torch.Generator().manual_seed(seed)
    w, g = torch.randn(3000, generator=gen), torch.randn(3000, generator=gen)
    g[100:400] = 0.5  # ties
    w[100:400] = 1.0
    g[400:700] = 0.0
    g[700:702], g[702:705] = float("nan"), float("inf")
    return w, g


def select_case(seed: int, dist: Distributed) -> list[float]:
    from cdr_fast.distributed_select import sharded_threshold

    w, g = select_scores(seed)
    mine = torch.tensor_split(torch.arange(3000), dist.world_size)[dist.rank]
    pieces = torch.tensor_split(mine, [0, 5, 6, 700])  # an empty piece, a piece of one, uneven ones
    thr = torch.zeros(())
    out = []
    for k in SELECT_KS:
        sharded_threshold([(w[p], g[p]) for p in pieces], k, thr, dist)
        out.append(thr.item())
    return out


def train_case(method: str, engine: str, seed: int, dist: Distributed = SINGLE, layout: str = "ddp") -> dict:
    tau, aux, rdi = METHODS[method]
    data = load_dataset("mnist-mini")
    x, y = data.train_images[:2000], data.train_labels[:2000]
    torch.manual_seed(seed)
    model = LeNet()
    sharded = layout == "fsdp" and dist.enabled
    if sharded:
        fully_shard(model)  # its parameters become DTensors; CDRSGD finds the group on their mesh
    groups = [{"params": list(model.parameters())}]
    table = None
    if aux:
        table = AuxBias(x.shape[0], 10, 1.0, engine=engine)
        groups.append(table.param_group(per_example_lr=0.3, batch_size=BATCH))
    opt = CDRSGD(groups, lr=LR, momentum=MOMENTUM, weight_decay=1e-3, tau=tau, rdi_lambda=rdi, engine=engine,
                 exact=True if layout == "fsdp" else None,
                 process_group=dist.group if dist.enabled and not sharded else None)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    thresholds = []
    max_grad = 0.0  # the largest loss gradient of any weight at any step (unsharded runs)
    for step in range(STEPS):
        batch = order[step * BATCH : (step + 1) * BATCH]
        idx = dist.shard(batch)
        logits = model(x[idx])
        if table is not None:
            logits = table(logits, idx)
        loss = F.cross_entropy(logits, y[idx]) * dist.loss_weight(idx.numel(), batch.numel())
        opt.zero_grad()
        loss.backward()
        if not sharded:
            max_grad = max(max_grad, *(p.grad.abs().max().item() for p in model.parameters()))
        opt.step()
        thresholds.append(opt.last_threshold.item() if opt.last_threshold is not None else float("nan"))
    params = [p.full_tensor() if sharded else p for p in model.parameters()]
    return {"params": [p.detach().clone() for p in params],
            "aux": table.weight.detach().clone() if table is not None else None,
            "thresholds": thresholds, "max_grad": max_grad}


def main() -> None:
    out, seed = Path(sys.argv[1]), int(sys.argv[2])
    dist = Distributed.from_env(use_cuda=False)
    try:
        for method, engine, layout in CASES:
            torch.save(train_case(method, engine, seed, dist, layout), out / f"{method}_{engine}_{layout}_rank{dist.rank}.pt")
        torch.save(select_case(seed, dist), out / f"select_rank{dist.rank}.pt")
    finally:
        dist.close()
    Distributed.exit(0)


if __name__ == "__main__":
    main()
