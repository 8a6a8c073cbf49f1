"""The ``train.py`` command line: its flags, the start-or-resume decision, the run, and what it
says (one line for every way a run can end). ``find_labels.py`` calls ``main`` too."""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import sys
import time
from pathlib import Path

import torch

from .. import launch
from ..data import DatasetError, dataset_spec
from ..distributed import Distributed
from . import signals
from .config import TrainConfig, resolve_device
from .flags import FLAGS, INTEGER, HelpFormatter, add_config_flags
from .folds import combine_folds
from .loop import Trainer, TrainingDiverged
from .run_folder import RunFolder
from .signals import STOPPED_STATUS, stop_word
from .stopping import RunStopped


# ---------------------------------------------------------------- flags

def checkpoint_interval(text: str) -> tuple[int, float]:
    """``--checkpoint-every``: STEPS, or MINUTES followed by m; (steps, minutes), one of them 0."""
    try:
        value = float(text[:-1]) if text.endswith("m") else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a step count (100) or minutes (10m)") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0 (0: at each epoch's end only)")
    return (0, value) if text.endswith("m") else (value, 0.0)


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py", description=description, formatter_class=HelpFormatter)
    add_config_flags(p)  # every TrainConfig setting (cdr_fast/training/flags.py)
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<time>_<settings>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--auto-resume", action="store_true",
                   help="continue the run in --out if it has a checkpoint, else start it: one command line for a "
                        "job that a scheduler may requeue, or for torchrun --max-restarts")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch progress bar")
    p.add_argument("--threads", type=INTEGER, default=None, metavar="N",
                   help="CPU threads for torch (default: torch's own choice); recorded in config.json, since a run "
                        "is bit-reproducible only at one thread count")
    p.add_argument("--folds", type=INTEGER, default=None, metavar="K",
                   help="cross-fitting: K trainings (into --out/fold_k), each on all but one K-th of the training "
                        "set, so that every example is scored by a network that never trained on it; --out then "
                        "holds the combined, out-of-sample evidence (K times the cost; --val-fraction unused)")
    p.add_argument("--checkpoint-every", type=checkpoint_interval, default=(0, 0.0), metavar="STEPS|MINUTESm",
                   help="also save a checkpoint every STEPS steps, or every MINUTES minutes (10m), within an epoch "
                        "(0: at each epoch's end only); a resume continues from it exactly")
    return p


CONFIG_FLAGS = list(FLAGS)


def config_from_args(args: argparse.Namespace, defaults: argparse.Namespace, resume_from: RunFolder | None
                     ) -> TrainConfig:
    """The run's config: the flags, or on resume the checkpoint's settings plus any flag given."""
    fold = getattr(args, "fold", None)  # cross-fitting (training/folds.py): this run is fold k of K
    extra = {"fold": fold[0], "folds": fold[1]} if fold is not None else {}
    if resume_from is not None:
        given = {k: getattr(args, k) for k in CONFIG_FLAGS if getattr(args, k) != getattr(defaults, k)}
        return TrainConfig(**{**resume_from.checkpoint()["config"], **given, **extra})
    return TrainConfig(**{k: getattr(args, k) for k in CONFIG_FLAGS}, **extra)  # None: TrainConfig derives the default


def noise_words(config: TrainConfig, realised: float) -> str:
    """The run's noise, as the header says it: synthetic (with its realised rate), or your labels as
    given (with the share that differs from the clean labels, where an npz has them)."""
    wrong = "unknown share wrong" if math.isnan(realised) else f"{realised:.1%} wrong"
    if config.noise_type == "none":
        return f"labels as given ({wrong})" if dataset_spec(config.dataset).user_data else "no noise"
    return f"{config.noise_type} noise {config.noise_rate:.0%} ({wrong} after it)"


def launcher(dist: Distributed) -> str:
    """The command that started this run, as a resume hint should repeat it."""
    return f"torchrun --nproc_per_node={dist.world_size} train.py" if dist.enabled else "python train.py"


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
            folder.begin(resume=True)  # claims the folder: no second run can start in it
        config = config_from_args(args, defaults, folder)
    else:
        config = config_from_args(args, defaults, None)
        folder = RunFolder(args.out or dist.broadcast_object(str(default_out(config)) if dist.is_main else None))
    try:
        steps, minutes = args.checkpoint_every
        trainer = Trainer(config, folder, progress=not args.no_progress, dist=dist,  # validates, loads the data
                          checkpoint_every=steps, checkpoint_minutes=minutes)
        if args.resume:
            trainer.load_state_dict(folder.checkpoint())  # every rank reads the same file
        elif dist.is_main:
            folder.begin(resume=False)  # the Trainer writes config.json, with the run's id, as it starts
    except BaseException:
        folder.release()
        raise
    return trainer, folder


def main(argv: list[str] | None = None, description: str | None = None) -> int:
    """Train as ``train.py`` does with these flags; the exit status (0: finished)."""
    main_rank = int(os.environ.get("RANK", "0")) == 0
    parser = build_parser(description)
    with quiet_unless(main_rank):
        args = parser.parse_args(argv)
        if (args.resume or args.auto_resume) and args.out is None:
            parser.error(f"{'--resume' if args.resume else '--auto-resume'} needs --out DIR, the folder of the run")
        if args.auto_resume and not args.resume:
            args.resume = RunFolder(args.out).has_saved_state()
        if args.threads is not None and args.threads < 1:
            parser.error(f"argument --threads: {args.threads} must be a positive integer")
        if args.folds is not None and (args.folds < 2 or args.out is None):
            parser.error(f"argument --folds: {args.folds} needs to be 2 or more, with --out DIR" if args.folds < 2
                         else "argument --folds: needs --out DIR, where the folds and their combined evidence go")
    defaults = parser.parse_args([])
    say = print if main_rank else (lambda *a, **k: None)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        dist = launch.join(use_cuda=resolve_device(args.device).type == "cuda")
    except ValueError as err:
        say(f"error: {err}", file=sys.stderr)
        return 2
    code = 130  # unless run() returns: an interrupt or a crash, where the ranks may not all get here
    try:
        code = cross_fit(args, defaults, dist, say) if args.folds else run(args, defaults, dist, say)
        return code
    finally:
        launch.leave(dist, wait=code in (0, 1, 2))  # ended together: finished, diverged (all ranks see it) or bad input


def cross_fit(args: argparse.Namespace, defaults: argparse.Namespace, dist: Distributed, say) -> int:
    """``--folds K``: each fold a run of its own in ``--out/fold_k`` (started, continued or, if
    finished, left as it is), then their out-of-sample evidence combined into ``--out``."""
    for k in range(args.folds):
        fold = argparse.Namespace(**vars(args))
        fold.out, fold.fold = args.out / f"fold_{k}", (k, args.folds)
        if RunFolder(fold.out).is_finished():
            continue
        fold.resume = RunFolder(fold.out).has_saved_state()
        say(f"fold {k + 1} of {args.folds}: {fold.out}")
        code = run(fold, defaults, dist, say)
        if code != 0:
            return code
    if dist.is_main:
        try:
            evidence = combine_folds(args.out, args.folds)
        except (ValueError, OSError) as err:
            say(f"error: cannot combine the folds in {args.out}: {err}", file=sys.stderr)
            return 2 if isinstance(err, ValueError) else 1
        say(f"done: {args.folds} folds combined; every one of {evidence.given_label.size} examples scored out-of-sample; "
            f"results in {args.out}")
    return 0


def run(args: argparse.Namespace, defaults: argparse.Namespace, dist: Distributed, say) -> int:
    error = None
    try:
        trainer, folder = prepare_run(args, defaults, dist)
    except (ValueError, DatasetError) as err:
        error = str(err)
    except KeyboardInterrupt as stop:
        say(f"\n{stop_word(stop)} while setting up: no epoch was started; run the same command again",
            file=sys.stderr)
        return signals.status(stop)
    error = dist.first_error(error)  # every rank learns whether any rank failed, and stops together
    if error is not None:
        say(f"error: {error}", file=sys.stderr)
        return 2

    try:
        return train(trainer, folder, args, dist, say)
    finally:
        folder.release()


def train(trainer: Trainer, folder: RunFolder, args: argparse.Namespace, dist: Distributed, say) -> int:
    config, d = trainer.config, trainer.data
    for note in folder.notes:
        say(f"warning: {note}", file=sys.stderr)
    if args.resume:
        settings = folder.settings()
        started = settings.get("threads")
        if started is not None and started != torch.get_num_threads():
            say(f"warning: this run started at {started} thread(s) and continues at {torch.get_num_threads()}: it "
                f"will not continue bit-identically (pass --threads {started} for that)", file=sys.stderr)
        kernels, now = settings.get("cpu_capability"), torch.backends.cpu.get_cpu_capability()
        if trainer.device.type == "cpu" and kernels is not None and kernels != now:
            say(f"warning: this run started on torch's {kernels} CPU kernels and continues on {now} (another kind "
                f"of CPU): it will not continue bit-identically", file=sys.stderr)
        step = f", step {trainer.saved_step} of epoch {trainer.epoch + 1}" if trainer.saved_step else ""
        say(f"resuming {folder.path} after epoch {trainer.epoch}/{config.epochs}{step}")
    processes = f", {dist.world_size} processes" if dist.enabled else ""
    say(
        f"{config.method} on {config.dataset} ({d.train_x.shape[0]} train / {d.val_x.shape[0]} noisy val / "
        f"{d.test_x.shape[0]} test), {noise_words(config, d.realised_rate)}, "
        f"tau {'auto' if config.estimates_tau else config.cdr_rate}, "
        f"engine {trainer.engine.name}, device {trainer.device}{processes}, out {folder.path}"
    )
    try:
        with signals.directed_to(trainer):
            summary = trainer.fit()
    except RunStopped as stop:
        where = (f"after step {stop.step} of epoch {trainer.epoch + 1}" if stop.step else
                 f"after epoch {trainer.saved_epoch}")
        say(f"stopped by {stop.signal_name} {where}, which is saved; continue with: {launcher(dist)} --resume --out "
            f"{folder.path}", file=sys.stderr)
        return STOPPED_STATUS
    except TrainingDiverged as err:
        say(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # no space left, an I/O error: the write was atomic, the last checkpoint stands
        kept = f"the checkpoint of epoch {trainer.saved_epoch} is intact" if trainer.saved_epoch else "no epoch was saved"
        say(f"error: cannot write {err.filename or folder.path} ({err.strerror or err}); stopped, {kept}",
            file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:
        if trainer.saved_epoch == 0:
            say(f"\n{stop_word(stop)} during epoch {trainer.epoch + 1}: no epoch finished, so nothing was saved in "
                f"{folder.path}; run the same command again to start over", file=sys.stderr)
        else:
            saved = "epoch 1 is" if trainer.saved_epoch == 1 else f"epochs 1-{trainer.saved_epoch} are"
            say(f"\n{stop_word(stop)} during epoch {trainer.epoch + 1}; {saved} saved. Continue "
                f"with: {launcher(dist)} --resume --out {folder.path} (epoch {trainer.saved_epoch + 1} restarts "
                "from its beginning)", file=sys.stderr)
        return signals.status(stop)
    say(
        f"done: best val {summary['best_val_acc']:.2f}% at epoch {summary['best_val_epoch']}; "
        f"test {summary['test_acc_at_best_val']:.2f}% there, {summary['test_acc_last']:.2f}% at the last epoch; "
        f"median epoch {summary['epoch_time_s_median']:.2f}s; results in {folder.path}"
    )
    return 0


def script_main(description: str | None = None) -> int:
    """``train.py``'s whole life after its imports: the run, and one line for an interrupt between
    the stretches that handle their own (a collective, say). Returns the exit status."""
    signals.install()
    try:
        return main(description=description)
    except KeyboardInterrupt as stop:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"\n{stop_word(stop)}: the run's folder holds what it had saved", file=sys.stderr)
        return signals.status(stop)
    finally:  # the run is over (argparse's exits included): a late signal ends the process quietly
        signals.uninstall()


def exit_process(status: int) -> None:
    if launch.launched():
        launch.exit_process(status)  # main() has left the process group; see launch.exit_process
    sys.exit(status)
