from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    folder = SHARED_DATA / "mnist"
    assert folder.is_dir(), f"benchmark data missing: {folder}"
    return folder


# Median seconds per benchmark, filled by the suites, printed as ratios at the end of the session.
MEDIANS: dict[str, float] = {}


def record_median(benchmark, name: str) -> None:
    MEDIANS[name] = benchmark.stats.stats.median


def pytest_terminal_summary(terminalreporter):
    if "ours_sgd" not in MEDIANS:
        return
    ours = MEDIANS["ours_sgd"]
    terminalreporter.section("epoch time, median (ratio to ours_sgd)")
    for name, t in sorted(MEDIANS.items()):
        terminalreporter.write_line(f"{name:>24}: {t:6.2f} s   {t / ours:5.2f}x")
