"""The engine interface: the four operations every engine implements with the same signatures.

An engine computes; it holds no training state. The optimizer (through ``cdr_fast.flat`` and
``cdr_fast.sharded``) and ``AuxBias`` call these methods on flat buffers and never ask which engine
they hold: what an engine can do is stated by its class attributes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from ..cdr_rule import KEEP_NOTHING


class Engine(ABC):
    """Threshold, masked update, AUX gather-add and AUX row update.

    ``threshold`` and ``masked_update`` exchange the threshold and the kept count through 0-d
    tensors on the parameters' device, so a fused engine never reads a value back to the host.
    """

    name: ClassVar[str]
    device_types: ClassVar[tuple[str, ...]] = ("cpu", "cuda")  # where its tensors may live
    dtypes: ClassVar[tuple[torch.dtype, ...] | None] = None  # of the flat buffers; None: any float
    always_exact: ClassVar[bool] = False  # its threshold ignores ``exact=False``

    @classmethod
    def check_device(cls, device: torch.device) -> None:
        """A one-line ValueError unless this engine runs on tensors on ``device``."""
        if device.type not in cls.device_types:
            raise ValueError(f"engine {cls.name!r} runs on {' or '.join(cls.device_types)} tensors; got "
                             f"{device.type} tensors")

    def check_dtype(self, dtype: torch.dtype) -> None:
        """A one-line ValueError unless this engine steps flat buffers of ``dtype``."""
        if self.dtypes is not None and dtype not in self.dtypes:
            valid = ", ".join(str(d).removeprefix("torch.") for d in self.dtypes)
            raise ValueError(f"the {self.name} engine steps {valid} parameters (complex ones as their real "
                             f"pairs); got {str(dtype).removeprefix('torch.')}: use engine='reference'")

    def __eq__(self, other: object) -> bool:  # stateless but for scratch: one engine is as good as another
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    def __reduce__(self) -> tuple:
        return (type(self), ())  # a copy or a pickle gets a fresh engine: scratch space is not state

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def threshold(self, w: Tensor, g: Tensor, k: int, thr: Tensor, *, exact: bool, seed: int) -> None:
        """``thr`` <- the k-th largest of ``|g * w|`` over flat ``w``, ``g`` (exact, or estimated
        from a sample drawn with ``seed``). ``k == 0`` keeps nothing: ``thr`` <- NaN."""
        if k == 0:
            thr.fill_(KEEP_NOTHING)
        else:
            self._select(w, g, k, thr, exact=exact, seed=seed)

    @abstractmethod
    def _select(self, w: Tensor, g: Tensor, k: int, thr: Tensor, *, exact: bool, seed: int) -> None:
        """``threshold`` for ``1 <= k <= w.numel()``."""

    @abstractmethod
    def masked_update(self, w: Tensor, g: Tensor, buf: Tensor, w0: Tensor, thr: Tensor, kept: Tensor, *,
                      n_scored: int, lr: float, momentum: float, weight_decay: float, rdi_coef: float,
                      gradient_scale: float, mask: bool) -> None:
        """One SGD step over flat buffers, in place, with CDR's mask on ``[0, n_scored)``::

            g_j   <- gradient_scale * [|g_j w_j| >= thr] * g_j   for j < n_scored (if mask), else g_j
            d_j    = g_j + weight_decay * w_j + rdi_coef * (w_j - w0_j)
            buf_j <- momentum * buf_j + d_j            (buf is zero before the first step)
            w_j   <- w_j - lr * buf_j                  (lr * d_j without momentum)

        ``kept`` (0-d int tensor) is increased by the number of kept scored elements. ``g`` is
        only read; ``buf`` is untouched without momentum and ``w0`` unread without RDI.
        """

    @abstractmethod
    def aux_gather_add(self, logits: Tensor, table: Tensor, idx: Tensor, lam: float) -> Tensor:
        """``logits + lam * table[idx]``, differentiable; ``table``'s gradient is a sparse COO tensor
        holding only the batch's rows (never n x c)."""

    @abstractmethod
    def aux_row_update(self, table: Tensor, idx: Tensor, rows: Tensor, alpha: float) -> None:
        """``table[idx[i]] += alpha * rows[i]`` for every i, in place; repeated indices add up."""

    def new_threshold(self, device: torch.device, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """The 0-d ``thr`` and ``kept`` tensors an optimizer reuses at every step."""
        return (torch.zeros((), dtype=dtype, device=device), torch.zeros((), dtype=torch.int32, device=device))
