"""Checkpoints: whether one can continue this run (its format, its settings and its process
count), and the observer that writes them.

A resumed run must continue bit for bit, so a checkpoint made with other settings (or by another
number of processes, whose batch splits differ) is refused with a one-line message that names
every difference. A setting the run does not use cannot block its resume, and a run may be
resumed with more epochs, never fewer than it has done.
"""

from __future__ import annotations

import time
from typing import Any

from .config import TrainConfig
from .observers import Observer
from .stopping import RunStopped, stop_agreed

# 2: the optimizer state carries the threshold's sample counter; 3: the label evidence; 4: the evidence
# of every example (the validation split too), recorded by EvidenceRecorder; 5: the recorder folds
# each visit at once (a format-4 checkpoint made at an epoch's end is the same and still resumes)
CHECKPOINT_FORMAT = 5
EPOCH_END_FORMATS = (4,)
# --checkpoint-every in minutes becomes steps after this many steps are timed.
TIMED_STEPS = 21


def check_compatible(state: dict[str, Any], config: TrainConfig, world_size: int) -> None:
    """A ValueError unless ``state`` (a Trainer's ``state_dict``) continues a run of ``config`` on
    ``world_size`` processes."""
    made = state.get("format")
    if made != CHECKPOINT_FORMAT and not (made in EPOCH_END_FORMATS and state.get("partial") is None):
        raise ValueError(f"checkpoint format {made!r} is not {CHECKPOINT_FORMAT} (made by another version of "
                         "cdr-fast" + (", in the middle of an epoch: resume it with that version, or start anew)"
                                       if made in EPOCH_END_FORMATS else ")"))
    saved = dict(state["config"])
    saved.setdefault("canaries", 0.0)  # a setting added since: a checkpoint made before it ran with none
    mine = config.used_settings()
    saved["epochs"] = mine["epochs"]
    diffs = {k: (saved.get(k), v) for k, v in mine.items() if saved.get(k) != v}
    if diffs:
        detail = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diffs.items())
        raise ValueError(f"the checkpoint was made with other settings ({detail})")
    if config.epochs < state["epoch"]:
        raise ValueError(f"the checkpoint has {state['epoch']} epochs done and this run asks for {config.epochs}: "
                         f"resume with --epochs {state['epoch']} or more")
    saved_world = state.get("world_size", 1)
    if saved_world != world_size:
        # Replicated state would load, but the batch splits differ, so the run would not continue
        # bit for bit; refuse rather than resume inexactly.
        raise ValueError(f"the checkpoint was made by {saved_world} process(es) and this run has "
                         f"{world_size}: resume with the same number (torchrun --nproc_per_node="
                         f"{saved_world}{' or plain python' if saved_world == 1 else ''})")


class Checkpoints(Observer):
    """Saves the run (``Trainer.state_dict``) to its folder at every epoch's end and, every
    ``every`` steps (or every ``minutes``, turned into steps once timed), in the middle of an
    epoch; and stops the run, saved, when a signal asks (``stopping``). Only the main rank writes,
    but every rank takes part in a mid-epoch save (its epoch state is gathered)."""

    def __init__(self, every: int = 0, minutes: float = 0.0) -> None:
        self.every = every  # steps between mid-epoch checkpoints (0: epoch ends only)
        self.minutes = minutes  # or minutes, turned into steps once measured
        self._timed_steps, self._timing_from = 0, 0.0

    def on_step_end(self, run, step) -> None:
        done = run.step
        if done == run.steps_per_epoch:
            return  # the epoch's end is saved whole, a stop asked now included
        self._minutes_to_steps(run, time.perf_counter())
        stop = stop_agreed(run.dist, run.stop_signal, done, run.device)
        if stop or (self.every and done % self.every == 0):
            self.save_partial(run)
        if stop:
            raise RunStopped(run.stop_signal or "a signal on another rank", done, run.steps_per_epoch)

    def on_epoch_end(self, run, stats) -> None:
        if run.folder is not None:
            run.folder.save_checkpoint(run.state_dict())
            run.saved_epoch, run.saved_step = run.epoch, 0
        if run.epoch < run.config.epochs and stop_agreed(run.dist, run.stop_signal, 0, run.device, epoch_end=True):
            raise RunStopped(run.stop_signal or "a signal on another rank", 0, 0)

    def save_partial(self, run) -> None:
        """A mid-epoch checkpoint: everything ``state_dict`` holds, plus where the epoch stands
        (``Trainer.partial_state``: its step, its generator, every rank's epoch state). Collective
        under torchrun."""
        ranks = run.dist.gather_objects(run.epoch_states())
        if run.folder is None:
            return
        state = run.state_dict()
        state["partial"] = run.partial_state(ranks)
        run.folder.save_checkpoint(state)
        run.saved_step = run.step

    def _minutes_to_steps(self, run, now: float) -> None:
        """``minutes`` as a step count, measured once over this process's first ``TIMED_STEPS``
        steps on rank 0 and shared: every rank then checkpoints at the same steps."""
        if not self.minutes or self.every:
            return
        self._timed_steps += 1
        if self._timed_steps == 1:
            self._timing_from = now
        elif self._timed_steps == TIMED_STEPS:
            per_step = (now - self._timing_from) / (TIMED_STEPS - 1)
            steps = run.dist.broadcast_object(max(1, round(60 * self.minutes / per_step)))
            self.every = steps
            run.log(f"checkpoint every {steps} steps (about {self.minutes:g} minutes at {1e3 * per_step:.1f} ms a step)")
