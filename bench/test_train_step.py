"""The whole LeNet training step (forward, backward, optimizer step; batch 32, real MNIST images,
one intra-op thread): each method on the fused engine against the same step with
``torch.optim.SGD``, the seed report's workload.

The variants are timed in alternating blocks of 50 steps, several rounds, so that the machine's
drift (large on shared VMs) hits all alike; the reported ratio is the median over rounds of each
block's time over the torch SGD block of the same round.

    pytest bench/test_train_step.py --benchmark-only
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from cdr_fast import CDRSGD, AuxBias
from cdr_fast.data import load_dataset
from cdr_fast.models import LeNet
from conftest import record_median

BLOCK, ROUNDS, BATCH = 50, 15, 32
VARIANTS = ["torch_sgd", "sgd", "cdr", "cdr_aux", "cdr_aux_reference"]


def make(variant: str, n: int):
    torch.manual_seed(0)
    model, aux = LeNet(), None
    if variant == "torch_sgd":
        return model, aux, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3)
    method = variant.removesuffix("_reference")
    groups = [{"params": model.parameters()}]
    if method == "cdr_aux":
        aux = AuxBias(n, 10, lam=1.0)
        groups.append(aux.param_group())
    opt = CDRSGD(groups, lr=0.01, momentum=0.9, weight_decay=1e-3, tau=0.0 if method == "sgd" else 0.4,
                 engine="reference" if variant.endswith("_reference") else "auto")
    if aux is not None:
        aux.engine = opt.engine
    return model, aux, opt


def test_lenet_training_step(benchmark, mnist_dir):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    data = load_dataset("mnist", mnist_dir)
    x_all, y_all = data.train_images, data.train_labels
    n = x_all.shape[0]
    runs = {v: make(v, n) for v in VARIANTS}
    gen = torch.Generator().manual_seed(0)

    def block(variant: str) -> float:
        model, aux, opt = runs[variant]
        start = time.perf_counter()
        for _ in range(BLOCK):
            idx = torch.randint(0, n, (BATCH,), generator=gen)
            logits = model(x_all[idx])
            if aux is not None:
                logits = aux(logits, idx)
            loss = F.cross_entropy(logits, y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return (time.perf_counter() - start) / BLOCK

    for v in VARIANTS:  # warm-up: flat buffers, the C library
        block(v)
    per_round = []

    def one_round():
        per_round.append({v: block(v) for v in VARIANTS})

    try:
        benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    finally:
        torch.set_num_threads(threads)
    for v in VARIANTS:
        ratio = statistics.median(r[v] / r["torch_sgd"] for r in per_round)
        step = statistics.median(r[v] for r in per_round)
        benchmark.extra_info[f"{v}_over_torch_sgd"] = ratio
        record_median(benchmark, f"train {v}", step=step, ratio=ratio)
