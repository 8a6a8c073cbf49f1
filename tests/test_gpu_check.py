"""bench/gpu_check.sh, the GPU proof, kept from rotting: its dry run on the CPU (Triton in the
interpreter, tiny sizes) takes every code path the GPU run takes and writes the same report."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess

import pytest

from conftest import REPO


def test_the_dry_run_writes_every_section_of_the_report(tmp_path):
    done = subprocess.run(["bash", "bench/gpu_check.sh", "--dry-run", str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_report.json").read_text())
    assert report["dry_run"] and report["environment"]["interpreter"] and not report["errors"]
    tests, train = report["correctness"]["native_tests"], report["correctness"]["train_py"]
    assert tests["ok"] and tests["tests"] >= 2 and tests["failures"] == 0
    assert train["ok"] and train["epochs"]
    speed = report["speed"]
    for row in speed["cdr_step"]:
        for key in ("copy_ms", "fused_approx_ms", "fused_exact_ms", "torch_sgd_foreach_ms", "published_topk_ms"):
            assert row[key] > 0 and math.isfinite(row[key]), key
    assert all(row["exact_matches_topk"] for row in speed["threshold"])  # the radix select is checked as it is timed
    assert speed["aux"] and speed["lenet_step"]["cdr_aux_fused_ms"] > 0 and speed["epoch"]["fused_vs_sgd"] > 0
    assert set(report["targets"]) == {"fused_step_at_85pct_of_copy_from_11M", "at_most_3_launches_per_cdr_step",
                                      "exact_threshold_100M_within_2_passes",
                                      "captured_lenet_step_within_1.10x_torch_sgd",
                                      "evidence_at_1.28Mx1000_within_2GB_of_device",
                                      "evidence_at_1.28Mx1000_within_3pct_of_the_step"}
    evidence = speed["evidence"]  # on the CPU the readings are on the "device": nothing on a GPU
    assert evidence["recorder_device_bytes"] == 0 and evidence["readings_bytes"] == 600 * 10 * 4 * 2 + 600 * 16
    assert evidence["plain_step_ms"] > 0 and evidence["cost_ratio"] > 0
    text = (tmp_path / "gpu_report.md").read_text()
    assert "dry run on the CPU" in text and "## Targets" in text and "## The label evidence at 600 x 10" in text


@pytest.fixture
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_failed_check_exits_non_zero_and_keeps_what_was_measured(gpu_check, tmp_path, monkeypatch):
    def failing_tests(report, dry):
        report["correctness"]["native_tests"] = {"ok": False, "tests": 3, "failures": 1, "errors": 0, "skipped": 0,
                                                 "failed": ["tests/x.py::test_y"]}
        return False

    def broken_measurement(report, scale, device):
        raise RuntimeError("out of memory")

    def measured(report, scale, device):
        report["speed"]["aux"] = [{"table": [10, 2], "batch": 256, "gather_add_triton_ms": 1.0,
                                   "gather_add_reference_ms": 2.0, "row_update_triton_ms": 1.0,
                                   "row_update_reference_ms": 2.0}]

    monkeypatch.setattr(gpu_check, "run_native_tests", failing_tests)
    monkeypatch.setattr(gpu_check, "run_train_pair", lambda report, dry, device: True)
    for name in ("cdr_step_speed", "threshold_speed", "lenet_step_speed", "epoch_speed"):
        monkeypatch.setattr(gpu_check, name, broken_measurement)
    monkeypatch.setattr(gpu_check, "aux_speed", measured)
    assert gpu_check.main(["--dry-run", str(tmp_path)]) == 1
    report = json.loads((tmp_path / "gpu_report.json").read_text())
    assert report["speed"]["aux"][0]["gather_add_triton_ms"] == 1.0
    assert len(report["errors"]) == 4 and all("out of memory" in e for e in report["errors"])
    assert "FAIL" in (tmp_path / "gpu_report.md").read_text()
