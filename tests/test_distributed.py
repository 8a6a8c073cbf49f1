"""Data-parallel training under torchrun: 2 CPU processes on gloo against the single-process run.

The library path (``CDRSGD(process_group=...)``, the AUX all-gather, unequal shares of a batch)
is checked case by case in one torchrun launch (tests/ddp_lockstep.py); train.py is checked end
to end: the same run, resume, and bad input.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import subprocess
import sys

import pytest
import torch

import ddp_lockstep
from cdr_fast.distributed import Distributed

from conftest import REPO, SEED_VARIABLE

TINY_NPZ = REPO / "tests" / "data" / "tiny.npz"


def torchrun(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


# ---------------------------------------------------------------- the batch split


@pytest.mark.parametrize("world", [1, 2, 3, 8])
@pytest.mark.parametrize("batch", [0, 1, 2, 7, 32, 33])
def test_shards_are_the_global_batch_in_order(world, batch):
    idx = torch.randperm(100)[:batch]
    shards = [Distributed(rank, world).shard(idx) if world > 1 else idx for rank in range(world)]
    assert torch.equal(torch.cat(shards), idx)  # contiguous, in order, nothing lost or repeated
    sizes = [s.numel() for s in shards]
    assert max(sizes) - min(sizes) <= 1
    assert max(sizes) == Distributed(0, world).max_shard(batch)


@pytest.mark.parametrize("world, batch", [(2, 33), (3, 32), (4, 2), (2, 1)])
def test_loss_weights_make_the_ranks_mean_the_global_mean(world, batch):
    losses = torch.rand(batch, dtype=torch.float64)
    idx = torch.arange(batch)
    per_rank = []
    for rank in range(world):
        d = Distributed(rank, world)
        share = d.shard(idx)
        mean = losses[share].mean() if share.numel() else torch.zeros((), dtype=torch.float64)
        per_rank.append(mean * d.loss_weight(share.numel(), batch))
    # the optimizer averages over ranks, as DDP does
    assert torch.allclose(torch.stack(per_rank).mean(), losses.mean(), rtol=1e-12)


@pytest.mark.parametrize("num_rows", [5, 54_000, 1_281_167, 2**40])
def test_row_slots_carry_every_ranks_rows_exactly_through_a_sum(fresh_seed, num_rows):
    """The all-reduce sums the ranks' buffers; each slot has one writer, so every rank reads every
    rank's indices (any size: base-4096 digits) and rows bit for bit, padding rows included."""
    from cdr_fast.aux_rows import RowSlots

    gen = torch.Generator().manual_seed(fresh_seed)
    world, max_rows, width = 3, 4, 10
    size = RowSlots.size(Distributed(0, world), max_rows, width, num_rows)
    buffers = [torch.zeros(size) for _ in range(world)]
    sent = []
    for rank, count in zip(range(world), (4, 3, 0)):  # unequal shares, one rank without rows
        idx = torch.randint(0, num_rows, (count,), generator=gen)
        rows = torch.randn(count, width, generator=gen) * 10 ** torch.randint(-30, 30, (count, 1), generator=gen)
        RowSlots(buffers[rank], Distributed(rank, world), max_rows, width, num_rows).write(
            idx if count else None, rows if count else None)
        sent.append((idx, rows))
    total = torch.stack(buffers).sum(0)  # what the all-reduce leaves on every rank
    idx, rows = RowSlots(total, Distributed(1, world), max_rows, width, num_rows).read()
    for rank, (i, r) in enumerate(sent):
        lo = rank * max_rows
        assert torch.equal(idx[lo : lo + len(i)], i) and torch.equal(rows[lo : lo + len(i)], r)
        assert torch.equal(idx[lo + len(i) : lo + max_rows], torch.zeros(max_rows - len(i), dtype=torch.int64))
        assert not rows[lo + len(i) : lo + max_rows].any()  # padding: index 0, zero rows


# ---------------------------------------------------------------- the library path


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory, fresh_seed):
    out = tmp_path_factory.mktemp("lockstep")
    proc = torchrun("tests/ddp_lockstep.py", str(out), str(fresh_seed))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, fresh_seed


@pytest.fixture(scope="module")
def fresh_seed():  # module scope: one torchrun launch serves every case
    seed = int(os.environ[SEED_VARIABLE]) if os.environ.get(SEED_VARIABLE) else secrets.randbits(31)
    print(f"seed {seed} (replay with {SEED_VARIABLE}={seed})")
    return seed


def _same_floats(a: list[float], b: list[float]) -> bool:
    return all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("method, engine, layout", ddp_lockstep.CASES)
def test_two_processes_take_the_single_process_steps(two_rank_results, method, engine, layout):
    """Replicated (DDP-style) and FSDP2-sharded: the same steps as one process."""
    out, seed = two_rank_results
    ranks = [torch.load(out / f"{method}_{engine}_{layout}_rank{r}.pt", weights_only=False) for r in range(2)]
    # Averaged gradients: both ranks hold the same weights and computed the same thresholds, bit for bit.
    assert _same_floats(ranks[0]["thresholds"], ranks[1]["thresholds"])
    for s0, s1 in zip(ranks[0]["states"], ranks[1]["states"], strict=True):
        assert all(torch.equal(a, b) for a, b in zip(s0["params"], s1["params"], strict=True))
        assert s0["aux"] is None or torch.equal(s0["aux"], s1["aux"])
    # ... and each step is the step one process takes from the same state, up to float rounding
    # (the sums run in another order). Replaying step by step, rather than comparing whole runs,
    # keeps a rounding-level difference from growing through later steps' ReLU and max-pool
    # decisions. One discrete exception: two scores straddling CDR's threshold can swap under
    # rounding, moving one weight into the kept set and one out; each differs by at most its
    # loss-gradient step, lr * |grad|.
    two = ranks[0]
    masks = ddp_lockstep.METHODS[method][0] > 0
    for step in range(ddp_lockstep.STEPS):
        one = ddp_lockstep.Case(method, engine, seed, layout=layout)
        one.load(two["states"][step])
        threshold, max_grad = one.step(step)
        after = two["states"][step + 1]
        # The threshold is an order statistic: a swap at rank k moves it by the two scores' gap
        # (about 1e-5 of its value among 61k scores), more than rounding moves a sum.
        t2 = two["thresholds"][step]
        assert (math.isnan(t2) and math.isnan(threshold)) or abs(t2 - threshold) <= 1e-4 * abs(threshold), step
        if one.table is not None:
            assert one.table.weight.abs().max() > 0  # the table moved, so the comparison means something
            assert (after["aux"] - one.table.weight).abs().max() <= 1e-5 * one.table.weight.abs().max(), step
        flipped = 0
        for a, b in zip(after["params"], one.model.parameters(), strict=True):
            diff = (a - b.detach()).abs()
            flipped += int((diff > 1e-5 * b.abs().max()).sum())
            assert diff.max() <= max(1e-5 * b.abs().max().item(), ddp_lockstep.LR * max_grad), step
        assert flipped <= (2 if masks else 0), (step, flipped)


def test_sharded_threshold_across_ranks_is_the_topk_value(two_rank_results):
    """FSDP2's threshold: no rank sees every score, the histograms are all-reduced, and the result
    is exactly torch.topk's on the whole vector (ties, zeros, NaN and Inf included)."""
    out, seed = two_rank_results
    got = [torch.load(out / f"select_rank{r}.pt") for r in range(2)]
    assert got[0] == got[1] or _same_floats(got[0], got[1])
    w, g = ddp_lockstep.select_scores(seed)
    scores = (g * w).abs()
    expected = [scores.topk(k).values[-1].item() for k in ddp_lockstep.SELECT_KS]
    assert _same_floats(got[0], expected)


@pytest.mark.parametrize("method", ["aux", "cdr_aux"])
def test_two_processes_move_each_offset_by_aux_lr_lam_squared_times_the_residual(two_rank_results, method):
    """AUX's step size under torchrun: each example of the global batch, whichever rank held it,
    moves its offset by -aux_lr * lam**2 * r_i (r_i from the logits of the state before the step,
    in float64 here), not by a multiple of the world size or the shard size."""
    out, seed = two_rank_results
    two = torch.load(out / f"{method}_compiled_ddp_rank0.pt", weights_only=False)
    one = ddp_lockstep.Case(method, "compiled", seed)
    one.load(two["states"][0])
    batch = one.order[: ddp_lockstep.BATCH]
    with torch.no_grad():
        z = one.model(one.x[batch]).double() + one.table.lam * two["states"][0]["aux"][batch].double()
    residual = z.softmax(1) - torch.nn.functional.one_hot(one.y[batch], 10).double()
    moved = one.table.lam * (two["states"][1]["aux"][batch].double() - two["states"][0]["aux"][batch].double())
    expected = -ddp_lockstep.AUX_LR * one.table.lam**2 * residual
    torch.testing.assert_close(moved, expected, rtol=1e-4, atol=1e-7)


def test_fsdp2_optimizer_state_round_trips_through_distributed_checkpoint(two_rank_results):
    """get_optimizer_state_dict / set_optimizer_state_dict on CDRSGD under FSDP2 (momentum, RDI's
    w0 and the step counter): the restored optimizer takes the trained one's next step, bit for bit."""
    out, _ = two_rank_results
    for rank in range(2):
        result = torch.load(out / f"checkpoint_rank{rank}.pt", weights_only=False)
        trained, restored = result["trained"], result["restored"]
        assert all(torch.equal(a, b) for a, b in zip(trained["params"], restored["params"], strict=True))
        for i, st in trained["optimizer"]["state"].items():
            other = restored["optimizer"]["state"][i]
            assert st.keys() == other.keys() and {"momentum_buffer", "initial"} <= st.keys(), i
            assert all(torch.equal(v, other[k]) if isinstance(v, torch.Tensor) else v == other[k]
                       for k, v in st.items()), i


# ---------------------------------------------------------------- train.py under torchrun

TINY_RUN = ["train.py", "--dataset", "npz", "--data-dir", str(TINY_NPZ), "--method", "cdr_aux", "--tau", "0.3",
            "--noise-type", "symmetric", "--noise-rate", "0.3", "--batch-size", "16", "--no-progress"]


def _checkpoint(folder):
    return torch.load(folder / "checkpoint.pt", weights_only=False)


@pytest.fixture(scope="module")
def one_epoch_under_torchrun(tmp_path_factory):
    """TINY_RUN's first epoch on 2 processes: its folder and torchrun's result (read-only; copy it to go on)."""
    out = tmp_path_factory.mktemp("torchrun") / "two"
    proc = torchrun(*TINY_RUN, "--epochs", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_train_py_under_torchrun_is_the_single_process_run(tmp_path, one_epoch_under_torchrun):
    done, two = one_epoch_under_torchrun
    one = subprocess.run([sys.executable, *TINY_RUN, "--epochs", "1", "--out", str(tmp_path / "one")], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.stdout.count("done:") == 1  # only rank 0 speaks
    summary = json.loads((done / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert json.loads((tmp_path / "one" / "summary.json").read_text())["world_size"] == 1
    a, b = _checkpoint(done), _checkpoint(tmp_path / "one")
    # 17 steps: 1e-5 as in the lockstep test would do unless rounding flips a near-tie of CDR's
    # mask, which moves one weight by a step and the rest a little; 1e-4 allows that, not a bug.
    for name, w in b["model"].items():
        assert (a["model"][name] - w).abs().max() <= 1e-4 * w.abs().max(), name
    # The reduced metrics are the single-process ones (up to the same rounding).
    for h2, h1 in zip(a["history"], b["history"], strict=True):
        assert h2["train_loss"] == pytest.approx(h1["train_loss"], rel=1e-5)
        for key in ("train_acc_noisy", "train_acc_clean", "memorised_noisy", "train_acc_noisy_aux", "val_acc",
                    "test_acc", "kept_pct"):
            assert h2[key] == pytest.approx(h1[key], abs=0.5), key
    # The label evidence: every example's probabilities once per epoch, whichever rank saw it.
    ev2, ev1 = a["evidence"]["probs_sum"], b["evidence"]["probs_sum"]
    torch.testing.assert_close(ev2.sum(1), torch.ones(ev2.shape[0]), rtol=0, atol=1e-5)
    assert (ev2 - ev1).abs().max() < 0.05  # the same network up to the rounding above


def test_resume_under_torchrun_is_bit_identical_and_needs_the_same_world_size(tmp_path, one_epoch_under_torchrun):
    straight = torchrun(*TINY_RUN, "--epochs", "2", "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-3000:]
    shutil.copytree(one_epoch_under_torchrun[0], tmp_path / "resumed")  # its first epoch, on 2 processes
    again = torchrun("train.py", "--resume", "--epochs", "2", "--no-progress", "--out", str(tmp_path / "resumed"))
    assert again.returncode == 0, again.stderr[-3000:]
    a, b = _checkpoint(tmp_path / "straight"), _checkpoint(tmp_path / "resumed")
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert torch.equal(a["aux"]["weight"], b["aux"]["weight"])
    assert all(torch.equal(a["evidence"][k], b["evidence"][k]) for k in ("probs_sum", "margin_sum"))
    # Another world size is refused with one line.
    single = subprocess.run([sys.executable, "train.py", "--resume", "--epochs", "3", "--out", str(tmp_path / "resumed")],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert single.returncode == 2
    assert "made by 2 process(es) and this run has 1" in single.stderr
    assert single.stderr.count("\n") == 1


@pytest.mark.parametrize("args, message", [
    (["--dataset", "mnist", "--data-dir", "/nonexistent/mnist"], "/nonexistent/mnist"),
    (["--lr", "fast"], "'fast' is not a number"),  # argparse, before the group; the data, after it
])
def test_bad_input_under_torchrun_is_one_message_and_every_rank_exits(tmp_path, args, message):
    proc = torchrun("train.py", "--epochs", "1", "--out", str(tmp_path / "bad"), *args, timeout=600)
    assert proc.returncode != 0
    assert message in proc.stderr
    # One message (not one per rank) and no traceback from our code. (torchrun then reports the
    # failed processes itself, with a traceback of its own launcher.)
    assert len([line for line in proc.stderr.splitlines() if message in line]) == 1, proc.stderr
    assert f'File "{REPO}' not in proc.stderr


def test_a_rank_killed_mid_run_loses_nothing():
    """scripts/chaos.py's short version: torchrun --max-restarts with --auto-resume and mid-epoch
    checkpoints, one rank SIGKILLed while training; the end is bit-identical to an uninterrupted run."""
    proc = subprocess.run([sys.executable, "scripts/chaos.py", "--kills", "1", "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "1 kills, 0 bits lost" in proc.stdout
