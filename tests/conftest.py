from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
import torch

# Without a GPU, Triton kernels run on CPU tensors in the interpreter. It must be chosen before
# any kernel module is imported. On a GPU machine, TRITON_INTERPRET=0 runs them natively.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

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


@pytest.fixture(scope="session")
def kernel_device() -> torch.device:
    """Where Triton kernels run in the tests: CUDA if present and not interpreting, else the CPU."""
    interpreting = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    return torch.device("cuda" if torch.cuda.is_available() and not interpreting else "cpu")
