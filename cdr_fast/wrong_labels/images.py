"""The images of chosen examples, for the picture of the suspects, read from the dataset's own
files by index (a folder dataset: each example's file; otherwise its image array)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..data import DatasetError, load_dataset


def example_images(dataset: str, data_dir: str | None, index: np.ndarray, files: list[str] | None) -> Tensor:
    """(k, C, H, W) float images of the dataset's training examples ``index``, for display only."""
    if dataset == "folder" and files is not None:
        from PIL import Image

        arrays = []
        for i in index:
            path = Path(data_dir) / files[int(i)]
            try:
                with Image.open(path) as img:
                    arrays.append(np.asarray(img.convert("L" if img.mode in ("1", "L", "I", "I;16", "F") else "RGB")))
            except OSError as err:
                raise DatasetError(f"{path}: cannot read the image for the picture ({err})") from None
        if not arrays:
            return torch.zeros(0, 1, 1, 1)
        side = max(a.shape[0] for a in arrays), max(a.shape[1] for a in arrays)
        out = np.zeros((len(arrays), arrays[0].shape[2] if arrays[0].ndim == 3 else 1, *side), dtype=np.float32)
        for k, a in enumerate(arrays):
            a = a[..., None] if a.ndim == 2 else a
            out[k, :, :a.shape[0], :a.shape[1]] = a.transpose(2, 0, 1)[: out.shape[1]]
        return torch.from_numpy(out)
    return load_dataset(dataset, data_dir).train_images[torch.as_tensor(np.asarray(index, dtype=np.int64))]
