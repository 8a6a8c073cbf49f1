"""The one place that chooses how an optimizer step or AUX op is computed.

Engines:
- ``triton``: the kernels in ``cdr_fast.kernels``, on CUDA tensors (or on CPU tensors under
  ``TRITON_INTERPRET=1``, which is how the tests run them);
- ``compiled``: the CPU twin in ``cdr_fast.compiled`` (``torch.compile``/Inductor);
- ``reference``: eager PyTorch, exactly the published methods (``cdr_fast.reference``).

``fused=True`` picks ``triton`` for CUDA tensors and ``compiled`` for CPU tensors.
"""

from __future__ import annotations

import os

import torch

from .sampling import sample_stride

ENGINES = ("triton", "compiled", "reference")


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_engine(engine: str | None, fused: bool, device: torch.device) -> str:
    """Name of the engine to run on ``device``, given an explicit ``engine`` or the ``fused`` wish."""
    if engine is None:
        if not fused:
            return "reference"
        return "triton" if device.type == "cuda" else "compiled"
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; valid choices: {', '.join(ENGINES)}")
    if engine == "triton" and device.type != "cuda" and not interpreting():
        raise ValueError(f"engine 'triton' needs CUDA tensors (or TRITON_INTERPRET=1); got {device.type} tensors")
    if engine == "compiled" and device.type != "cpu":
        raise ValueError(f"engine 'compiled' is the CPU twin; got {device.type} tensors (use 'triton')")
    return engine


class FusedOps:
    """A fused engine's ops for one optimizer, with the small device buffers they reuse every step.

    ``thr`` (float32) and ``kept`` (int32) are 0-d tensors on the device; nothing here reads them
    back to the host.
    """

    def __init__(self, engine: str, device: torch.device, n_scored: int, exact: bool) -> None:
        self.engine, self.exact = engine, exact
        self.thr = torch.zeros((), dtype=torch.float32, device=device)
        self.kept = torch.zeros((), dtype=torch.int32, device=device)
        if engine == "triton":
            from .kernels import aux_gather, cdr_step, cdr_threshold

            self._step, self._select, self._rows = cdr_step, cdr_threshold, aux_gather
            self.stride = sample_stride(n_scored, exact)
            self.scratch = torch.empty(cdr_threshold.scratch_size(n_scored, self.stride), device=device)
            self.hist = torch.empty(3 * cdr_threshold.BINS, dtype=torch.int32, device=device)
            self.state = torch.empty(2, dtype=torch.int64, device=device)
        else:
            from . import compiled

            self._step = self._select = compiled

    def threshold(self, w: torch.Tensor, g: torch.Tensor, k: int, seed: int) -> None:
        """``thr`` <- the k-th largest of ``|g * w|`` (NaN for k = 0: keeps nothing)."""
        if k == 0:
            self.thr.fill_(float("nan"))
        elif self.engine == "triton":
            self._select.cdr_threshold(w, g, k, self.scratch, self.hist, self.state, self.thr,
                                       stride=self.stride, seed=seed)
        else:
            self._select.cdr_threshold(w, g, k, self.thr, exact=self.exact, seed=seed)

    def update(self, w, g, buf, w0, **hyper) -> None:
        self._step.cdr_sgd_step(w, g, buf, w0, self.thr, self.kept, **hyper)

    def scatter_rows(self, table: torch.Tensor, idx: torch.Tensor, rows: torch.Tensor, alpha: float) -> None:
        if self.engine == "triton":
            self._rows.scatter_add_rows(table, idx, rows, alpha)
        else:
            table.index_add_(0, idx, rows, alpha=alpha)
