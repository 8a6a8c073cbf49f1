"""Compile every Triton kernel ahead of time for real GPUs, without one; print a JSON report.

Run as a script (``TRITON_INTERPRET=0 python tests/aot_compile.py``): the interpreter replaces
kernels with Python, so the compile must happen in a process that never enabled it.
For each kernel and target it reports the registers and spill bytes from ptxas, and how many
128-bit (``.v4``) global loads the PTX holds.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from cdr_fast.kernels import aux_gather, cdr_step, cdr_threshold
from cdr_fast.sampling import HASH_MULTIPLIER, VEC

ALIGNED = [["tt.divisibility", 16]]


def aligned(*indices: int) -> dict:
    return {(i,): ALIGNED for i in indices}


# name -> (kernel, signature, constexprs, attrs (16-divisible args), num_warps, expects v4 loads)
KERNELS = {
    "cdr_sgd_step": (
        cdr_step._cdr_sgd_kernel,
        {"w_ptr": "*fp32", "g_ptr": "*fp32", "buf_ptr": "*fp32", "w0_ptr": "*fp32", "thr_ptr": "*fp32",
         "kept_ptr": "*i32", "n_scored": "i32", "n": "i32", "lr": "fp32", "momentum": "fp32",
         "weight_decay": "fp32", "rdi_coef": "fp32", "gradient_scale": "fp32", "MASK": "constexpr",
         "HAS_MOMENTUM": "constexpr", "HAS_RDI": "constexpr", "BLOCK": "constexpr"},
        {"MASK": True, "HAS_MOMENTUM": True, "HAS_RDI": True, "BLOCK": cdr_step.BLOCK},
        aligned(0, 1, 2, 3, 6, 7), cdr_step.NUM_WARPS, True,
    ),
    "threshold_sample_strided": (
        cdr_threshold._sample_scores_kernel,
        {"w_ptr": "*fp32", "g_ptr": "*fp32", "n": "i32", "n_windows": "i32", "scratch_ptr": "*fp32", "hist_ptr": "*i32", "seed": "i32",
         "STRIDE": "constexpr", "VEC": "constexpr", "CHUNKS": "constexpr", "BINS": "constexpr", "HASH": "constexpr"},
        {"STRIDE": 64, "VEC": VEC, "CHUNKS": 256, "BINS": cdr_threshold.BINS, "HASH": HASH_MULTIPLIER},
        aligned(0, 1, 2, 4, 5), 4, True,
    ),
    "threshold_sample_dense": (
        cdr_threshold._sample_scores_kernel,
        {"w_ptr": "*fp32", "g_ptr": "*fp32", "n": "i32", "n_windows": "i32", "scratch_ptr": "*fp32", "hist_ptr": "*i32", "seed": "i32",
         "STRIDE": "constexpr", "VEC": "constexpr", "CHUNKS": "constexpr", "BINS": "constexpr", "HASH": "constexpr"},
        {"STRIDE": VEC, "VEC": VEC, "CHUNKS": 256, "BINS": cdr_threshold.BINS, "HASH": HASH_MULTIPLIER},
        aligned(0, 1, 2, 4, 5), 4, True,
    ),
    "threshold_refine": (
        cdr_threshold._refine_histogram_kernel,
        {"scratch_ptr": "*fp32", "n_scratch": "i32", "hist_ptr": "*i32", "state_ptr": "*i64",
         "PREFIX_SHIFT": "constexpr", "SHIFT": "constexpr", "BITS": "constexpr", "BINS": "constexpr", "BLOCK": "constexpr"},
        {"PREFIX_SHIFT": 21, "SHIFT": 10, "BITS": 11, "BINS": cdr_threshold.BINS, "BLOCK": 4096},
        aligned(0, 1, 2, 3), 4, True,
    ),
    "threshold_select": (
        cdr_threshold._select_digit_kernel,
        {"hist_ptr": "*i32", "state_ptr": "*i64", "thr_ptr": "*fp32", "k": "i64",
         "FIRST": "constexpr", "LAST": "constexpr", "BITS": "constexpr", "BINS": "constexpr"},
        {"FIRST": True, "LAST": False, "BITS": 11, "BINS": cdr_threshold.BINS},
        aligned(0, 1, 2), 4, True,
    ),
    "aux_gather_add": (
        aux_gather._gather_add_kernel,
        {"logits_ptr": "*fp32", "table_ptr": "*fp32", "idx_ptr": "*i64", "out_ptr": "*fp32", "c": "i32",
         "lam": "fp32", "BLOCK_C": "constexpr"},
        {"BLOCK_C": aux_gather.BLOCK_C},
        aligned(0, 1, 2, 3, 4), aux_gather.NUM_WARPS, True,
    ),
    "aux_scatter_add_rows": (
        aux_gather._scatter_add_rows_kernel,
        {"table_ptr": "*fp32", "idx_ptr": "*i64", "rows_ptr": "*fp32", "c": "i32", "alpha": "fp32",
         "BLOCK_C": "constexpr"},
        {"BLOCK_C": aux_gather.BLOCK_C},
        aligned(0, 1, 2, 3), aux_gather.NUM_WARPS, True,
    ),
}


def ptxas_report(ptx: str) -> dict:
    arch = re.search(r"^\.target (sm_\w+)", ptx, re.M).group(1)  # sm_90a on Hopper
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        out = subprocess.run([ptxas, f"-arch={arch}", "-v", src, "-o", os.path.join(tmp, "k.cubin")],
                             capture_output=True, text=True, check=True)
    text = out.stdout + out.stderr
    regs = re.search(r"Used (\d+) registers", text)
    spills = [int(x) for x in re.findall(r"(\d+) bytes spill (?:stores|loads)", text)]
    return {"registers": int(regs.group(1)) if regs else None, "spill_bytes": sum(spills), "ptxas": text.strip()}


def main() -> None:
    archs = [int(a) for a in sys.argv[1:]] or [80, 90]
    report = {}
    for name, (kernel, signature, constexprs, attrs, num_warps, _) in KERNELS.items():
        for arch in archs:
            compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs),
                                      target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
            ptx = compiled.asm["ptx"]
            loads = re.findall(r"ld\.global\S*", ptx)
            report[f"{name}@sm_{arch}"] = {
                "v4_loads": sum(".v4." in op for op in loads),
                "other_loads": sum(".v4." not in op for op in loads),
                **ptxas_report(ptx),
            }
    json.dump(report, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
