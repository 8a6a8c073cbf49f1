"""The noise rate and the transition matrix, estimated from the noisy data alone.

CDR's tau is the noise rate, which nobody knows on real data. The anchor-point estimator
(Patrini et al., CVPR 2017; the published CDR code ships it as ``fit`` in its tools but never
calls it):

1. Train a network briefly on the noisy labels (``warm_up_probabilities``: 1,500 steps of plain
   SGD, before it memorises), and take its predicted distribution p(.|x) on every training
   example, averaged over 5 snapshots of the warm-up: an estimate of the *noisy* posterior.
2. For each class i, the anchor is the example with the highest p(i|x) below the 97th
   percentile of p(i|.) (the highest ones are often outliers); its predicted distribution is row
   i of T, since for an example surely of class i, p(noisy label j | x) = T_ij.
3. The noise rate is ``1 - sum_i pi_i T_ii``, with pi the noisy class priors.

The estimate needs the network's probabilities to be calibrated on the anchors. It is good when
each class keeps a clear majority of its own label (symmetric and pairflip noise at 20-40%), and
it fails, as it must, where a noisy label is the majority of a class (pairflip at 70%: the
anchors then describe the flipped class) or where the noise touches a few classes only
(asymmetric: the rate over all examples is small, and anchor errors on the untouched classes
weigh as much as the flips).

``--tau auto`` counts by canaries instead wherever the training set has room for them
(``estimate_with_canaries``): the anchors fell to a third of the truth at 1-5% noise. The anchors
remain its transition matrix, and its rate on a set too small for canaries.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import check_positive_int
from .data.batches import Examples, batches
from .trained import predict_probabilities

ANCHOR_QUANTILE = 0.97
# --tau auto's warm-up plants this share of canaries, and counts at the score this share of them
# reach (chosen on the development half of results/tau-canaries: estimate_with_canaries)
WARMUP_CANARIES = 0.05
WARMUP_QUANTILE = 0.8


class NoiseEstimate(NamedTuple):
    rate: float  # estimated fraction of flipped labels
    transition: Tensor  # (c, c): row i is the estimated distribution of the noisy label of class i


def anchor_transition(probs: Tensor, quantile: float = ANCHOR_QUANTILE) -> Tensor:
    """Row i: the predicted distribution of the example with the highest p(i|x) at or below the
    ``quantile`` of p(i|.) over all examples. ``probs``: (n, c) rows summing to 1."""
    if probs.dim() != 2 or probs.shape[0] == 0:
        raise ValueError(f"probs must be a non-empty (examples, classes) matrix; got shape {tuple(probs.shape)}")
    probs = probs.double()
    rows = []
    for i in range(probs.shape[1]):
        column = probs[:, i]
        cut = torch.quantile(column, quantile, interpolation="higher")
        robust = torch.where(column >= cut, torch.zeros_like(column), column) if quantile < 1 else column
        rows.append(probs[robust.argmax()])
    return torch.stack(rows)


def estimate_noise(probs: Tensor, noisy_labels: Tensor, quantile: float = ANCHOR_QUANTILE) -> NoiseEstimate:
    """The noise rate and transition matrix from predicted probabilities and the noisy labels."""
    if noisy_labels.shape != probs.shape[:1]:
        raise ValueError(f"noisy_labels must have shape ({probs.shape[0]},); got {tuple(noisy_labels.shape)}")
    transition = anchor_transition(probs, quantile)
    c = probs.shape[1]
    priors = torch.bincount(noisy_labels.cpu(), minlength=c).double() / noisy_labels.numel()
    rate = float(1.0 - (priors * transition.diagonal().cpu()).sum())
    return NoiseEstimate(min(max(rate, 0.0), 1.0), transition.float().cpu())


def estimate_with_canaries(probs: Tensor, planted_labels: Tensor, canaries: Tensor, share: float,
                           quantile: float = WARMUP_QUANTILE) -> NoiseEstimate:
    """The noise rate from a warm-up trained on ``planted_labels``: the given labels with
    ``canaries`` (a share ``share`` of the examples, ``cdr_fast.detection.canaries``) moved to a
    class drawn from the others.

    The rate is the canary ratio (``canary_ratio``) of the unexplained loss
    (``detection.scores.unexplained_loss``: small loss less the class-level overlap the warm-up
    has learned) over the other examples: how many score as the planted flips do. Small loss
    alone missed the flips a warm-up learns as a pattern (pairflip at 40%: a tenth of the truth),
    which is why the rate used to be the larger of it and the anchor points'; but the anchors read
    a network's genuine confusions as noise (Fashion-MNIST at 1-5%: 0.12-0.15). The unexplained
    loss needs neither (results/tau-canaries). It takes the whole learned overlap out, where the
    detection count (``detection.count.canary_noise_rate``) takes only its one-way part: the one-way
    part counts flips that swap two classes both ways low, and for CDR a tau too low gives the
    memorisation back, so the warm-up keeps the estimate chosen on its own development half. Measured
    there afterwards, the one-way part gains nothing (within the goal in 20 of 36 cells either way)
    and reads Fashion-MNIST's confusion-derived noise at 20 and 40% as 0.131 and 0.251 (realised
    0.196 and 0.392; the whole overlap 0.219 and 0.377; results/README.md). The transition is the
    anchors', with the canaries' flips undone (they compose T with C = (1 - s) I + s (J - I) / (m - 1),
    so T = T_warm C^-1, clipped at 0, rows renormalised)."""
    from .detection.canaries import canary_ratio
    from .detection.scores import learned_overlap, unexplained_loss

    n, m = probs.shape
    p, labels = probs.float().cpu().numpy(), planted_labels.cpu().numpy()  # no float64 copy of n x m
    score = unexplained_loss(p, labels, learned_overlap(p, labels))
    planted = np.zeros(n, dtype=bool)
    planted[canaries.cpu().numpy()] = True
    eye = torch.eye(m, dtype=torch.float64)
    mix = (1.0 - share) * eye + share * (1.0 - eye) / max(m - 1, 1)
    transition = (anchor_transition(probs).cpu() @ torch.linalg.inv(mix)).clamp_min(0.0)
    transition = transition / transition.sum(1, keepdim=True).clamp_min(1e-12)
    return NoiseEstimate(canary_ratio(score[planted], score[~planted], quantile), transition.float())


def snapshot_steps(steps: int, snapshots: int) -> list[int]:
    """The steps after which the warm-up takes its snapshots: evenly spaced over the last two thirds
    of the warm-up (the first third is too early to say anything), the last one at ``steps``."""
    first = max(1, round(steps / 3))
    if snapshots == 1 or first == steps:
        return [steps]
    return sorted({round(first + (steps - first) * j / (snapshots - 1)) for j in range(snapshots)})


def warm_up_probabilities(model: nn.Module, images: Examples, labels: Tensor, *, steps: int, batch_size: int,
                          lr: float, momentum: float, weight_decay: float, seed: int, snapshots: int = 5,
                          eval_batch_size: int = 256) -> Tensor:
    """Train ``model`` (in place) for ``steps`` steps of plain SGD on the noisy labels (reshuffling
    at each pass over the data) and return its softmax probabilities on ``images`` (n, c),
    averaged over ``snapshots`` points of the warm-up (``snapshot_steps``).

    Why steps, not epochs: memorisation grows with the number of updates, and the same 3 epochs
    are 510 steps on mnist-mini but 5,100 on MNIST. Why a mean over snapshots: the anchor of each
    class is one example, and which one (and how sure the network is of it) swings from one step
    to the next; single snapshots of one warm-up gave rates ±0.1 around the realised one, their
    mean within 0.035 (README, "CDR on data nobody has cleaned").
    """
    check_positive_int("steps", steps)
    check_positive_int("snapshots", snapshots)
    at = set(snapshot_steps(steps, snapshots))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    device = labels.device
    gen = torch.Generator(device=device).manual_seed(seed)
    n = images.shape[0]
    total: Tensor | None = None
    done = 0
    while done < steps:
        order = torch.randperm(n, generator=gen, device=device)
        model.train()
        index = [order[start : start + batch_size] for start in range(0, n, batch_size)]
        for idx, x in zip(index, batches(images, index, device)):
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done in at:
                probs = torch.from_numpy(predict_probabilities(model, images, eval_batch_size)).to(device)
                total = probs if total is None else total.add_(probs)
                model.train()
            if done == steps:
                break
    return total / len(at)
