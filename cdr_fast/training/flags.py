"""The command-line flags of ``TrainConfig``'s settings: one table that ``train.py`` and
``python -m cdr_fast.experiments`` both read, so a setting has one flag, one help text and one
check (``cdr_fast.checks``, the same one the library runs) wherever it is given."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from ..data import DATASETS
from ..engines import ENGINE_CHOICES
from ..models import MODELS
from ..noise import NOISE_TYPES
from .config import DEFAULT_NOISE_RATE, DEFAULT_NOISE_TYPE, LOSSES, METHODS, TrainConfig


def parsed(check: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` that runs ``check`` on the flag's text and reports its ValueError."""
    def parse(text: str) -> Any:
        try:
            return check(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return parse


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None


# The flags parse; TrainConfig.validate checks the values (ranges, choices), once, for both command
# lines and for configs built in code.
NUMBER, INTEGER = parsed(number), parsed(integer)
NUMBER_OR_AUTO = parsed(lambda text: "auto" if text == "auto" else number(text))

# "%(default).0s" prints nothing: it keeps the formatter from appending "(default: None)" where
# the help text says what None means.
DERIVED = "%(default).0s"

# TrainConfig field -> argparse options. Every field a user may set has one row.
FLAGS: dict[str, dict[str, Any]] = {
    "method": dict(choices=tuple(METHODS), help="what to train with"),
    "noise_type": dict(choices=NOISE_TYPES, help=f"synthetic label noise (default: {DEFAULT_NOISE_TYPE}; none for "
                       "your own data, whose labels are taken as given)" + DERIVED),
    "noise_rate": dict(type=NUMBER, help=f"fraction of labels flipped (default: {DEFAULT_NOISE_RATE}; 0 with noise "
                       "type none)" + DERIVED),
    "tau": dict(type=NUMBER_OR_AUTO, help="CDR rate in [0, 1), or 'auto' to estimate the noise rate from the noisy "
                "data (default: the noise rate)" + DERIVED),
    "tau_warmup_steps": dict(type=INTEGER, help="with --tau auto: steps of plain SGD on the noisy labels before "
                             "the estimate (a bound in steps, not epochs: longer warm-ups memorise and the estimate "
                             "falls; see README)"),
    "dataset": dict(choices=tuple(DATASETS), help="mnist-mini is embedded in the package; folder and npz are your "
                    "own data (see README)"),
    "data_dir": dict(help="the dataset's files: a folder (torchvision or raw IDX layout; train/ and test/ class "
                     "folders for --dataset folder), or the .npz file for --dataset npz" + DERIVED),
    "model": dict(help="network: " + "; ".join(f"{m.name} ({m.data})" for m in MODELS.values())
                  + "; or package.module:function, your own factory, called with the number of classes and one "
                  "example's shape (default: lenet for 28x28 images, resnet18 for other images, mlp for feature "
                  "vectors)" + DERIVED),
    "weights": dict(help="start from this file: a state dict (torch.save(model.state_dict())) or a cdr-fast "
                    "checkpoint; a classifier head of another class count is made anew" + DERIVED),
    "image_size": dict(type=INTEGER, help="resize every image to N x N pixels, channels kept (needed for a folder "
                       "of photos of mixed sizes)" + DERIVED),
    "epochs": dict(type=INTEGER, help="epochs to train"),
    "batch_size": dict(type=INTEGER, help="examples per step"),
    "lr": dict(type=NUMBER, help="learning rate"),
    "momentum": dict(type=NUMBER, help="in [0, 1)"),
    "weight_decay": dict(type=NUMBER, help="L2 decay on every parameter"),
    "milestones": dict(type=INTEGER, nargs="*", help="epochs at which the learning rate is multiplied by --gamma"),
    "gamma": dict(type=NUMBER, help="learning-rate factor at each milestone"),
    "aux_lambda": dict(type=NUMBER, help="AUX: logits + lambda * B[i]"),
    "aux_lr": dict(type=NUMBER, help="AUX: the table's per-example step size (each visit moves lambda * B[i] "
                   "by aux_lr * lambda^2 times the example's residual)"),
    "rdi_lambda": dict(type=NUMBER, help="RDI: adds lambda^2 (w - w0)"),
    "loss": dict(choices=LOSSES, help="cross-entropy, or mse against one-hot targets"),
    "seed": dict(type=INTEGER, help="noise draw, split, initialisation and order"),
    "val_fraction": dict(type=NUMBER, help="share of the training set held out as the (noisy) validation split, "
                         "which picks the reported epoch and is scored out-of-sample by the detectors; 0: no split, "
                         "the last epoch is reported"),
    "canaries": dict(type=NUMBER, help="share of the training split trained on a planted wrong label (drawn from the "
                     "other classes), so that the evidence can count the wrong labels; never flagged themselves "
                     "(default: 0; find_labels.py plants 0.05; README, \"Finding wrong labels\")" + DERIVED),
    "device": dict(help="auto, cpu, cuda or cuda:N"),
    "stream": dict(action=argparse.BooleanOptionalAction, help="decode a folder's images on DataLoader workers as "
                   "batches need them, rather than holding them all on the device (default: stream only where "
                   "they would take more than half of --memory-gb); the results are the same either way" + DERIVED),
    "memory_gb": dict(type=NUMBER, help="GiB of device memory the images may take (default: the device's free "
                      "memory, or the host's available memory on the CPU)" + DERIVED),
    "workers": dict(type=INTEGER, help="DataLoader processes decoding a stream (default: one per core, at most 8; "
                    "0: the training process)" + DERIVED),
    "engine": dict(choices=ENGINE_CHOICES, help="auto: triton on CUDA, compiled on the CPU; reference: the "
                   "published eager step"),
}
DEFAULTS = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
            for f in dataclasses.fields(TrainConfig)}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser, names: Iterable[str] = tuple(FLAGS),
                     **defaults: Any) -> None:
    """Add the flags of these ``TrainConfig`` fields, with TrainConfig's defaults unless given
    here; ``--engine`` comes with its shorthands ``--fused`` and ``--reference``."""
    for name in names:
        parser.add_argument(flag(name), dest=name, default=defaults.get(name, DEFAULTS[name]), **FLAGS[name])
        if name == "engine":
            parser.add_argument("--fused", dest="engine", action="store_const", const="auto",
                                help="same as --engine auto" + DERIVED)
            parser.add_argument("--reference", dest="engine", action="store_const", const="reference",
                                help="same as --engine reference" + DERIVED)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows every default, and the description as written."""
