"""The GPU proof in one run: correctness natively first, then every speed ratio, in one report.

    bench/gpu_check.sh OUT_DIR             # on a CUDA machine (run through the .sh: it maps the package)
    bench/gpu_check.sh --dry-run OUT_DIR   # the same code paths on the CPU: Triton in the interpreter, tiny sizes

Writes OUT_DIR/gpu_report.json and OUT_DIR/gpu_report.md, and exits 1 if a correctness check
failed (everything measured is written all the same). Every speed number is a median of CUDA-event
timings and a ratio to a baseline measured in the same run: torch's fused and foreach SGD, the
published top-k step, and a device-to-device copy of the same bytes (the practical roofline). The
targets it reports as met or not are those of docs/design.md, "Performance model".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BYTES_PER_PARAM = 20  # the fused update reads g, w, buf and writes w, buf (fp32)

# The Triton tests, run natively: kernels, engine ops, the optimizer on the triton engine, the
# no-host-sync test, the CUDA-graph capture, the launch budget; and the evidence recorder's GPU path.
NATIVE_TESTS = ["tests/test_kernels.py", "tests/test_engine_ops.py", "tests/test_engines.py",
                "tests/test_optim_protocol.py", "tests/test_optim_torch.py", "tests/test_auxiliary.py",
                "tests/test_recorder.py"]  # the last: the evidence's pinned staging, which needs CUDA logits
# The dry run proves the path, not the kernels (the suite does that): a few tests of each kind.
DRY_TESTS = ["tests/test_kernels.py::test_gather_add"]

SIZES = {"gpu": [61_706, 1_000_000, 11_000_000, 23_500_000, 100_000_000], "dry": [4_096]}
TOPK_MAX = {"gpu": 23_500_000, "dry": 70_000}  # the published top-k step beyond this costs too much time
THRESHOLD_SIZES = {"gpu": [1_000_000, 10_000_000, 100_000_000], "dry": [4_096]}
AUX_SHAPES = {"gpu": [(60_000, 10), (1_280_000, 1000)], "dry": [(600, 10)]}
REPS = {"gpu": 20, "dry": 1}  # the dry run proves the code path; in the interpreter a launch costs ~0.2 s
TARGETS = {"roofline_fraction": 0.85, "launches": 3, "exact_threshold_passes": 2.0, "graph_step_ratio": 1.10,
           "evidence_device_gb": 2.0, "evidence_step_ratio": 1.03}
# train.py on both engines: the same run up to fp32 rounding, which can flip a borderline mask and
# move a few test images; docs/design.md, "How the engines are proven".
TRAIN_TOLERANCE = {"test_acc": 1.0, "train_loss_rel": 0.02}


# ---------------------------------------------------------------- timing


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], Any], device, reps: int, warmup: int | None = None) -> float:
    """The median of ``reps`` timings of ``fn`` (CUDA events on a GPU, perf_counter on the CPU)."""
    import torch

    for _ in range(min(reps, 3) if warmup is None else warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def kernel_launches(fn: Callable[[], Any], device) -> int | None:
    """GPU kernels one call of ``fn`` runs, counted by torch.profiler (None on the CPU)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    if device.type != "cuda":
        with profile(activities=[ProfilerActivity.CPU]):  # the same path, nothing to count
            fn()
        return None
    fn()
    sync(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        sync(device)
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


# ---------------------------------------------------------------- correctness


def run_native_tests(report: dict, dry: bool) -> bool:
    env = {**os.environ, "TRITON_INTERPRET": "1" if dry else "0", "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                               *(DRY_TESTS if dry else NATIVE_TESTS)], cwd=REPO, env=env, capture_output=True,
                              text=True)
        suite = ElementTree.parse(junit).getroot() if junit.exists() else None
    counts = {k: 0 for k in ("tests", "failures", "errors", "skipped")}
    failed = []
    if suite is not None:
        for case in suite.iter("testcase"):
            counts["tests"] += 1
            for kind in ("failure", "error", "skipped"):
                if case.find(kind) is not None:
                    counts[kind + "s" if kind != "skipped" else "skipped"] += 1
                    if kind != "skipped":
                        failed.append(f"{case.get('classname')}::{case.get('name')}")
    ok = done.returncode == 0
    report["correctness"]["native_tests"] = {**counts, "ok": ok, "failed": failed[:40],
                                             "seconds": round(time.perf_counter() - t0, 1),
                                             "output_tail": done.stdout[-3000:] + done.stderr[-2000:]}
    return ok


def run_train_pair(report: dict, dry: bool, device) -> bool:
    """train.py on the triton engine against the reference engine, same settings."""
    data = (["--dataset", "npz", "--data-dir", str(REPO / "tests" / "data" / "tiny.npz"), "--noise-type", "symmetric",
             "--noise-rate", "0.3", "--batch-size", "64", "--epochs", "1"] if dry else
            ["--dataset", "mnist-mini", "--epochs", "3"])
    import csv

    histories = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {engine: subprocess.Popen([sys.executable, "train.py", *data, "--method", "cdr_aux", "--engine", engine,
                                          "--device", device.type, "--no-progress", "--out", str(Path(tmp) / engine)],
                                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for engine in ("triton", "reference")}  # side by side: each is small
        for engine, proc in runs.items():
            _, err = proc.communicate()
            if proc.returncode != 0:
                report["correctness"]["train_py"] = {"ok": False, "error": f"{engine}: {err[-2000:]}"}
                return False
            histories[engine] = list(csv.DictReader(open(Path(tmp) / engine / "metrics.csv")))
    rows = []
    ok = True
    for fused, ref in zip(histories["triton"], histories["reference"], strict=True):
        acc = abs(float(fused["test_acc"]) - float(ref["test_acc"]))
        loss = abs(float(fused["train_loss"]) - float(ref["train_loss"])) / abs(float(ref["train_loss"]))
        rows.append({"epoch": int(ref["epoch"]), "test_acc_triton": float(fused["test_acc"]),
                     "test_acc_reference": float(ref["test_acc"]), "train_loss_rel_diff": loss})
        ok &= acc <= TRAIN_TOLERANCE["test_acc"] and loss <= TRAIN_TOLERANCE["train_loss_rel"]
    report["correctness"]["train_py"] = {"ok": ok, "tolerance": TRAIN_TOLERANCE, "epochs": rows}
    return ok


# ---------------------------------------------------------------- speed


def flat_params(n: int, device, gen):
    import torch

    rows = max(1, n // 1024)
    w = torch.nn.Parameter((torch.randn(rows, n // rows, generator=gen) * 0.05).to(device))
    w.grad = (torch.randn(w.shape, generator=gen) * 1e-3).to(device)
    return [w]


def cdr_step_speed(report: dict, scale: str, device) -> None:
    import torch

    from cdr_fast import CDRSGD

    gen = torch.Generator().manual_seed(0)
    reps = REPS[scale]
    rows = []
    for n in SIZES[scale]:
        params = flat_params(n, device, gen)
        n = params[0].numel()
        copy_src = torch.empty(BYTES_PER_PARAM * n // 8, dtype=torch.float32, device=device)
        copy_dst = torch.empty_like(copy_src)  # a copy of 10n bytes moves 20n: the step's traffic
        copy_t = median_seconds(lambda: copy_dst.copy_(copy_src), device, reps)
        row = {"params": n, "copy_ms": copy_t * 1e3}
        kinds = {"fused_approx": dict(engine="triton", exact=False), "fused_exact": dict(engine="triton", exact=True)}
        for kind, options in kinds.items():
            opt = CDRSGD(params, lr=1e-3, momentum=0.9, weight_decay=5e-4, tau=0.4, **options)
            t = median_seconds(opt.step, device, reps)
            row[f"{kind}_ms"] = t * 1e3
            row[f"{kind}_gbps"] = BYTES_PER_PARAM * n / t / 1e9
            row[f"{kind}_roofline_fraction"] = copy_t / t
            row[f"{kind}_launches"] = kernel_launches(opt.step, device)
            del opt
        for kind, options in (("torch_sgd_fused", dict(fused=True)), ("torch_sgd_foreach", dict(foreach=True))):
            try:
                opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=5e-4, **options)
                row[f"{kind}_ms"] = median_seconds(opt.step, device, reps) * 1e3
            except (RuntimeError, ValueError) as err:  # fused SGD needs a device that has it
                row[f"{kind}_ms"] = None
                row[f"{kind}_note"] = str(err).splitlines()[0][:120]
        if n <= TOPK_MAX[scale]:
            opt = CDRSGD(params, lr=1e-3, momentum=0.9, weight_decay=5e-4, tau=0.4, engine="reference")
            row["published_topk_ms"] = median_seconds(opt.step, device, max(1, reps // 4), warmup=1) * 1e3
        for kind in ("fused_approx", "fused_exact"):
            for base in ("torch_sgd_fused", "torch_sgd_foreach", "published_topk"):
                if row.get(f"{base}_ms"):
                    row[f"{kind}_vs_{base}"] = row[f"{kind}_ms"] / row[f"{base}_ms"]
        rows.append(row)
    report["speed"]["cdr_step"] = rows


def threshold_speed(report: dict, scale: str, device) -> None:
    import torch

    from cdr_fast.engines import resolve_engine

    engine = resolve_engine("triton", device)
    gen = torch.Generator().manual_seed(1)
    reps = REPS[scale]
    rows = []
    for n in THRESHOLD_SIZES[scale]:
        w, g = (torch.randn(n, generator=gen).to(device) for _ in range(2))
        k = int(0.6 * n)
        thr, _ = engine.new_threshold(device)
        scores = torch.mul(g, w).abs_()
        row = {"scores": n,
               "radix_exact_ms": median_seconds(lambda: engine.threshold(w, g, k, thr, exact=True, seed=0), device, reps) * 1e3,
               "radix_approx_ms": median_seconds(lambda: engine.threshold(w, g, k, thr, exact=False, seed=0), device,
                                                 reps) * 1e3,
               "one_pass_ms": median_seconds(lambda: torch.mul(g, w).abs_().sum(), device, reps) * 1e3,
               "torch_topk_ms": median_seconds(lambda: torch.topk(scores, k).values[-1], device, max(1, reps // 4)) * 1e3,
               "torch_kthvalue_ms": median_seconds(lambda: torch.kthvalue(scores, n - k + 1).values, device,
                                                   max(1, reps // 4)) * 1e3}
        exact = torch.topk(scores, k).values[-1]
        engine.threshold(w, g, k, thr, exact=True, seed=0)
        row["exact_matches_topk"] = bool(torch.equal(thr.to(exact.dtype), exact))
        row["exact_in_passes"] = row["radix_exact_ms"] / row["one_pass_ms"]
        rows.append(row)
    report["speed"]["threshold"] = rows


def aux_speed(report: dict, scale: str, device) -> None:
    import torch

    from cdr_fast.engines import resolve_engine

    fused, reference = resolve_engine("triton", device), resolve_engine("reference", device)
    gen = torch.Generator().manual_seed(2)
    reps = REPS[scale]
    rows = []
    for n, c in AUX_SHAPES[scale]:
        table = torch.zeros(n, c, device=device)
        idx = torch.randint(0, n, (256,), generator=gen).to(device)
        logits, rows_in = torch.randn(256, c, device=device), torch.randn(256, c, device=device)
        row = {"table": [n, c], "batch": 256}
        for name, engine in (("triton", fused), ("reference", reference)):
            row[f"gather_add_{name}_ms"] = median_seconds(lambda: engine.aux_gather_add(logits, table, idx, 1.0), device,
                                                          reps) * 1e3
            row[f"row_update_{name}_ms"] = median_seconds(lambda: engine.aux_row_update(table, idx, rows_in, -0.1),
                                                          device, reps) * 1e3
        rows.append(row)
    report["speed"]["aux"] = rows


def lenet_step_speed(report: dict, scale: str, device) -> None:
    """The whole LeNet step at batch 32, cdr_aux on the fused engine against torch SGD, eager and
    captured in one CUDA graph each."""
    import torch
    import torch.nn.functional as F

    from cdr_fast import CDRSGD, AuxBias
    from cdr_fast.models import build_model

    reps = 50 if scale == "gpu" else REPS[scale]
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(32, 1, 28, 28, generator=gen).to(device)
    y = torch.randint(0, 10, (32,), generator=gen).to(device)
    idx = torch.randperm(6000, generator=gen)[:32].to(device)
    out = {}
    for kind in ("cdr_aux_fused", "torch_sgd"):
        torch.manual_seed(0)
        model = build_model("lenet", 10, (1, 28, 28)).to(device)
        if kind == "torch_sgd":
            aux, opt = None, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3)
        else:
            aux = AuxBias(6000, 10, engine="triton").to(device)
            opt = CDRSGD([{"params": model.parameters()}, aux.param_group(aux_lr=0.3, batch_size=32)], lr=0.01,
                         momentum=0.9, weight_decay=1e-3, tau=0.4, engine="triton", exact=True)
            aux.engine = opt.engine

        def step():
            opt.zero_grad()
            logits = model(x)
            F.cross_entropy(aux(logits, idx) if aux is not None else logits, y).backward()
            opt.step()

        out[f"{kind}_ms"] = median_seconds(step, device, reps) * 1e3
        out[f"{kind}_launches"] = kernel_launches(step, device)
        if device.type == "cuda":
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    step()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                step()
            out[f"{kind}_graph_ms"] = median_seconds(graph.replay, device, reps) * 1e3
        else:
            out[f"{kind}_graph_ms"] = None  # CUDA graphs need a GPU
    out["eager_ratio"] = out["cdr_aux_fused_ms"] / out["torch_sgd_ms"]
    if out["torch_sgd_graph_ms"]:
        out["graph_ratio"] = out["cdr_aux_fused_graph_ms"] / out["torch_sgd_graph_ms"]
    report["speed"]["lenet_step"] = out


def epoch_speed(report: dict, scale: str, device) -> None:
    """One epoch of the training loop, in process: cdr_aux fused and reference, and sgd fused."""
    from cdr_fast.training import Trainer, TrainConfig

    data = (dict(dataset="npz", data_dir=str(REPO / "tests" / "data" / "tiny.npz"), noise_type="symmetric",
                 noise_rate=0.3, batch_size=64) if scale == "dry" else dict(dataset="mnist-mini"))
    out = {}
    for name, settings in (("cdr_aux_fused", dict(method="cdr_aux", engine="triton")),
                           ("cdr_aux_reference", dict(method="cdr_aux", engine="reference")),
                           ("sgd_fused", dict(method="sgd", engine="triton"))):
        trainer = Trainer(TrainConfig(epochs=1, device=device.type, **data, **settings), None, progress=False,
                          log=lambda line: None)
        stats = trainer.train_epoch()
        out[f"{name}_s"] = stats["train_time_s"]
    out["fused_vs_reference"] = out["cdr_aux_fused_s"] / out["cdr_aux_reference_s"]
    out["fused_vs_sgd"] = out["cdr_aux_fused_s"] / out["sgd_fused_s"]
    report["speed"]["epoch"] = out


EVIDENCE = {"gpu": dict(examples=1_280_000, classes=1000, batch=256, model="resnet18", shape=(3, 32, 32)),
            "dry": dict(examples=600, classes=10, batch=32, model="lenet", shape=(1, 28, 28), rounds=1, steps=1)}


def evidence_speed(report: dict, scale: str, device) -> None:
    """The label evidence at ImageNet's size: its device bytes and its cost per step
    (bench/evidence_at_scale.py; targets: at most 2 GB and 3%)."""
    sys.path.insert(0, str(REPO / "bench"))
    from evidence_at_scale import measure

    report["speed"]["evidence"] = measure(device, **EVIDENCE[scale])


def targets(report: dict) -> dict:
    speed = report["speed"]
    big = [r for r in speed.get("cdr_step", []) if r["params"] >= 11_000_000]
    hundred = [r for r in speed.get("threshold", []) if r["scores"] >= 100_000_000]
    launches = [r["fused_exact_launches"] for r in speed.get("cdr_step", []) if r.get("fused_exact_launches")]
    graph = speed.get("lenet_step", {}).get("graph_ratio")
    evidence = speed.get("evidence", {})
    evidence_gb = [round(max(evidence["recorder_device_bytes"], evidence["recording_peak_device_bytes"] or 0) / 2**30, 3)] \
        if evidence else []

    def verdict(values, ok) -> dict:
        return {"measured": values, "met": (all(ok(v) for v in values) if values else None)}

    return {
        "fused_step_at_85pct_of_copy_from_11M": verdict([round(r["fused_approx_roofline_fraction"], 3) for r in big],
                                                        lambda v: v >= TARGETS["roofline_fraction"]),
        "at_most_3_launches_per_cdr_step": verdict(launches, lambda v: v <= TARGETS["launches"]),
        "exact_threshold_100M_within_2_passes": verdict([round(r["exact_in_passes"], 2) for r in hundred],
                                                        lambda v: v <= TARGETS["exact_threshold_passes"]),
        "captured_lenet_step_within_1.10x_torch_sgd": verdict([round(graph, 3)] if graph else [],
                                                              lambda v: v <= TARGETS["graph_step_ratio"]),
        "evidence_at_1.28Mx1000_within_2GB_of_device": verdict(evidence_gb, lambda v: v <= TARGETS["evidence_device_gb"]),
        "evidence_at_1.28Mx1000_within_3pct_of_the_step": verdict(
            [round(evidence["cost_ratio"], 3)] if evidence else [], lambda v: v <= TARGETS["evidence_step_ratio"]),
    }


# ---------------------------------------------------------------- the report


def environment(device) -> dict:
    import torch
    import triton

    env = {"python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__,
           "device": str(device), "interpreter": os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                   capability=f"{props.major}.{props.minor}")
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    return env


def markdown(report: dict) -> str:
    env, corr, speed = report["environment"], report["correctness"], report["speed"]
    lines = [f"# GPU check{' (dry run on the CPU)' if report['dry_run'] else ''}", "",
             "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in env.items()] + [""]
    tests = corr.get("native_tests", {})
    lines += ["## Correctness", "",
              f"- Triton tests ({'interpreter' if env['interpreter'] else 'native'}): {tests.get('tests')} run, "
              f"{tests.get('failures')} failed, {tests.get('errors')} errors, {tests.get('skipped')} skipped: "
              f"**{'pass' if tests.get('ok') else 'FAIL'}**" + (f" ({', '.join(tests['failed'])})" if tests.get("failed")
                                                              else "")]
    train = corr.get("train_py", {})
    lines.append(f"- train.py triton against reference: **{'pass' if train.get('ok') else 'FAIL'}** "
                 + "; ".join(f"epoch {e['epoch']}: test {e['test_acc_triton']:.2f} / {e['test_acc_reference']:.2f}, "
                             f"loss differs by {e['train_loss_rel_diff']:.1e}" for e in train.get("epochs", []))
                 + (train.get("error", "") or ""))
    lines += ["", "## The CDR step (tau 0.4, momentum, weight decay)", "",
              "| params | copy (ms) | approx (ms) | GB/s | of copy | launches | exact (ms) | of copy | fused SGD (ms) "
              "| foreach SGD (ms) | top-k step (ms) |", "|" + "---:|" * 11]
    fmt = lambda v, spec=".3f": "-" if v is None else format(v, spec)  # noqa: E731
    for r in speed.get("cdr_step", []):
        lines.append(f"| {r['params']:,} | {fmt(r['copy_ms'])} | {fmt(r['fused_approx_ms'])} | "
                     f"{fmt(r['fused_approx_gbps'], '.0f')} | {fmt(r['fused_approx_roofline_fraction'], '.2f')} | "
                     f"{fmt(r['fused_approx_launches'], 'd')} | {fmt(r['fused_exact_ms'])} | "
                     f"{fmt(r['fused_exact_roofline_fraction'], '.2f')} | {fmt(r.get('torch_sgd_fused_ms'))} | "
                     f"{fmt(r.get('torch_sgd_foreach_ms'))} | {fmt(r.get('published_topk_ms'))} |")
    lines += ["", "## The threshold alone", "", "| scores | radix exact (ms) | radix approx (ms) | one pass (ms) | "
              "exact in passes | torch.topk (ms) | torch.kthvalue (ms) | exact = topk |", "|" + "---:|" * 8]
    for r in speed.get("threshold", []):
        lines.append(f"| {r['scores']:,} | {fmt(r['radix_exact_ms'])} | {fmt(r['radix_approx_ms'])} | "
                     f"{fmt(r['one_pass_ms'])} | {fmt(r['exact_in_passes'], '.2f')} | {fmt(r['torch_topk_ms'])} | "
                     f"{fmt(r['torch_kthvalue_ms'])} | {r['exact_matches_topk']} |")
    lines += ["", "## AUX (batch 256)", "", "| table | gather-add triton / reference (ms) | row update triton / "
              "reference (ms) |", "|---|---:|---:|"]
    for r in speed.get("aux", []):
        lines.append(f"| {r['table'][0]:,} x {r['table'][1]} | {fmt(r['gather_add_triton_ms'])} / "
                     f"{fmt(r['gather_add_reference_ms'])} | {fmt(r['row_update_triton_ms'])} / "
                     f"{fmt(r['row_update_reference_ms'])} |")
    step, epoch = speed.get("lenet_step", {}), speed.get("epoch", {})
    if step:
        lines += ["", "## LeNet, batch 32", "",
                  f"- a whole step: cdr_aux fused {fmt(step['cdr_aux_fused_ms'])} ms, torch SGD "
                  f"{fmt(step['torch_sgd_ms'])} ms ({step['eager_ratio']:.2f}x); launches "
                  f"{step['cdr_aux_fused_launches']} against {step['torch_sgd_launches']}",
                  f"- captured in a CUDA graph: {fmt(step['cdr_aux_fused_graph_ms'])} against "
                  f"{fmt(step['torch_sgd_graph_ms'])} ms" + (f" ({step['graph_ratio']:.2f}x)" if step.get("graph_ratio")
                                                             else " (needs a GPU)")]
    if epoch:
        lines.append(f"- one epoch of the loop: cdr_aux fused {epoch['cdr_aux_fused_s']:.2f} s, reference "
                     f"{epoch['cdr_aux_reference_s']:.2f} s ({epoch['fused_vs_reference']:.2f}x), sgd fused "
                     f"{epoch['sgd_fused_s']:.2f} s ({epoch['fused_vs_sgd']:.2f}x)")
    ev = speed.get("evidence")
    if ev:
        peak = ev["recording_peak_device_bytes"]
        lines += ["", f"## The label evidence at {ev['examples']:,} x {ev['classes']:,}", "",
                  f"- storage {ev['storage']}: {ev['readings_bytes'] / 2**30:.2f} GiB of readings; on the device "
                  f"{ev['recorder_device_bytes'] / 2**20:.1f} MiB held"
                  + (f", {peak / 2**20:.1f} MiB at the peak while recording" if peak is not None else ""),
                  f"- a {ev['model']} step at batch {ev['batch']}: {fmt(ev['plain_step_ms'])} ms, recorded "
                  f"{fmt(ev['recorded_step_ms'])} ms ({ev['cost_ratio']:.3f}x, median of paired rounds); "
                  f"`record` alone {fmt(ev['record_ms'])} ms"]
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for name, t in report["targets"].items():
        lines.append(f"| {name} | {t['measured']} | {'-' if t['met'] is None else ('yes' if t['met'] else 'no')} |")
    if report["errors"]:
        lines += ["", "## Errors", ""] + [f"- {e}" for e in report["errors"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="the folder the report goes to")
    p.add_argument("--dry-run", action="store_true", help="on the CPU: Triton in the interpreter, tiny sizes")
    args = p.parse_args(argv)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
    import torch

    device = torch.device("cpu" if args.dry_run else "cuda")
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device; use --dry-run on the CPU", file=sys.stderr)
        return 2
    scale = "dry" if args.dry_run else "gpu"
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"dry_run": args.dry_run, "environment": environment(device), "correctness": {},
                              "speed": {}, "errors": []}

    def write() -> None:
        report["targets"] = targets(report)
        (args.out / "gpu_report.json").write_text(json.dumps(report, indent=1, default=str))
        (args.out / "gpu_report.md").write_text(markdown(report))

    correct = True
    for name, check in (("native tests", run_native_tests), ("train.py", run_train_pair)):
        print(f"correctness: {name}", flush=True)
        try:
            correct &= check(report, args.dry_run) if check is run_native_tests else check(report, args.dry_run,
                                                                                          device)
        except Exception as err:  # noqa: BLE001 - a broken check is a failed check, and the run goes on
            correct = False
            report["errors"].append(f"{name}: {type(err).__name__}: {err}")
        write()
    for name, measure in (("cdr step", cdr_step_speed), ("threshold", threshold_speed), ("aux", aux_speed),
                          ("lenet step", lenet_step_speed), ("epoch", epoch_speed), ("evidence", evidence_speed)):
        print(f"speed: {name}", flush=True)
        try:
            measure(report, scale, device)
        except Exception as err:  # noqa: BLE001 - one failed measurement must not lose the others
            report["errors"].append(f"{name}: {type(err).__name__}: {err}")
        write()
    print(f"report: {args.out / 'gpu_report.md'} ({'correct' if correct else 'CORRECTNESS FAILED'})")
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
