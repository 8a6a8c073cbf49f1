"""Triton kernel launchers against torch (under TRITON_INTERPRET=1 on the CPU; natively on a GPU).

The update and the AUX row ops are tested through the engine in test_engine_ops.py; here are the
radix select, with its sample geometry, and the gather-add into a poisoned output.

Fresh random inputs, sizes that are 0, 1 and not multiples of the block, outputs poisoned
before the launch so that an element no program wrote shows up.
"""

from __future__ import annotations

import math

import pytest
import torch

from cdr_fast.kernels import aux_gather, cdr_threshold
from cdr_fast.sampling import HASH_MULTIPLIER, MIN_SAMPLE, VEC, stratified_plan
from helpers import SIZES, kept_fraction_range, score_inputs


def radix_threshold(scores_w, scores_g, k, exact=True, seed=0):
    """The kernel's threshold for rank k of all scores, with the stratified plan's geometry and rank."""
    plan = stratified_plan(scores_w.numel(), exact)
    dev = scores_w.device
    scratch = torch.full((cdr_threshold.scratch_size(plan.windows, VEC),), math.nan, device=dev)  # poisoned
    hist = torch.zeros((3 * cdr_threshold.BINS,), dtype=torch.int32, device=dev)  # zero on entry, and on return
    state = torch.full((2,), -7, dtype=torch.int64, device=dev)
    thr = torch.tensor(math.nan, device=dev)
    cdr_threshold.cdr_threshold(scores_w, scores_g, plan.rank(k), scratch, hist, state, thr, stride=plan.window,
                                n_windows=plan.windows, vec=VEC, hash_multiplier=HASH_MULTIPLIER, seed=seed)
    assert not hist.any(), "the histograms must be left zero for the next call"
    return thr


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", ["normal", "ties", "zeros", "heavy_tail", "tiny"])
def test_exact_threshold_is_the_topk_value(kernel_device, fresh_seed, n, kind):
    gen = torch.Generator().manual_seed(fresh_seed)
    w, g = score_inputs(kind, n, gen)
    scores = (g * w).abs()
    for k in sorted({1, max(1, n // 3), max(1, int(0.6 * n)), n}):
        thr = radix_threshold(w.to(kernel_device), g.to(kernel_device), k).cpu()
        expected = scores.topk(k).values[-1]
        assert thr.item() == expected.item() or (math.isnan(thr.item()) and math.isnan(expected.item())), (k, thr, expected)


# Each kind at one of the rates 0.2, 0.4, 0.7 (on a GPU, at all three), every rate at least once: in
# the interpreter each select over 2.1M scores takes seconds.
@pytest.mark.parametrize("kind, taus", [("normal", (0.2,)), ("ties", (0.4,)), ("zeros", (0.7,)),
                                        ("heavy_tail", (0.4,))])
def test_approximate_threshold_keeps_within_half_a_point(kernel_device, fresh_seed, kind, taus):
    n = 2 * MIN_SAMPLE + 4099  # the smallest size that samples, and not a multiple of a window
    assert not stratified_plan(n, exact=False).exact
    gen = torch.Generator().manual_seed(fresh_seed)
    w, g = score_inputs(kind, n, gen)
    scores = (g * w).abs()
    for tau in taus if kernel_device.type == "cpu" else (0.2, 0.4, 0.7):
        k = int((1 - tau) * n)
        low, high = kept_fraction_range(scores, k)
        thr = radix_threshold(w.to(kernel_device), g.to(kernel_device), k, exact=False, seed=fresh_seed).cpu()
        kept = (scores >= thr).float().mean().item()
        assert low <= kept <= high, (tau, kept, low, high)


@pytest.mark.parametrize("batch,c", [(0, 10), (1, 1), (7, 10), (33, 1000), (5, 257)])
def test_gather_add(kernel_device, fresh_seed, batch, c):
    gen = torch.Generator().manual_seed(fresh_seed)
    table = torch.randn(50, c, generator=gen)
    logits = torch.randn(batch, c, generator=gen)
    idx = torch.randint(0, 50, (batch,), generator=gen)
    if batch > 2:
        idx[1] = idx[2]  # a repeated index
    out = torch.full((batch, c), math.nan, device=kernel_device)  # poisoned
    aux_gather.gather_add(logits.to(kernel_device), table.to(kernel_device), idx.to(kernel_device), 1.7, out=out)
    torch.testing.assert_close(out.cpu(), logits + 1.7 * table[idx], rtol=1e-6, atol=1e-6)
