"""Reference engine: eager PyTorch that does exactly what the published methods do.

The threshold is a global ``torch.topk``, as in the published CDR code, and the update follows
its ``train_one_step`` and ``torch.optim.SGD``'s single-tensor path op for op, so the results
agree bit for bit, not just to rounding (elementwise ops give the same bits on a flat buffer as
on the tensors it holds). The other engines are tested against this one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Engine


class ReferenceEngine(Engine):
    name = "reference"
    always_exact = True

    def _select(self, w: Tensor, g: Tensor, k: int, thr: Tensor, *, exact: bool, seed: int) -> None:
        # Published: scores = cat(grads) * cat(weights), abs; thr = topk(scores, k)[0][-1]. Always exact.
        thr.copy_(torch.topk(torch.mul(g, w).abs_(), k).values[-1])

    def masked_update(self, w, g, buf, w0, thr, kept, *, n_scored, lr, momentum, weight_decay, rdi_coef, gradient_scale,
                      mask) -> None:
        if mask:
            scored_g = g[:n_scored]
            keep = torch.mul(scored_g, w[:n_scored]).abs_() >= thr
            kept += keep.sum().to(kept.dtype)
            g = g.clone()
            # Published: mask = (score >= thr).float() * clip (clip = 1 - tau); grad = mask * grad
            g[:n_scored] = keep.to(g.dtype).mul_(gradient_scale).mul_(scored_g)
        d = g.add(w, alpha=weight_decay) if weight_decay != 0 else g
        if rdi_coef != 0:
            d = d.add(w - w0, alpha=rdi_coef)
        if momentum != 0:
            d = buf.mul_(momentum).add_(d)  # buf starts at zero: the first step stores d, as torch's clone
        w.add_(d, alpha=-lr)

    def aux_gather_add(self, logits: Tensor, table: Tensor, idx: Tensor, lam: float) -> Tensor:
        # The gather is already O(batch x classes) in eager torch; embedding's sparse gradient holds
        # only the batch's rows. At lam = 1 (the default) the product is the rows themselves: one op
        # and one backward node fewer (about 12 us of a 4 ms LeNet step), the same bits.
        rows = F.embedding(idx, table, sparse=True)
        return logits + (rows if lam == 1 else lam * rows)

    def aux_row_update(self, table: Tensor, idx: Tensor, rows: Tensor, alpha: float) -> None:
        table.index_add_(0, idx, rows, alpha=alpha)
