"""The CDR optimizer step: fused engine against the published exact step and torch.optim.SGD.

At 61,706 (LeNet), 1M, 11M (ResNet-18) and 23.5M (ResNet-50, CIFAR layout) parameters, with the
real models' tensor shapes, tau 0.4, momentum 0.9, weight decay 1e-3:

- ``fused``: ``CDRSGD(fused=True)``: the compiled engine on CPU, the Triton engine on CUDA;
  approximate threshold (exact below 786k scored weights on the CPU, 2.1M on CUDA; see
  cdr_fast/sampling.py);
- ``fused_exact``: the same with ``exact=True``;
- ``fused_tau0``: the fused engine with tau = 0 (plain SGD through our flat buffers);
- ``reference``: the reference engine, a global ``torch.topk`` per step as the published code;
- ``torch_sgd`` / ``torch_sgd_fused``: ``torch.optim.SGD`` with ``foreach=True`` / ``fused=True``
  on the same parameters (no masking at all); ratios are taken against ``torch_sgd``.

``test_exact_threshold_61k`` times the exact k-th largest of 61,706 scores (tau 0.4) on the
compiled engine against ``numpy.partition``, ``torch.kthvalue`` and ``torch.topk``.

    pytest bench/test_cdr_step.py --benchmark-only

The session ends with a table of medians, the ratios, and the bytes each fused step moves with
its H100 roofline time (3.35 TB/s); on a GPU it also prints the achieved GB/s.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cdr_fast import CDRSGD
from cdr_fast.models import build_model
from conftest import MEDIANS, record_median

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BYTES_PER_PARAM = 20  # read g, w, buf; write w, buf (fp32)


def shapes(size: str) -> list[torch.Size]:
    if size == "lenet_61k":
        return [p.shape for p in build_model("lenet", 10, (1, 28, 28)).parameters()]
    if size == "mlp_1m":
        return [torch.Size([1000, 1000]), torch.Size([1000]), torch.Size([10, 1000]), torch.Size([10])]
    model = {"resnet18_11m": "resnet18", "resnet50_23m": "resnet50"}[size]
    return [p.shape for p in build_model(model, 10, (3, 32, 32)).parameters()]


SIZES = ["lenet_61k", "mlp_1m", "resnet18_11m", "resnet50_23m"]


def make_params(size: str) -> list[nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    params = []
    for shape in shapes(size):
        p = nn.Parameter((torch.randn(shape, generator=gen) * 0.05).to(DEVICE))
        p.grad = (torch.randn(shape, generator=gen) * 1e-3).to(DEVICE)
        params.append(p)
    return params


def make_optimizer(kind: str, params):
    if kind.startswith("torch_sgd"):
        variant = {"fused": True} if kind == "torch_sgd_fused" else {"foreach": True}
        return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-3, **variant)
    if kind == "reference":
        return CDRSGD(params, lr=0.01, momentum=0.9, weight_decay=1e-3, tau=0.4)
    return CDRSGD(params, lr=0.01, momentum=0.9, weight_decay=1e-3, tau=0.0 if kind == "fused_tau0" else 0.4,
                  fused=True, exact=True if kind == "fused_exact" else None)


def step_fn(opt):
    if DEVICE.type == "cuda":
        def run():
            opt.step()
            torch.cuda.synchronize()
        return run
    return opt.step


KINDS = ["fused", "fused_exact", "fused_tau0", "reference", "torch_sgd", "torch_sgd_fused"]
# Below a millisecond a step's time drifts by tens of percent within a minute on a shared VM, so at
# these sizes every variant but the (100x slower) reference runs in alternating blocks of steps.
INTERLEAVED_SIZES = ["lenet_61k", "mlp_1m"]
BLOCK, ROUNDS = 20, 40


@pytest.mark.parametrize("size,kind", [(size, kind) for kind in KINDS for size in SIZES
                                        if size not in INTERLEAVED_SIZES or kind == "reference"])
def test_step(benchmark, size, kind):
    params = make_params(size)
    n = sum(p.numel() for p in params)
    opt = make_optimizer(kind, params)
    run = step_fn(opt)
    run()  # builds the flat buffers outside the timing
    slow = kind == "reference" and n > 5_000_000
    benchmark.pedantic(run, rounds=3 if slow else 15, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(params=n, engine=opt.engine.name if isinstance(opt, CDRSGD) else "torch")
    record_median(benchmark, f"step {size} {kind}", params=n, bytes_per_param=BYTES_PER_PARAM if "fused" in kind else None)


@pytest.mark.parametrize("size", INTERLEAVED_SIZES)
def test_step_interleaved(benchmark, size):
    """Every variant but the reference, in alternating blocks of BLOCK steps for ROUNDS rounds; each
    variant's step is the median over rounds of its block's mean step."""
    import statistics
    import time

    kinds = [k for k in KINDS if k != "reference"]
    runs = {}
    for kind in kinds:
        params = make_params(size)
        runs[kind] = step_fn(make_optimizer(kind, params))
        runs[kind]()
    n = sum(p.numel() for p in params)
    per_round: list[dict[str, float]] = []

    def one_round():
        times = {}
        for kind in kinds:
            start = time.perf_counter()
            for _ in range(BLOCK):
                runs[kind]()
            times[kind] = (time.perf_counter() - start) / BLOCK
        per_round.append(times)

    one_round()  # warm-up
    per_round.clear()
    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    for kind in kinds:
        median = statistics.median(r[kind] for r in per_round)
        ratio = statistics.median(r[kind] / r["torch_sgd"] for r in per_round)
        benchmark.extra_info[f"{kind}_over_torch_sgd"] = ratio
        MEDIANS[f"step {size} {kind}"] = (median, {"params": n, "ratio": ratio,
                                                   "bytes_per_param": BYTES_PER_PARAM if "fused" in kind else None})


@pytest.mark.skipif(DEVICE.type != "cpu", reason="the compiled engine's threshold (on a GPU: the Triton step above)")
@pytest.mark.parametrize("how", ["compiled", "numpy_partition", "torch_kthvalue", "torch_topk"])
def test_exact_threshold_61k(benchmark, how):
    import numpy as np

    from cdr_fast.engines import resolve_engine

    params = make_params("lenet_61k")
    w = torch.cat([p.detach().flatten() for p in params if p.dim() in (2, 4)])
    g = torch.cat([p.grad.flatten() for p in params if p.dim() in (2, 4)])
    n = w.numel()
    k = int(0.6 * n)
    thr = torch.zeros(())
    engine = resolve_engine("compiled", "cpu")
    run = {
        "compiled": lambda: engine.threshold(w, g, k, thr, exact=True, seed=0),
        "numpy_partition": lambda: np.partition((g * w).abs().numpy(), n - k)[n - k],
        "torch_kthvalue": lambda: torch.kthvalue((g * w).abs(), n - k + 1),
        "torch_topk": lambda: torch.topk((g * w).abs(), k).values[-1],
    }[how]
    run()
    benchmark.pedantic(run, rounds=300, iterations=1, warmup_rounds=10)
    record_median(benchmark, f"threshold {how}")
