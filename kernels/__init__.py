"""Triton kernels for cdr-fast, installed as ``cdr_fast.kernels``.

One file per fused op, each holding its ``@triton.jit`` functions and their launchers (and, for
the AUX gather-add, its autograd Function). No training logic lives here, and nothing here
imports from ``cdr_fast``: every policy (sample geometry, ranks, hyperparameters) is passed in by
the engine that launches the kernel (``cdr_fast/engines/triton_engine.py``).
"""
