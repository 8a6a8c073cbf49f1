"""The training loop and the CLI: every method end to end, exact resume, clear errors."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

import train as cli
from cdr_fast.checkpoint import load_checkpoint
from cdr_fast.training import METHODS, Trainer, TrainConfig, prepare_data, resolve_device
from conftest import REPO

SUMMARY_KEYS = {"method", "noise_type", "noise_rate", "realised_noise_rate", "dataset", "epochs", "engine",
                "best_val_epoch", "test_acc_at_best_val", "test_acc_last", "epoch_time_s_median"}


def small(**overrides) -> TrainConfig:
    return TrainConfig(**{"epochs": 1, "batch_size": 128, "engine": "reference", **overrides})


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_and_writes_its_results(tmp_path, method):
    summary = Trainer(small(method=method, epochs=2), tmp_path, progress=False, log=lambda s: None).fit()
    assert SUMMARY_KEYS <= set(summary) and summary["method"] == method and summary["engine"] == "reference"
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for r in rows:
        for key in ("train_acc_noisy", "train_acc_clean", "memorised_noisy", "val_acc", "test_acc"):
            assert 0.0 <= float(r[key]) <= 100.0
    # Two epochs of LeNet on real digits learn something even at 40% noise.
    assert summary["test_acc_last"] > 50.0
    kept = float(rows[-1]["kept_fraction"])
    if METHODS[method]["cdr"]:
        assert abs(kept - 0.6) < 1e-3
    else:
        assert kept != kept  # NaN: no masking


def test_sgd_method_equals_a_plain_torch_loop(tmp_path):
    """One epoch of --method sgd equals a hand-written loop with torch.optim.SGD, bit for bit."""
    config = small(method="sgd", seed=11)
    trainer = Trainer(config, tmp_path, progress=False, log=lambda s: None)
    data = prepare_data(config, torch.device("cpu"))
    torch.manual_seed(config.seed)
    from cdr_fast.models import LeNet

    model = LeNet()
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    n = data.train_x.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 100_003))
    for start in range(0, n, config.batch_size):
        idx = order[start : start + config.batch_size]
        opt.zero_grad()
        F.cross_entropy(model(data.train_x[idx]), data.train_y[idx]).backward()
        opt.step()
    trainer.fit()
    for p, q in zip(trainer.model.parameters(), model.parameters()):
        assert torch.equal(p, q)


def test_noisy_validation_and_training_metrics(tmp_path):
    trainer = Trainer(small(noise_rate=0.4), tmp_path, progress=False, log=lambda s: None)
    d = trainer.data
    assert d.val_x.shape[0] == 600 and d.train_x.shape[0] == 5400  # 10% of mnist-mini held out
    assert 0.3 < (d.train_y != d.train_clean).float().mean().item() < 0.5
    stats = trainer.train_epoch()
    # The three on-the-fly accuracies are consistent: noisy-label hits = hits on clean-labelled
    # examples + memorised noisy ones.
    noisy = (d.train_y != d.train_clean).float().mean().item()
    assert stats["train_acc_noisy"] <= (1 - noisy) * 100 + noisy * stats["memorised_noisy"] + 1e-3


def test_resume_continues_exactly(tmp_path):
    straight = Trainer(small(epochs=3, method="cdr_aux"), tmp_path / "a", progress=False, log=lambda s: None)
    straight.fit()
    first = Trainer(small(epochs=1, method="cdr_aux"), tmp_path / "b", progress=False, log=lambda s: None)
    first.fit()
    resumed = Trainer(small(epochs=3, method="cdr_aux"), tmp_path / "b", progress=False, log=lambda s: None)
    resumed.resume()
    assert resumed.epoch == 1
    resumed.fit()
    a, b = straight.state_dict(), resumed.state_dict()
    for key in ("model", "aux"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), name
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)
    strip = lambda h: [{k: v for k, v in s.items() if "time" not in k} for s in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])


def test_resume_refuses_other_settings(tmp_path):
    Trainer(small(), tmp_path, progress=False, log=lambda s: None).fit()
    other = Trainer(small(lr=0.05), tmp_path, progress=False, log=lambda s: None)
    with pytest.raises(ValueError, match=r"lr: checkpoint 0.01, now 0.05"):
        other.resume()


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_cli_resume_after_kill_is_bit_identical(tmp_path):
    flags = ["--epochs", "3", "--batch-size", "64", "--method", "cdr_aux", "--reference", "--no-progress"]
    done = run_cli(*flags, "--out", str(tmp_path / "straight"))
    assert done.returncode == 0, done.stderr
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "train.py", *flags, "--out", str(killed)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill as soon as the first epoch's checkpoint has landed
        metrics = killed / "metrics.csv"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists()
    resumed = run_cli("--resume", "--out", str(killed), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(killed / "checkpoint.pt")
    for key in ("model", "aux"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), name
    sa = json.loads((tmp_path / "straight" / "summary.json").read_text())
    sb = json.loads((killed / "summary.json").read_text())
    assert sa["test_acc_last"] == sb["test_acc_last"] and sa["best_val_epoch"] == sb["best_val_epoch"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--noise-rate", "1.5"], "outside [0, 1)"),
        (["--method", "mixup"], "invalid choice: 'mixup'"),
        (["--noise-type", "uniform"], "invalid choice: 'uniform'"),
        (["--epochs", "0"], "must be >= 1"),
        (["--lr", "fast"], "'fast' is not a number"),
        (["--resume"], "--resume needs --out"),
        (["--fused", "--reference"], "not allowed with argument"),
    ],
)
def test_cli_bad_flags(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--noise-type", "none", "--noise-rate", "0.3"], "noise type 'none' takes noise rate 0"),
        (["--dataset", "mnist", "--data-dir", "/nonexistent"], "/nonexistent"),
        (["--device", "tpu"], "invalid device 'tpu'"),
        (["--milestones", "20", "10"], "invalid milestones"),
        (["--dataset", "cifar10", "--data-dir", "/nonexistent"], "cifar-10-batches-py"),
    ],
)
def test_cli_bad_settings(capsys, tmp_path, argv, message):
    assert cli.main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_to_overwrite_a_run(capsys, tmp_path):
    assert cli.main(["--epochs", "1", "--batch-size", "256", "--no-progress", "--out", str(tmp_path)]) == 0
    with pytest.raises(SystemExit):
        cli.main(["--epochs", "1", "--out", str(tmp_path)])
    assert "already holds a run" in capsys.readouterr().err
    # A resume with a conflicting flag names the conflict.
    assert cli.main(["--resume", "--out", str(tmp_path), "--lr", "0.5"]) == 2
    assert "lr: checkpoint 0.01, now 0.5" in capsys.readouterr().err


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
