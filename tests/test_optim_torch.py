"""CDRSGD where torch's own optimizer tests look (the protocol of torch's test/test_optim.py, written
anew for this optimizer): copies and pickles, add_param_group, defaults and refusals, no empty
state, complex parameters, meta-device construction, and torch.amp.GradScaler."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cdr_fast import CDRSGD, AuxBias
from cdr_fast.optim import STEP_KEY
from conftest import engine_device

ENGINES = ["reference", "compiled", "triton"]


def net(device, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 4)).to(device)


def data(device, seed: int, steps: int):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 12, generator=gen).to(device), torch.randint(0, 4, (8,), generator=gen).to(device))
            for _ in range(steps)]


def train(model, opt, batches, aux=None) -> None:
    for i, (x, y) in enumerate(batches):
        opt.zero_grad()
        logits = model(x)
        if aux is not None:
            logits = aux(logits, torch.arange(i, i + x.shape[0], device=x.device) % aux.num_examples)
        F.cross_entropy(logits, y).backward()
        opt.step()


def bits_equal(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def through_torch_save(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


COPIES = {"deepcopy": copy.deepcopy, "pickle": lambda obj: pickle.loads(pickle.dumps(obj)),
          "torch.save": through_torch_save}


@pytest.mark.parametrize("how", COPIES)
@pytest.mark.parametrize("engine", ENGINES)
def test_a_copied_optimizer_takes_the_same_next_steps_bit_for_bit(engine, how, fresh_seed):
    device = engine_device(engine)
    model = net(device, fresh_seed)
    aux = AuxBias(20, 4, engine=engine).to(device)
    opt = CDRSGD([{"params": model.parameters()}, aux.param_group(aux_lr=0.5, batch_size=8)], lr=0.1,
                 weight_decay=1e-3, tau=0.3, rdi_lambda=0.2, engine=engine,
                 exact=None if engine == "reference" else False)
    batches = data(device, fresh_seed, 6)
    train(model, opt, batches[:3], aux)
    model2, aux2, opt2 = COPIES[how]((model, aux, opt))
    for name in ("exact", "dist", "defaults", "engine"):  # torch: a copy keeps every public attribute
        assert getattr(opt2, name) == getattr(opt, name), name
    assert opt2.param_groups[0]["params"][0] is next(model2.parameters())
    train(model, opt, batches[3:], aux)
    train(model2, opt2, batches[3:], aux2)
    assert bits_equal(model, model2) and torch.equal(aux.weight, aux2.weight)
    assert torch.equal(opt.last_threshold, opt2.last_threshold)
    assert opt2.state[next(model2.parameters())][STEP_KEY] == 6


def test_a_refused_param_group_leaves_nothing_and_a_retry_works(fresh_seed):
    model, extra = net("cpu", fresh_seed), nn.Linear(3, 3)
    opt = CDRSGD(model.parameters(), lr=0.1, momentum=0.0, tau=0.2)
    groups = len(opt.param_groups)
    with pytest.raises(ValueError, match="invalid lr: -1; valid values are >= 0$"):
        opt.add_param_group({"params": extra.parameters(), "lr": -1})
    assert len(opt.param_groups) == groups and not opt.state
    before = extra.weight.detach().clone()
    train(model, opt, data("cpu", fresh_seed, 1))
    assert torch.equal(extra.weight, before)  # never stepped, least of all by gradient ascent
    with pytest.raises(ValueError, match="unknown param-group option"):
        opt.add_param_group({"params": extra.parameters(), "lrr": 0.1})
    with pytest.raises(ValueError, match="invalid tau"):  # after the first step, too
        opt.add_param_group({"params": extra.parameters(), "tau": 1.5})
    saved = opt.state_dict()
    assert len(saved["param_groups"]) == groups and len(saved["state"]) == 1
    opt.add_param_group({"params": extra.parameters(), "lr": 0.5, "score": False})  # the retry works ...
    torch_extra = copy.deepcopy(extra)
    torch_opt = torch.optim.SGD(torch_extra.parameters(), lr=0.5)
    x = torch.randn(5, 3)
    for layer, o in ((extra, opt), (torch_extra, torch_opt)):
        o.zero_grad()
        layer(x).square().sum().backward()
        o.step()
    assert torch.equal(extra.weight, torch_extra.weight)  # ... and the new group is stepped like SGD


def test_defaults_and_refusals_read_like_torch():
    params = [nn.Parameter(torch.randn(3))]
    assert CDRSGD(params).defaults["lr"] == torch.optim.SGD(params).defaults["lr"]
    CDRSGD([{"params": params, "lr": 0.1}])  # every group sets its own: no lr needed
    with pytest.raises(ValueError, match=r"invalid lr: tensor\(0\.0010\) is a tensor; .*tensors are not supported"):
        CDRSGD(params, lr=torch.tensor(1e-3))
    for bad, match in ((dict(momentum=1.0), r"invalid momentum: 1.0; valid values are \[0, 1\)"),
                       (dict(tau=float("nan")), "invalid tau: nan"), (dict(engine="magic"), "valid choices: auto"),
                       (dict(exact=False, engine="reference"), "always exact")):
        with pytest.raises(ValueError, match=match):
            CDRSGD(params, **bad)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_no_empty_state_entries(momentum, fresh_seed):
    model, torch_model = net("cpu", fresh_seed), net("cpu", fresh_seed)
    model[0].requires_grad_(False)  # a frozen layer gets no state, in torch as here
    torch_model[0].requires_grad_(False)
    opt = CDRSGD(model.parameters(), lr=0.1, momentum=momentum, tau=0.3)
    torch_opt = torch.optim.SGD(torch_model.parameters(), lr=0.1, momentum=momentum)
    train(model, opt, data("cpu", fresh_seed, 2))
    train(torch_model, torch_opt, data("cpu", fresh_seed, 2))
    mine = {i: set(opt.state[p]) - {STEP_KEY} for i, p in enumerate(model.parameters()) if p in opt.state}
    torch_keys = {i: set(torch_opt.state[p]) for i, p in enumerate(torch_model.parameters()) if p in torch_opt.state}
    assert all(opt.state[p] for p in opt.state)  # no {} anywhere
    assert {i: k for i, k in mine.items() if k} == torch_keys


class ComplexNet(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(5, 6, dtype=torch.complex64, generator=gen))
        self.bias = nn.Parameter(torch.randn(5, dtype=torch.complex64, generator=gen))

    def forward(self, x):
        return (x.to(torch.complex64) @ self.weight.T + self.bias).abs().sum()


@pytest.mark.parametrize("engine", ENGINES)
def test_complex_parameters_step_as_their_real_pairs(engine, fresh_seed):
    """At tau 0, torch's SGD on the complex tensors; at tau > 0, CDRSGD on their real views."""
    device = engine_device(engine)
    xs = [torch.randn(7, 6, generator=torch.Generator().manual_seed(fresh_seed + i)).to(device) for i in range(4)]
    for tau in (0.0, 0.4):
        model = ComplexNet(fresh_seed).to(device)
        real = [nn.Parameter(torch.view_as_real(p.detach()).clone()) for p in model.parameters()]
        twin = ComplexNet(fresh_seed).to(device)
        opt = CDRSGD(model.parameters(), lr=0.05, weight_decay=1e-2, tau=tau, engine=engine, exact=True)
        other = (torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-2) if tau == 0 else
                 CDRSGD([{"params": real[:1], "score": True}, {"params": real[1:], "score": False}], lr=0.05,
                        weight_decay=1e-2, tau=tau, engine="reference"))
        for x in xs:
            opt.zero_grad()
            model(x).backward()
            opt.step()
            other.zero_grad()
            if tau == 0:
                twin(x).backward()
            else:
                with torch.no_grad():
                    for p, r in zip(twin.parameters(), real):
                        p.copy_(torch.view_as_complex(r))
                twin(x).backward()
                for p, r in zip(twin.parameters(), real):
                    r.grad = torch.view_as_real(p.grad).clone()
                    p.grad = None
            other.step()
        mine = [torch.view_as_real(p.detach()) for p in model.parameters()]
        theirs = [torch.view_as_real(p.detach()) for p in twin.parameters()] if tau == 0 else real
        for a, b in zip(mine, theirs):
            torch.testing.assert_close(a, b.detach(), rtol=1e-6, atol=1e-6)


def test_mixed_dtypes_in_one_group_are_refused_in_one_line():
    opt = CDRSGD([nn.Parameter(torch.randn(3, 3)), nn.Parameter(torch.randn(3, dtype=torch.float64))], lr=0.1)
    for p in opt.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match="one dtype and one device per param group"):
        opt.step()


def test_built_on_meta_then_materialised_the_engine_follows_the_device(fresh_seed, monkeypatch):
    # Materialising keeps the Parameter objects (so the optimizer's) when modules swap their
    # tensors, as FSDP2's meta-device initialisation has them do.
    monkeypatch.setattr(torch.__future__, "get_swap_module_params_on_conversion", lambda: True)
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 4))
    opt = CDRSGD(model.parameters(), lr=0.1, tau=0.3, engine="auto", exact=True)
    with pytest.raises(ValueError, match="meta device"):
        opt.step()
    model.to_empty(device="cpu")
    model.load_state_dict(net("cpu", fresh_seed).state_dict())
    reference = net("cpu", fresh_seed)
    ref_opt = CDRSGD(reference.parameters(), lr=0.1, tau=0.3, engine="reference")
    batches = data("cpu", fresh_seed, 3)
    train(model, opt, batches)
    train(reference, ref_opt, batches)
    assert opt.engine.name == "compiled"
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("engine", ["reference", "compiled"])
def test_grad_scaler_unscales_and_skips_like_an_untaken_step(engine, fresh_seed):
    """A power-of-two scale unscales exactly, so scaled training is unscaled training bit for bit;
    a step with an inf gradient is skipped: weights, momentum and the sample counter untouched."""
    plain, scaled = net("cpu", fresh_seed), net("cpu", fresh_seed)
    plain_opt = CDRSGD(plain.parameters(), lr=0.1, tau=0.3, engine=engine)
    opt = CDRSGD(scaled.parameters(), lr=0.1, tau=0.3, engine=engine)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1000)
    batches = data("cpu", fresh_seed, 4)
    for i, (x, y) in enumerate(batches):
        opt.zero_grad()
        loss = F.cross_entropy(scaled(x), y)
        if i == 2:  # an overflow: this step is skipped
            loss = loss * float("inf")
            before = ([p.detach().clone() for p in scaled.parameters()],
                      [opt.state[p]["momentum_buffer"].clone() for p in scaled.parameters()],
                      opt.state[next(scaled.parameters())][STEP_KEY])
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if i == 2:
            assert all(torch.equal(p, b) for p, b in zip(scaled.parameters(), before[0]))
            assert all(torch.equal(opt.state[p]["momentum_buffer"], b) for p, b in zip(scaled.parameters(), before[1]))
            assert opt.state[next(scaled.parameters())][STEP_KEY] == before[2]
            assert scaler.get_scale() == 2.0**9
        else:
            train(plain, plain_opt, [(x, y)])
            assert bits_equal(plain, scaled), i
