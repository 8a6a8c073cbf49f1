"""Train a classifier on noisily-labelled data with SGD, CDR, AUX, RDI or a combination.

    python train.py --fused                      # defaults: LeNet, mnist-mini, cdr_aux, 40% symmetric
    python train.py --dataset mnist --data-dir ../shared/data/mnist --method cdr --noise-type pairflip
    python train.py --resume --out runs/my-run   # continue an interrupted run exactly

Writes metrics.csv (one row per epoch), summary.json and an atomic checkpoint.pt to --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from cdr_fast.checkpoint import load_checkpoint, write_json_atomic
from cdr_fast.data import DATASETS, DatasetError
from cdr_fast.models import MODELS
from cdr_fast.noise import NOISE_TYPES
from cdr_fast.training import CHECKPOINT, LOSSES, METHODS, Trainer, TrainConfig


def _parse(text: str, cast: type, kind: str):
    try:
        return cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None


def rate(text: str) -> float:
    value = _parse(text, float, "a number")
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 1)")
    return value


def positive_int(text: str) -> int:
    value = _parse(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be >= 1")
    return value


def non_negative(text: str) -> float:
    value = _parse(text, float, "a number")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=tuple(METHODS), default=d.method)
    p.add_argument("--noise-type", choices=NOISE_TYPES, default=d.noise_type)
    p.add_argument("--noise-rate", type=rate, default=None, help=f"default {d.noise_rate} (0 for --noise-type none)")
    p.add_argument("--tau", type=rate, default=None, help="CDR rate; defaults to the noise rate")
    p.add_argument("--dataset", choices=DATASETS, default=d.dataset)
    p.add_argument("--data-dir", default=None, help="folder with the dataset files (torchvision or raw IDX layout)")
    p.add_argument("--model", choices=MODELS, default=d.model)
    p.add_argument("--epochs", type=positive_int, default=d.epochs)
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    p.add_argument("--lr", type=non_negative, default=d.lr)
    p.add_argument("--momentum", type=non_negative, default=d.momentum)
    p.add_argument("--weight-decay", type=non_negative, default=d.weight_decay)
    p.add_argument("--milestones", type=positive_int, nargs="*", default=d.milestones,
                   help="epochs at which the learning rate is multiplied by --gamma")
    p.add_argument("--gamma", type=non_negative, default=d.gamma)
    p.add_argument("--aux-lambda", type=non_negative, default=d.aux_lambda)
    p.add_argument("--rdi-lambda", type=non_negative, default=d.rdi_lambda)
    p.add_argument("--loss", choices=LOSSES, default=d.loss)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    engine = p.add_mutually_exclusive_group()
    engine.add_argument("--fused", dest="engine", action="store_const", const="fused", help="fused engine (default)")
    engine.add_argument("--reference", dest="engine", action="store_const", const="reference",
                        help="eager reference engine with the exact top-k threshold")
    p.set_defaults(engine=d.engine)
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<time>_<settings>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch progress bar")
    return p


CONFIG_FLAGS = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("val_fraction", "eval_batch_size")]


def config_from_args(args: argparse.Namespace, defaults: argparse.Namespace, out: Path) -> TrainConfig:
    """The run's config: the flags, or on --resume the checkpoint's settings plus any flag given."""
    given = {k: getattr(args, k) for k in CONFIG_FLAGS if getattr(args, k) != getattr(defaults, k)}
    if args.resume:
        checkpoint = out / CHECKPOINT
        if not checkpoint.is_file():
            raise FileNotFoundError(f"nothing to resume: {checkpoint} does not exist")
        return TrainConfig(**{**load_checkpoint(checkpoint)["config"], **given})
    values = {k: getattr(args, k) for k in CONFIG_FLAGS}
    if values["noise_rate"] is None:
        values["noise_rate"] = 0.0 if args.noise_type == "none" else TrainConfig.noise_rate
    return TrainConfig(**values)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    defaults = parser.parse_args([])
    if args.resume and args.out is None:
        parser.error("--resume needs --out DIR, the folder of the run to continue")
    if args.out is None:
        rate_pct = int(round(100 * (args.noise_rate if args.noise_rate is not None else TrainConfig.noise_rate)))
        args.out = Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}_{args.dataset}_{args.method}_{args.noise_type}{rate_pct}_s{args.seed}"
    if not args.resume and (args.out / CHECKPOINT).exists():
        parser.error(f"{args.out} already holds a run; pass --resume to continue it, or choose another --out")

    try:
        config = config_from_args(args, defaults, args.out)
        trainer = Trainer(config, args.out, progress=not args.no_progress)
        if args.resume:
            trainer.resume()
            print(f"resuming {args.out} after epoch {trainer.epoch}/{config.epochs}")
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(args.out / "config.json", dataclasses.asdict(config))
    except (ValueError, FileNotFoundError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    d = trainer.data
    print(
        f"{config.method} on {config.dataset} ({d.train_x.shape[0]} train / {d.val_x.shape[0]} noisy val / "
        f"{d.test_x.shape[0]} test), {config.noise_type} noise {config.noise_rate:.0%} "
        f"(realised {d.realised_rate:.1%}), tau {config.cdr_rate}, engine {trainer.engine}, "
        f"device {trainer.device}, out {args.out}"
    )
    try:
        summary = trainer.fit()
    except KeyboardInterrupt:
        print(f"\ninterrupted after epoch {trainer.epoch}; continue with: python train.py --resume --out {args.out}",
              file=sys.stderr)
        return 130
    print(
        f"done: best val {summary['best_val_acc']:.2f}% at epoch {summary['best_val_epoch']}; "
        f"test {summary['test_acc_at_best_val']:.2f}% there, {summary['test_acc_last']:.2f}% at the last epoch; "
        f"median epoch {summary['epoch_time_s_median']:.2f}s; results in {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
