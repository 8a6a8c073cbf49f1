"""``tau="auto"``: before the first epoch, estimate the noise rate and make it CDR's tau
(docs/design.md, "Unknown noise rates"): a warm-up whose labels carry 5% canaries (planted flips),
counted as in ``cdr_fast.detection.count``. The estimate travels in the checkpoint, so a resumed
run does not estimate again."""

from __future__ import annotations

from typing import Any

import torch

from ..detection.canaries import plant_canaries
from ..detection.count import MIN_CANARIES
from ..estimate import WARMUP_CANARIES, NoiseEstimate, estimate_noise, estimate_with_canaries, warm_up_probabilities
from .advice import estimate_warning, fitted_warmup, warmup_warning
from .observers import Observer


class TauEstimate(Observer):
    name = "noise_estimate"

    def __init__(self) -> None:
        self.estimate: NoiseEstimate | None = None
        self.canaries = 0  # planted in the warm-up's labels

    def on_run_start(self, run) -> None:
        if not run.config.estimates_tau or self.estimate is not None:
            return
        n, batch = run.data.train_x.shape[0], run.config.batch_size
        steps, cut = fitted_warmup(run.config.tau_warmup_steps, batch, n)
        run.warn(cut or warmup_warning(steps, batch, n))
        estimate = self.estimate_noise(run, steps)
        against = (f", against {self.canaries} canaries planted in its labels" if self.canaries else
                   " (anchor points: too few examples for canaries)")
        run.log(f"estimated noise rate {estimate.rate:.3f} after {steps} warm-up steps{against}: "
                f"tau = {run.optimizer.param_groups[0]['tau']:.3f}")
        run.warn(estimate_warning(estimate.rate, steps, batch, n))
        if run.folder is not None:
            run.folder.write_transition(estimate.transition)

    def estimate_noise(self, run, steps: int) -> NoiseEstimate:
        """Warm a fresh network up on the noisy labels, estimate the noise rate from its
        probabilities (``cdr_fast.estimate``) and make it CDR's tau. The main network and its
        data order are untouched: the warm-up uses a model and a generator of its own."""
        cfg, d = run.config, run.data
        torch.manual_seed(cfg.seed + 1)
        warm = run.new_model()
        # The warm-up's own canaries (the main run's labels are untouched), its wrong labels of reference;
        # on a set too small for MIN_CANARIES of them, none, and the anchors alone. Drawn among the
        # examples the run did not plant (--canaries): the run's own stay wrong labels to count.
        n = d.train_y.numel()
        share = WARMUP_CANARIES if round(WARMUP_CANARIES * n) >= MIN_CANARIES else 0.0
        rows = torch.nonzero(~torch.isin(d.train_index, d.canaries)).flatten()
        planted, canaries = plant_canaries(d.train_y.cpu(), rows, share * n / max(rows.numel(), 1), d.num_classes,
                                           cfg.seed)
        planted = planted.to(d.train_y.device)
        self.canaries = canaries.numel()
        probs = warm_up_probabilities(warm, d.train_x, planted, steps=steps, batch_size=cfg.batch_size, lr=cfg.lr,
                                      momentum=cfg.momentum, weight_decay=cfg.weight_decay, seed=cfg.seed,
                                      eval_batch_size=cfg.eval_batch_size)
        estimate = (estimate_with_canaries(probs, planted, canaries, share) if share else
                    estimate_noise(probs, planted))
        # Every rank warmed up alike; on a GPU rounding may still differ, so rank 0's estimate rules.
        rate = run.dist.broadcast_(torch.tensor([estimate.rate], dtype=torch.float64, device=run.device))
        matrix = run.dist.broadcast_(estimate.transition.to(run.device))
        self.estimate = NoiseEstimate(float(rate.item()), matrix.cpu())
        run.optimizer.set_tau(min(self.estimate.rate, 0.99))  # tau must stay below 1
        return self.estimate

    def state_dict(self) -> Any:
        return self.estimate._asdict() if self.estimate is not None else None

    def load_state_dict(self, state: Any) -> None:  # the optimizer's state already holds its tau
        self.estimate = NoiseEstimate(**state) if state is not None else None
