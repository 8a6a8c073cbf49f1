"""CDRSGD (reference engine) against independent hand-written loops of plain torch ops."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cdr_fast import CDRSGD
from cdr_fast.models import LeNet


def published_cdr_step(model: nn.Module, optimizer: torch.optim.Optimizer, nonzero_ratio: float, gradient_scale: float):
    """The CDR code's ``train_one_step`` after ``loss.backward()``, as published (xiaoboxia/CDR)."""
    to_concat_g, to_concat_v = [], []
    for _, param in model.named_parameters():
        if param.dim() in [2, 4]:
            to_concat_g.append(param.grad.data.view(-1))
            to_concat_v.append(param.data.view(-1))
    all_g = torch.cat(to_concat_g)
    all_v = torch.cat(to_concat_v)
    metric = torch.abs(all_g * all_v)
    num_params = all_v.size(0)
    nz = int(nonzero_ratio * num_params)
    top_values, _ = torch.topk(metric, nz)
    thresh = top_values[-1]
    for _, param in model.named_parameters():
        if param.dim() in [2, 4]:
            mask = (torch.abs(param.data * param.grad.data) >= thresh).type(torch.FloatTensor)
            mask = mask * gradient_scale
            param.grad.data = mask * param.grad.data
    optimizer.step()
    optimizer.zero_grad()


def batches(data, steps: int, batch: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, data.train_images.shape[0], (batch,), generator=gen)
        yield data.train_images[idx], data.train_labels[idx]


def assert_same_params(a: nn.Module, b: nn.Module, exact: bool = True):
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        if exact:
            assert torch.equal(p, q), f"{name} differs: max |diff| {(p - q).abs().max().item():.3g}"
        else:
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=f"{name} differs")


@pytest.mark.parametrize("tau", [0.2, 0.4, 0.7])
def test_cdr_matches_published_train_one_step(mnist_mini, fresh_seed, tau):
    """200 steps of real LeNet/MNIST training: bit-identical to the published step."""
    torch.manual_seed(fresh_seed)
    ours = LeNet()
    theirs = copy.deepcopy(ours)
    opt = CDRSGD(ours.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3, tau=tau)
    ref_opt = torch.optim.SGD(theirs.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3)
    for step, (x, y) in enumerate(batches(mnist_mini, 200, 32, fresh_seed)):
        F.cross_entropy(theirs(x), y).backward()
        published_cdr_step(theirs, ref_opt, 1 - tau, 1 - tau)
        F.cross_entropy(ours(x), y).backward()
        scores = torch.cat([(p.grad * p).abs().flatten() for p in ours.parameters() if p.dim() in (2, 4)])
        opt.step()
        opt.zero_grad()
        # The exposed threshold and kept fraction are the step's: the k-th largest score, and the
        # share of scores at or above it (more than k only on ties, e.g. the zeros of dead units).
        thr = scores.topk(int((1 - tau) * scores.numel())).values[-1]
        assert opt.last_threshold.item() == thr.item()
        assert opt.last_kept_fraction.item() == pytest.approx((scores >= thr).float().mean().item(), abs=1e-7)
        if step % 50 == 0:
            assert_same_params(ours, theirs)
    assert_same_params(ours, theirs)


@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.9, 1e-3), (0.5, 0.1)])
def test_tau_zero_is_exactly_torch_sgd(fresh_seed, momentum, weight_decay):
    torch.manual_seed(fresh_seed)
    ours = nn.Sequential(nn.Linear(17, 33), nn.ReLU(), nn.Linear(33, 5))
    theirs = copy.deepcopy(ours)
    # Two groups with their own lr, to cover param groups too.
    groups = lambda m: [{"params": m[0].parameters()}, {"params": m[2].parameters(), "lr": 0.03}]  # noqa: E731
    opt = CDRSGD(groups(ours), lr=0.1, momentum=momentum, weight_decay=weight_decay, tau=0.0)
    ref = torch.optim.SGD(groups(theirs), lr=0.1, momentum=momentum, weight_decay=weight_decay)
    for _ in range(100):
        x, y = torch.randn(8, 17), torch.randint(0, 5, (8,))
        for model, o in ((ours, opt), (theirs, ref)):
            o.zero_grad()
            F.cross_entropy(model(x), y).backward()
            o.step()
    assert_same_params(ours, theirs)
    assert opt.last_kept_fraction is None


def hand_sgd(params, grads, bufs, initials, lr, momentum, wd, rdi):
    """Independent SGD + decay + RDI written from the formulas of docs/design.md."""
    for i, (w, g) in enumerate(zip(params, grads)):
        d = g + wd * w + rdi**2 * (w - initials[i])
        bufs[i] = d.clone() if bufs[i] is None else momentum * bufs[i] + d
        w -= lr * bufs[i]


def hand_cdr_grads(params, grads, scored, tau):
    """docs/design.md (CDR, steps 1-3), written out with a sort. The scores stay float32, as the
    published code's: in float64 two scores one rounding apart could swap ranks at the threshold."""
    s = torch.cat([(g * w).abs().flatten() for w, g, sc in zip(params, grads, scored) if sc])
    k = int((1 - tau) * s.numel())
    thr = s.sort(descending=True).values[k - 1] if k > 0 else float("inf")
    out = []
    for w, g, sc in zip(params, grads, scored):
        if sc:
            m = ((g * w).abs() >= thr) if k > 0 else torch.zeros_like(g, dtype=torch.bool)
            out.append((1 - tau) * m.to(g.dtype) * g)
        else:
            out.append(g.clone())
    return out


@pytest.mark.parametrize("tau,rdi", [(0.0, 0.3), (0.4, 0.3), (0.7, 0.0), (0.4, 1.0)])
def test_cdr_and_rdi_match_hand_written_loop(fresh_seed, tau, rdi):
    torch.manual_seed(fresh_seed)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 6))
    hand = [p.detach().clone() for p in model.parameters()]
    initials = [p.clone() for p in hand]
    scored = [p.dim() in (2, 4) for p in model.parameters()]
    bufs = [None] * len(hand)
    opt = CDRSGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-2, tau=tau, rdi_lambda=rdi)
    for _ in range(150):
        x, y = torch.randn(16, 2, 7, 7), torch.randint(0, 6, (16,))
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        # The hand loop starts from our current weights so that a one-ulp difference in a
        # borderline mask cannot compound; the per-step update is what is compared.
        hand = [p.detach().clone() for p in model.parameters()]
        new = hand_cdr_grads(hand, grads, scored, tau) if tau > 0 else grads
        hand_sgd(hand, new, bufs, initials, 0.05, 0.9, 1e-2, rdi)
        opt.step()
        for p, h in zip(model.parameters(), hand):
            torch.testing.assert_close(p.detach(), h, rtol=1e-6, atol=1e-7)
        bufs = [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()]


def test_ties_keep_more_than_k():
    # Scores 5,4,3,3,3,3,1,1,0,0: k = int(0.5 * 10) = 5; the 5th largest is 3, so all four 3s stay.
    w = nn.Parameter(torch.ones(2, 5))
    w.grad = torch.tensor([[5.0, 4.0, 3.0, 3.0, 3.0], [3.0, 1.0, 1.0, 0.0, 0.0]])
    opt = CDRSGD([w], lr=1.0, momentum=0.0, tau=0.5)
    opt.step()
    keep = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.float32)
    assert torch.equal(w.detach(), 1.0 - 0.5 * keep * w.grad)
    assert opt.last_threshold.item() == 3.0
    assert opt.last_kept_fraction.item() == pytest.approx(0.6)


def test_keep_count_zero_keeps_nothing_but_decays():
    w = nn.Parameter(torch.tensor([[2.0]]))  # one scored weight: k = int(0.5 * 1) = 0
    b = nn.Parameter(torch.tensor([1.0]))  # a bias: never scored, full gradient
    w.grad, b.grad = torch.tensor([[3.0]]), torch.tensor([0.5])
    opt = CDRSGD([w, b], lr=1.0, momentum=0.0, weight_decay=0.1, tau=0.5)
    opt.step()
    assert w.item() == pytest.approx(2.0 - 0.1 * 2.0)  # decay only
    assert b.item() == pytest.approx(1.0 - (0.5 + 0.1 * 1.0))  # unscaled gradient + decay
    assert opt.last_kept_fraction.item() == 0.0


def test_zero_scores_tie_at_threshold():
    # Zero gradients score 0; with k covering them they are kept (0 >= 0), which changes nothing.
    w = nn.Parameter(torch.ones(1, 4))
    w.grad = torch.tensor([[0.0, 0.0, 2.0, 0.0]])
    opt = CDRSGD([w], lr=1.0, momentum=0.0, tau=0.25)  # k = 3: threshold 0, all four kept
    opt.step()
    assert torch.equal(w.detach(), torch.tensor([[1.0, 1.0, 1.0 - 0.75 * 2.0, 1.0]]))
    assert opt.last_kept_fraction.item() == 1.0


def test_score_option_and_none_grads():
    torch.manual_seed(0)
    lin = nn.Linear(6, 4)
    extra = nn.Parameter(torch.randn(3, 3))  # dim 2 but excluded by score=False
    frozen = nn.Parameter(torch.randn(5, 5))  # no gradient: skipped
    opt = CDRSGD([{"params": lin.parameters()}, {"params": [extra, frozen], "score": False}],
                 lr=0.1, momentum=0.0, tau=0.5)
    lin.weight.grad = torch.randn(4, 6)
    lin.bias.grad = torch.randn(4)
    extra.grad = torch.randn(3, 3)
    before = [t.detach().clone() for t in (lin.weight, extra, frozen)]
    opt.step()
    torch.testing.assert_close(extra.detach(), before[1] - 0.1 * extra.grad)  # unmasked, unscaled
    assert torch.equal(frozen.detach(), before[2])
    moved = (lin.weight.detach() != before[0]).sum().item()
    assert moved == 12  # exactly k = int(0.5 * 24) weights move (random scores: no ties)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(tau=1.0), "tau"),
        (dict(tau=-0.1), "tau"),
        (dict(lr=-1.0), "lr"),
        (dict(momentum=-0.5), "momentum"),
        (dict(weight_decay=-1), "weight_decay"),
        (dict(rdi_lambda=-1), "rdi_lambda"),
        (dict(engine="cuda-magic"), "engine"),
        (dict(exact=False, engine="reference"), "exact"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    args = dict(lr=0.1, **kwargs) if "lr" not in kwargs else kwargs
    with pytest.raises(ValueError, match=message):
        CDRSGD(nn.Linear(2, 2).parameters(), **args)


def test_groups_with_different_tau_are_refused():
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    opt = CDRSGD([{"params": a.parameters(), "tau": 0.2}, {"params": b.parameters(), "tau": 0.4}], lr=0.1)
    for p in list(a.parameters()) + list(b.parameters()):
        p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match="share one tau"):
        opt.step()


def test_closure_is_called_and_returned():
    lin = nn.Linear(3, 1)
    opt = CDRSGD(lin.parameters(), lr=0.1, tau=0.5)

    def closure():
        opt.zero_grad()
        loss = lin(torch.ones(1, 3)).sum()
        loss.backward()
        return loss

    w = lin.weight.detach().clone()
    loss = opt.step(closure)
    assert loss is not None and not torch.equal(lin.weight.detach(), w)
