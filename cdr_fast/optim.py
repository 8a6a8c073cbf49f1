"""``CDRSGD``: SGD with CDR's critical-parameter masking and the RDI pull, as a torch optimizer.

One optimizer covers every method of the project:

- ``tau = 0`` and ``rdi_lambda = 0`` is exactly ``torch.optim.SGD`` (dampening 0, no Nesterov);
- ``tau > 0`` is CDR (Xia et al., ICLR 2021);
- ``rdi_lambda > 0`` adds RDI's ``rdi_lambda**2 * (w - w0)`` (Hu, Li & Yu, ICLR 2020).

Shaped like ``torch.optim.SGD``: this file holds the param groups and their options, their
validation, the state, copying and pickling, and the choice of engine. The step itself is
``cdr_fast.flat.FlatState`` (or ``cdr_fast.sharded.ShardedState`` under FSDP2), planned by
``cdr_fast.cdr_rule`` and computed by an engine (``cdr_fast.engines``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from .checks import check_positive_int, check_range
from .distributed import SINGLE, Distributed
from .engines import Engine, engine_class, engine_name, resolve_engine
from .flat import FlatState
from .sharded import ShardedState, is_sharded, mesh_group

# The step counter that seeds the approximate threshold's sample, kept in the state of the first
# parameter (as torch.optim.LBFGS keeps its global counters), so that state_dict carries it.
STEP_KEY = "cdr_step"

# Every param-group option, with its default where the optimizer's arguments do not set it.
GROUP_OPTIONS = ("lr", "momentum", "weight_decay", "tau", "rdi_lambda", "score", "batch_size")


class CDRSGD(Optimizer):
    """SGD with momentum, weight decay, CDR masking and RDI.

    Args:
        params: parameters or param groups, as for any torch optimizer.
        lr: learning rate (``torch.optim.SGD``'s default, 1e-3).
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
            ``"reference"`` or an ``Engine`` object (see ``cdr_fast.engines``). A name is checked
            now and resolved at the first step, for the parameters' device then (so a model built
            on ``meta`` and materialised with ``to_empty`` gets the engine of its real device).
        fused: torch's spelling: True is ``engine="auto"``, False ``"reference"`` (the default).
        exact: the exact top-k threshold. The fused engines estimate it by default (see
            ``cdr_fast.sampling`` for the bound); the reference engine is always exact.
        process_group: data-parallel training under torch.distributed (``dist.group.WORLD`` or
            another group; None: this process alone). Each step first averages the flat gradient
            across the group in one all-reduce, and the sparse AUX rows ride along
            (``cdr_fast.aux_rows``), so every rank takes the same step (the same threshold
            included) on replicated state. Use it *instead of* wrapping the model in DDP (which
            would reduce twice); docs/design.md, "Beyond one device". Every parameter that
            requires grad counts as having a gradient (zero where no rank produced one), as under
            DDP. Parameters sharded by FSDP2's ``fully_shard`` need no group (their mesh names it):
            each rank steps on its shards and the global threshold comes from a distributed radix
            select, always exact (``cdr_fast.sharded``).

    Per-group options (``GROUP_OPTIONS``): ``lr``, ``momentum``, ``weight_decay``, ``tau``,
    ``rdi_lambda``, and

    - ``score``: None (default) scores the group's ``dim() in (2, 4)`` tensors (conv and linear
      weights, as the published code), True scores all of them, False none. Scored groups share
      one ``tau``, since the threshold is global.
    - ``batch_size``: for a group holding a table with a row-sparse gradient (``AuxBias``), the
      global batch size, which bounds the rows each rank sends under torch.distributed. None:
      unknown (the rows are then gathered at their own count).

    Complex parameters step as their real pairs (``torch.view_as_real``), which is what
    ``torch.optim.SGD`` does to them; CDR scores each real number. The fused engines need
    float32 (or complex64) parameters.

    At the first step, parameters and their ``.grad`` become views into one flat buffer per group
    (``cdr_fast.flat``). After each step, ``last_threshold`` and ``last_kept_fraction`` hold 0-d
    tensors on the parameters' device (None when nothing was masked); reading them is the caller's
    sync, never the step's. The optimizer can be deep-copied, pickled and ``torch.save``-d; the
    copy rebuilds its buffers at its first step and takes the same steps.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
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
        self._engine_choice = engine_name(engine, fused)  # checked now, resolved at the first step
        if exact is not None and not isinstance(exact, bool):
            raise ValueError(f"invalid exact: {exact!r}; valid values are None, True, False")
        self._exact_choice = exact
        self.dist = Distributed.of_group(process_group) if process_group is not None else SINGLE
        self._engine: Engine | None = None
        self._engine_device: torch.device | None = None
        self._last: tuple[Tensor, Tensor, int] | None = None  # (threshold, kept count, scored count)
        self._flat: FlatState | ShardedState | None = None  # built at the first step, when the gradients are known
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, tau=tau, rdi_lambda=rdi_lambda,
                        score=None, batch_size=None)
        super().__init__(params, defaults)
        self._check_engine()

    def _check_engine(self) -> None:
        """Refuse now what the engine chosen at the first step could not do: an approximate
        threshold from an always-exact engine, tensors on a device the engine does not run on."""
        choice = self._engine_choice
        if choice == "auto":  # its engine depends on the device, and none it picks is always exact
            return
        cls = type(choice) if isinstance(choice, Engine) else engine_class(choice)
        if self._exact_choice is False and cls.always_exact:
            raise ValueError(f"exact=False (approximate threshold) needs a fused engine; the {cls.name} engine is "
                             "always exact")
        device = self._device()
        if device.type != "meta" and not isinstance(choice, Engine):
            cls.check_device(device)

    # ---------------------------------------------------------------- param groups

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group, as torch's: all or nothing. A refused group leaves no trace, and a group
        added after the first step joins at the next one (the flat buffers are rebuilt)."""
        unknown = sorted(set(param_group) - {"params", *GROUP_OPTIONS})
        if unknown:
            raise ValueError(f"unknown param-group option(s) {', '.join(map(repr, unknown))}; valid options: "
                             f"{', '.join(GROUP_OPTIONS)}")
        before = len(self.param_groups)
        super().add_param_group(param_group)  # fills the defaults, refuses duplicates (nothing added then)
        group = self.param_groups[-1]
        try:
            check_range("lr", group["lr"], 0.0)
            check_range("momentum", group["momentum"], 0.0, 1.0)
            check_range("weight_decay", group["weight_decay"], 0.0)
            check_range("tau", group["tau"], 0.0, 1.0)
            check_range("rdi_lambda", group["rdi_lambda"], 0.0)
            if group["score"] not in (None, True, False):
                raise ValueError(f"invalid score: {group['score']!r}; valid values are None, True, False")
            if group["batch_size"] is not None:
                check_positive_int("batch_size", group["batch_size"])
            for p in group["params"]:
                if p.is_complex() and is_sharded(p):
                    raise ValueError("complex parameters under FSDP2 are not supported; keep them out of fully_shard")
        except ValueError:
            del self.param_groups[before:]
            raise
        if group["rdi_lambda"] != 0:
            for p in group["params"]:
                self.state[p]["initial"] = p.detach().clone()
        if self._flat is not None:  # a group added mid-run: its parameters join the buffers
            self._flat.release()
            self._flat = None

    def set_tau(self, tau: float) -> None:
        """Give every param group CDR's rate ``tau`` (in [0, 1)), as ``--tau auto`` does once the
        noise rate is estimated."""
        tau = check_range("tau", tau, 0.0, 1.0)
        for group in self.param_groups:
            group["tau"] = tau

    @staticmethod
    def is_scored(group: dict[str, Any], p: Tensor) -> bool:
        return p.dim() in (2, 4) if group["score"] is None else group["score"]

    # ---------------------------------------------------------------- the engine

    @property
    def engine(self) -> Engine:
        """The engine that computes the steps: chosen at the first step from the parameters'
        device (asked before it, the engine for their device now)."""
        if self._engine is None or self._device() != self._engine_device:
            self._engine_device = self._device()
            self._engine = self._resolve()
        return self._engine

    def _device(self) -> torch.device:
        first = self.param_groups[0]["params"][0]
        return first.to_local().device if is_sharded(first) else first.device

    def _resolve(self) -> Engine:
        device = self._device()
        if device.type == "meta":
            raise ValueError("the parameters are on the meta device: materialise them (module.to_empty) before the "
                             "first step")
        return resolve_engine(self._engine_choice, device)

    @property
    def exact(self) -> bool:
        """Whether the threshold is exact: as asked, else the engine's default."""
        return self._exact_choice if self._exact_choice is not None else self.engine.always_exact

    # ---------------------------------------------------------------- the step

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
            self._build()
        seed = self._counter.get(STEP_KEY, 0)
        self._last = self._flat.step(self.state, exact=self._exact_now, seed=seed)
        self._counter[STEP_KEY] = seed + 1
        return loss

    def _build(self) -> None:
        """The step's buffers, at the first step (or the first after a group was added)."""
        engine = self.engine  # for the parameters' device now
        self._exact_now = self.exact
        for group in self.param_groups:
            for p in group["params"]:
                if self.is_scored(group, p) and p.grad is not None and p.grad.is_sparse:
                    raise ValueError("a scored parameter has a sparse gradient; put it in a group with score=False")
        params = [p for group in self.param_groups for p in group["params"]]
        if any(is_sharded(p) for p in params):  # FSDP2
            dist = self.dist if self.dist.enabled else Distributed.of_group(mesh_group(params))
            self._flat = ShardedState(self.param_groups, self.state, engine, self.is_scored, dist)
        else:
            self._flat = FlatState(self.param_groups, self.state, engine, self.is_scored, self.dist)

    @property
    def last_threshold(self) -> Tensor | None:
        """The last step's threshold (a 0-d tensor on the parameters' device), None if it masked
        nothing. Made when read, so a step that nobody asks pays nothing for it."""
        return self._last[0].clone() if self._last is not None else None

    @property
    def last_kept_fraction(self) -> Tensor | None:
        """The share of scored parameters the last step kept (0-d float tensor), None if unmasked."""
        return self._last[1].float() / self._last[2] if self._last is not None else None

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the gradients. Parameters in flat buffers keep their ``.grad`` as zeroed views of the
        flat gradient (whatever ``set_to_none`` says), so that backward accumulates into it in place;
        with ``set_to_none=True`` a parameter that then gets no gradient is left alone by the step,
        as in torch."""
        if isinstance(self._flat, FlatState):
            self._flat.zero_grad(set_to_none)
        else:  # before the first step, or FSDP2's shards (their .grad is FSDP's): torch's own
            super().zero_grad(set_to_none)

    # ---------------------------------------------------------------- state, copies, pickles

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if self._flat is not None:
            self._flat.adopt(self.state)

    def __getstate__(self) -> dict[str, Any]:
        # The flat buffers are rebuilt by the copy at its first step, from its own parameters.
        return {**super().__getstate__(), "_engine_choice": self._engine_choice, "_exact_choice": self._exact_choice,
                "dist": self.dist, "_engine": None, "_engine_device": None, "_flat": None, "_last": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        differentiable = "differentiable" in state.get("defaults", getattr(self, "defaults", {}))
        super().__setstate__(state)  # load_state_dict passes the state and the groups alone
        if not differentiable:  # torch adds it for its own optimizers' step decorators, which this has not
            self.defaults.pop("differentiable")
