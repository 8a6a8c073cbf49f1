"""The compiled CPU twin (cdr_fast.compiled) against float64 references and torch.topk."""

from __future__ import annotations

import pytest
import torch

from cdr_fast import compiled
from cdr_fast.sampling import CPU_MIN_SAMPLE
from helpers import SIZES, kept_fraction_range, reference_step, score_inputs


@pytest.mark.parametrize("n", [0, *SIZES, 300_001])
@pytest.mark.parametrize("compile", [False, True])
@pytest.mark.parametrize("momentum,rdi_coef,mask", [(0.9, 0.0, True), (0.0, 0.09, True), (0.5, 0.0, False)])
def test_step_matches_float64_reference(fresh_seed, n, compile, momentum, rdi_coef, mask):
    gen = torch.Generator().manual_seed(fresh_seed)
    w, g, buf, w0 = (torch.randn(n, generator=gen) for _ in range(4))
    w[::7], g[::7] = 1.0, -0.5  # ties at the threshold
    n_scored = (2 * n) // 3
    expected_w, expected_buf, expected_kept = reference_step(w, g, buf, w0, 0.5, n_scored, 0.1, momentum, 1e-2,
                                                             rdi_coef, 0.6, mask)
    g_in = g.clone()
    kept = torch.zeros((), dtype=torch.int32)
    compiled.cdr_sgd_step(w, g, buf, w0, torch.tensor(0.5), kept, n_scored=n_scored, lr=0.1, momentum=momentum,
                          weight_decay=1e-2, rdi_coef=rdi_coef, clip=0.6, mask=mask, compile=compile)
    torch.testing.assert_close(w, expected_w, rtol=1e-6, atol=1e-6)
    if momentum != 0:
        torch.testing.assert_close(buf, expected_buf, rtol=1e-6, atol=1e-6)
    assert torch.equal(g, g_in)
    assert kept.item() == (expected_kept if mask else 0)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", ["normal", "ties", "zeros", "heavy_tail", "tiny"])
def test_exact_threshold_is_the_topk_value(fresh_seed, n, kind):
    w, g = score_inputs(kind, n, torch.Generator().manual_seed(fresh_seed))
    scores = (g * w).abs()
    thr = torch.tensor(float("nan"))
    for k in sorted({1, max(1, int(0.6 * n)), n}):
        compiled.cdr_threshold(w, g, k, thr, exact=True)
        assert thr.item() == scores.topk(k).values[-1].item()


def structured(n: int, gen: torch.Generator):
    """Rows of 128 weights whose scale depends on the column: a sample that kept hitting the same
    columns (a window that divides the row) would see one scale only."""
    cols = torch.arange(n) % 128
    return torch.randn(n, generator=gen) * 2.0 ** (cols % 16 - 8), torch.randn(n, generator=gen)


@pytest.mark.parametrize("kind", ["normal", "ties", "zeros", "heavy_tail", "structured"])
def test_approximate_threshold_keeps_within_half_a_point(fresh_seed, kind):
    n = 6 * CPU_MIN_SAMPLE + 12345  # samples (window of 5 chunks), with a partial last window
    gen = torch.Generator().manual_seed(fresh_seed)
    w, g = structured(n, gen) if kind == "structured" else score_inputs(kind, n, gen)
    scores = (g * w).abs()
    thr = torch.tensor(float("nan"))
    for step, tau in enumerate((0.2, 0.4, 0.7)):
        k = int((1 - tau) * n)
        low, high = kept_fraction_range(scores, k)
        compiled.cdr_threshold(w, g, k, thr, exact=False, seed=fresh_seed + step)
        kept = (scores >= thr).float().mean().item()
        assert low <= kept <= high, (tau, kept, low, high)
