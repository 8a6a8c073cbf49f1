"""CDR's rule, written once: how many parameters to keep, the gradient scale, the RDI coefficient.

Every engine and the optimizer take these numbers from here (docs/design.md, "Semantics").
"""

from __future__ import annotations

import math


def keep_count(tau: float, num_scored: int) -> int:
    """Number of parameters CDR keeps: ``int((1 - tau) * n)``, as the published code computes it."""
    return int((1.0 - tau) * num_scored)


def gradient_scale(tau: float) -> float:
    """The factor ``1 - tau`` on the gradient of a kept parameter (the published code's ``clip``)."""
    return 1.0 - tau


def rdi_coefficient(rdi_lambda: float) -> float:
    """RDI adds ``lambda**2 * (w - w0)`` to the gradient: the penalty ``(lambda**2 / 2) ||w - w0||^2``."""
    return rdi_lambda * rdi_lambda


# The threshold when k = 0: no score compares >= to NaN, so nothing is kept. (The published code
# would fail with an IndexError there.)
KEEP_NOTHING = math.nan
