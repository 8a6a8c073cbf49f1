"""The four engine operations, on every engine, against float64 references and torch.topk.

The engines share one signature (cdr_fast.engines.base.Engine), so one test covers all three:
the triton engine natively on CUDA when present, else under the interpreter on CPU tensors.
"""

from __future__ import annotations

import math

import pytest
import torch

from cdr_fast import sampling
from cdr_fast.engines import native, resolve_engine
from conftest import engine_device
from helpers import SIZES, kept_fraction_range, reference_step, score_inputs

ENGINES = ["reference", "compiled", "triton"]
# The compiled engine's select with its portable C loop, where the CPU would take the AVX2 one.
SELECT_ENGINES = [*ENGINES, "compiled-portable"]


@pytest.fixture(autouse=True)
def _portable_off():
    yield
    native.force_scalar(False)


def engine_and_device(name):
    if name == "compiled-portable":
        native.force_scalar(True)
        name = "compiled"
    device = engine_device(name)
    return resolve_engine(name, device), device


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("n", [0, *SIZES])
@pytest.mark.parametrize("momentum,rdi_coef,mask", [(0.9, 0.0, True), (0.0, 0.09, True), (0.5, 0.0, False)])
def test_masked_update_matches_float64_reference(fresh_seed, engine_name, n, momentum, rdi_coef, mask):
    engine, device = engine_and_device(engine_name)
    gen = torch.Generator().manual_seed(fresh_seed)
    w, g, buf, w0 = (torch.randn(n, generator=gen) for _ in range(4))
    w[::7], g[::7] = 1.0, -0.5  # scores exactly at the threshold: kept (>=)
    n_scored = (2 * n) // 3
    expected_w, expected_buf, expected_kept = reference_step(w, g, buf, w0, 0.5, n_scored, 0.1, momentum, 1e-2,
                                                             rdi_coef, 0.6, mask)
    w_d, g_d, buf_d, w0_d = (t.to(device).clone() for t in (w, g, buf, w0))
    kept = torch.full((), 3, dtype=torch.int32, device=device)  # added to, never overwritten
    engine.masked_update(w_d, g_d, buf_d, w0_d, torch.tensor(0.5, device=device), kept, n_scored=n_scored, lr=0.1,
                         momentum=momentum, weight_decay=1e-2, rdi_coef=rdi_coef, gradient_scale=0.6, mask=mask)
    torch.testing.assert_close(w_d.cpu(), expected_w, rtol=1e-6, atol=1e-6)
    if momentum != 0:
        torch.testing.assert_close(buf_d.cpu(), expected_buf, rtol=1e-6, atol=1e-6)
    else:
        assert torch.equal(buf_d.cpu(), buf)  # untouched without momentum
    assert torch.equal(g_d.cpu(), g)  # the gradient is read, never written
    assert kept.item() == 3 + (expected_kept if mask else 0)


@pytest.fixture
def threads():
    """Set torch's (and so the C kernels') thread count for one test; restored after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


# Above the C kernels' PARALLEL_MIN (2**17): the passes split into one part per thread.
PARALLEL_SIZE = 300_001


@pytest.mark.parametrize("portable", [False, True])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_compiled_update_is_the_same_on_any_split(fresh_seed, threads, portable, n_threads):
    """The compiled engine's update split over threads (3: parts that do not divide the buffer), with
    the AVX2 loop and the portable one: the same bits, the float64 reference to rounding."""
    threads(n_threads)
    native.force_scalar(portable)
    engine, _ = engine_and_device("compiled")
    gen = torch.Generator().manual_seed(fresh_seed)
    n = PARALLEL_SIZE
    w, g, buf, w0 = (torch.randn(n, generator=gen) for _ in range(4))
    inputs = [t.clone() for t in (w, g, buf, w0)]
    expected_w, expected_buf, expected_kept = reference_step(w, g, buf, w0, 0.7, n // 2, 0.1, 0.9, 1e-2, 0.04, 0.6,
                                                             True)
    kept = torch.zeros((), dtype=torch.int32)
    engine.masked_update(w, g, buf, w0, torch.tensor(0.7), kept, n_scored=n // 2, lr=0.1, momentum=0.9,
                         weight_decay=1e-2, rdi_coef=0.04, gradient_scale=0.6, mask=True)
    torch.testing.assert_close(w, expected_w, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(buf, expected_buf, rtol=1e-6, atol=1e-6)
    assert kept.item() == expected_kept
    # One element at a time on one thread: the same bits.
    threads(1)
    native.force_scalar(True)
    one_w, one_g, one_buf, one_w0 = inputs
    for lo, hi in ((0, 1), (1, n // 2), (n // 2, n)):
        s = slice(lo, hi)
        engine.masked_update(one_w[s], one_g[s], one_buf[s], one_w0[s], torch.tensor(0.7), torch.zeros((), dtype=torch.int32),
                             n_scored=max(0, min(hi, n // 2) - lo), lr=0.1, momentum=0.9, weight_decay=1e-2,
                             rdi_coef=0.04, gradient_scale=0.6, mask=True)
    assert torch.equal(w, one_w) and torch.equal(buf, one_buf)


@pytest.mark.parametrize("portable", [False, True])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("kind", ["normal", "ties", "zeros"])
def test_compiled_exact_threshold_on_any_split(fresh_seed, threads, portable, n_threads, kind):
    """The band pass split over threads gathers the same band: the threshold is torch.topk's."""
    threads(n_threads)
    native.force_scalar(portable)
    engine, _ = engine_and_device("compiled")
    w, g = score_inputs(kind, PARALLEL_SIZE, torch.Generator().manual_seed(fresh_seed))
    g[fresh_seed % 1000] = math.inf  # one Inf somewhere in the first part
    scores = (g * w).abs()
    thr = torch.tensor(-1.0)
    for k in (1, int(0.3 * PARALLEL_SIZE), int(0.6 * PARALLEL_SIZE), PARALLEL_SIZE):
        engine.threshold(w, g, k, thr, exact=True, seed=0)
        assert thr.item() == scores.topk(k).values[-1].item(), k


def test_compiled_systematic_sample_is_the_plans(fresh_seed):
    """The C loop reads exactly the sample ``cdr_fast.sampling`` defines: in every whole window, the
    VEC scores at this step's phase (strided views in torch as the reference)."""
    gen = torch.Generator().manual_seed(fresh_seed)
    n = 3 * sampling.CPU_MIN_SAMPLE * 5 + 77  # a partial last window
    plan = sampling.systematic_plan(n, exact=False)
    w, g = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
    for seed in (0, fresh_seed, fresh_seed + 1):
        phase = plan.phase(seed)
        end = plan.windows * plan.window
        columns = slice(phase, phase + sampling.VEC)
        expected = (g[:end].view(plan.windows, plan.window)[:, columns]
                    * w[:end].view(plan.windows, plan.window)[:, columns]).abs().flatten()
        out = torch.full((plan.n_sample,), math.nan)
        native.systematic_sample(g, w, plan.windows, plan.window, phase, out)
        assert torch.equal(out, expected)


@pytest.mark.parametrize("engine_name", SELECT_ENGINES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", ["normal", "ties", "zeros", "heavy_tail", "tiny"])
def test_exact_threshold_is_the_topk_value(fresh_seed, engine_name, n, kind):
    engine, device = engine_and_device(engine_name)
    w, g = score_inputs(kind, n, torch.Generator().manual_seed(fresh_seed))
    scores = (g * w).abs()
    thr = torch.tensor(-1.0, device=device)
    for k in sorted({1, max(1, int(0.6 * n)), n}):
        engine.threshold(w.to(device), g.to(device), k, thr, exact=True, seed=0)
        assert thr.item() == scores.topk(k).values[-1].item(), k
    engine.threshold(w.to(device), g.to(device), 0, thr, exact=True, seed=0)
    assert math.isnan(thr.item())  # k = 0 keeps nothing


@pytest.mark.parametrize("engine_name", SELECT_ENGINES)
@pytest.mark.parametrize("n", [1000, 20003])  # the second takes the compiled engine's banded path
def test_exact_threshold_with_nan_and_inf_scores(fresh_seed, engine_name, n):
    """NaN ranks above everything (as in torch.topk), Inf just below it."""
    engine, device = engine_and_device(engine_name)
    gen = torch.Generator().manual_seed(fresh_seed)
    w, g = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
    where = torch.randperm(n, generator=gen)[:8]  # scattered, so the vector lanes meet them anywhere
    g[where[:3]], g[where[3:8]] = math.nan, math.inf
    scores = (g * w).abs()
    thr = torch.tensor(-1.0, device=device)
    for k in (2, 3, 5, 8, int(0.6 * n)):
        engine.threshold(w.to(device), g.to(device), k, thr, exact=True, seed=0)
        expected = scores.topk(k).values[-1].item()
        assert thr.item() == expected or (math.isnan(expected) and math.isnan(thr.item())), k


def structured(n: int, gen: torch.Generator):
    """Rows of 128 weights whose scale depends on the column: a sample that kept hitting the same
    columns (a window that divides the row) would see one scale only."""
    cols = torch.arange(n) % 128
    return torch.randn(n, generator=gen) * 2.0 ** (cols % 16 - 8), torch.randn(n, generator=gen)


@pytest.mark.parametrize("kind", ["normal", "ties", "zeros", "heavy_tail", "structured"])
def test_compiled_approximate_threshold_keeps_within_half_a_point(fresh_seed, kind):
    engine, _ = engine_and_device("compiled")
    n = 6 * sampling.CPU_MIN_SAMPLE + 12345  # samples (window of 5 chunks), with a partial last window
    assert not sampling.systematic_plan(n, exact=False).exact
    gen = torch.Generator().manual_seed(fresh_seed)
    w, g = structured(n, gen) if kind == "structured" else score_inputs(kind, n, gen)
    scores = (g * w).abs()
    thr = torch.tensor(math.nan)
    for step, tau in enumerate((0.2, 0.4, 0.7)):
        k = int((1 - tau) * n)
        low, high = kept_fraction_range(scores, k)
        engine.threshold(w, g, k, thr, exact=False, seed=fresh_seed + step)
        kept = (scores >= thr).float().mean().item()
        assert low <= kept <= high, (tau, kept, low, high)


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("batch,c", [(0, 10), (1, 1), (7, 10), (33, 300)])
@pytest.mark.parametrize("lam", [1.0, 1.7])  # 1 skips the product on the reference path
def test_aux_gather_add_and_its_sparse_gradient(fresh_seed, engine_name, batch, c, lam):
    engine, device = engine_and_device(engine_name)
    gen = torch.Generator().manual_seed(fresh_seed)
    table = torch.randn(50, c, generator=gen)
    logits = torch.randn(batch, c, generator=gen)
    idx = torch.randint(0, 50, (batch,), generator=gen)
    if batch > 2:
        idx[1] = idx[2]  # a repeated index
    weights = torch.randn(batch, c, generator=gen)
    table_d = table.to(device).requires_grad_()
    out = engine.aux_gather_add(logits.to(device), table_d, idx.to(device), lam)
    torch.testing.assert_close(out.detach().cpu(), logits + lam * table[idx], rtol=1e-6, atol=1e-6)
    (out * weights.to(device)).sum().backward()
    assert table_d.grad.is_sparse
    expected = torch.zeros(50, c).index_add_(0, idx, lam * weights)
    torch.testing.assert_close(table_d.grad.to_dense().cpu(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("batch,c", [(0, 10), (1, 1), (40, 10), (9, 1000)])
@pytest.mark.parametrize("strided", [False, True])
def test_aux_row_update_sums_repeats(fresh_seed, engine_name, batch, c, strided):
    engine, device = engine_and_device(engine_name)
    gen = torch.Generator().manual_seed(fresh_seed)
    table = torch.randn(6, c, generator=gen)
    # strided: the rows are columns of a wider tensor, as the distributed all-gather unpacks them
    rows = torch.randn(batch, c + 2, generator=gen)[:, :c] if strided else torch.randn(batch, c, generator=gen)
    idx = torch.randint(0, 6, (batch,), generator=gen)  # 40 draws from 6 rows: repeats
    expected = table.double().index_add_(0, idx, rows.double(), alpha=-0.3).float()
    got = table.to(device)
    engine.aux_row_update(got, idx.to(device), rows.to(device), -0.3)
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-6, atol=1e-6)
