"""A few steps of every method through the library's data-parallel path, for tests/test_distributed.py.

    torchrun --standalone --nproc_per_node=2 tests/ddp_lockstep.py OUT SEED

Each rank trains LeNet on mnist-mini with ``CDRSGD(process_group=...)`` (and ``AuxBias``) on its
share of a global batch of 33 (so the shares are unequal: 17 and 16) and saves its parameters, AUX
table and thresholds to ``OUT/<case>_rank<r>.pt``. The test runs the same cases in one process and
compares. Importable: ``train_case`` is the one loop both sides run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from cdr_fast import CDRSGD, AuxBias
from cdr_fast.data import load_dataset
from cdr_fast.distributed import SINGLE, Distributed
from cdr_fast.models import LeNet

STEPS = 5
BATCH = 33
# method: (tau, aux, rdi_lambda)
METHODS = {"sgd": (0.0, False, 0.0), "cdr": (0.4, False, 0.0), "aux": (0.0, True, 0.0),
           "rdi": (0.0, False, 0.1), "cdr_aux": (0.4, True, 0.0), "cdr_rdi": (0.4, False, 0.1)}
CASES = [(m, e) for e in ("reference", "compiled") for m in METHODS] + [("cdr_aux", "triton")]


def train_case(method: str, engine: str, seed: int, dist: Distributed = SINGLE) -> dict:
    tau, aux, rdi = METHODS[method]
    data = load_dataset("mnist-mini")
    x, y = data.train_images[:2000], data.train_labels[:2000]
    torch.manual_seed(seed)
    model = LeNet()
    groups = [{"params": list(model.parameters())}]
    table = None
    if aux:
        table = AuxBias(x.shape[0], 10, 1.0, engine=engine)
        groups.append(table.param_group(per_example_lr=0.3, batch_size=BATCH))
    opt = CDRSGD(groups, lr=0.01, momentum=0.9, weight_decay=1e-3, tau=tau, rdi_lambda=rdi, engine=engine,
                 process_group=dist.group if dist.enabled else None)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    thresholds = []
    for step in range(STEPS):
        batch = order[step * BATCH : (step + 1) * BATCH]
        idx = dist.shard(batch)
        logits = model(x[idx])
        if table is not None:
            logits = table(logits, idx)
        loss = F.cross_entropy(logits, y[idx]) * dist.loss_weight(idx.numel(), batch.numel())
        opt.zero_grad()
        loss.backward()
        opt.step()
        thresholds.append(opt.last_threshold.item() if opt.last_threshold is not None else float("nan"))
    return {"params": [p.detach().clone() for p in model.parameters()],
            "aux": table.weight.detach().clone() if table is not None else None,
            "thresholds": thresholds}


def main() -> None:
    out, seed = Path(sys.argv[1]), int(sys.argv[2])
    dist = Distributed.from_env(use_cuda=False)
    try:
        for method, engine in CASES:
            torch.save(train_case(method, engine, seed, dist), out / f"{method}_{engine}_rank{dist.rank}.pt")
    finally:
        dist.close()


if __name__ == "__main__":
    main()
