"""The picture of the suspects: a grid of their images, each captioned ``given -> suggested``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from torch import Tensor


def _displayable(image: Tensor) -> np.ndarray:
    """A (C, H, W) normalised image as (H, W) or (H, W, 3) in [0, 1], stretched to its own range."""
    x = image.detach().float().cpu().numpy()
    x = x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0)
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def suspects_figure(images: Tensor, captions: list[str], path: Path, title: str, columns: int = 8) -> None:
    """Save a grid of ``images`` (n, C, H, W) with one caption each, most suspect first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(captions)
    cols = max(1, min(columns, n))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 1.95 * rows + 0.5), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            ax.imshow(_displayable(images[k]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(captions[k], fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
