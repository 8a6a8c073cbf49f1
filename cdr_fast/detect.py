"""Noisy-label detection: AUX's offsets name the examples whose given label they had to absorb.

With cross-entropy, a visit moves the offsets of example i by ``-rate * (softmax(z_i) - e_y)``:
up on the given label y, down on the classes the model believes in. A clean example is fitted by
the network and its offsets stay small; a mislabelled one keeps a large residual, so its offset
on y grows. The score is the offsets' margin for the given label,
``lam * (B[i, y] - max_{j != y} B[i, j])``, and the label the offsets argue for is the class they
pushed down most, ``argmin_{j != y} B[i, j]`` (where the model put its probability).

``small_loss_scores`` is the usual baseline (Co-teaching and others): the network's own loss on
the given label, without the offsets; large loss, likely noisy.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Suspects(NamedTuple):
    score: Tensor  # (n,) larger: more likely mislabelled
    suggested: Tensor  # (n,) the label the evidence argues for


def aux_suspects(table: Tensor, labels: Tensor, lam: float) -> Suspects:
    """Scores and suggested labels from an AUX table (n x c) and the given labels (n,)."""
    b = table.detach()
    given = b.gather(1, labels[:, None]).squeeze(1)
    others = b.scatter(1, labels[:, None], float("inf"))  # exclude the given label from the min
    suggested = others.argmin(1)
    others = b.scatter(1, labels[:, None], float("-inf"))  # ... and from the max
    return Suspects(lam * (given - others.max(1).values), suggested)


@torch.no_grad()
def small_loss_suspects(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1024) -> Suspects:
    """The network's per-example cross-entropy on the given labels (in eval mode), and its prediction."""
    model.eval()
    losses, predicted = [], []
    for i in range(0, images.shape[0], batch_size):
        logits = model(images[i : i + batch_size])
        losses.append(F.cross_entropy(logits, labels[i : i + batch_size], reduction="none"))
        predicted.append(logits.argmax(1))
    return Suspects(torch.cat(losses), torch.cat(predicted))


def precision_recall(score: Tensor, truly_noisy: Tensor, flagged: int) -> tuple[float, float]:
    """Precision and recall of the ``flagged`` highest-scoring examples against the known flips."""
    if flagged <= 0:
        return float("nan"), float("nan")
    top = torch.zeros_like(truly_noisy, dtype=torch.bool)
    top[score.topk(min(flagged, score.numel())).indices] = True
    hits = (top & truly_noisy).sum().item()
    positives = truly_noisy.sum().item()
    return hits / top.sum().item(), (hits / positives if positives else float("nan"))
