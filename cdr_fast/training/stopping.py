"""Stopping on a signal: SIGTERM or SIGUSR1 (a scheduler's notice) asks the run to stop after its
step; the checkpoints observer then saves where it stands and raises ``RunStopped``. Under
torchrun the ranks agree first, so that every rank saves the same step."""

from __future__ import annotations

import torch

from ..distributed import Distributed

# Under torchrun the ranks agree to stop every this many steps (one all-reduce of a flag).
STOP_CHECK_STEPS = 20


class RunStopped(Exception):
    """A signal stopped the run after a step, which a checkpoint saved."""

    def __init__(self, signal_name: str, step: int, steps: int) -> None:
        super().__init__(signal_name, step, steps)
        self.signal_name, self.step, self.steps = signal_name, step, steps


def stop_agreed(dist: Distributed, signal_name: str | None, step: int, device: torch.device,
                epoch_end: bool = False) -> bool:
    """Whether every rank stops after this step: a signal asked one to (``signal_name``). One
    process stops at once; ranks agree every ``STOP_CHECK_STEPS`` steps and at each epoch's end,
    with one all-reduce."""
    if not dist.enabled:
        return signal_name is not None
    if step % STOP_CHECK_STEPS and not epoch_end:
        return False
    flag = torch.tensor(int(signal_name is not None), device=device)
    return bool(dist.all_reduce_(flag, "max").item())
