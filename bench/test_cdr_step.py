"""The CDR optimizer step: fused engine against the published exact step and torch.optim.SGD.

At 61,706 (LeNet), 1M, 11M (ResNet-18) and 23.5M (ResNet-50, CIFAR layout) parameters, with the
real models' tensor shapes, tau 0.4, momentum 0.9, weight decay 1e-3:

- ``fused``: ``CDRSGD(fused=True)``: the compiled engine on CPU, the Triton engine on CUDA;
  approximate threshold (exact below 2M scored weights, see cdr_fast/sampling.py);
- ``fused_exact``: the same with ``exact=True``;
- ``reference``: the reference engine, a global ``torch.topk`` per step as the published code;
- ``torch_sgd``: ``torch.optim.SGD(foreach=True)`` on the same parameters (no masking at all).

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
from conftest import record_median

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BYTES_PER_PARAM = 20  # read g, w, buf; write w, buf (fp32)


def shapes(size: str) -> list[torch.Size]:
    if size == "lenet_61k":
        return [p.shape for p in build_model("lenet", 1, 10, 28).parameters()]
    if size == "mlp_1m":
        return [torch.Size([1000, 1000]), torch.Size([1000]), torch.Size([10, 1000]), torch.Size([10])]
    model = {"resnet18_11m": "resnet18", "resnet50_23m": "resnet50"}[size]
    return [p.shape for p in build_model(model, 3, 10, 32).parameters()]


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
    if kind == "torch_sgd":
        return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-3, foreach=True)
    if kind == "reference":
        return CDRSGD(params, lr=0.01, momentum=0.9, weight_decay=1e-3, tau=0.4)
    return CDRSGD(params, lr=0.01, momentum=0.9, weight_decay=1e-3, tau=0.4, fused=True,
                  exact=True if kind == "fused_exact" else None)


def step_fn(opt):
    if DEVICE.type == "cuda":
        def run():
            opt.step()
            torch.cuda.synchronize()
        return run
    return opt.step


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", ["fused", "fused_exact", "reference", "torch_sgd"])
def test_step(benchmark, size, kind):
    params = make_params(size)
    n = sum(p.numel() for p in params)
    opt = make_optimizer(kind, params)
    run = step_fn(opt)
    run()  # builds the flat buffers and compiles (on CPU) outside the timing
    slow = kind == "reference" and n > 5_000_000
    benchmark.pedantic(run, rounds=3 if slow else 15, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(params=n, engine=opt.engine.name if isinstance(opt, CDRSGD) else "torch")
    record_median(benchmark, f"step {size} {kind}", params=n, bytes_per_param=BYTES_PER_PARAM if "fused" in kind else None)

