"""The one place that chooses how an optimizer step or AUX op is computed.

Engines:
- ``reference``: eager PyTorch, exactly the published methods (``cdr_fast.reference``).

The fused engines (``triton`` on CUDA tensors, ``compiled`` on CPU tensors) plug in here; until
they exist, ``fused=True`` runs the reference engine and says so once.
"""

from __future__ import annotations

import warnings

ENGINES = ("reference",)

_fallback_noted = False


def resolve_engine(engine: str | None, fused: bool) -> str:
    """Name of the engine to run, given an explicit ``engine`` or the ``fused`` wish."""
    global _fallback_noted
    if engine is not None:
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; valid choices: {', '.join(ENGINES)}")
        return engine
    if fused and not _fallback_noted:
        _fallback_noted = True
        warnings.warn(
            "cdr-fast: the fused engine is not available in this build; using the reference engine",
            stacklevel=3,
        )
    return "reference"
