"""A trained run's model, for predicting on new data: ``load_model(run_folder)``.

The run folder's ``config.json`` says how the model was built (its name or factory, the number of
classes, one example's shape) and how the inputs were normalised; its ``checkpoint.pt`` holds the
weights, accepted only if intact and the run's own (the same checks as a resume)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .atomic_io import load_checkpoint, previous
from .models import build_model


def run_config(run_folder: str | Path) -> dict[str, Any]:
    path = Path(run_folder) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the run's settings ({err})") from None
    if "model_built" not in config:
        raise ValueError(f"{path}: made by an older cdr-fast, which did not record how its model was built")
    return config


def load_model(run_folder: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The run's trained network, in eval mode, on ``device``; a one-line ValueError if the folder
    holds no usable checkpoint of its own."""
    folder = Path(run_folder)
    config = run_config(folder)
    errors = []
    for path in (folder / "checkpoint.pt", previous(folder / "checkpoint.pt")):
        try:
            state = load_checkpoint(path)
        except ValueError as err:
            errors.append(str(err))
            continue
        if not isinstance(state, dict) or state.get("run_id") != config.get("run_id") or "model" not in state:
            errors.append(f"{path}: not this run's checkpoint")
            continue
        model = build_model(config["model_built"], config["num_classes"], tuple(config["input_shape"]))
        model.load_state_dict(state["model"])
        return model.to(device).eval()
    raise ValueError(f"{folder}: no usable checkpoint ({'; '.join(errors)})")


def renormalised(images: Tensor, stored: tuple[list[float], list[float]] | None,
                 run: tuple[list[float], list[float]] | None) -> Tensor:
    """Images normalised with a dataset's own (mean, std), ``stored``, as the run normalised its
    inputs (``run``): ``((x * std_d + mean_d) - mean_r) / std_r``. Unchanged where either is unknown."""
    if stored is None or run is None or stored == run:
        return images
    shape = (1, -1) + (1,) * (images.dim() - 2)
    mean_d, std_d, mean_r, std_r = (torch.tensor(v, dtype=images.dtype).view(shape) for v in (*stored, *run))
    return ((images * std_d + mean_d) - mean_r) / std_r


@torch.no_grad()
def predict_probabilities(model: nn.Module, images: Tensor, batch_size: int = 256) -> np.ndarray:
    """Softmax probabilities (n x classes, float32), batch by batch, on the model's device."""
    device = next(model.parameters()).device
    model.eval()
    out = [torch.softmax(model(images[i:i + batch_size].to(device)).float(), 1).cpu()
           for i in range(0, images.shape[0], batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)
