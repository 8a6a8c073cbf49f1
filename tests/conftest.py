from __future__ import annotations

import secrets
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The project's real test data: ../shared/data beside the checkout (see DESIGN.md section 4).
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert (SHARED_DATA / "mnist").is_dir(), f"test data missing: {SHARED_DATA}/mnist"
    return SHARED_DATA


@pytest.fixture(scope="session")
def mnist(shared_data):
    from cdr_fast.data import load_dataset

    return load_dataset("mnist", shared_data / "mnist")


@pytest.fixture(scope="session")
def mnist_mini():
    from cdr_fast.data import load_dataset

    return load_dataset("mnist-mini")


@pytest.fixture
def fresh_seed() -> int:
    """A new seed per test run, printed on failure, so tests see fresh random inputs."""
    seed = secrets.randbits(31)
    print(f"seed {seed}")
    return seed
