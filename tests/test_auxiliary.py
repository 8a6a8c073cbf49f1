"""AuxBias against a dense hand-written AUX: same logits, same updates, rows outside the batch untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cdr_fast import CDRSGD, AuxBias


def test_adds_scaled_rows_in_training_and_nothing_in_eval(fresh_seed):
    torch.manual_seed(fresh_seed)
    aux = AuxBias(50, 7, lam=0.7)
    with torch.no_grad():
        aux.weight.normal_()
    logits, idx = torch.randn(9, 7), torch.randint(0, 50, (9,))
    torch.testing.assert_close(aux(logits, idx), logits + 0.7 * aux.weight[idx], rtol=0, atol=0)
    aux.eval()
    assert aux(logits, idx) is logits


def test_empty_batch_and_single_row():
    aux = AuxBias(1, 3, lam=2.0)
    assert aux(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)).shape == (0, 3)
    with torch.no_grad():
        aux.weight.fill_(1.5)
    assert torch.equal(aux(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long)), torch.full((1, 3), 3.0))


def dense_aux_run(table, batches, lr, lam, momentum=0.0, weight_decay=0.0):
    """AUX written densely: B is an ordinary tensor, its gradient is n x c, torch.optim.SGD steps it."""
    b = nn.Parameter(table.clone())
    opt = torch.optim.SGD([b], lr=lr, momentum=momentum, weight_decay=weight_decay)
    for logits, idx, y in batches:
        opt.zero_grad()
        F.cross_entropy(logits + lam * b[idx], y).backward()
        opt.step()
    return b.detach()


def sparse_aux_run(table, batches, lr, lam, **group):
    aux = AuxBias(*table.shape, lam=lam)
    with torch.no_grad():
        aux.weight.copy_(table)
    opt = CDRSGD([aux.param_group(**group)], lr=lr, tau=0.4)
    for logits, idx, y in batches:
        opt.zero_grad()
        F.cross_entropy(aux(logits, idx), y).backward()
        assert aux.weight.grad.is_sparse  # only the batch's rows carry a gradient
        opt.step()
    return aux.weight.detach()


def make_batches(n, c, steps, batch, unique, gen):
    out = []
    for _ in range(steps):
        idx = torch.randperm(n, generator=gen)[:batch] if unique else torch.randint(0, n, (batch,), generator=gen)
        out.append((torch.randn(batch, c, generator=gen), idx, torch.randint(0, c, (batch,), generator=gen)))
    return out


def test_row_sparse_update_equals_dense_update_exactly(fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    table = torch.randn(301, 10, generator=gen)
    batches = make_batches(301, 10, 60, 32, unique=True, gen=gen)
    dense = dense_aux_run(table, batches, lr=0.5, lam=1.3)
    sparse = sparse_aux_run(table, batches, lr=0.5, lam=1.3)
    assert torch.equal(sparse, dense)
    untouched = torch.ones(301, dtype=torch.bool)
    untouched[torch.cat([b[1] for b in batches])] = False
    assert torch.equal(sparse[untouched], table[untouched])


def test_repeated_indices_sum_like_the_dense_gradient(fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    table = torch.randn(5, 4, generator=gen)
    batches = make_batches(5, 4, 30, 16, unique=False, gen=gen)  # 16 draws from 5 rows: many repeats
    torch.testing.assert_close(sparse_aux_run(table, batches, 0.3, 2.0), dense_aux_run(table, batches, 0.3, 2.0),
                               rtol=1e-6, atol=1e-6)


def test_momentum_and_decay_options_give_the_dense_update(fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    table = torch.randn(40, 3, generator=gen)
    batches = make_batches(40, 3, 25, 8, unique=True, gen=gen)
    dense = dense_aux_run(table, batches, 0.2, 1.0, momentum=0.9, weight_decay=0.01)
    sparse = sparse_aux_run(table, batches, 0.2, 1.0, momentum=0.9, weight_decay=0.01)
    torch.testing.assert_close(sparse, dense, rtol=1e-6, atol=1e-7)


def test_table_is_never_scored_by_cdr(fresh_seed):
    """With cdr_aux, the threshold ranks the network's weights only, and B takes the plain,
    unscaled SGD step on its rows: B[idx] -= lr * lam * dL/dz, nothing elsewhere."""
    torch.manual_seed(fresh_seed)
    net = nn.Linear(12, 5)
    aux = AuxBias(100, 5, lam=1.5)
    opt = CDRSGD([{"params": net.parameters()}, aux.param_group()], lr=0.1, tau=0.5)
    x, idx, y = torch.randn(20, 12), torch.randperm(100)[:20], torch.randint(0, 5, (20,))
    logits = net(x)
    logits.retain_grad()
    F.cross_entropy(aux(logits, idx), y).backward()
    expected = net.weight.grad * net.weight.detach()
    expected_rows = -0.1 * 1.5 * logits.grad  # dL/d(offset) = lam * dL/dz, unscaled by 1 - tau
    opt.step()
    k = int(0.5 * net.weight.numel())
    assert opt.last_threshold.item() == expected.abs().flatten().topk(k).values[-1].item()
    torch.testing.assert_close(aux.weight.detach()[idx], expected_rows, rtol=1e-6, atol=1e-8)
    untouched = torch.ones(100, dtype=torch.bool)
    untouched[idx] = False
    assert torch.equal(aux.weight.detach()[untouched], torch.zeros(80, 5))


def test_works_with_torch_optim_sgd():
    aux = AuxBias(10, 2, lam=1.0)
    opt = torch.optim.SGD(aux.parameters(), lr=1.0)
    F.cross_entropy(aux(torch.zeros(2, 2), torch.tensor([3, 7])), torch.tensor([0, 1])).backward()
    opt.step()
    moved = aux.weight.detach().abs().sum(1) > 0
    assert moved.nonzero().flatten().tolist() == [3, 7]


@pytest.mark.parametrize(
    "logits,idx,error",
    [
        (torch.zeros(2, 3), torch.tensor([0, 10]), IndexError),
        (torch.zeros(2, 3), torch.tensor([-1, 0]), IndexError),
        (torch.zeros(2, 4), torch.tensor([0, 1]), ValueError),
        (torch.zeros(2, 3), torch.tensor([0]), ValueError),
    ],
)
def test_bad_inputs_raise_clear_errors(logits, idx, error):
    with pytest.raises(error):
        AuxBias(10, 3)(logits, idx)


@pytest.mark.parametrize("args", [(0, 3), (10, 0), (10, 3, -1.0), (2.5, 3)])
def test_bad_construction_raises(args):
    with pytest.raises(ValueError):
        AuxBias(*args)


@pytest.mark.parametrize("engine", ["reference", "compiled"])
@pytest.mark.parametrize("batch", [1, 7, 32])
@pytest.mark.parametrize("lam", [0.5, 1.0, 2.0])
def test_one_visit_moves_the_offset_by_aux_lr_lam_squared_times_the_residual(engine, batch, lam, fresh_seed):
    """docs/design.md, "AUX's step size": whatever the batch size, a visit moves the offset
    o_i = lam * B[i] by -aux_lr * lam**2 * r_i, r_i = softmax(z_i + o_i) - e_y (cross-entropy),
    computed here by hand in float64 from the logits the step saw."""
    gen = torch.Generator().manual_seed(fresh_seed)
    n, c, aux_lr = 60, 5, 0.3
    model = nn.Linear(4, c)
    aux = AuxBias(n, c, lam=lam, engine=engine)
    with torch.no_grad():
        aux.weight.copy_(torch.randn(n, c, generator=gen))
    opt = CDRSGD([{"params": model.parameters(), "lr": 0.0}, aux.param_group(aux_lr=aux_lr, batch_size=batch)],
                 lr=0.0, momentum=0.9, engine=engine)
    x, y = torch.randn(batch, 4, generator=gen), torch.randint(0, c, (batch,), generator=gen)
    idx = torch.randperm(n, generator=gen)[:batch]  # a visit: each example once
    before = aux.weight.detach().clone()
    logits = model(x)
    F.cross_entropy(aux(logits, idx), y).backward()
    opt.step()
    z = logits.detach().double() + lam * before[idx].double()
    residual = z.softmax(1) - F.one_hot(y, c).double()
    moved = lam * (aux.weight.detach()[idx].double() - before[idx].double())
    # float32 tables: the difference of two rows of size ~3 carries their rounding, lam * 3 * 2**-23
    torch.testing.assert_close(moved, -aux_lr * lam**2 * residual, rtol=1e-5, atol=lam * 4e-7)
    others = torch.ones(n, dtype=torch.bool)
    others[idx] = False
    assert torch.equal(aux.weight.detach()[others], before[others])  # rows outside the batch stay put
