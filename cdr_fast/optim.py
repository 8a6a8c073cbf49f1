"""``CDRSGD``: SGD with CDR's critical-parameter masking and the RDI pull, as a torch optimizer.

One optimizer covers every method of the project:

- ``tau = 0`` and ``rdi_lambda = 0`` is exactly ``torch.optim.SGD`` (dampening 0, no Nesterov);
- ``tau > 0`` is CDR (Xia et al., ICLR 2021);
- ``rdi_lambda > 0`` adds RDI's ``rdi_lambda**2 * (w - w0)`` (Hu, Li & Yu, ICLR 2020).

Shaped like ``torch.optim.SGD``: this file holds the param groups, their validation, the state
and the dispatch. The flat-buffer lifecycle is ``cdr_fast.flat.FlatState``; the arithmetic is
the engine's (``cdr_fast.engines``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from .distributed import SINGLE, Distributed
from .engines import Engine, engine_name, resolve_engine
from .flat import FlatState
from .sharded import ShardedState, is_sharded, mesh_group

# The step counter that seeds the approximate threshold's sample, kept in the state of the first
# parameter (as torch.optim.LBFGS keeps its global counters), so that state_dict carries it.
STEP_KEY = "cdr_step"


def check_range(name: str, value: Any, low: float, high: float | None = None) -> None:
    """Raise a ValueError naming ``value`` unless it is a number in ``[low, high)`` (or ``>= low``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= low
    if ok and high is not None:
        ok = value < high
    if not ok:
        valid = f"[{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"invalid {name}: {value!r}; valid values are {valid}")


class CDRSGD(Optimizer):
    """SGD with momentum, weight decay, CDR masking and RDI.

    Args:
        params: parameters or param groups, as for any torch optimizer.
        lr: learning rate.
        momentum: momentum factor in [0, 1) (PyTorch's rule: the buffer starts as the first step's update).
        weight_decay: L2 decay, applied to every parameter, masked or not.
        tau: CDR rate in [0, 1). At each step the ``int((1 - tau) * n)`` parameters with the
            largest ``|grad * weight|`` over *all* scored tensors (one global threshold; ties keep
            more) keep their gradient, scaled by ``1 - tau``; the others move only by weight decay
            and leftover momentum. ``tau = 0`` is plain SGD.
        rdi_lambda: RDI strength; adds ``rdi_lambda**2 * (w - w0)`` to every parameter's update,
            where ``w0`` is the parameter when it joined the optimizer. It is added after masking,
            like weight decay, so it neither enters the score nor is masked.
        engine: ``"auto"`` (Triton on CUDA, compiled on CPU), ``"triton"``, ``"compiled"``,
            ``"reference"`` or an ``Engine`` object (see ``cdr_fast.engines``).
        fused: torch's spelling: True is ``engine="auto"``, False ``"reference"`` (the default).
        exact: the exact top-k threshold. The fused engines estimate it by default (see
            ``cdr_fast.sampling`` for the bound); the reference engine is always exact.
        process_group: data-parallel training under torch.distributed (``dist.group.WORLD`` or
            another group; None: this process alone). Each step first averages the flat gradient
            across the group in one all-reduce, and the sparse AUX rows by an all-gather, so every
            rank takes the same step (the same threshold included) on replicated state. Use it
            *instead of* wrapping the model in DDP (which would reduce twice); docs/design.md,
            "Beyond one device". Every parameter that requires grad counts as having a gradient
            (zero where no rank produced one), as under DDP. Parameters sharded by FSDP2's
            ``fully_shard`` need no group (their mesh names it): each rank steps on its shards and
            the global threshold comes from a distributed radix select, always exact
            (``cdr_fast.sharded``).

    Per-group options: ``lr``, ``momentum``, ``weight_decay``, ``tau``, ``rdi_lambda`` and
    ``score``: None (default) scores the group's ``dim() in (2, 4)`` tensors (conv and linear
    weights, as the published code), True scores all of them, False none. Scored groups share
    one ``tau``, since the threshold is global.

    At the first step, parameters and their ``.grad`` become views into one flat buffer per group
    (``cdr_fast.flat``). After each step, ``last_threshold`` and ``last_kept_fraction`` hold 0-d
    tensors on the parameters' device (None when nothing was masked); reading them is the caller's
    sync, never the step's.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        tau: float = 0.0,
        rdi_lambda: float = 0.0,
        *,
        engine: str | Engine | None = None,
        fused: bool | None = None,
        exact: bool | None = None,
        process_group: Any = None,
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, tau=tau, rdi_lambda=rdi_lambda,
                        score=None)
        super().__init__(params, defaults)
        self.engine = resolve_engine(engine_name(engine, fused), self.param_groups[0]["params"][0].device)
        if exact is False and self.engine.name == "reference":
            raise ValueError("exact=False (approximate threshold) needs a fused engine; the reference engine is exact")
        self.exact = (self.engine.name == "reference") if exact is None else exact
        self.dist = Distributed.of_group(process_group) if process_group is not None else SINGLE
        self._last: tuple[Tensor, Tensor, int] | None = None  # (threshold, kept count, scored count)
        self._flat: FlatState | ShardedState | None = None  # built at the first step, when the gradients are known

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        check_range("lr", group["lr"], 0.0)
        check_range("momentum", group["momentum"], 0.0, 1.0)
        check_range("weight_decay", group["weight_decay"], 0.0)
        check_range("tau", group["tau"], 0.0, 1.0)
        check_range("rdi_lambda", group["rdi_lambda"], 0.0)
        if group["score"] not in (None, True, False):
            raise ValueError(f"invalid score: {group['score']!r}; valid values are None, True, False")
        if getattr(self, "_flat", None) is not None:
            raise ValueError("add_param_group after the first step is not supported: the flat buffers are built")
        if group["rdi_lambda"] != 0:
            for p in group["params"]:
                self.state[p]["initial"] = p.detach().clone()

    @staticmethod
    def is_scored(group: dict[str, Any], p: Tensor) -> bool:
        return p.dim() in (2, 4) if group["score"] is None else group["score"]

    @property
    def _counter(self) -> dict[str, Any]:
        return self.state[self.param_groups[0]["params"][0]]

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        # No torch.no_grad() here (it costs a few microseconds of a 0.1 ms LeNet step): the flat
        # path only touches the flat buffers and .data, which autograd does not track; the
        # sharded path, which works on DTensor parameters, disables grad itself.
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._flat is None:
            self._check_scored_grads()
            params = [p for group in self.param_groups for p in group["params"]]
            if any(is_sharded(p) for p in params):  # FSDP2
                dist = self.dist if self.dist.enabled else Distributed.of_group(mesh_group(params))
                self._flat = ShardedState(self.param_groups, self.state, self.engine, self.is_scored, dist)
            else:
                self._flat = FlatState(self.param_groups, self.state, self.engine, self.is_scored, self.dist)
        seed = self._counter.get(STEP_KEY, 0)
        self._last = self._flat.step(self.state, exact=self.exact, seed=seed)
        self._counter[STEP_KEY] = seed + 1
        return loss

    @property
    def last_threshold(self) -> Tensor | None:
        """The last step's threshold (a 0-d tensor on the parameters' device), None if it masked
        nothing. Made when read, so a step that nobody asks pays nothing for it."""
        return self._last[0].clone() if self._last is not None else None

    @property
    def last_kept_fraction(self) -> Tensor | None:
        """The share of scored parameters the last step kept (0-d float tensor), None if unmasked."""
        return self._last[1].float() / self._last[2] if self._last is not None else None

    def _check_scored_grads(self) -> None:
        fused = self.engine.name != "reference"
        for group in self.param_groups:
            for p in group["params"]:
                if self.is_scored(group, p) and p.grad is not None and p.grad.is_sparse:
                    raise ValueError("a scored parameter has a sparse gradient; put it in a group with score=False")
                if fused and p.dtype != torch.float32 and not (p.grad is not None and p.grad.is_sparse):
                    raise ValueError(f"the {self.engine.name} engine needs float32 parameters; got {p.dtype}; "
                                     "use engine='reference'")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if self._flat is not None:
            self._flat.adopt(self.state)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the gradients. Parameters in flat buffers keep their ``.grad`` as zeroed views of the
        flat gradient (whatever ``set_to_none`` says), so that backward accumulates into it in place;
        with ``set_to_none=True`` a parameter that then gets no gradient is left alone by the step,
        as in torch."""
        if isinstance(self._flat, FlatState):
            self._flat.zero_grad(set_to_none)
        else:  # before the first step, or FSDP2's shards (their .grad is FSDP's): torch's own
            super().zero_grad(set_to_none)
