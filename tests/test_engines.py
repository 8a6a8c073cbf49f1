"""CDRSGD and AuxBias on the fused engines (triton under the interpreter, compiled) against reference."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cdr_fast import CDRSGD, AuxBias
from cdr_fast.engines import interpreting, resolve_engine
from cdr_fast.models import LeNet, build_model
from helpers import kept_fraction_range

# The triton engine runs on these CPU tensors only under the interpreter (the default without a
# GPU; see conftest.py). With TRITON_INTERPRET=0 on a GPU machine, the kernel tests cover it.
FUSED = [pytest.param("triton", marks=pytest.mark.skipif(not interpreting(), reason="needs TRITON_INTERPRET=1")),
         "compiled"]


def real_batches(data, steps, batch, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randperm(data.train_images.shape[0], generator=gen)[:batch]
        yield data.train_images[idx], data.train_labels[idx], idx


def train(model, aux, opt, batches):
    for x, y, idx in batches:
        opt.zero_grad()
        logits = model(x)
        if aux is not None:
            logits = aux(logits, idx)
        F.cross_entropy(logits, y).backward()
        opt.step()


def make(engine, seed, method, aux_rows=None):
    torch.manual_seed(seed)
    model = LeNet()
    aux = AuxBias(aux_rows, 10, lam=3.0, engine=engine if engine == "triton" else None) if method == "cdr_aux" else None
    groups = [{"params": model.parameters()}] + ([aux.param_group()] if aux is not None else [])
    opt = CDRSGD(groups, lr=0.05, momentum=0.9, weight_decay=1e-3, tau=0.4,
                 rdi_lambda=0.3 if method == "cdr_rdi" else 0.0, engine=engine, exact=engine != "reference" or None)
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
    """100 steps of LeNet on real digits, in lockstep: every step equals the reference step to fp32
    rounding and keeps the same mask. (Run freely, the two drift apart by rounding until a score
    near the threshold lands on the other side: a jump of lr * g for that one weight.)"""
    rows = mnist_mini.train_images.shape[0]
    ref_model, ref_aux, ref_opt = make("reference", fresh_seed, method, rows)
    model, aux, opt = make(engine, fresh_seed, method, rows)
    assert opt.engine == engine and opt.exact
    ref_params = list(ref_model.parameters()) + ([ref_aux.weight] if aux is not None else [])
    params = list(model.parameters()) + ([aux.weight] if aux is not None else [])
    for step, batch in enumerate(real_batches(mnist_mini, 100, 32, fresh_seed)):
        train(model, aux, opt, [batch])
        train(ref_model, ref_aux, ref_opt, [batch])
        assert opt.last_threshold.item() == ref_opt.last_threshold.item(), step
        assert opt.last_kept_fraction.item() == pytest.approx(ref_opt.last_kept_fraction.item(), abs=1e-7), step
        for p, q in zip(params, ref_params):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=f"step {step}")
        sync_to(opt, params, ref_opt, ref_params)


@pytest.mark.parametrize("engine", FUSED)
def test_one_step_is_the_reference_step_to_rounding(mnist_mini, fresh_seed, engine):
    ref_model, _, ref_opt = make("reference", fresh_seed, "cdr_rdi")
    model, _, opt = make(engine, fresh_seed, "cdr_rdi")
    batches = list(real_batches(mnist_mini, 2, 64, fresh_seed))
    train(ref_model, None, ref_opt, batches)
    train(model, None, opt, batches)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert opt.last_threshold.item() == pytest.approx(ref_opt.last_threshold.item(), rel=1e-5)


@pytest.mark.slow
def test_approximate_threshold_on_real_resnet_gradients(mnist_mini, fresh_seed):
    """ResNet-18 (11M weights, sampled) after a few steps on digits: both engines keep what the
    exact threshold keeps at a rank within 0.5% of k."""
    torch.manual_seed(fresh_seed)
    model = build_model("resnet18", 1, 10, 28)
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
    for engine in ["triton", "compiled"] if interpreting() else ["compiled"]:
        opt = CDRSGD(copy.deepcopy(model).parameters(), lr=0.0, momentum=0.0, tau=0.4, engine=engine)
        assert not opt.exact
        for p, q in zip(opt.param_groups[0]["params"], model.parameters()):
            p.grad = q.grad.clone()
        opt.step()
        kept = (scores >= opt.last_threshold).float().mean().item()
        assert low <= kept <= high, (engine, kept, low, high)
        assert opt.last_kept_fraction.item() == pytest.approx(kept, abs=1e-6)


@pytest.mark.parametrize("engine", FUSED)
def test_params_and_grads_live_in_flat_buffers(engine):
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    opt = CDRSGD(model.parameters(), lr=0.1, tau=0.3, engine=engine, exact=True)
    F.cross_entropy(model(torch.randn(4, 5)), torch.tensor([0, 1, 2, 0])).backward()
    opt.step()
    flat = opt._flat[0]
    for p in model.parameters():
        assert p.untyped_storage().data_ptr() == flat.weights.untyped_storage().data_ptr()
        assert p.grad.untyped_storage().data_ptr() == flat.grads.untyped_storage().data_ptr()
    grads_before = flat.grads.data_ptr()
    opt.zero_grad()
    F.cross_entropy(model(torch.randn(4, 5)), torch.tensor([0, 1, 2, 0])).backward()
    assert flat.grads.data_ptr() == grads_before and flat.grads.abs().sum() > 0  # backward wrote in place


@pytest.mark.parametrize("engine", FUSED)
@pytest.mark.parametrize("how", ["replace", "module_zero_grad", "set_to_none"])
def test_user_code_may_replace_or_drop_grads(fresh_seed, engine, how):
    torch.manual_seed(fresh_seed)
    ref = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))
    model = copy.deepcopy(ref)
    ref_opt = CDRSGD(ref.parameters(), lr=0.1, tau=0.5)
    opt = CDRSGD(model.parameters(), lr=0.1, tau=0.5, engine=engine, exact=True)
    for _ in range(5):
        x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
        for m, o in ((ref, ref_opt), (model, opt)):
            if how == "module_zero_grad":
                m.zero_grad()  # nn.Module.zero_grad sets .grad to None
            else:
                o.zero_grad(set_to_none=True)
            F.cross_entropy(m(x), y).backward()
            if how == "replace":
                for p in m.parameters():
                    p.grad = p.grad.clone() * 0.5
            o.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("engine", FUSED)
def test_a_parameter_without_gradient_is_left_alone(engine):
    """Like torch.optim.SGD: no gradient this step, no update (not even weight decay)."""
    used, unused = nn.Linear(3, 3), nn.Linear(3, 3)
    opt = CDRSGD(list(used.parameters()) + list(unused.parameters()), lr=0.1, weight_decay=0.1, tau=0.3,
                 engine=engine, exact=True)
    before = unused.weight.detach().clone()
    for p in unused.parameters():
        p.grad = None
    used(torch.randn(2, 3)).sum().backward()
    opt.step()
    opt.zero_grad()
    for p in unused.parameters():
        p.grad = None
    used(torch.randn(2, 3)).sum().backward()
    opt.step()
    assert torch.equal(unused.weight.detach(), before)


@pytest.mark.parametrize("engine", ["reference", *FUSED])
def test_state_dict_round_trip_continues_exactly(fresh_seed, engine):
    """Save after 8 steps, load into a fresh model and optimizer, continue: bit-identical."""
    torch.manual_seed(fresh_seed)
    base = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))
    data = [(torch.randn(4, 10), torch.randint(0, 3, (4,))) for _ in range(20)]
    make_opt = lambda m: CDRSGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3, tau=0.3,  # noqa: E731
                                rdi_lambda=0.2, engine=engine, exact=engine != "reference" or None)

    def run(m, o, chunk):
        for x, y in chunk:
            o.zero_grad()
            F.cross_entropy(m(x), y).backward()
            o.step()

    straight = copy.deepcopy(base)
    run(straight, make_opt(straight), data)
    first = copy.deepcopy(base)
    opt = make_opt(first)
    run(first, opt, data[:8])
    saved_model, saved_opt = copy.deepcopy(first.state_dict()), copy.deepcopy(opt.state_dict())
    resumed = copy.deepcopy(base)
    opt2 = make_opt(resumed)
    run(resumed, opt2, data[:1])  # fused: build the flat buffers first, so loading must land in them
    resumed.load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    run(resumed, opt2, data[8:])
    for p, q in zip(resumed.parameters(), straight.parameters()):
        assert torch.equal(p, q)


@pytest.mark.skipif(not interpreting(), reason="needs TRITON_INTERPRET=1")
def test_triton_step_does_no_host_sync(monkeypatch, mnist_mini):
    model, aux, opt = make("triton", 0, "cdr_aux", mnist_mini.train_images.shape[0])
    x, y, idx = next(real_batches(mnist_mini, 1, 16, 0))
    F.cross_entropy(aux(model(x), idx), y).backward()

    def no_sync(*args, **kwargs):
        raise AssertionError("host sync in step()")

    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, no_sync)
    opt.step()
    monkeypatch.undo()
    assert 0.0 < opt.last_kept_fraction.item() <= 1.0


def test_engine_choice(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_engine(None, True, cpu) == "compiled"
    assert resolve_engine(None, False, cpu) == "reference"
    assert resolve_engine(None, True, torch.device("cuda")) == "triton"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        CDRSGD(nn.Linear(2, 2).parameters(), lr=0.1, engine="triton")
    with pytest.raises(ValueError, match="valid choices: triton, compiled, reference"):
        AuxBias(3, 2, engine="magic")


def test_fused_engines_refuse_what_they_cannot_do():
    model = nn.Linear(3, 3).double()
    opt = CDRSGD(model.parameters(), lr=0.1, tau=0.3, engine="compiled")
    model(torch.randn(2, 3, dtype=torch.float64)).sum().backward()
    with pytest.raises(ValueError, match="float32"):
        opt.step()
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    opt = CDRSGD([{"params": a.parameters()}, {"params": b.parameters()}], lr=0.1, tau=0.3, engine="compiled")
    (a(torch.randn(2, 3)) + b(torch.randn(2, 3))).sum().backward()
    with pytest.raises(ValueError, match="one param group"):
        opt.step()
