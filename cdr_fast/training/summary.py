"""What a finished run reports in ``summary.json``: test accuracy at the best validation epoch and
at the last, how the label detectors fared at the end (where the flips are known), and what the
run was."""

from __future__ import annotations

import statistics
from typing import Any

from ..auxiliary import AuxBias
from ..detection import BEST
from .config import TrainConfig
from .split import NoisySplit


def detection_summary(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The final rows, as summary.json keeps them: per detector, its measures."""
    final = [r for r in rows if r["epoch"] == "final"]
    if not final:
        return None
    measures = ("auroc", "average_precision", "precision", "recall", "correction_accuracy")
    return {"flagged": final[0]["flagged"], "best": BEST,
            **{r["detector"]: {k: r[k] for k in measures} for r in final}}


def run_summary(config: TrainConfig, history: list[dict[str, Any]], data: NoisySplit, *,
                detection: list[dict[str, Any]] | None, aux: AuxBias | None, tau: float,
                estimated_rate: float | None, engine: str, device: str, world_size: int,
                model: str | None = None) -> dict[str, Any]:
    """The run's summary.json: test accuracy at the best validation epoch and at the last, and
    what the run was."""
    validated = data.val_x.shape[0] > 0
    # the first epoch reaching the best validation accuracy; with no validation split, the last
    best = max(history, key=lambda s: s["val_acc"]) if validated else history[-1]
    return {
        "method": config.method,
        "noise_type": config.noise_type,
        "noise_rate": config.noise_rate,
        "realised_noise_rate": data.realised_rate,
        "tau": tau,
        "estimated_noise_rate": estimated_rate,
        "dataset": config.dataset,
        "model": model or config.model,  # the model built (config.model None: chosen by the data)
        "epochs": config.epochs,
        "seed": config.seed,
        "engine": engine,
        "device": device,
        "world_size": world_size,
        "num_train": int(data.train_x.shape[0]),
        "num_val": int(data.val_x.shape[0]),
        "num_test": int(data.test_x.shape[0]),
        "canaries": int(data.canaries.numel()),  # planted flips in the training split (never judged)
        "reported_epoch": "best validation accuracy" if validated else "last (no validation split)",
        "best_val_epoch": best["epoch"],
        "best_val_acc": best["val_acc"],
        "test_acc_at_best_val": best["test_acc"],
        "test_acc_last": history[-1]["test_acc"],
        "memorised_noisy_last": history[-1]["memorised_noisy"],
        "epoch_time_s_median": statistics.median(s["epoch_time_s"] for s in history),
        "train_acc_noisy_aux_last": history[-1]["train_acc_noisy_aux"] if aux is not None else None,
        "detection": detection_summary(detection or []),
        "config": config.used_settings(),
    }
