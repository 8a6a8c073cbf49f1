"""Triton kernels against torch (under TRITON_INTERPRET=1 on the CPU; natively on a GPU).

Fresh random inputs, sizes that are 0, 1 and not multiples of the block, outputs poisoned
before the launch so that an element no program wrote shows up.
"""

from __future__ import annotations

import math

import pytest
import torch

from cdr_fast.kernels import aux_gather, cdr_step, cdr_threshold
from cdr_fast.sampling import MIN_SAMPLE, sample_stride
from helpers import SIZES, kept_fraction_range, reference_step, score_inputs


def radix_threshold(scores_w, scores_g, k, stride=None, seed=0):
    n = scores_w.numel()
    stride = stride or sample_stride(n, exact=True)
    dev = scores_w.device
    scratch = torch.full((cdr_threshold.scratch_size(n, stride),), math.nan, device=dev)  # poisoned
    hist = torch.full((3 * cdr_threshold.BINS,), -7, dtype=torch.int32, device=dev)  # poisoned; zeroed inside
    state = torch.full((2,), -7, dtype=torch.int64, device=dev)
    thr = torch.tensor(math.nan, device=dev)
    cdr_threshold.cdr_threshold(scores_w, scores_g, k, scratch, hist, state, thr, stride=stride, seed=seed)
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


@pytest.mark.parametrize("kind", ["normal", "ties", "zeros", "heavy_tail"])
def test_approximate_threshold_keeps_within_half_a_point(kernel_device, fresh_seed, kind):
    n = 2 * MIN_SAMPLE + 4099  # the smallest size that samples, and not a multiple of a window
    stride = sample_stride(n, exact=False)
    assert stride > 4
    gen = torch.Generator().manual_seed(fresh_seed)
    w, g = score_inputs(kind, n, gen)
    scores = (g * w).abs()
    for tau in (0.2, 0.4, 0.7):
        k = int((1 - tau) * n)
        low, high = kept_fraction_range(scores, k)
        thr = radix_threshold(w.to(kernel_device), g.to(kernel_device), k, stride=stride, seed=fresh_seed).cpu()
        kept = (scores >= thr).float().mean().item()
        assert low <= kept <= high, (tau, kept, low, high)


@pytest.mark.parametrize("n", [0, *SIZES])
@pytest.mark.parametrize(
    "momentum,rdi_coef,mask", [(0.9, 0.0, True), (0.0, 0.0, True), (0.9, 0.09, True), (0.5, 0.0, False)]
)
def test_fused_step_matches_float64_reference(kernel_device, fresh_seed, n, momentum, rdi_coef, mask):
    gen = torch.Generator().manual_seed(fresh_seed)
    w, g, buf, w0 = (torch.randn(n, generator=gen) for _ in range(4))
    w[::7], g[::7] = 1.0, -0.5  # scores exactly at the threshold: kept (>=)
    n_scored = (2 * n) // 3
    thr = torch.tensor(0.5)
    expected_w, expected_buf, expected_kept = reference_step(w, g, buf, w0, 0.5, n_scored, 0.1, momentum, 1e-2,
                                                             rdi_coef, 0.6, mask)
    dev = kernel_device
    w_d, g_d, buf_d, w0_d = (t.to(dev).clone() for t in (w, g, buf, w0))
    kept = torch.zeros((), dtype=torch.int32, device=dev)
    cdr_step.cdr_sgd_step(w_d, g_d, buf_d, w0_d, thr.to(dev), kept, n_scored=n_scored, lr=0.1, momentum=momentum,
                          weight_decay=1e-2, rdi_coef=rdi_coef, clip=0.6, mask=mask)
    torch.testing.assert_close(w_d.cpu(), expected_w, rtol=1e-6, atol=1e-6)
    if momentum != 0:
        torch.testing.assert_close(buf_d.cpu(), expected_buf, rtol=1e-6, atol=1e-6)
    else:
        assert torch.equal(buf_d.cpu(), buf)  # untouched without momentum
    assert torch.equal(g_d.cpu(), g)  # the gradient is read, never written
    assert kept.item() == (expected_kept if mask else 0)


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


@pytest.mark.parametrize("batch,c", [(0, 10), (1, 1), (40, 10), (9, 1000)])
def test_scatter_add_rows_sums_repeats(kernel_device, fresh_seed, batch, c):
    gen = torch.Generator().manual_seed(fresh_seed)
    table = torch.randn(6, c, generator=gen)
    rows = torch.randn(batch, c, generator=gen)
    idx = torch.randint(0, 6, (batch,), generator=gen)  # 40 draws from 6 rows: repeats
    expected = table.clone().index_add_(0, idx, rows, alpha=-0.3)
    got = table.to(kernel_device)
    aux_gather.scatter_add_rows(got, idx.to(kernel_device), rows.to(kernel_device), -0.3)
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-6, atol=1e-6)


def test_gather_add_autograd_gives_sparse_rows(kernel_device, fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    table = torch.randn(20, 4, generator=gen).to(kernel_device).requires_grad_()
    logits = torch.randn(6, 4, generator=gen).to(kernel_device).requires_grad_()
    idx = torch.tensor([3, 3, 0, 19, 7, 3], device=kernel_device)
    weights = torch.randn(6, 4, generator=gen).to(kernel_device)
    (aux_gather.AuxGatherAdd.apply(logits, table, idx, 0.5) * weights).sum().backward()
    assert table.grad.is_sparse
    dense = torch.zeros(20, 4, device=kernel_device).index_add_(0, idx, 0.5 * weights)
    torch.testing.assert_close(table.grad.to_dense(), dense)
    torch.testing.assert_close(logits.grad, weights)
