"""``CDRSGD``: SGD with CDR's critical-parameter masking and the RDI pull, as a torch optimizer.

One optimizer covers every method of the project:

- ``tau = 0`` and ``rdi_lambda = 0`` is exactly ``torch.optim.SGD`` (dampening 0, no Nesterov);
- ``tau > 0`` is CDR (Xia et al., ICLR 2021);
- ``rdi_lambda > 0`` adds RDI's ``rdi_lambda**2 * (w - w0)`` (Hu, Li & Yu, ICLR 2020).

The arithmetic lives in the engine that ``cdr_fast.engines`` picks; this file only gathers the
tensors, keeps the state and checks the arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from . import reference
from .engines import FusedOps, resolve_engine
from .flat import FlatGroup


def _check_range(name: str, value: Any, low: float, high: float | None = None) -> None:
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
        momentum: momentum factor (PyTorch's rule: the buffer starts as the first step's update).
        weight_decay: L2 decay, applied to every parameter, masked or not.
        tau: CDR rate in [0, 1). At each step the ``int((1 - tau) * n)`` parameters with the
            largest ``|grad * weight|`` over *all* scored tensors (one global threshold; ties keep
            more) keep their gradient, scaled by ``1 - tau``; the others move only by weight decay
            and leftover momentum. ``tau = 0`` is plain SGD.
        rdi_lambda: RDI strength; adds ``rdi_lambda**2 * (w - w0)`` to every parameter's update,
            where ``w0`` is the parameter when it joined the optimizer. It is added after masking,
            like weight decay, so it neither enters the score nor is masked.
        fused: ask for the fused engine (Triton on CUDA, compiled on CPU).
        exact: use the exact top-k threshold. The reference engine is always exact.
        engine: name an engine explicitly (see ``cdr_fast.engines.ENGINES``).

    Per-group options: ``lr``, ``momentum``, ``weight_decay``, ``tau``, ``rdi_lambda`` and
    ``score``: None (default) scores the group's ``dim() in (2, 4)`` tensors (conv and linear
    weights, as the published code), True scores all of them, False none. Groups that are scored
    must share one ``tau``, since the threshold is global.

    After each step, ``last_threshold`` and ``last_kept_fraction`` hold 0-d tensors on the
    parameters' device (None when no parameter was masked). Reading them is the caller's sync.
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
        fused: bool = False,
        exact: bool | None = None,
        engine: str | None = None,
    ) -> None:
        defaults = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, tau=tau, rdi_lambda=rdi_lambda, score=None
        )
        super().__init__(params, defaults)
        device = self.param_groups[0]["params"][0].device
        self.engine = resolve_engine(engine, fused, device)
        if exact is False and self.engine == "reference":
            raise ValueError("exact=False (approximate threshold) needs a fused engine; the reference engine is exact")
        # The fused engines estimate the threshold by default; the reference engine is exact.
        self.exact = (self.engine == "reference") if exact is None else exact
        self.last_threshold: Tensor | None = None
        self.last_kept_fraction: Tensor | None = None
        self._flat: list[FlatGroup | None] | None = None  # fused engines: built at the first step
        self._ops: FusedOps | None = None
        self._steps = 0

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _check_range("lr", group["lr"], 0.0)
        _check_range("momentum", group["momentum"], 0.0)
        _check_range("weight_decay", group["weight_decay"], 0.0)
        _check_range("tau", group["tau"], 0.0, 1.0)
        _check_range("rdi_lambda", group["rdi_lambda"], 0.0)
        if group["score"] not in (None, True, False):
            raise ValueError(f"invalid score: {group['score']!r}; valid values are None, True, False")
        if group["rdi_lambda"] != 0:
            for p in group["params"]:
                self.state[p]["initial"] = p.detach().clone()

    @staticmethod
    def _is_scored(group: dict[str, Any], p: Tensor) -> bool:
        return p.dim() in (2, 4) if group["score"] is None else group["score"]

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.engine == "reference" or not self._fused_step():
            self._reference_step()
        self._steps += 1
        return loss

    def _reference_step(self) -> None:
        # Gather every parameter with a gradient; remember where the scored ones sit.
        grads_by_group: list[list[Tensor]] = []
        params_by_group: list[list[Tensor]] = []
        scored_at: list[tuple[int, int]] = []
        tau = self._scored_tau()
        for gi, group in enumerate(self.param_groups):
            ps, gs = [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if self._is_scored(group, p):
                    if p.grad.is_sparse:
                        raise ValueError("a scored parameter has a sparse gradient; put it in a group with score=False")
                    scored_at.append((gi, len(ps)))
                ps.append(p)
                gs.append(p.grad)
            params_by_group.append(ps)
            grads_by_group.append(gs)

        self.last_threshold = self.last_kept_fraction = None
        if scored_at and tau > 0:
            scored_p = [params_by_group[gi][i] for gi, i in scored_at]
            scored_g = [grads_by_group[gi][i] for gi, i in scored_at]
            if len({t.dtype for t in scored_p} | {t.dtype for t in scored_g}) > 1:
                raise ValueError("scored parameters and their gradients must share one dtype")
            masked, self.last_threshold, self.last_kept_fraction = reference.cdr_masked_grads(scored_p, scored_g, tau)
            for (gi, i), g in zip(scored_at, masked):
                grads_by_group[gi][i] = g

        for group, ps, gs in zip(self.param_groups, params_by_group, grads_by_group):
            if not ps:
                continue
            states = [self.state[p] for p in ps]
            if group["rdi_lambda"] != 0:
                for p, st in zip(ps, states):
                    st.setdefault("initial", p.detach().clone())
            buffers = reference.sgd_update_(
                ps,
                gs,
                [st.get("momentum_buffer") for st in states],
                [st.get("initial") for st in states],
                lr=group["lr"],
                momentum=group["momentum"],
                weight_decay=group["weight_decay"],
                rdi_lambda=group["rdi_lambda"],
            )
            for st, buf in zip(states, buffers):
                if buf is not None:
                    st["momentum_buffer"] = buf

    # ---------------------------------------------------------------- fused engines

    def _scored_tau(self) -> float:
        taus = {g["tau"] for g in self.param_groups if any(self._is_scored(g, p) for p in g["params"])}
        if len(taus) > 1:
            raise ValueError(f"scored param groups must share one tau (the threshold is global); got {sorted(taus)}")
        return taus.pop() if taus else 0.0

    def _build_flat(self) -> None:
        """Move every dense parameter into its group's flat buffers (sparse-gradient ones stay out)."""
        flats: list[FlatGroup | None] = []
        scored_groups = 0
        for group in self.param_groups:
            dense = [p for p in group["params"] if not (p.grad is not None and p.grad.is_sparse)]
            if not dense:
                flats.append(None)
                continue
            bad = [p for p in dense if p.dtype != torch.float32 or p.device != dense[0].device]
            if bad:
                raise ValueError(
                    f"the {self.engine} engine needs float32 parameters on one device; got {bad[0].dtype} on "
                    f"{bad[0].device}; use engine='reference'"
                )
            flat = FlatGroup(dense, [self._is_scored(group, p) for p in dense])
            scored_groups += flat.n_scored > 0
            flats.append(flat)
        if scored_groups > 1:
            raise ValueError(f"the {self.engine} engine needs all scored parameters in one param group; "
                             "use engine='reference' for several")
        self._flat = flats
        self._outside = [[p for p in g["params"] if f is None or not f.holds(p)] for g, f in zip(self.param_groups, flats)]
        n_scored = max((f.n_scored for f in flats if f is not None), default=0)
        self._ops = FusedOps(self.engine, self.param_groups[0]["params"][0].device, n_scored, self.exact)
        self._adopt_state()

    def _adopt_state(self) -> None:
        """Copy per-parameter state into the flat buffers and make the state entries views of them."""
        for group, flat in zip(self.param_groups, self._flat):
            if flat is None:
                continue
            if group["rdi_lambda"] != 0 and flat.initial is None:
                flat.initial = flat.weights.clone()
            for p in flat.params:
                st = self.state[p]
                for key, buffer in (("momentum_buffer", flat.momentum), ("initial", flat.initial)):
                    if buffer is None:
                        continue
                    view = flat.view(buffer, p)
                    if key in st and st[key].data_ptr() != view.data_ptr():
                        view.copy_(st[key])
                    if key in st or (key == "momentum_buffer" and group["momentum"] != 0):
                        st[key] = view

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if self._flat is not None:
            self._adopt_state()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the gradients. Parameters in flat buffers keep their ``.grad`` as zeroed views of the
        flat gradient (whatever ``set_to_none`` says), so that backward accumulates into it in place."""
        if self._flat is None:
            return super().zero_grad(set_to_none)
        for flat, outside in zip(self._flat, self._outside):
            if flat is not None:
                flat.zero_grads()
            for p in outside:
                p.grad = None

    def _fused_step(self) -> bool:
        """One fused step; False (nothing done) if some parameter has no gradient this step."""
        if self._flat is None:
            self._build_flat()
        complete = [flat.sync_grads() for flat in self._flat if flat is not None]
        if not all(complete):
            return False  # torch skips parameters without a gradient: the reference engine does too
        ops = self._ops
        self.last_threshold = self.last_kept_fraction = None
        for group, flat, outside in zip(self.param_groups, self._flat, self._outside):
            lr, rdi, tau = group["lr"], group["rdi_lambda"], group["tau"]
            if flat is not None:
                mask = flat.n_scored > 0 and tau > 0  # one group at most holds scored parameters
                if mask:
                    n = flat.n_scored
                    ops.kept.zero_()
                    ops.threshold(flat.weights[:n], flat.grads[:n], reference.keep_count(tau, n), seed=self._steps)
                ops.update(flat.weights, flat.grads, flat.momentum, flat.initial if rdi != 0 else flat.weights,
                           n_scored=flat.n_scored, lr=lr, momentum=group["momentum"],
                           weight_decay=group["weight_decay"], rdi_coef=rdi * rdi, clip=1.0 - tau if mask else 1.0,
                           mask=mask)
                if mask:
                    self.last_threshold = ops.thr.clone()
                    self.last_kept_fraction = ops.kept.float() / n
            for p in outside:
                self._sparse_update(group, p)
        return True

    def _sparse_update(self, group: dict[str, Any], p: Tensor) -> None:
        """A parameter outside the flat buffers (the AUX table): row-sparse SGD, O(batch x classes)."""
        g = p.grad
        if g is None:
            return
        plain = group["momentum"] == 0 and group["weight_decay"] == 0 and group["rdi_lambda"] == 0
        if g.is_sparse and plain:
            self._ops.scatter_rows(p.data, g._indices()[0], g._values(), -group["lr"])
            return
        st = self.state[p]
        (buf,) = reference.sgd_update_([p], [g], [st.get("momentum_buffer")], [st.get("initial")],
                                       lr=group["lr"], momentum=group["momentum"],
                                       weight_decay=group["weight_decay"], rdi_lambda=group["rdi_lambda"])
        if buf is not None:
            st["momentum_buffer"] = buf
