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
# The project's real test data: ../shared/data beside the checkout (see docs/design.md, "Data").
SHARED_DATA = Path(os.environ.get("CDR_FAST_SHARED_DATA", REPO.parent / "shared" / "data"))


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


SEED_VARIABLE = "CDR_FAST_TEST_SEED"


@pytest.fixture
def fresh_seed() -> int:
    """A new seed per test run, so tests see fresh random inputs. It is printed (pytest shows it
    with a failure); set CDR_FAST_TEST_SEED to that value to replay the failure."""
    seed = int(os.environ[SEED_VARIABLE]) if os.environ.get(SEED_VARIABLE) else secrets.randbits(31)
    print(f"seed {seed} (replay with {SEED_VARIABLE}={seed})")
    return seed


def engine_device(engine: str) -> torch.device:
    """Where an engine's tensors live in the tests: Triton natively on CUDA when a GPU is present
    and the interpreter is off, else on CPU tensors in the interpreter; the others on the CPU."""
    interpreting = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    on_gpu = engine == "triton" and torch.cuda.is_available() and not interpreting
    return torch.device("cuda" if on_gpu else "cpu")


@pytest.fixture(scope="session")
def kernel_device() -> torch.device:
    """Where Triton kernels run in the tests."""
    return engine_device("triton")
