"""CDR's rule, written once: which tau a step uses, how many parameters to keep, the gradient
scale and the RDI coefficient, gathered in one ``StepPlan``.

The flat (``cdr_fast.flat``) and sharded (``cdr_fast.sharded``) optimizer states both take their
step from ``plan_step`` and their per-group update arguments from ``StepPlan.update_options``; the
engines only compute (docs/design.md, "Semantics").
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, NamedTuple

# The threshold when k = 0: no score compares >= to NaN, so nothing is kept. (The published code
# would fail with an IndexError there.)
KEEP_NOTHING = math.nan


def keep_count(tau: float, num_scored: int) -> int:
    """Number of parameters CDR keeps: ``int((1 - tau) * n)``, as the published code computes it."""
    return int((1.0 - tau) * num_scored)


def gradient_scale(tau: float) -> float:
    """The factor ``1 - tau`` on the gradient of a kept parameter (the published code calls it ``clip``)."""
    return 1.0 - tau


def rdi_coefficient(rdi_lambda: float) -> float:
    """RDI adds ``lambda**2 * (w - w0)`` to the gradient: the penalty ``(lambda**2 / 2) ||w - w0||^2``."""
    return rdi_lambda * rdi_lambda


class StepPlan(NamedTuple):
    """What one optimizer step does: mask or not, with which tau, keeping how many."""

    tau: float
    n_scored: int  # scored elements taking part in this step (over every rank, when sharded)
    keep: int  # k: the rank of the threshold among the scores
    masks: bool  # whether this step masks at all (tau > 0 and something is scored)

    def update_options(self, group: dict[str, Any], scored: bool) -> dict[str, Any]:
        """The keyword arguments of ``Engine.masked_update`` for a span of ``group``'s parameters
        (``scored``: the span starts with scored elements that this step masks)."""
        masked = self.masks and scored
        return dict(lr=group["lr"], momentum=group["momentum"], weight_decay=group["weight_decay"],
                    rdi_coef=rdi_coefficient(group["rdi_lambda"]),
                    gradient_scale=gradient_scale(self.tau) if masked else 1.0, mask=masked)


def plan_step(scored_taus: Iterable[float], n_scored: int) -> StepPlan:
    """The plan of a step whose scored parameters (``n_scored`` elements) belong to groups with
    these taus. The threshold is global, so the groups must share one tau."""
    taus = set(scored_taus)
    if len(taus) > 1:
        raise ValueError(f"scored param groups must share one tau (the threshold is global); got {sorted(taus)}")
    tau = taus.pop() if taus else 0.0
    masks = n_scored > 0 and tau > 0
    return StepPlan(tau, n_scored, keep_count(tau, n_scored) if masks else n_scored, masks)
