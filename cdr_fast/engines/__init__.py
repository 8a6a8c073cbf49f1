"""The one place that chooses how a step or an AUX op is computed.

Engines, one vocabulary everywhere (library, CLI, config, summary, grid):

- ``triton``: the kernels in ``cdr_fast.kernels`` on CUDA tensors (on CPU tensors only under
  ``TRITON_INTERPRET=1``, which is how the tests run them without a GPU);
- ``compiled``: the CPU twin, in C (``cpu_kernels.c``, built on first use);
- ``reference``: eager PyTorch, exactly the published methods;
- ``auto``: ``triton`` on CUDA, ``compiled`` on the CPU.

``ENGINES`` is the registry: one entry per engine, imported only when asked for (the Triton
engine imports triton). What an engine can do (devices, dtypes, whether its threshold is always
exact) is stated by its class (``Engine``), never inferred from its name. ``check_engine`` is the
one check of a name; ``resolve_engine`` turns a name into an object for a device.
"""

from __future__ import annotations

import importlib
import os

import torch

from ..checks import check_choice
from .base import Engine

# name -> (module, class), imported on first use
ENGINES: dict[str, tuple[str, str]] = {
    "triton": ("triton_engine", "TritonEngine"),
    "compiled": ("compiled", "CompiledEngine"),
    "reference": ("reference", "ReferenceEngine"),
}
# "auto": the engine for each device type
AUTO = {"cuda": "triton", "cpu": "compiled"}
ENGINE_CHOICES = ("auto", *ENGINES)


def interpreting() -> bool:
    """Whether Triton kernels run in the interpreter (on CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def engine_name(engine: str | Engine | None, fused: bool | None) -> str | Engine:
    """Fold the torch-style ``fused`` flag into the engine vocabulary: True is ``auto``, False
    ``reference``; an explicit ``engine`` wins, and the default is ``reference``. The result is
    checked (``check_engine``)."""
    if engine is not None:
        if fused is not None and (engine == "reference") == bool(fused):
            raise ValueError(f"fused={fused} contradicts engine={engine!r}; pass one of them")
        return check_engine(engine)
    return "auto" if fused else "reference"


def check_engine(engine: str | Engine) -> str | Engine:
    """``engine`` if it is an ``Engine`` or one of ``ENGINE_CHOICES``, else a one-line ValueError."""
    return engine if isinstance(engine, Engine) else check_choice("engine", engine, ENGINE_CHOICES)


def engine_class(name: str) -> type[Engine]:
    """The class registered as ``name`` (not ``auto``), imported now."""
    module, cls = ENGINES[check_choice("engine", name, tuple(ENGINES))]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def resolve_engine(engine: str | Engine, device: torch.device | str) -> Engine:
    """The engine object for tensors on ``device``: an ``Engine`` is returned as it is."""
    if isinstance(engine, Engine):
        return engine
    device = torch.device(device)
    name = AUTO.get(device.type, "reference") if check_engine(engine) == "auto" else engine
    cls = engine_class(name)
    cls.check_device(device)
    return cls()


__all__ = ["AUTO", "ENGINES", "ENGINE_CHOICES", "Engine", "check_engine", "engine_class", "engine_name",
           "interpreting", "resolve_engine"]
