"""A few steps of every method through the library's data-parallel paths, for tests/test_distributed.py.

    torchrun --standalone --nproc_per_node=2 tests/ddp_lockstep.py OUT SEED

Each rank trains LeNet on mnist-mini on its share of a global batch of 33 (so the shares are
unequal: 17 and 16), replicated (``CDRSGD(process_group=...)``) or sharded by FSDP2
(``fully_shard``), with ``AuxBias`` where the method has AUX. It saves the state (parameters, AUX
table, optimizer) before each step and after the last, and each step's threshold, to
``OUT/<case>_rank<r>.pt``. It also runs the distributed radix select on shards of one score vector
(``OUT/select_rank<r>.pt``). The test replays each step in one process from the saved state before
it and compares. Importable: ``Case`` is what both sides build, ``Case.step`` the step both take.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from cdr_fast import CDRSGD, AuxBias, launch
from cdr_fast.data import load_dataset
from cdr_fast.distributed import SINGLE, Distributed
from cdr_fast.models import LeNet

STEPS = 5
BATCH = 33
LR, MOMENTUM, AUX_LR = 0.01, 0.9, 0.3
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


class Case:
    """One method's model, AUX table and optimizer, replicated or sharded over ``dist``."""

    def __init__(self, method: str, engine: str, seed: int, dist: Distributed = SINGLE, layout: str = "ddp"):
        tau, aux, rdi = METHODS[method]
        data = load_dataset("mnist-mini")
        self.x, self.y = data.train_images[:2000], data.train_labels[:2000]
        self.dist = dist
        torch.manual_seed(seed)
        self.model = LeNet()
        self.sharded = layout == "fsdp" and dist.enabled
        if self.sharded:
            fully_shard(self.model)  # its parameters become DTensors; CDRSGD finds the group on their mesh
        groups = [{"params": list(self.model.parameters())}]
        self.table = None
        if aux:
            self.table = AuxBias(self.x.shape[0], 10, 1.0, engine=engine)
            groups.append(self.table.param_group(aux_lr=AUX_LR, batch_size=BATCH))
        self.opt = CDRSGD(groups, lr=LR, momentum=MOMENTUM, weight_decay=1e-3, tau=tau, rdi_lambda=rdi,
                          engine=engine, exact=True if layout == "fsdp" else None,
                          process_group=dist.group if dist.enabled and not self.sharded else None)
        self.order = torch.randperm(self.x.shape[0], generator=torch.Generator().manual_seed(seed))

    def step(self, step: int) -> tuple[float, float]:
        """Train on global batch ``step`` (this rank's share of it); returns CDR's threshold (NaN
        without CDR) and the largest loss gradient of any parameter (0 when sharded)."""
        batch = self.order[step * BATCH : (step + 1) * BATCH]
        idx = self.dist.shard(batch)
        logits = self.model(self.x[idx])
        if self.table is not None:
            logits = self.table(logits, idx)
        loss = F.cross_entropy(logits, self.y[idx]) * self.dist.loss_weight(idx.numel(), batch.numel())
        self.opt.zero_grad()
        loss.backward()
        max_grad = 0.0 if self.sharded else max(p.grad.abs().max().item() for p in self.model.parameters())
        self.opt.step()
        threshold = self.opt.last_threshold.item() if self.opt.last_threshold is not None else float("nan")
        return threshold, max_grad

    def state(self) -> dict:
        """Everything the next step starts from, as whole (unsharded) tensors."""
        def whole(value):
            if isinstance(value, dict):
                return {k: whole(v) for k, v in value.items()}
            if isinstance(value, list):
                return [whole(v) for v in value]
            if isinstance(value, torch.Tensor):
                return (value.full_tensor() if isinstance(value, DTensor) else value).detach().clone()
            return value

        optimizer = self.opt.state_dict()  # under FSDP2 its tensors are DTensors sharded like the parameters
        return {"params": whole(list(self.model.parameters())),
                "aux": whole(self.table.weight) if self.table is not None else None,
                "optimizer": whole(optimizer)}

    def load(self, state: dict) -> None:
        """Start from another run's state (unsharded cases only)."""
        with torch.no_grad():
            for p, saved in zip(self.model.parameters(), state["params"], strict=True):
                p.copy_(saved)
            if self.table is not None:
                self.table.weight.copy_(state["aux"])
        self.opt.load_state_dict(state["optimizer"])


def train_case(method: str, engine: str, seed: int, dist: Distributed = SINGLE, layout: str = "ddp") -> dict:
    """STEPS steps; the state before each step and after the last, and each step's threshold."""
    case = Case(method, engine, seed, dist, layout)
    states, thresholds = [case.state()], []
    for step in range(STEPS):
        thresholds.append(case.step(step)[0])
        states.append(case.state())
    return {"states": states, "thresholds": thresholds}


def checkpoint_case(seed: int, dist: Distributed) -> dict:
    """FSDP2 and torch.distributed.checkpoint: train 3 steps, take the optimizer's state with
    ``get_optimizer_state_dict``, load it into a fresh model and optimizer with
    ``set_optimizer_state_dict``, and take step 4 on both; returns both results, whole."""
    from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                         set_model_state_dict, set_optimizer_state_dict)

    trained = Case("cdr_rdi", "compiled", seed, dist, "fsdp")
    for step in range(3):
        trained.step(step)
    # Copies, as a checkpoint on disk would be: loading the live dicts could alias the two models.
    model_state = copy.deepcopy(get_model_state_dict(trained.model))
    optim_state = copy.deepcopy(get_optimizer_state_dict(trained.model, trained.opt))
    restored = Case("cdr_rdi", "compiled", seed + 1, dist, "fsdp")  # another initialisation, overwritten
    restored.order = trained.order
    set_model_state_dict(restored.model, model_state)
    set_optimizer_state_dict(restored.model, restored.opt, optim_state)
    trained.step(3)
    restored.step(3)
    return {"trained": trained.state(), "restored": restored.state()}


def main() -> None:
    out, seed = Path(sys.argv[1]), int(sys.argv[2])
    dist = launch.join(use_cuda=False)
    try:
        for method, engine, layout in CASES:
            torch.save(train_case(method, engine, seed, dist, layout), out / f"{method}_{engine}_{layout}_rank{dist.rank}.pt")
        torch.save(select_case(seed, dist), out / f"select_rank{dist.rank}.pt")
        torch.save(checkpoint_case(seed, dist), out / f"checkpoint_rank{dist.rank}.pt")
    finally:
        launch.leave(dist)
    launch.exit_process(0)


if __name__ == "__main__":
    main()
