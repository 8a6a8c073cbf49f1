"""The one place that chooses how a step or an AUX op is computed.

Engines, one vocabulary everywhere (library, CLI, config, summary, grid):

- ``triton``: the kernels in ``cdr_fast.kernels`` on CUDA tensors (on CPU tensors only under
  ``TRITON_INTERPRET=1``, which is how the tests run them without a GPU);
- ``compiled``: the CPU twin, in C (``cpu_kernels.c``, built on first use);
- ``reference``: eager PyTorch, exactly the published methods;
- ``auto``: ``triton`` on CUDA, ``compiled`` on the CPU.

``resolve_engine`` is called once per run (the Trainer hands the same engine object to the
optimizer and to ``AuxBias``); the objects are interchangeable behind ``Engine``.
"""

from __future__ import annotations

import os

import torch

from .base import Engine

ENGINES = ("triton", "compiled", "reference")
ENGINE_CHOICES = ("auto", *ENGINES)


def interpreting() -> bool:
    """Whether Triton kernels run in the interpreter (on CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def engine_name(engine: str | Engine | None, fused: bool | None) -> str | Engine:
    """Fold the torch-style ``fused`` flag into the engine vocabulary: True is ``auto``, False
    ``reference``; an explicit ``engine`` wins, and the default is ``reference``."""
    if engine is not None:
        if fused is not None and (engine == "reference") == bool(fused):
            raise ValueError(f"fused={fused} contradicts engine={engine!r}; pass one of them")
        return engine
    return "auto" if fused else "reference"


def resolve_engine(engine: str | Engine, device: torch.device | str) -> Engine:
    """The engine object for tensors on ``device``: an ``Engine`` is returned as it is."""
    if isinstance(engine, Engine):
        return engine
    if engine not in ENGINE_CHOICES:
        raise ValueError(f"unknown engine {engine!r}; valid choices: {', '.join(ENGINE_CHOICES)}")
    device = torch.device(device)
    if engine == "auto":
        engine = "triton" if device.type == "cuda" else "compiled"
    if engine == "triton":
        if device.type != "cuda" and not interpreting():
            raise ValueError(f"engine 'triton' needs CUDA tensors (or TRITON_INTERPRET=1); got {device.type} tensors")
        from .triton_engine import TritonEngine  # imports triton: only when asked for

        return TritonEngine()
    if engine == "compiled":
        if device.type != "cpu":
            raise ValueError(f"engine 'compiled' is the CPU twin; got {device.type} tensors (use 'triton')")
        from .compiled import CompiledEngine

        return CompiledEngine()
    from .reference import ReferenceEngine

    return ReferenceEngine()


__all__ = ["ENGINES", "ENGINE_CHOICES", "Engine", "engine_name", "interpreting", "resolve_engine"]
