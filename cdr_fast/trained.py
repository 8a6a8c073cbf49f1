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
from torch import nn

from .atomic_io import load_checkpoint, previous
from .data.batches import Examples, batches, ranges
from .data.files import ImageFiles
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


def renormalised(images: Examples, stored: tuple[list[float], list[float]] | None,
                 run: tuple[list[float], list[float]] | None) -> Examples:
    """Images normalised with a dataset's own (mean, std), ``stored``, as the run normalised its
    inputs (``run``): ``((x * std_d + mean_d) - mean_r) / std_r``; image files read from now on
    with the run's statistics. Unchanged where either is unknown."""
    if stored is None or run is None or stored == run:
        return images
    if isinstance(images, ImageFiles):
        mean_r, std_r = (np.asarray(v, dtype=np.float32).reshape(-1, 1, 1) for v in run)
        return ImageFiles(images.paths, images.mode, images.image_size, images.image_shape, mean_r, std_r,
                          images.workers)
    shape = (1, -1) + (1,) * (images.dim() - 2)
    mean_d, std_d, mean_r, std_r = (torch.tensor(v, dtype=images.dtype).view(shape) for v in (*stored, *run))
    return ((images * std_d + mean_d) - mean_r) / std_r


@torch.no_grad()
def predict_probabilities(model: nn.Module, examples: Examples, batch_size: int = 256,
                          out: np.ndarray | None = None) -> np.ndarray:
    """Softmax probabilities (n x classes, float32) in eval mode, computed batch by batch on the
    model's device and written batch by batch into ``out`` (a host array or ``np.memmap``; default:
    a new array), so the n x classes result never sits on the device."""
    device = next(model.parameters()).device
    model.eval()
    n = examples.shape[0]
    for rows, x in zip(ranges(0, n, batch_size), batches(examples, ranges(0, n, batch_size), device)):
        p = torch.softmax(model(x).float(), 1).cpu().numpy()
        if out is None:
            out = np.empty((n, p.shape[1]), dtype=np.float32)
        out[rows.start:rows.stop] = p
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)
