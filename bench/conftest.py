from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
H100_BYTES_PER_S = 3.35e12  # HBM3 bandwidth of an H100 SXM


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    folder = SHARED_DATA / "mnist"
    assert folder.is_dir(), f"benchmark data missing: {folder}"
    return folder


# name -> (median seconds, extra); filled by the suites, printed as tables at the end of the session.
MEDIANS: dict[str, tuple[float, dict]] = {}


def record_median(benchmark, name: str, **extra) -> None:
    MEDIANS[name] = (benchmark.stats.stats.median, extra)


def _epoch_table(write) -> None:
    epochs = {k: v for k, v in MEDIANS.items() if k.startswith("epoch ")}
    if not epochs:
        return
    base = epochs.get("epoch ours_sgd", (None,))[0]
    write("epoch time, median" + (" (ratio to ours_sgd)" if base else ""))
    for name, (t, _) in sorted(epochs.items()):
        if not name.startswith("epoch pair"):
            write(f"  {name[6:]:>28}: {t:7.2f} s" + (f"  {t / base:5.2f}x" if base else ""))
    for name, (_, extra) in sorted(epochs.items()):
        if name.startswith("epoch pair "):
            ratios = ", ".join(f"{r:.3f}" for r in extra["ratios"])
            write(f"  paired epochs, {name[11:].replace('/', ' / ')}: median {extra['ratio']:.3f}x ({ratios})")
    for engine in ("", "_fused"):
        sgd, both = epochs.get(f"epoch ours_sgd{engine}"), epochs.get(f"epoch ours_cdr_aux{engine}")
        if sgd and both:
            write(f"  cdr_aux{engine} / sgd{engine}: {both[0] / sgd[0]:.3f}x")


def _step_table(write) -> None:
    steps = {k: v for k, v in MEDIANS.items() if k.startswith("step ")}
    sizes = sorted({k.split()[1] for k in steps}, key=lambda s: next(v[1]["params"] for k, v in steps.items()
                                                                       if k.split()[1] == s))
    on_gpu = torch.cuda.is_available()
    for size in sizes:
        rows = {k.split()[2]: v for k, v in steps.items() if k.split()[1] == size}
        n = next(iter(rows.values()))[1]["params"]
        write(f"{size} ({n:,} parameters)")
        ref, sgd = rows.get("reference", (None,))[0], rows.get("torch_sgd", (None,))[0]
        for kind, (t, extra) in sorted(rows.items()):
            line = f"  {kind:>12}: {t * 1e3:9.3f} ms"
            if ref:
                line += f"  {ref / t:8.1f}x faster than reference"
            if sgd:
                # interleaved sizes carry the median of per-round ratios (paired), else medians' ratio
                line += f"  {extra.get('ratio', t / sgd):6.2f}x torch_sgd"
            if extra.get("bytes_per_param"):
                moved = n * extra["bytes_per_param"]
                line += f"  | {extra['bytes_per_param']} B/param, {moved / 1e6:.1f} MB, H100 roofline {moved / H100_BYTES_PER_S * 1e3:.3f} ms"
                if on_gpu:
                    line += f", achieved {moved / t / 1e9:.0f} GB/s ({moved / t / H100_BYTES_PER_S:.0%} of H100 peak)"
            write(line)


def _aux_table(write) -> None:
    aux = {k: v for k, v in MEDIANS.items() if k.startswith("aux ")}
    if not aux:
        return
    write("AUX step (gather-add forward, backward, row update), median")
    small = aux.get("aux 60000x10", (None,))[0]
    for name, (t, extra) in sorted(aux.items(), key=lambda kv: kv[1][1]["rows"]):
        ratio = f"  {t / small:5.2f}x the 60000x10 step" if small else ""
        write(f"  {name[4:]:>14}: {t * 1e3:8.3f} ms{ratio}")


def _train_table(write) -> None:
    train = {k: v for k, v in MEDIANS.items() if k.startswith("train ")}
    if not train:
        return
    write("LeNet training step, batch 32, 1 thread (median of alternating blocks; ratio to torch SGD)")
    for name, (_, extra) in train.items():
        write(f"  {name[6:]:>18}: {extra['step'] * 1e3:7.3f} ms  {extra['ratio']:5.3f}x")


def _threshold_table(write) -> None:
    rows = {k: v for k, v in MEDIANS.items() if k.startswith("threshold ")}
    if rows:
        write("exact k-th largest of 61,706 LeNet-shaped scores, median")
        for name, (t, _) in rows.items():
            write(f"  {name[10:]:>18}: {t * 1e6:8.1f} us")


def pytest_terminal_summary(terminalreporter):
    if not MEDIANS:
        return
    terminalreporter.section("cdr-fast benchmark summary (medians)")
    for table in (_train_table, _threshold_table, _epoch_table, _step_table, _aux_table):
        table(terminalreporter.write_line)
