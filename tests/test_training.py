"""The run protocol and the CLI: every method end to end, exact resume, clear errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from cdr_fast.training import cli
from cdr_fast.atomic_io import load_checkpoint
from cdr_fast.training import METHODS, RunFolder, Trainer, TrainConfig, prepare_data, resolve_device
from conftest import REPO

SUMMARY_KEYS = {"method", "noise_type", "noise_rate", "realised_noise_rate", "dataset", "epochs", "engine",
                "best_val_epoch", "test_acc_at_best_val", "test_acc_last", "epoch_time_s_median"}


def small(**overrides) -> TrainConfig:
    return TrainConfig(**{"epochs": 1, "batch_size": 128, "engine": "reference", **overrides})


def quiet(config, folder=None) -> Trainer:
    return Trainer(config, RunFolder(folder) if folder is not None else None, progress=False, log=lambda s: None)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_and_writes_its_results(tmp_path, method):
    summary = quiet(small(method=method, epochs=2), tmp_path).fit()
    assert SUMMARY_KEYS <= set(summary) and summary["method"] == method and summary["engine"] == "reference"
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    # The summary names only the settings the method uses.
    assert ("aux_lambda" in summary["config"]) == METHODS[method].aux
    assert ("rdi_lambda" in summary["config"]) == METHODS[method].rdi
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for r in rows:
        for key in ("train_acc_noisy", "train_acc_clean", "memorised_noisy", "val_acc", "test_acc"):
            assert 0.0 <= float(r[key]) <= 100.0
    # Two epochs of LeNet on real digits learn something even at 40% noise.
    assert summary["test_acc_last"] > 50.0
    kept = float(rows[-1]["kept_pct"])  # a percentage, like every other rate in metrics.csv
    if METHODS[method].cdr:
        assert abs(kept - 60.0) < 0.1
    else:
        assert math.isnan(kept)  # no masking


def test_sgd_method_equals_a_plain_torch_loop(tmp_path):
    """One epoch of --method sgd equals a hand-written loop with torch.optim.SGD, bit for bit."""
    config = small(method="sgd", seed=11)
    trainer = quiet(config, tmp_path)
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


def test_on_the_fly_training_metrics_equal_a_separate_pass():
    """With lr 0 the network does not change during the epoch, so the on-the-fly accuracies must
    equal a separate forward pass over the whole training set, computed here independently."""
    trainer = quiet(small(noise_rate=0.4, lr=0.0, method="cdr_aux"))
    d = trainer.data
    assert d.val_x.shape[0] == 600 and d.train_x.shape[0] == 5400  # 10% of mnist-mini held out
    stats = trainer.train_epoch()
    with torch.no_grad():
        trainer.model.eval()
        predicted = trainer.model(d.train_x).argmax(1)
    noisy = d.train_y != d.train_clean
    assert stats["train_acc_noisy"] == pytest.approx(100 * (predicted == d.train_y).float().mean().item(), abs=1e-9)
    assert stats["train_acc_clean"] == pytest.approx(100 * (predicted == d.train_clean).float().mean().item(),
                                                     abs=1e-9)
    assert stats["memorised_noisy"] == pytest.approx(100 * (predicted[noisy] == d.train_y[noisy]).float().mean()
                                                     .item(), abs=1e-9)


def test_resume_continues_exactly(tmp_path):
    """Resumed after epoch 1 of 3, across the learning-rate milestone at 2: the scheduler's state
    must travel too (a fresh one would decay at epoch 3 instead)."""
    settings = dict(method="cdr_aux", milestones=[2])
    straight = quiet(small(epochs=3, **settings), tmp_path / "a")
    straight.fit()
    assert [s["lr"] for s in straight.history] == [0.01, 0.01, pytest.approx(0.001)]
    quiet(small(epochs=1, **settings), tmp_path / "b").fit()
    resumed = quiet(small(epochs=3, **settings), tmp_path / "b")
    resumed.resume()
    assert resumed.epoch == 1
    resumed.fit()
    a, b = straight.state_dict(), resumed.state_dict()
    for key in ("model", "aux"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), name
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert pa.keys() == pb.keys()
        assert all(torch.equal(pa[k], pb[k]) if isinstance(pa[k], torch.Tensor) else pa[k] == pb[k] for k in pa)
    strip = lambda h: [{k: v for k, v in s.items() if "time" not in k} for s in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
    assert_same_evidence(tmp_path / "a", tmp_path / "b")


def assert_same_evidence(a, b, epochs: int = 3):
    """The label evidence and the detectors' per-epoch rows continue across a resume bit for bit."""
    import numpy as np

    with np.load(a / "evidence.npz") as ea, np.load(b / "evidence.npz") as eb:
        assert ea.files == eb.files and int(ea["epochs"]) == epochs
        for name in ea.files:
            assert np.array_equal(ea[name], eb[name], equal_nan=ea[name].dtype.kind == "f"), name
    assert (a / "detection.csv").read_text() == (b / "detection.csv").read_text()


def test_a_corrupt_checkpoint_falls_back_to_the_previous_one_and_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--epochs", "2", "--batch-size", "512", "--reference", "--no-progress", "--out", str(out)]
    assert cli.main(flags) == 0
    data = bytearray((out / "checkpoint.pt").read_bytes())  # 400 bytes flipped in the middle of the file
    data[len(data) // 2 : len(data) // 2 + 400] = bytes(b ^ 0x5A for b in data[len(data) // 2 : len(data) // 2 + 400])
    (out / "checkpoint.pt").write_bytes(bytes(data))
    capsys.readouterr()
    assert cli.main(["--resume", "--epochs", "3", "--no-progress", "--out", str(out)]) == 0
    out_text = capsys.readouterr()
    assert "checkpoint.pt: the checkpoint does not match its checksum" in out_text.err
    assert "resuming from the previous checkpoint, checkpoint.prev.pt (epoch 1)" in out_text.err
    assert "after epoch 1/3" in out_text.out  # epoch 2 is trained again, from epoch 1's state
    assert len((out / "metrics.csv").read_text().splitlines()) == 4


def test_a_second_run_into_a_claimed_folder_is_refused(tmp_path):
    """The folder is claimed before anything is decided, so two runs started at the same moment
    cannot both go on; the claim ends with its process."""
    out = tmp_path / "run"
    holder = RunFolder(out)
    holder.begin(resume=False)
    with pytest.raises(ValueError, match="another run is using"):
        RunFolder(out).begin(resume=False)
    holder.release()
    assert RunFolder(out).begin(resume=False) is False


def test_a_failed_write_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    from cdr_fast import atomic_io

    out = tmp_path / "run"
    assert cli.main(["--epochs", "1", "--batch-size", "512", "--reference", "--no-progress", "--out", str(out)]) == 0
    good = (out / "checkpoint.pt").read_bytes()

    def full_disk(path, data, keep_previous=None):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(atomic_io, "write_bytes_atomic", full_disk)
    capsys.readouterr()
    assert cli.main(["--resume", "--epochs", "2", "--no-progress", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "the checkpoint of epoch 1 is intact" in err
    assert len(err.strip().splitlines()) == 1
    monkeypatch.undo()
    assert (out / "checkpoint.pt").read_bytes() == good


def test_resume_with_fewer_epochs_than_done_is_refused(tmp_path):
    quiet(small(epochs=2), tmp_path).fit()
    with pytest.raises(ValueError, match="2 epochs done and this run asks for 1: resume with --epochs 2 or more"):
        quiet(small(epochs=1), tmp_path).resume()


def test_progress_bars_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert not Trainer(small(), None, progress=True).progress.bars  # a redirected log gets one line per epoch
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert Trainer(small(), None, progress=True).progress.bars


def test_resume_refuses_other_settings(tmp_path):
    quiet(small(), tmp_path).fit()
    other = quiet(small(lr=0.05), tmp_path)
    with pytest.raises(ValueError, match=r"lr: checkpoint 0.01, now 0.05"):
        other.resume()


def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint(tmp_path, capsys):
    """lr 1e4 on the reference engine: the loss becomes NaN in the second epoch at the latest."""
    out = tmp_path / "run"
    code = cli.main(["--epochs", "3", "--batch-size", "256", "--lr", "50", "--method", "sgd", "--reference",
                     "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert "became" in err and "stopped" in err
    assert not (out / "summary.json").exists()
    if (out / "checkpoint.pt").exists():  # whatever was saved is finite
        state = load_checkpoint(out / "checkpoint.pt")
        assert all(torch.isfinite(v).all() for v in state["model"].values())


def run_cli(*args, timeout=600):  # a hang guard, not a speed test
    return subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_cli_resume_after_kill_is_bit_identical(tmp_path):
    # killed in epoch 2 of 2, resumed across the learning-rate milestone at 1
    flags = ["--epochs", "2", "--milestones", "1", "--batch-size", "128", "--method", "cdr_aux", "--fused",
             "--no-progress"]
    done = run_cli(*flags, "--out", str(tmp_path / "straight"))
    assert done.returncode == 0, done.stderr
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "train.py", *flags, "--out", str(killed)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:  # kill as soon as the first epoch's checkpoint has landed (no deadline: the
        if (killed / "checkpoint.pt").exists():  # work is bounded, and a loaded machine only takes longer)
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


@pytest.mark.parametrize("when", ["starting", "epoch 1"])
def test_sigterm_is_one_line_and_its_own_status(tmp_path, when):
    """As a scheduler stops a job: during the imports, or once the run has begun (batch 4 on the
    reference engine: the first epoch takes seconds)."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "train.py", "--epochs", "2", "--batch-size", "4", "--reference",
                             "--no-progress", "--out", str(out)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if when == "starting":
        time.sleep(0.2)
    else:
        while not (out / "config.json").exists() and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate()
    assert proc.returncode == 143, err
    assert f"stopped by SIGTERM {'while starting' if when == 'starting' else 'after step'}" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    if when == "epoch 1":  # it saved where it stood (test_a_run_stopped_mid_epoch_resumes_bit_identically resumes)
        assert "which is saved; continue with: python train.py --resume --out" in err
        assert load_checkpoint(out / "checkpoint.pt")["partial"]["step"] > 0


@pytest.mark.slow
def test_ctrl_c_in_the_first_epoch_says_nothing_was_saved(tmp_path):
    out = tmp_path / "run"
    # Batch 4 on the reference engine: the first epoch takes several seconds.
    # SIGINT back to its default in the child: a test run started in the background inherits it
    # ignored, and Python then installs no KeyboardInterrupt handler (the run would just finish).
    proc = subprocess.Popen([sys.executable, "train.py", "--epochs", "2", "--batch-size", "4", "--reference",
                             "--no-progress", "--out", str(out)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while not (out / "config.json").exists() and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # inside epoch 1
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate()
    assert proc.returncode == 130
    assert "nothing was saved" in err and "--resume" not in err
    # ... and the same command then starts over.
    again = run_cli("--epochs", "1", "--batch-size", "64", "--reference", "--no-progress", "--out", str(out),
                    "--dataset", "npz", "--data-dir", str(REPO / "tests" / "data" / "tiny.npz"), "--noise-type",
                    "symmetric", "--noise-rate", "0.3")  # the folder is free again (a small set: quick)
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--method", "mixup"], "invalid choice: 'mixup'"),
        (["--engine", "gpu"], "invalid choice: 'gpu'"),
        (["--noise-type", "uniform"], "invalid choice: 'uniform'"),
        (["--lr", "fast"], "'fast' is not a number"),
        (["--resume"], "--resume needs --out"),
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
        # ranges: checked once, by TrainConfig.validate (the same check the library runs)
        (["--noise-rate", "1.5"], "invalid noise rate: 1.5; valid values are [0, 1)"),
        (["--momentum", "1.5"], "invalid momentum: 1.5; valid values are [0, 1)"),
        (["--tau", "-0.1"], "invalid tau: -0.1; valid values are [0, 1)"),
        (["--epochs", "0"], "invalid epochs: 0; must be a positive integer"),
        (["--batch-size", "100000"], "batch size 100000 is larger than the training set (5400 examples"),
        (["--method", "cdr", "--noise-type", "none"], "needs an explicit tau"),
        (["--dataset", "mnist", "--data-dir", "/nonexistent"], "/nonexistent"),
        (["--device", "tpu"], "invalid device 'tpu'"),
        (["--milestones", "20", "10"], "invalid milestones"),
        (["--dataset", "cifar10", "--data-dir", "/nonexistent"], "cifar-10-batches-py"),
    ],
)
def test_cli_bad_settings(capsys, tmp_path, argv, message):
    assert cli.main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # a refused run leaves no folder behind


@pytest.mark.parametrize("below", [False, True])
def test_cli_out_on_a_file_is_a_one_line_error(capsys, tmp_path, below):
    target = tmp_path / "a_file"
    target.write_text("not a folder")
    out = target / "run" if below else target
    assert cli.main(["--epochs", "1", "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and len(err.strip().splitlines()) == 1


def test_cli_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    assert "(default: cdr_aux)" in text and "(default: 0.01)" in text and "(default: auto)" in text


def test_cli_refuses_to_overwrite_a_run(capsys, tmp_path):
    assert cli.main(["--epochs", "1", "--batch-size", "256", "--no-progress", "--out", str(tmp_path)]) == 0
    assert cli.main(["--epochs", "1", "--out", str(tmp_path)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    # A resume with a conflicting flag names the conflict.
    assert cli.main(["--resume", "--out", str(tmp_path), "--lr", "0.5"]) == 2
    assert "lr: checkpoint 0.01, now 0.5" in capsys.readouterr().err


def test_resolve_device(monkeypatch):
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="valid choices: auto, cpu, cuda, cuda:N"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available here"):
        resolve_device("cuda:1")


def test_the_validation_set_is_noisy_as_in_the_published_protocol(fresh_seed):
    """Noise on the whole training set first, then 10% held out with its noisy labels: the
    validation labels are wrong at the noise rate, and the training and validation parts partition
    the set."""
    from cdr_fast.data import load_dataset
    from cdr_fast.noise import noisify

    config = small(noise_type="symmetric", noise_rate=0.4, seed=fresh_seed % 1000 + 1)
    data = prepare_data(config, torch.device("cpu"))
    clean = load_dataset("mnist-mini").train_labels
    noisy = noisify(clean, "symmetric", 0.4, 10, config.seed, dataset="mnist-mini").labels
    val_index = torch.tensor(sorted(set(range(len(clean))) - set(data.train_index.tolist())))
    assert len(val_index) == round(0.1 * len(clean)) == len(data.val_y)
    assert torch.equal(data.val_y, noisy[val_index]) and torch.equal(data.train_y, noisy[data.train_index])
    # wrong at the noise rate: a binomial share of 150 labels, sd 0.04; within 4 of them
    sd = (0.4 * 0.6 / len(val_index)) ** 0.5
    assert abs((data.val_y != clean[val_index]).double().mean().item() - 0.4) < 4 * sd


def test_the_summary_reports_test_accuracy_at_the_best_validation_epoch():
    """Hand-made history: the best validation accuracy is at epoch 2 and again at 4 (the first
    counts), the last epoch is worse; the summary reads the test accuracy there and at the end."""
    from types import SimpleNamespace

    from cdr_fast.training.summary import run_summary

    history = [{"epoch": e, "val_acc": v, "test_acc": t, "memorised_noisy": 1.0, "epoch_time_s": s,
                "train_acc_noisy_aux": float("nan")}
               for e, v, t, s in ((1, 50.0, 60.0, 3.0), (2, 70.0, 80.0, 1.0), (3, 65.0, 85.0, 2.0),
                                  (4, 70.0, 90.0, 5.0), (5, 40.0, 30.0, 4.0))]
    data = SimpleNamespace(realised_rate=0.4, train_x=torch.zeros(9, 1), val_x=torch.zeros(1, 1),
                           test_x=torch.zeros(2, 1), canaries=torch.zeros(0, dtype=torch.long))
    summary = run_summary(small(epochs=5), history, data, detection=None, aux=None, tau=0.4, estimated_rate=None,
                          engine="reference", device="cpu", world_size=1)
    assert (summary["best_val_epoch"], summary["best_val_acc"], summary["test_acc_at_best_val"]) == (2, 70.0, 80.0)
    assert summary["test_acc_last"] == 30.0 and summary["epoch_time_s_median"] == 3.0
    assert summary["num_train"] == 9 and summary["detection"] is None


def test_no_c_compiler_is_one_line_naming_the_reference_engine(tmp_path, capsys, monkeypatch):
    """No compiler and no library built before (an empty cache): one line, and no run folder."""
    from cdr_fast.engines import native

    monkeypatch.setenv("CDR_FAST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    native.library.cache_clear()
    try:
        assert cli.main(["--engine", "compiled", "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    finally:
        native.library.cache_clear()  # the next test builds (or finds) the real library again
    err = capsys.readouterr().err
    assert "needs a C compiler" in err and "--engine reference" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_a_run_stopped_mid_epoch_resumes_bit_identically(tmp_path):
    """A signal in epoch 2 (after its step 30 of 43, past a checkpoint at step 28): the run saves
    where it stands and stops; the resumed run ends bit-identical to an uninterrupted one, across
    the learning-rate milestone and with the epoch's metric accumulators."""
    from cdr_fast.training import RunStopped

    settings = dict(epochs=3, method="cdr_aux", milestones=[2])
    straight = quiet(small(**settings), tmp_path / "a")
    straight.fit()
    stopped = Trainer(small(**settings), RunFolder(tmp_path / "b"), progress=False, log=lambda s: None,
                      checkpoint_every=14)
    original, calls = stopped.optimizer.step, []

    def step_then_signal(*args, **kwargs):
        calls.append(1)
        if len(calls) == 43 + 30:
            stopped.stop_signal = "SIGTERM"  # what train.py's handler does
        return original(*args, **kwargs)

    stopped.optimizer.step = step_then_signal
    with pytest.raises(RunStopped) as info:
        stopped.fit()
    assert (info.value.step, info.value.steps) == (30, 43) and stopped.saved_step == 30
    resumed = quiet(small(**settings), tmp_path / "b")
    resumed.resume()
    assert (resumed.epoch, resumed.saved_step) == (1, 30)
    resumed.fit()
    a, b = straight.state_dict(), resumed.state_dict()
    for key in ("model", "aux"):
        assert all(torch.equal(a[key][name], b[key][name]) for name in a[key]), key
    strip = lambda h: [{k: v for k, v in s.items() if "time" not in k} for s in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
    assert "partial" not in b  # the run's end is saved whole
    assert_same_evidence(tmp_path / "a", tmp_path / "b")


def test_checkpoint_every_minutes_becomes_steps_once_timed(tmp_path):
    """--checkpoint-every 0.001m: after 21 timed steps the interval is a step count, the same on
    every rank, and a mid-epoch checkpoint is written (batch 128: 43 steps an epoch)."""
    trainer = Trainer(small(epochs=1), RunFolder(tmp_path), progress=False, log=lambda s: None, checkpoint_minutes=0.001)
    saved = []
    trainer.checkpoints.save_partial = lambda run: saved.append(run.step)
    trainer.fit()
    every = trainer.checkpoints.every
    assert every >= 1 and saved and all(s % every == 0 for s in saved)
    assert cli.build_parser().parse_args(["--checkpoint-every", "10m"]).checkpoint_every == (0, 10.0)
    assert cli.build_parser().parse_args(["--checkpoint-every", "250"]).checkpoint_every == (250, 0.0)


def test_auto_resume_starts_then_continues_with_one_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--auto-resume", "--batch-size", "512", "--reference", "--no-progress", "--out", str(out)]
    assert cli.main([*flags, "--epochs", "1"]) == 0
    assert "resuming" not in capsys.readouterr().out  # nothing to resume: it started
    assert cli.main([*flags, "--epochs", "2"]) == 0  # the requeued job: the same line, with its checkpoint
    assert "resuming" in capsys.readouterr().out
    assert len((out / "metrics.csv").read_text().splitlines()) == 3


def test_gamma_scales_the_learning_rate_at_each_milestone():
    trainer = quiet(small(epochs=3, method="sgd", batch_size=512, milestones=[1, 2], gamma=0.5))
    trainer.fit()
    assert [s["lr"] for s in trainer.history] == [0.01, pytest.approx(0.005), pytest.approx(0.0025)]


def test_a_negative_seed_is_one_line(capsys):
    assert cli.main(["--seed", "-5", "--no-progress", "--out", "unused"]) == 2
    assert capsys.readouterr().err == "error: invalid seed: -5; must be an integer >= 0\n"


def test_another_runs_checkpoint_is_refused_naming_both_and_stale_temporary_files_go(tmp_path, capsys):
    flags = ["--epochs", "1", "--batch-size", "512", "--reference", "--no-progress"]
    assert cli.main([*flags, "--out", str(tmp_path / "one")]) == 0
    assert cli.main([*flags, "--seed", "2", "--out", str(tmp_path / "two")]) == 0
    capsys.readouterr()
    (tmp_path / "one" / "checkpoint.pt").write_bytes((tmp_path / "two" / "checkpoint.pt").read_bytes())
    (tmp_path / "one" / "checkpoint.prev.pt").unlink(missing_ok=True)
    stale = tmp_path / "one" / ".checkpoint.pt.tmp-999999999"
    stale.write_bytes(b"half a checkpoint")
    assert cli.main(["--resume", "--epochs", "2", "--no-progress", "--out", str(tmp_path / "one")]) == 2
    err = capsys.readouterr().err
    mine = json.loads((tmp_path / "one" / "config.json").read_text())["run_id"]
    theirs = json.loads((tmp_path / "two" / "config.json").read_text())["run_id"]
    assert mine != theirs and f"belongs to run {theirs}, not to {mine}" in err and len(err.splitlines()) == 1
    assert not stale.exists()  # a dead writer's temporary file, removed as the folder was claimed


def test_a_read_only_run_folder_is_one_line(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    out = tmp_path / "run"
    assert cli.main(["--epochs", "1", "--batch-size", "512", "--reference", "--no-progress", "--out", str(out)]) == 0
    (out / ".lock").unlink()
    out.chmod(0o555)
    try:
        assert cli.main(["--resume", "--epochs", "2", "--no-progress", "--out", str(out)]) == 2
    finally:
        out.chmod(0o755)
    assert "cannot claim the run folder" in capsys.readouterr().err


def test_a_format_4_checkpoint_resumes_at_an_epoch_end_but_not_mid_epoch(tmp_path):
    """Format 5 changed only how the evidence records within an epoch: a format-4 checkpoint made at
    an epoch's end holds the same state and resumes; one made mid-epoch is refused in one line."""
    from cdr_fast.training.checkpoint import CHECKPOINT_FORMAT, check_compatible

    config = small(epochs=2)
    trainer = quiet(config, tmp_path)
    trainer.train_epoch()
    state = trainer.state_dict()
    assert state["format"] == CHECKPOINT_FORMAT == 5
    check_compatible({**state, "format": 4}, config, 1)
    with pytest.raises(ValueError, match="checkpoint format 4 is not 5 .*in the middle of an epoch"):
        check_compatible({**state, "format": 4, "partial": {"step": 3}}, config, 1)
    with pytest.raises(ValueError, match=r"checkpoint format 3 is not 5 \(made by another version of cdr-fast\)$"):
        check_compatible({**state, "format": 3}, config, 1)


def test_a_checkpoint_from_before_canaries_resumes_and_another_canary_share_is_refused(tmp_path):
    from cdr_fast.training.checkpoint import check_compatible

    config = small(epochs=2)
    state = quiet(config, tmp_path).state_dict()
    before = {**state, "config": {k: v for k, v in state["config"].items() if k != "canaries"}}
    check_compatible(before, config, 1)  # a run from before canaries planted none
    for made in (state, before):
        with pytest.raises(ValueError, match=r"other settings \(canaries: checkpoint 0.0, now 0.05\)"):
            check_compatible(made, dataclasses.replace(config, canaries=0.05), 1)
    planted = dataclasses.replace(config, canaries=0.05)
    with pytest.raises(ValueError, match=r"other settings \(canaries: checkpoint 0.05, now 0.0\)"):
        check_compatible({**state, "config": {**state["config"], "canaries": 0.05}}, config, 1)
    check_compatible({**state, "config": {**state["config"], "canaries": 0.05}}, planted, 1)
