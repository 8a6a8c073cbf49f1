"""Every Triton kernel compiles for sm_80 and sm_90 with no register spills and 128-bit loads.

The compile runs in a child process without the interpreter (see tests/aot_compile.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def report() -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    done = subprocess.run([sys.executable, str(REPO / "tests" / "aot_compile.py"), "80", "90"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_every_kernel_compiled_for_both_targets(report):
    sys.path.insert(0, str(REPO / "tests"))
    from aot_compile import KERNELS

    assert set(report) == {f"{name}@sm_{arch}" for name in KERNELS for arch in (80, 90)}


def test_no_register_spills(report):
    spilled = {name: r["spill_bytes"] for name, r in report.items() if r["spill_bytes"] != 0}
    assert not spilled, spilled


def test_vectorised_loads(report):
    for name, r in report.items():
        assert r["v4_loads"] > 0, f"{name}: no ld.global.v4 in the PTX"
    # The update pass streams four arrays (w, g, buf, w0): each needs at least one 128-bit load,
    # and fewer scalar loads than streams remain (the threshold is one), so no stream fell back to
    # scalar loads, whatever the compiler's unrolling.
    for arch in (80, 90):
        step = report[f"cdr_sgd_step@sm_{arch}"]
        assert step["v4_loads"] >= 4 and step["other_loads"] < 4, step
