"""AUX (Hu, Li & Yu, ICLR 2020): a trainable per-example offset added to the logits in training.

``AuxBias`` holds the table B (one row per training example, one column per class, zero at the
start). In training, ``aux(logits, idx)`` returns ``logits + lam * B[idx]``; in evaluation it
returns ``logits`` unchanged. B's gradient is row-sparse (only the rows in the batch), so an
SGD step on it costs O(batch * classes), whatever the number of examples.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .checks import check_positive_int, check_range
from .engines import Engine, engine_name, resolve_engine


class AuxBias(nn.Module):
    """Per-example auxiliary logits ``lam * B[idx]``.

    Args:
        num_examples: rows of B, one per training example; ``idx`` indexes them.
        num_classes: columns of B.
        lam: the scale lambda of the AUX paper.
        engine: ``"auto"``, ``"triton"``, ``"compiled"``, ``"reference"`` or an ``Engine`` object
            (the Trainer passes the optimizer's, so both use one engine). A name is resolved once,
            at the first forward, for the tensors' device.
        fused: torch's spelling: True is ``engine="auto"``, False ``"reference"`` (the default).

    Train B with ``CDRSGD`` (or any optimizer that accepts sparse gradients) through
    :meth:`param_group`, which keeps B out of CDR's scoring and gives it the AUX paper's plain
    SGD (no momentum, no weight decay) unless told otherwise.
    """

    def __init__(self, num_examples: int, num_classes: int, lam: float = 1.0, *, engine: str | Engine | None = None,
                 fused: bool | None = None) -> None:
        super().__init__()
        # ``engine`` is always an Engine once resolved; a name waits in ``engine_choice`` until the
        # first forward, which knows the tensors' device.
        chosen = engine_name(engine, fused)
        self.engine: Engine | None = chosen if isinstance(chosen, Engine) else None
        self.engine_choice: str = chosen.name if isinstance(chosen, Engine) else chosen
        check_positive_int("num_examples", num_examples)
        check_positive_int("num_classes", num_classes)
        lam = check_range("lam", lam, 0.0)
        self.lam = float(lam)
        self.weight = nn.Parameter(torch.zeros(num_examples, num_classes))

    @property
    def num_examples(self) -> int:
        return self.weight.shape[0]

    @property
    def num_classes(self) -> int:
        return self.weight.shape[1]

    def extra_repr(self) -> str:
        return f"num_examples={self.num_examples}, num_classes={self.num_classes}, lam={self.lam}"

    def param_group(self, lr: float | None = None, *, aux_lr: float | None = None,
                    batch_size: int | None = None, momentum: float = 0.0, weight_decay: float = 0.0,
                    **options: Any) -> dict[str, Any]:
        """A param group for ``CDRSGD``: never scored by CDR; plain SGD by default.

        The table's step size: with a batch-mean loss, row i's gradient carries a factor
        1/batch, and the row is visited once per epoch, so at the network's learning rate the
        offsets barely move (docs/design.md, "AUX's step size"). ``aux_lr`` and
        ``batch_size`` set ``lr = aux_lr * batch_size``: each visit then moves
        ``lam * B[i]`` by ``aux_lr * lam**2`` times the example's own residual, as a step
        on the AUX paper's summed objective would. Without either, B takes ``lr`` (or the
        optimizer's). Momentum or weight decay on B make every row move at every step, so the
        update is then dense (O(n * classes)).
        """
        if aux_lr is not None or batch_size is not None:
            if aux_lr is None or batch_size is None or lr is not None:
                raise ValueError("pass aux_lr together with batch_size (and no lr), or lr alone")
            lr = aux_lr * batch_size
            options["batch_size"] = batch_size  # CDRSGD's group option: under torch.distributed, rows per rank
        if lr is not None:
            options["lr"] = lr
        return {"params": [self.weight], "score": False, "momentum": momentum, "weight_decay": weight_decay,
                "rdi_lambda": 0.0, **options}

    def offsets(self) -> Tensor:
        """Every example's offsets ``lam * B[i]`` (n x classes), detached."""
        return self.lam * self.weight.detach()

    def forward(self, logits: Tensor, idx: Tensor) -> Tensor:
        if not self.training:
            return logits
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"logits must have shape (batch, {self.num_classes}); got {tuple(logits.shape)}"
            )
        if idx.shape != logits.shape[:1]:
            raise ValueError(f"idx must have shape ({logits.shape[0]},); got {tuple(idx.shape)}")
        if idx.device.type == "cpu" and idx.numel():
            # On an accelerator this check would cost a host sync per step; embedding checks there.
            lo, hi = (int(v) for v in torch.aminmax(idx))
            if lo < 0 or hi >= self.num_examples:
                raise IndexError(f"example index out of range: got [{lo}, {hi}], table has {self.num_examples} rows")
        if self.engine is None:
            self.engine = resolve_engine(self.engine_choice, logits.device)
        return self.engine.aux_gather_add(logits, self.weight, idx, self.lam)
