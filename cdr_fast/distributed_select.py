"""CDR's exact threshold when no rank holds every score: a radix select whose histograms are
all-reduced level by level (docs/design.md, "Beyond one device").

Under FSDP2 each rank holds a shard of every parameter, so the k-th largest ``|g * w|`` over the
whole model is a distributed selection. Scores are non-negative floats, and their bit patterns
order like the floats (NaN above +Inf, as ``torch.topk`` ranks them), so three levels of digits
(bits 31..21, 20..10, 9..0; the compiled engine's split) spell the k-th largest exactly: at each
level every rank counts its candidates' digits into 2,048 bins, one all-reduce sums the counts,
and every rank picks the same digit from the same sums. Three all-reduces of 16 KB per step, the
digit chosen on the device: no host sync, whatever the number of ranks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .distributed import SINGLE, Distributed

# (shift, bits) of each level's digit, from the top.
LEVELS = ((21, 11), (10, 11), (0, 10))
BINS = 1 << 11


def score_bits(w: Tensor, g: Tensor) -> Tensor:
    """``|g * w|`` as int32 bit patterns, which order like the (non-negative) floats."""
    return torch.mul(g.reshape(-1), w.reshape(-1)).abs_().view(torch.int32)


def sharded_threshold(pairs: list[tuple[Tensor, Tensor]], k: int, thr: Tensor, dist: Distributed = SINGLE) -> None:
    """``thr`` <- the k-th largest ``|g * w|`` over every rank's ``(w, g)`` pairs, exactly
    (``1 <= k <=`` the scores on all ranks together; the caller knows that total).

    Each rank passes its own pairs (any number, any sizes, empty ones included); every rank must
    call with the same ``k``. Ties keep more, as ``torch.topk(...).values[-1]`` does.
    """
    device = thr.device
    keys = [score_bits(w, g) for w, g in pairs if w.numel()]
    prefix = torch.zeros((), dtype=torch.int32, device=device)  # the digits chosen so far
    remaining = torch.full((), k, dtype=torch.int64, device=device)  # rank of the target among candidates
    above = 32  # bits of the key above this level's digit that must equal ``prefix``
    for shift, bits in LEVELS:
        hist = torch.zeros(BINS, dtype=torch.int64, device=device)
        for key in keys:
            digit = ((key >> shift) & ((1 << bits) - 1)).long()
            if above == 32:
                hist.scatter_add_(0, digit, torch.ones_like(digit))
            else:  # only the candidates whose higher digits are the ones chosen so far
                hist.scatter_add_(0, digit, ((key >> above) == prefix).long())
        dist.all_reduce_(hist)
        at_least = hist.flip(0).cumsum(0).flip(0)  # at_least[d]: candidates with digit >= d
        chosen = (at_least >= remaining).sum() - 1  # the largest digit holding the target
        remaining = remaining - (at_least[chosen] - hist[chosen])  # drop those with a larger digit
        prefix = (prefix << bits) | chosen.to(torch.int32)
        above = shift
    thr.copy_(prefix.view(torch.float32))
