"""Whether a checkpoint can continue this run: its format, its settings and its process count.

A resumed run must continue bit for bit, so a checkpoint made with other settings (or by another
number of processes, whose batch splits differ) is refused with a one-line message that names
every difference. A setting the run does not use cannot block its resume, and a run may be
resumed with more epochs, never fewer than it has done.
"""

from __future__ import annotations

from typing import Any

from .config import TrainConfig

CHECKPOINT_FORMAT = 3  # 2: the optimizer state carries the threshold's sample counter; 3: the label evidence


def check_compatible(state: dict[str, Any], config: TrainConfig, world_size: int) -> None:
    """A ValueError unless ``state`` (a Trainer's ``state_dict``) continues a run of ``config`` on
    ``world_size`` processes."""
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint format {state.get('format')!r} is not {CHECKPOINT_FORMAT} "
                         "(made by another version of cdr-fast)")
    saved = dict(state["config"])
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
