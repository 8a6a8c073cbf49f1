"""What a run calls besides its step: the observers (docs/design.md, "The run").

The loop (``loop.Trainer``) stays plain: the batch, the forward pass, the loss, the backward pass,
the step. Everything else a run does is an ``Observer``, each in a module named for its job,
called in the Trainer's order at these moments:

    on_run_start(run)             after the folder is made, before the first epoch (tau "auto")
    on_epoch_start(run)           before the epoch's first step (or the step a resume continues at)
    on_step_end(run, step)        after each optimizer step; ``step``: the batch that was trained
    on_held_out(run, rows, logits)   each batch of the epoch's validation pass
    on_epoch_end(run, stats)      after the epoch's evaluation; ``stats``: its metrics row, which the
                                  metrics observer (first in the order) completes
    on_run_end(run)               after the last epoch, before the summary is written

An observer whose state a resumed run needs returns it from ``state_dict`` (saved in every
checkpoint under its ``name``), and the part only this rank holds in the middle of an epoch from
``epoch_state`` (saved, per rank, in a mid-epoch checkpoint). Adding an observer is one class and
one entry in ``Trainer.observers``; it touches no other.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor

Trainer = Any  # loop.Trainer (not imported: the loop imports its observers)


class Step(NamedTuple):
    """One trained batch, as this rank saw it."""

    index: Tensor  # this rank's examples: positions in the training split
    logits: Tensor  # the network's f(x), without AUX's offsets
    logits_aux: Tensor | None  # f(x) + lam * B[i] (AUX runs)
    loss: Tensor  # 0-d, on the device


class Observer:
    """Does nothing at every moment; subclasses override the moments they care about."""

    name: str = ""  # the key of its state in a checkpoint ("": it has none)

    def on_run_start(self, run: Trainer) -> None: ...

    def on_epoch_start(self, run: Trainer) -> None: ...

    def on_step_end(self, run: Trainer, step: Step) -> None: ...

    def on_held_out(self, run: Trainer, rows: Tensor, logits: Tensor) -> None: ...

    def on_epoch_end(self, run: Trainer, stats: dict[str, Any]) -> None: ...

    def on_run_end(self, run: Trainer) -> None: ...

    def state_dict(self) -> Any:
        return None

    def load_state_dict(self, state: Any) -> None: ...

    def epoch_state(self) -> Any:
        return None

    def load_epoch_state(self, state: Any) -> None: ...
