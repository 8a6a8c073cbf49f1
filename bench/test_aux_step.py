"""The AUX step at MNIST size (60,000 x 10) and ImageNet size (1,281,167 x 1,000).

One step of AUX alone: ``aux(logits, idx)`` for a batch of 32, backward from a given upstream
gradient (as a loss would send it; the loss itself is not AUX's cost), and
``CDRSGD(fused=True)``'s row-sparse update of the table. It must cost about the same at both
sizes: nothing of size n x c is written, zeroed or swept.

    pytest bench/test_aux_step.py --benchmark-only
"""

from __future__ import annotations

import pytest
import torch

from cdr_fast import CDRSGD, AuxBias
from conftest import record_median

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BATCH = 32


@pytest.mark.parametrize("rows,classes", [(60_000, 10), (1_281_167, 1_000)])
def test_aux_step(benchmark, rows, classes):
    aux = AuxBias(rows, classes, lam=1.0, fused=True).to(DEVICE)
    opt = CDRSGD([aux.param_group()], lr=0.01, fused=True)
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    logits = torch.randn(BATCH, classes, device=DEVICE)  # the network's side is not AUX's cost
    upstream = torch.randn(BATCH, classes, device=DEVICE) / BATCH

    def step():
        idx = torch.randint(0, rows, (BATCH,), generator=gen, device=DEVICE)
        out = aux(logits, idx)
        opt.zero_grad()
        out.backward(upstream)
        opt.step()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    step()
    benchmark.pedantic(step, rounds=200, iterations=1, warmup_rounds=10)
    record_median(benchmark, f"aux {rows}x{classes}", rows=rows)
