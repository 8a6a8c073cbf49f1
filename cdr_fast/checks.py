"""The checks every entry point shares: a number in a range, a name among choices.

The library, ``TrainConfig`` and both command lines call these, so a bad value gets the same
one-line message wherever it enters: the value, and what is valid.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def check_range(name: str, value: Any, low: float, high: float | None = None, *, closed: bool = False,
                open_low: bool = False) -> float:
    """``value`` as a float if it is a finite number in ``[low, high)`` (``..., high]`` when
    ``closed``, ``(low, ...`` when ``open_low``; ``>= low`` without ``high``), else a ValueError
    naming it and the valid range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "a tensor" if type(value).__name__ == "Tensor" else type(value).__name__
        raise ValueError(f"invalid {name}: {value!r} is {kind}; a Python number is needed (tensors are not "
                         "supported)" if kind == "a tensor" else f"invalid {name}: {value!r}; must be a number")
    ok = math.isfinite(value) and (value > low if open_low else value >= low)
    if ok and high is not None:
        ok = value <= high if closed else value < high
    if not ok:
        left = "(" if open_low else "["
        valid = (f"{'>' if open_low else '>='} {low:g}" if high is None
                 else f"{left}{low:g}, {high:g}{']' if closed else ')'}")
        raise ValueError(f"invalid {name}: {value!r}; valid values are {valid}")
    return float(value)


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"invalid {name}: {value!r}; must be a positive integer")
    return value


def check_choice(name: str, value: T, choices: Iterable[T]) -> T:
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid choices: {', '.join(map(str, choices))}")
    return value
