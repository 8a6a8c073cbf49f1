"""Train a classifier on noisily-labelled data with SGD, CDR, AUX, RDI or a combination.

    python train.py --fused                      # defaults: LeNet, mnist-mini, cdr_aux, 40% symmetric
    python train.py --dataset mnist --data-dir ../shared/data/mnist --method cdr --noise-type pairflip
    python train.py --resume --out runs/my-run   # continue an interrupted run exactly
    torchrun --standalone --nproc_per_node=2 train.py --out runs/two   # one run across 2 processes

Writes config.json, metrics.csv (one row per epoch), summary.json, an atomic checkpoint.pt and, with
AUX, suspects.csv (the training examples most likely mislabelled first) to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import sys
import time
from pathlib import Path

from cdr_fast.data import DATASETS, USER_DATASETS, DatasetError
from cdr_fast.distributed import Distributed
from cdr_fast.engines import ENGINE_CHOICES
from cdr_fast.models import MODELS
from cdr_fast.noise import NOISE_TYPES
from cdr_fast.training import LOSSES, METHODS, RunFolder, Trainer, TrainConfig, TrainingDiverged, resolve_device


# ---------------------------------------------------------------- flags

def _number(text: str, cast: type, kind: str):
    try:
        return cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None


def rate(text: str) -> float:
    value = _number(text, float, "a number")
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 1)")
    return value


def rate_or_auto(text: str) -> float | str:
    return "auto" if text == "auto" else rate(text)


def positive_int(text: str) -> int:
    value = _number(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be >= 1")
    return value


def non_negative(text: str) -> float:
    value = _number(text, float, "a number")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number >= 0")
    return value


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows every default, and the description as written."""


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--method", choices=tuple(METHODS), default=d.method, help="what to train with")
    p.add_argument("--noise-type", choices=NOISE_TYPES, default=None,
                   help=f"synthetic label noise (default: {d.noise_type}; none for --dataset "
                        f"{' and '.join(USER_DATASETS)}, whose labels are taken as given)%(default).0s")
    # "%(default).0s" prints nothing: it only stops the formatter from appending "(default: None)".
    p.add_argument("--noise-rate", type=rate, default=None,
                   help=f"fraction of labels flipped (default: {d.noise_rate}; 0 with --noise-type none)%(default).0s")
    p.add_argument("--tau", type=rate_or_auto, default=None,
                   help="CDR rate in [0, 1), or 'auto' to estimate the noise rate from the noisy data "
                        "(default: the noise rate)%(default).0s")
    p.add_argument("--tau-warmup-steps", type=positive_int, default=d.tau_warmup_steps,
                   help="with --tau auto: steps of plain SGD on the noisy labels before the estimate (a bound in "
                        "steps, not epochs: longer warm-ups memorise and the estimate falls; see README)")
    p.add_argument("--dataset", choices=DATASETS, default=d.dataset,
                   help="mnist-mini is embedded in the package; folder and npz are your own data (see README)")
    p.add_argument("--data-dir", default=None,
                   help="the dataset's files: a folder (torchvision or raw IDX layout; train/ and test/ class "
                        "folders for --dataset folder), or the .npz file for --dataset npz")
    p.add_argument("--model", choices=MODELS, default=d.model, help="network")
    p.add_argument("--epochs", type=positive_int, default=d.epochs, help="epochs to train")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size, help="examples per step")
    p.add_argument("--lr", type=non_negative, default=d.lr, help="learning rate")
    p.add_argument("--momentum", type=rate, default=d.momentum, help="in [0, 1)")
    p.add_argument("--weight-decay", type=non_negative, default=d.weight_decay, help="L2 decay on every parameter")
    p.add_argument("--milestones", type=positive_int, nargs="*", default=d.milestones,
                   help="epochs at which the learning rate is multiplied by --gamma")
    p.add_argument("--gamma", type=non_negative, default=d.gamma, help="learning-rate factor at each milestone")
    p.add_argument("--aux-lambda", type=non_negative, default=d.aux_lambda, help="AUX: logits + lambda * B[i]")
    p.add_argument("--aux-lr", type=non_negative, default=d.aux_lr,
                   help="AUX: the table's per-example step size (each visit moves lambda * B[i] by aux_lr * "
                        "lambda^2 times the example's residual)")
    p.add_argument("--rdi-lambda", type=non_negative, default=d.rdi_lambda, help="RDI: adds lambda^2 (w - w0)")
    p.add_argument("--loss", choices=LOSSES, default=d.loss, help="cross-entropy, or mse against one-hot targets")
    p.add_argument("--seed", type=int, default=d.seed, help="noise draw, split, initialisation and order")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--engine", choices=ENGINE_CHOICES, default=d.engine,
                   help="auto: triton on CUDA, compiled on the CPU; reference: the published eager step")
    p.add_argument("--fused", dest="engine", action="store_const", const="auto", help="same as --engine auto")
    p.add_argument("--reference", dest="engine", action="store_const", const="reference",
                   help="same as --engine reference")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<time>_<settings>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch progress bar")
    return p


CONFIG_FLAGS = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("val_fraction", "eval_batch_size")]


def config_from_args(args: argparse.Namespace, defaults: argparse.Namespace, resume_from: RunFolder | None
                     ) -> TrainConfig:
    """The run's config: the flags, or on resume the checkpoint's settings plus any flag given."""
    if resume_from is not None:
        given = {k: getattr(args, k) for k in CONFIG_FLAGS if getattr(args, k) != getattr(defaults, k)}
        return TrainConfig(**{**resume_from.checkpoint()["config"], **given})
    values = {k: getattr(args, k) for k in CONFIG_FLAGS}
    if values["noise_type"] is None:  # your own data comes with its noise; the built-in sets get some
        values["noise_type"] = "none" if args.dataset in USER_DATASETS else TrainConfig.noise_type
    if values["noise_rate"] is None:
        values["noise_rate"] = 0.0 if values["noise_type"] == "none" else TrainConfig.noise_rate
    return TrainConfig(**values)


def default_out(config: TrainConfig) -> Path:
    return Path("runs") / (f"{time.strftime('%Y%m%d-%H%M%S')}_{config.dataset}_{config.method}_{config.noise_type}"
                           f"{round(100 * config.noise_rate)}_s{config.seed}")


# ---------------------------------------------------------------- the run

def quiet_unless(main_rank: bool) -> contextlib.ExitStack:
    """Under torchrun every rank parses the same flags; only rank 0 prints argparse's messages."""
    stack = contextlib.ExitStack()
    if not main_rank:
        sink = io.StringIO()
        stack.enter_context(contextlib.redirect_stdout(sink))
        stack.enter_context(contextlib.redirect_stderr(sink))
    return stack


def prepare_run(args: argparse.Namespace, defaults: argparse.Namespace, dist: Distributed) -> tuple[Trainer, RunFolder]:
    """The config, the run folder (rank 0 decides its name) and the trainer, resumed if asked.
    Every failure is a ValueError or DatasetError with a one-line message."""
    if args.resume:
        folder = RunFolder(args.out)
        if dist.is_main:
            folder.begin(resume=True)
        config = config_from_args(args, defaults, folder)
    else:
        config = config_from_args(args, defaults, None)
        folder = RunFolder(args.out or dist.broadcast_object(str(default_out(config)) if dist.is_main else None))
    trainer = Trainer(config, folder, progress=not args.no_progress, dist=dist)  # validates, loads the data
    if args.resume:
        trainer.load_state_dict(folder.checkpoint())  # every rank reads the same file
    elif dist.is_main:
        folder.begin(resume=False)
        folder.write_config(dataclasses.asdict(config))
    return trainer, folder


def main(argv: list[str] | None = None) -> int:
    main_rank = int(os.environ.get("RANK", "0")) == 0
    parser = build_parser()
    with quiet_unless(main_rank):
        args = parser.parse_args(argv)
        if args.resume and args.out is None:
            parser.error("--resume needs --out DIR, the folder of the run to continue")
    defaults = parser.parse_args([])
    say = print if main_rank else (lambda *a, **k: None)
    try:
        dist = Distributed.from_env(use_cuda=resolve_device(args.device).type == "cuda")
    except ValueError as err:
        say(f"error: {err}", file=sys.stderr)
        return 2
    code = 130  # unless run() returns: an interrupt or a crash, where the ranks may not all get here
    try:
        code = run(args, defaults, dist, say)
        return code
    finally:
        dist.close(wait=code in (0, 1, 2))  # ended together: finished, diverged (all ranks see it) or bad input


def run(args: argparse.Namespace, defaults: argparse.Namespace, dist: Distributed, say) -> int:
    error = None
    try:
        trainer, folder = prepare_run(args, defaults, dist)
    except (ValueError, DatasetError) as err:
        error = str(err)
    error = dist.first_error(error)  # every rank learns whether any rank failed, and stops together
    if error is not None:
        say(f"error: {error}", file=sys.stderr)
        return 2

    config, d = trainer.config, trainer.data
    if args.resume:
        say(f"resuming {folder.path} after epoch {trainer.epoch}/{config.epochs}")
    processes = f", {dist.world_size} processes" if dist.enabled else ""
    say(
        f"{config.method} on {config.dataset} ({d.train_x.shape[0]} train / {d.val_x.shape[0]} noisy val / "
        f"{d.test_x.shape[0]} test), {config.noise_type} noise {config.noise_rate:.0%} "
        f"(realised {d.realised_rate:.1%}), tau {'auto' if config.estimates_tau else config.cdr_rate}, "
        f"engine {trainer.engine.name}, device {trainer.device}{processes}, out {folder.path}"
    )
    try:
        summary = trainer.fit()
    except TrainingDiverged as err:
        say(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        launcher = f"torchrun --nproc_per_node={dist.world_size} train.py" if dist.enabled else "python train.py"
        if trainer.epoch == 0:
            say(f"\ninterrupted during epoch 1: no epoch finished, so nothing was saved in {folder.path}; "
                "run the same command again to start over", file=sys.stderr)
        else:
            saved = "epoch 1 is" if trainer.epoch == 1 else f"epochs 1-{trainer.epoch} are"
            say(f"\ninterrupted during epoch {trainer.epoch + 1}; {saved} saved. Continue "
                f"with: {launcher} --resume --out {folder.path} (epoch {trainer.epoch + 1} restarts "
                "from its beginning)", file=sys.stderr)
        return 130
    say(
        f"done: best val {summary['best_val_acc']:.2f}% at epoch {summary['best_val_epoch']}; "
        f"test {summary['test_acc_at_best_val']:.2f}% there, {summary['test_acc_last']:.2f}% at the last epoch; "
        f"median epoch {summary['epoch_time_s_median']:.2f}s; results in {folder.path}"
    )
    return 0


if __name__ == "__main__":
    status = main()
    if Distributed.launched():
        Distributed.exit(status)  # main() has left the process group; see Distributed.exit
    sys.exit(status)
