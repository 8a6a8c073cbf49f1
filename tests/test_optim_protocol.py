"""CDRSGD tested the way torch tests its own optimizers (its test_optim.py protocol), on every engine:
steps without a backward, a frozen and unfrozen layer, a zero-size parameter, every state entry at
every iteration, and a state_dict restore that continues bit for bit, approximate threshold included.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cdr_fast import CDRSGD, sampling
from conftest import engine_device

ENGINES = ["reference", "compiled", "triton"]


class Net(nn.Module):
    """Two scored layers, biases, and a zero-size parameter (which must not disturb anything)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(12, 16)
        self.second = nn.Linear(16, 4)
        self.empty = nn.Parameter(torch.empty(0, 3))

    def forward(self, x):
        return self.second(torch.tanh(self.first(x))) + self.empty.sum()


def batches(seed: int, steps: int, device):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 12, generator=gen).to(device), torch.randint(0, 4, (8,), generator=gen).to(device))
            for _ in range(steps)]


def make_opt(model, engine, **kw):
    options = dict(lr=0.1, momentum=0.9, weight_decay=1e-2, tau=0.3, rdi_lambda=0.2, engine=engine)
    options.update(kw)
    if engine != "reference":
        options.setdefault("exact", True)
    return CDRSGD(model.parameters(), **options)


def one_step(model, opt, batch):
    opt.zero_grad()
    F.cross_entropy(model(batch[0]), batch[1]).backward()
    opt.step()


def assert_same_state(opt, ref_opt, params, ref_params, exact_bits: bool, where: str):
    for p, q in zip(params, ref_params):
        st, ref_st = opt.state[p], ref_opt.state[q]
        assert st.keys() == ref_st.keys(), where
        for key in st:
            a, b = st[key], ref_st[key]
            if isinstance(a, torch.Tensor):
                if exact_bits:
                    assert torch.equal(a.cpu(), b.cpu()), (where, key)
                else:
                    torch.testing.assert_close(a.cpu(), b.cpu(), rtol=1e-6, atol=1e-7, msg=f"{where} {key}")
            else:
                assert a == b, (where, key)


@pytest.mark.parametrize("engine", ENGINES)
def test_steps_without_backward_change_nothing(engine, fresh_seed):
    device = engine_device(engine)
    torch.manual_seed(fresh_seed)
    model = Net().to(device)
    opt = make_opt(model, engine)
    before = copy.deepcopy(model.state_dict())
    for _ in range(3):  # no gradient at all yet
        opt.step()
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    one_step(model, opt, batches(fresh_seed, 1, device)[0])
    after_one = copy.deepcopy(model.state_dict())
    buffers = {k: v.clone() for k, v in opt.state[model.first.weight].items() if isinstance(v, torch.Tensor)}
    for _ in range(3):  # zero_grad(set_to_none=True), then steps with no backward: torch does nothing
        opt.zero_grad()
        opt.step()
    for name, value in model.state_dict().items():
        assert torch.equal(value, after_one[name]), name
    for key, value in buffers.items():
        assert torch.equal(opt.state[model.first.weight][key], value), key


@pytest.mark.parametrize("engine", ENGINES)
def test_every_state_entry_follows_the_reference_at_every_iteration(engine, fresh_seed):
    """With a frozen-then-unfrozen layer in the middle of the run."""
    device = engine_device(engine)
    torch.manual_seed(fresh_seed)
    ref_model = Net().to(device)
    model = copy.deepcopy(ref_model)
    ref_opt, opt = make_opt(ref_model, "reference"), make_opt(model, engine)
    for it, batch in enumerate(batches(fresh_seed, 12, device)):
        frozen = 4 <= it < 8
        for m in (ref_model, model):
            m.first.requires_grad_(not frozen)
        first_before = model.first.weight.detach().clone()
        one_step(ref_model, ref_opt, batch)
        one_step(model, opt, batch)
        if frozen:
            assert torch.equal(model.first.weight.detach(), first_before), it  # not even decay
        params, ref_params = list(model.parameters()), list(ref_model.parameters())
        for p, q in zip(params, ref_params):
            if engine == "reference":
                assert torch.equal(p, q), it
            else:
                torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=f"iteration {it}")
        assert_same_state(opt, ref_opt, params, ref_params, engine == "reference", f"iteration {it}")
        assert opt.last_threshold.item() == ref_opt.last_threshold.item(), it
        with torch.no_grad():  # lockstep: the next iteration starts from the same bits on both sides
            for p, q in zip(params, ref_params):
                p.copy_(q)
                for key, value in ref_opt.state[q].items():
                    if isinstance(value, torch.Tensor):
                        opt.state[p][key].copy_(value)


def test_reference_engine_with_tau_zero_is_torch_sgd_state_for_state(fresh_seed):
    torch.manual_seed(fresh_seed)
    model = Net()
    torch_model = copy.deepcopy(model)
    opt = make_opt(model, "reference", tau=0.0, rdi_lambda=0.0)
    torch_opt = torch.optim.SGD(torch_model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    for it, batch in enumerate(batches(fresh_seed, 10, "cpu")):
        model.first.requires_grad_(not 3 <= it < 6)
        torch_model.first.requires_grad_(not 3 <= it < 6)
        one_step(model, opt, batch)
        one_step(torch_model, torch_opt, batch)
        for p, q in zip(model.parameters(), torch_model.parameters()):
            assert torch.equal(p, q), it
            if "momentum_buffer" in torch_opt.state[q]:
                assert torch.equal(opt.state[p]["momentum_buffer"], torch_opt.state[q]["momentum_buffer"]), it


@pytest.mark.parametrize("engine,exact", [("reference", True), ("compiled", True), ("compiled", False),
                                          ("triton", True), ("triton", False)])
def test_restored_optimizer_continues_bit_identically(engine, exact, fresh_seed, monkeypatch):
    """3 steps, state_dict, a fresh model and optimizer loaded from it, 3 more steps: bit-identical
    to 6 uninterrupted steps. The approximate threshold is forced to sample at this size, so its
    sample sequence (the step counter) must travel in the state."""
    monkeypatch.setattr(sampling, "MIN_SAMPLE", 64)
    monkeypatch.setattr(sampling, "CPU_MIN_SAMPLE", 16)
    device = engine_device(engine)
    torch.manual_seed(fresh_seed)
    model = nn.Sequential(nn.Linear(40, 64), nn.Tanh(), nn.Linear(64, 10)).to(device)
    n_scored = 40 * 64 + 64 * 10
    assert not (sampling.stratified_plan(n_scored, exact).exact or sampling.systematic_plan(n_scored, exact).exact) \
        or exact
    data = [(torch.randn(16, 40, generator=torch.Generator().manual_seed(fresh_seed + i)).to(device),
             torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(i)).to(device)) for i in range(6)]
    options = dict(engine=engine, exact=exact if engine != "reference" else None)

    straight = copy.deepcopy(model)
    straight_opt = make_opt(straight, **options)
    for batch in data:
        one_step(straight, straight_opt, batch)

    first = copy.deepcopy(model)
    first_opt = make_opt(first, **options)
    for batch in data[:3]:
        one_step(first, first_opt, batch)
    saved_model, saved_opt = copy.deepcopy(first.state_dict()), copy.deepcopy(first_opt.state_dict())

    resumed = copy.deepcopy(model)
    resumed.load_state_dict(saved_model)
    resumed_opt = make_opt(resumed, **options)
    resumed_opt.load_state_dict(saved_opt)
    for batch in data[3:]:
        one_step(resumed, resumed_opt, batch)
    for p, q in zip(resumed.parameters(), straight.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(resumed_opt.last_threshold, straight_opt.last_threshold)


@pytest.mark.parametrize("engine", ["compiled", "triton"])
def test_the_sample_changes_from_step_to_step(engine, monkeypatch, fresh_seed):
    """The counter that the restore test carries does matter: the same scores, another step, another sample."""
    monkeypatch.setattr(sampling, "MIN_SAMPLE", 64)
    monkeypatch.setattr(sampling, "CPU_MIN_SAMPLE", 16)
    device = engine_device(engine)
    gen = torch.Generator().manual_seed(fresh_seed)
    w = torch.randn(4096, generator=gen).to(device)
    g = torch.randn(4096, generator=gen).to(device)
    opt = CDRSGD([{"params": [w.clone().requires_grad_()], "score": True}], lr=0.0, momentum=0.0, tau=0.4,
                 engine=engine, exact=False)
    seen = set()
    for _ in range(4):
        opt.param_groups[0]["params"][0].grad = g.clone()
        opt.step()
        seen.add(opt.last_threshold.item())
    assert len(seen) > 1
