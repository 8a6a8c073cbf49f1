"""CDRSGD and AuxBias on the fused engines against the reference engine.

The triton engine runs natively on CUDA tensors when a GPU is present (TRITON_INTERPRET unset or
0), and under the interpreter on CPU tensors otherwise: no test here is skipped on either.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cdr_fast import CDRSGD, AuxBias
from cdr_fast.engines import ENGINE_CHOICES, Engine, engine_name, resolve_engine
from cdr_fast.engines.reference import ReferenceEngine
from cdr_fast.models import LeNet, build_model
from conftest import engine_device
from helpers import kept_fraction_range

FUSED = ["triton", "compiled"]
ALL = ["reference", *FUSED]

torch.backends.cudnn.deterministic = True  # lockstep runs compare two models on one GPU


def real_batches(data, steps, batch, seed, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randperm(data.train_images.shape[0], generator=gen)[:batch]
        yield data.train_images[idx].to(device), data.train_labels[idx].to(device), idx.to(device)


def train(model, aux, opt, batches):
    for x, y, idx in batches:
        opt.zero_grad()
        logits = model(x)
        if aux is not None:
            logits = aux(logits, idx)
        F.cross_entropy(logits, y).backward()
        opt.step()


def make(engine, seed, method, aux_rows=None, device="cpu"):
    """LeNet (+ AUX) and CDRSGD on ``engine``; AuxBias shares the optimizer's engine object."""
    torch.manual_seed(seed)
    model = LeNet().to(device)
    groups = [{"params": model.parameters()}]
    aux = AuxBias(aux_rows, 10, lam=3.0).to(device) if method == "cdr_aux" else None
    if aux is not None:
        groups.append(aux.param_group())
    opt = CDRSGD(groups, lr=0.05, momentum=0.9, weight_decay=1e-3, tau=0.4,
                 rdi_lambda=0.3 if method == "cdr_rdi" else 0.0, engine=engine, exact=engine != "reference" or None)
    if aux is not None:
        aux.engine = opt.engine
    return model, aux, opt


def sync_to(opt, params, ref_opt, ref_params):
    """Copy the reference run's weights and momentum into the fused run (in place: flat views)."""
    with torch.no_grad():
        for p, q in zip(params, ref_params):
            p.copy_(q)
            if "momentum_buffer" in ref_opt.state[q]:
                opt.state[p]["momentum_buffer"].copy_(ref_opt.state[q]["momentum_buffer"])


@pytest.mark.parametrize("engine", FUSED)
@pytest.mark.parametrize("method", ["cdr", "cdr_rdi", "cdr_aux"])
def test_exact_fused_step_follows_the_reference(mnist_mini, fresh_seed, engine, method):
    """100 steps of LeNet on real digits (15 under the interpreter), in lockstep: every step equals the reference step to fp32
    rounding and keeps the same mask. (Run freely, the two drift apart by rounding until a score
    near the threshold lands on the other side: a jump of lr * g for that one weight.)"""
    device = engine_device(engine)
    rows = mnist_mini.train_images.shape[0]
    ref_model, ref_aux, ref_opt = make("reference", fresh_seed, method, rows, device)
    model, aux, opt = make(engine, fresh_seed, method, rows, device)
    assert opt.engine.name == engine and opt.exact
    ref_params = list(ref_model.parameters()) + ([ref_aux.weight] if aux is not None else [])
    params = list(model.parameters()) + ([aux.weight] if aux is not None else [])
    # The interpreter runs a kernel about 100x slower than a GPU: fewer steps there keep the suite fast.
    steps = 15 if engine == "triton" and device.type == "cpu" else 100
    for step, batch in enumerate(real_batches(mnist_mini, steps, 32, fresh_seed, device)):
        train(model, aux, opt, [batch])
        train(ref_model, ref_aux, ref_opt, [batch])
        assert opt.last_threshold.item() == ref_opt.last_threshold.item(), step
        assert opt.last_kept_fraction.item() == pytest.approx(ref_opt.last_kept_fraction.item(), abs=1e-7), step
        for p, q in zip(params, ref_params):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=f"step {step}")
        sync_to(opt, params, ref_opt, ref_params)


@pytest.mark.slow
def test_approximate_threshold_on_real_resnet_gradients(mnist_mini, fresh_seed):
    """ResNet-18 (11M weights, sampled) after a few steps on digits: both engines keep what the
    exact threshold keeps at a rank within 0.5% of k."""
    torch.manual_seed(fresh_seed)
    model = build_model("resnet18", 10, (1, 28, 28))
    warm = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    batches = list(real_batches(mnist_mini, 4, 32, fresh_seed))
    for x, y, _ in batches[:3]:
        warm.zero_grad()
        F.cross_entropy(model(x), y).backward()
        warm.step()
    warm.zero_grad()
    x, y, _ = batches[3]
    F.cross_entropy(model(x), y).backward()
    scored = [p for p in model.parameters() if p.dim() in (2, 4)]
    scores = torch.cat([(p.grad * p).abs().flatten() for p in scored])
    k = int(0.6 * scores.numel())
    low, high = kept_fraction_range(scores, k)
    # The Triton engine's sampling is proven in the interpreter at 2.1M scores (test_kernels.py);
    # over 11M it costs the suite 20 s there, so it runs here natively (bench/gpu_check.sh does).
    for engine in [e for e in FUSED if e != "triton" or engine_device(e).type == "cuda"]:
        device = engine_device(engine)
        copied = copy.deepcopy(model).to(device)
        opt = CDRSGD(copied.parameters(), lr=0.0, momentum=0.0, tau=0.4, engine=engine)
        assert not opt.exact
        for p, q in zip(opt.param_groups[0]["params"], model.parameters()):
            p.grad = q.grad.clone().to(device)
        opt.step()
        kept = (scores >= opt.last_threshold.cpu()).float().mean().item()
        assert low <= kept <= high, (engine, kept, low, high)
        assert opt.last_kept_fraction.item() == pytest.approx(kept, abs=1e-6)


@pytest.mark.parametrize("engine", ALL)
def test_params_and_grads_live_in_flat_buffers(engine):
    device = engine_device(engine)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).to(device)
    opt = CDRSGD(model.parameters(), lr=0.1, tau=0.3, engine=engine, exact=True)
    x, y = torch.randn(4, 5, device=device), torch.tensor([0, 1, 2, 0], device=device)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    flat = opt._flat.flats[0]
    for p in model.parameters():
        assert p.untyped_storage().data_ptr() == flat.weights.untyped_storage().data_ptr()
        assert p.grad.untyped_storage().data_ptr() == flat.grads.untyped_storage().data_ptr()
    grads_before = flat.grads.data_ptr()
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    assert flat.grads.data_ptr() == grads_before and flat.grads.abs().sum() > 0  # backward wrote in place


@pytest.mark.parametrize("engine", FUSED)
@pytest.mark.parametrize("how", ["replace", "module_zero_grad", "set_to_none", "keep_zeros"])
def test_user_code_may_replace_or_drop_grads(fresh_seed, engine, how):
    device = engine_device(engine)
    torch.manual_seed(fresh_seed)
    ref = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4)).to(device)
    model = copy.deepcopy(ref)
    ref_opt = CDRSGD(ref.parameters(), lr=0.1, weight_decay=0.01, tau=0.5)
    opt = CDRSGD(model.parameters(), lr=0.1, weight_decay=0.01, tau=0.5, engine=engine, exact=True)
    for _ in range(5):
        x, y = torch.randn(8, 6, device=device), torch.randint(0, 4, (8,), device=device)
        for m, o in ((ref, ref_opt), (model, opt)):
            if how == "module_zero_grad":
                m.zero_grad()  # nn.Module.zero_grad sets .grad to None
            else:
                o.zero_grad(set_to_none=how != "keep_zeros")
            F.cross_entropy(m(x), y).backward()
            if how == "replace":
                for p in m.parameters():
                    p.grad = p.grad.clone() * 0.5
            o.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("engine", ALL)
def test_several_scored_groups_share_one_threshold(fresh_seed, engine):
    """Two scored groups with their own learning rates: one global threshold over both, as the
    reference engine computes it (the fused engines gather copies for this layout)."""
    device = engine_device(engine)
    torch.manual_seed(fresh_seed)
    a, b = nn.Linear(9, 7).to(device), nn.Linear(7, 3).to(device)
    x, y = torch.randn(16, 9, device=device), torch.randint(0, 3, (16,), device=device)
    F.cross_entropy(b(torch.tanh(a(x))), y).backward()
    scores = torch.cat([(p.grad * p).abs().flatten() for p in (a.weight, b.weight)])
    expected = scores.topk(int(0.6 * scores.numel())).values[-1]
    updates = {p: p.detach() - lr * (p.grad * (0.6 * ((p.grad * p).abs() >= expected) if p.dim() == 2 else 1))
               for m, lr in ((a, 0.1), (b, 0.5)) for p in m.parameters()}
    opt = CDRSGD([{"params": a.parameters(), "lr": 0.1}, {"params": b.parameters(), "lr": 0.5}], lr=0.1,
                 momentum=0.0, tau=0.4, engine=engine, exact=True)
    opt.step()
    assert opt.last_threshold.item() == expected.item()
    for p, want in updates.items():
        torch.testing.assert_close(p.detach(), want, rtol=1e-6, atol=1e-7)


def test_triton_step_does_no_host_sync(monkeypatch, mnist_mini):
    """A Triton step never reads a value back to the host: the threshold stays a device tensor.
    (The compiled engine runs on the CPU, where there is no device to stay on.)"""
    device = engine_device("triton")
    model, aux, opt = make("triton", 0, "cdr_aux", mnist_mini.train_images.shape[0], device)
    batches = list(real_batches(mnist_mini, 2, 16, 0, device))
    train(model, aux, opt, batches[:1])  # the first step builds the flat buffers
    x, y, idx = batches[1]
    opt.zero_grad()
    F.cross_entropy(aux(model(x), idx), y).backward()

    def no_sync(*args, **kwargs):
        raise AssertionError("host sync in step()")

    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "numpy", "cpu"):
        monkeypatch.setattr(torch.Tensor, name, no_sync)
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("error")
    try:
        opt.step()
    finally:
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
        monkeypatch.undo()
    assert 0.0 < opt.last_kept_fraction.item() <= 1.0


def test_engine_vocabulary(monkeypatch):
    cpu = torch.device("cpu")
    assert ENGINE_CHOICES == ("auto", "triton", "compiled", "reference")
    assert resolve_engine("auto", cpu).name == "compiled"
    assert resolve_engine("auto", "cuda").name == "triton"
    assert resolve_engine("reference", cpu).name == "reference"
    engine = ReferenceEngine()
    assert resolve_engine(engine, cpu) is engine
    assert engine_name(None, None) == "reference" and engine_name(None, True) == "auto"
    assert engine_name("compiled", None) == "compiled"
    with pytest.raises(ValueError, match="contradicts"):
        engine_name("reference", True)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        CDRSGD(nn.Linear(2, 2).parameters(), lr=0.1, engine="triton")
    for bad in (lambda: AuxBias(3, 2, engine="magic"), lambda: CDRSGD(nn.Linear(2, 2).parameters(), lr=0.1,
                                                                      engine="magic")):
        with pytest.raises(ValueError, match="valid choices: auto, triton, compiled, reference"):
            bad()


def test_one_engine_object_serves_optimizer_and_aux():
    model, aux = nn.Linear(4, 3), AuxBias(10, 3, lam=2.0, engine="compiled")
    opt = CDRSGD([{"params": model.parameters()}, aux.param_group()], lr=0.1, tau=0.3, engine="compiled")
    aux.engine = opt.engine
    out = aux(model(torch.randn(2, 4)), torch.tensor([1, 5]))
    assert isinstance(aux.engine, Engine) and aux.engine is opt.engine and out.shape == (2, 3)


def test_fused_engines_refuse_what_they_cannot_do():
    model = nn.Linear(3, 3).double()
    opt = CDRSGD(model.parameters(), lr=0.1, tau=0.3, engine="compiled")
    model(torch.randn(2, 3, dtype=torch.float64)).sum().backward()
    with pytest.raises(ValueError, match="float32"):
        opt.step()
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    opt = CDRSGD([{"params": a.parameters(), "tau": 0.3}, {"params": b.parameters(), "tau": 0.5}], lr=0.1,
                 engine="compiled")
    (a(torch.randn(2, 3)) + b(torch.randn(2, 3))).sum().backward()
    with pytest.raises(ValueError, match="share one tau"):
        opt.step()


@pytest.mark.skipif(not torch.cuda.is_available() or engine_device("triton").type != "cuda",
                    reason="CUDA graphs need a CUDA GPU (runs natively wherever one is present)")
def test_triton_step_is_captured_in_a_cuda_graph(mnist_mini):
    """Forward, backward and the whole fused step (threshold, update, AUX rows) in one CUDA graph:
    replays equal the same steps run eagerly. Exact threshold: a captured step replays its sample."""
    device = torch.device("cuda")
    rows = mnist_mini.train_images.shape[0]
    eager = make("triton", 3, "cdr_aux", rows, device)
    graphed = make("triton", 3, "cdr_aux", rows, device)
    batches = list(real_batches(mnist_mini, 8, 32, 3, device))
    static_x, static_y, static_idx = (t.clone() for t in batches[0])
    model, aux, opt = graphed

    def step():
        opt.zero_grad()
        F.cross_entropy(aux(model(static_x), static_idx), static_y).backward()
        opt.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture: builds the flat buffers and scratch
        for batch in batches[:3]:
            for t, v in zip((static_x, static_y, static_idx), batch):
                t.copy_(v)
            step()
    torch.cuda.current_stream().wait_stream(side)
    train(*eager, batches[:3])
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    for batch in batches[3:]:
        for t, v in zip((static_x, static_y, static_idx), batch):
            t.copy_(v)
        graph.replay()
        train(*eager, [batch])
    torch.cuda.synchronize()
    for p, q in zip(list(graphed[0].parameters()) + [graphed[1].weight], list(eager[0].parameters()) +
                    [eager[1].weight]):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_triton_step_launch_budget(monkeypatch, mnist_mini):
    """At LeNet size a GPU step is launch-bound, so the Triton launches of one cdr_aux step are
    counted: the radix select (one sampling pass, two refinements, three one-program digit
    selects; no histogram memset, the selects leave them zero), one update, one AUX row scatter."""
    import triton

    from cdr_fast.engines import interpreting

    device = engine_device("triton")
    model, aux, opt = make("triton", 0, "cdr_aux", mnist_mini.train_images.shape[0], device)
    batches = list(real_batches(mnist_mini, 2, 16, 0, device))
    train(model, aux, opt, batches[:1])
    x, y, idx = batches[1]
    opt.zero_grad()
    F.cross_entropy(aux(model(x), idx), y).backward()
    kernel_class = (triton.runtime.interpreter.InterpretedFunction if interpreting()
                    else triton.runtime.jit.JITFunction)
    launched = []
    original = kernel_class.run

    def counting_run(self, *args, **kwargs):
        launched.append(getattr(self, "__name__", None) or self.fn.__name__)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(kernel_class, "run", counting_run)
    opt.step()
    monkeypatch.undo()
    assert sorted(launched) == sorted(["_sample_scores_kernel", "_refine_histogram_kernel", "_refine_histogram_kernel",
                                       "_select_digit_kernel", "_select_digit_kernel", "_select_digit_kernel",
                                       "_cdr_sgd_kernel", "_scatter_add_rows_kernel"]), launched
