"""Triton kernels for cdr-fast, installed as ``cdr_fast.kernels``.

One file per fused op, holding only ``@triton.jit`` functions and their launchers; no training
logic lives here. The fused CDR step and the AUX gather-add arrive with the fused engine.
"""
