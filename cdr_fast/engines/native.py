"""Build ``cpu_kernels.c`` once with the system C compiler and call it through ctypes.

The compiler is the one ``torch.compile`` would emit C++ through; the source is plain C99
without torch headers, so a build takes well under a second. The library is cached under
``$CDR_FAST_CACHE`` (default ``~/.cache/cdr_fast``), keyed by the source's hash, and rebuilt
when the source changes.

With ``-fopenmp`` the passes over every parameter use torch's threads (see ``cpu_kernels.c``); a
compiler without OpenMP builds the same source single-threaded (the pragmas are then ignored).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("cpu_kernels.c")
FLAGS = ["-O3", "-std=c99", "-ffp-contract=off", "-fPIC", "-shared"]
OPENMP = "-fopenmp"


class NoCompiler(ValueError):
    """The compiled engine cannot be built here: no C compiler, and no library built before."""


def _compiler() -> str:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    raise NoCompiler("the compiled engine needs a C compiler (cc, gcc or clang) on PATH and there is none here: "
                     "use --engine reference (engine='reference' in the library), or install one")


@cache
def library() -> ctypes.CDLL:
    source = SOURCE.read_bytes()
    tag = hashlib.sha256(source + " ".join([*FLAGS, OPENMP]).encode() + platform.machine().encode()).hexdigest()[:16]
    cache_dir = Path(os.environ.get("CDR_FAST_CACHE", Path.home() / ".cache" / "cdr_fast"))
    target = cache_dir / f"cpu_kernels-{tag}.so"
    if not target.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:  # build aside, then rename: atomic
            built = Path(tmp) / target.name
            for flags in ([*FLAGS, OPENMP], FLAGS):
                done = subprocess.run([_compiler(), *flags, str(SOURCE), "-o", str(built), "-lm"],
                                      capture_output=True, text=True)
                if done.returncode == 0:
                    break
            else:
                raise RuntimeError(f"building {SOURCE.name} failed:\n{done.stderr[-2000:]}")
            os.replace(built, target)
    lib = ctypes.CDLL(str(target))
    f32, i64, ptr = ctypes.c_float, ctypes.c_int64, ctypes.c_void_p
    lib.cdr_kth_largest.argtypes = [ptr, ptr, i64, i64, ptr, ptr]
    lib.cdr_kth_largest.restype = None
    lib.cdr_masked_update.argtypes = [ptr, ptr, ptr, ptr, i64, i64, ptr, f32, f32, f32, f32, f32, ctypes.c_int, ptr]
    lib.cdr_masked_update.restype = None
    lib.cdr_systematic_sample.argtypes = [ptr, ptr, i64, i64, i64, ptr]
    lib.cdr_systematic_sample.restype = None
    lib.cdr_force_scalar.argtypes = [ctypes.c_int]
    lib.cdr_force_scalar.restype = None
    return lib


def force_scalar(on: bool) -> None:
    """Use the portable C loops even where the CPU has AVX2 (for the tests)."""
    library().cdr_force_scalar(int(on))


def kth_largest(a: Tensor, b: Tensor | None, k: int, scratch: Tensor, out: Tensor) -> None:
    """``out`` (0-d float32) <- the exact k-th largest of ``|a * b|`` (of ``|a|`` when b is None):
    contiguous float32 CPU tensors. ``scratch``: at least ``a.numel()`` int32 elements, overwritten."""
    assert scratch.dtype == torch.int32 and scratch.numel() >= a.numel() and out.dtype == torch.float32
    assert a.numel() < 2**32, "the C select counts in 32 bits"
    library().cdr_kth_largest(a.data_ptr(), None if b is None else b.data_ptr(), a.numel(), k, scratch.data_ptr(),
                              out.data_ptr())


def systematic_sample(a: Tensor, b: Tensor, windows: int, window: int, phase: int, out: Tensor) -> None:
    """``out[4 j + c]`` <- ``|a * b|`` at ``window * j + phase + c`` (c < 4): the systematic sample of
    ``cdr_fast.sampling``, read in place (no strided tensor ops). ``out``: float32, ``4 * windows``."""
    assert out.dtype == torch.float32 and out.numel() >= 4 * windows and a.numel() >= window * windows
    library().cdr_systematic_sample(a.data_ptr(), b.data_ptr(), windows, window, phase, out.data_ptr())


def masked_update(w: Tensor, g: Tensor, buf: Tensor, w0: Tensor, thr: Tensor, kept: Tensor, *, n_scored: int,
                  lr: float, momentum: float, weight_decay: float, rdi_coef: float, gradient_scale: float, mask: bool) -> None:
    """``Engine.masked_update`` in one C loop, in place: reads the 0-d float32 ``thr`` and adds the
    kept count to the 0-d int32 ``kept`` directly (no tensor op around the call)."""
    assert thr.dtype == torch.float32 and kept.dtype == torch.int32
    library().cdr_masked_update(w.data_ptr(), g.data_ptr(), buf.data_ptr(), w0.data_ptr(), w.numel(), n_scored,
                                thr.data_ptr(), lr, momentum, weight_decay, rdi_coef, gradient_scale, int(mask), kept.data_ptr())
