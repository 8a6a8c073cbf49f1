"""What a finished run reports: its summary, and the detector's bookkeeping (the suspects file and
the precision and recall of the detectors against the known flips, ``cdr_fast.detect``)."""

from __future__ import annotations

import statistics
from typing import Any

from torch import nn

from ..auxiliary import AuxBias
from ..detect import aux_suspects, precision_recall, small_loss_suspects
from .config import TrainConfig
from .split import NoisySplit


def suspect_rows(aux: AuxBias, data: NoisySplit) -> list[dict[str, Any]]:
    """Every training example, most suspect first: its index in the dataset, the given label,
    the label AUX's offsets argue for, and the score (see ``cdr_fast.detect``)."""
    score, suggested = aux_suspects(aux.weight, data.train_y, aux.lam)
    order = score.argsort(descending=True).cpu()
    columns = (data.train_index[order], data.train_y.cpu()[order], suggested.cpu()[order], score.cpu()[order])
    return [{"index": int(i), "given_label": int(y), "suggested_label": int(s), "score": round(float(v), 6)}
            for i, y, s, v in zip(*(c.tolist() for c in columns))]


def detection(model: nn.Module, aux: AuxBias, data: NoisySplit, eval_batch_size: int) -> dict[str, Any]:
    """Precision and recall of AUX's suspects and of the small-loss criterion, flagging as many
    examples as the realised noise rate says are mislabelled (synthetic noise: known flips)."""
    noisy = data.train_y != data.train_clean
    flagged = int(noisy.sum().item())
    small_loss = small_loss_suspects(model, data.train_x, data.train_y, eval_batch_size)
    out = {"flagged": flagged}
    for name, score in (("aux", aux_suspects(aux.weight, data.train_y, aux.lam).score),
                        ("small_loss", small_loss.score)):
        precision, recall = precision_recall(score, noisy, flagged)
        out[f"{name}_precision"], out[f"{name}_recall"] = precision, recall
    return out


def run_summary(config: TrainConfig, history: list[dict[str, Any]], data: NoisySplit, *, model: nn.Module,
                aux: AuxBias | None, tau: float, estimated_rate: float | None, engine: str, device: str,
                world_size: int) -> dict[str, Any]:
    """The run's summary.json: test accuracy at the best validation epoch and at the last, and
    what the run was."""
    best = max(history, key=lambda s: s["val_acc"])  # first epoch reaching the best
    return {
        "method": config.method,
        "noise_type": config.noise_type,
        "noise_rate": config.noise_rate,
        "realised_noise_rate": data.realised_rate,
        "tau": tau,
        "estimated_noise_rate": estimated_rate,
        "dataset": config.dataset,
        "model": config.model,
        "epochs": config.epochs,
        "seed": config.seed,
        "engine": engine,
        "device": device,
        "world_size": world_size,
        "num_train": int(data.train_x.shape[0]),
        "num_val": int(data.val_x.shape[0]),
        "num_test": int(data.test_x.shape[0]),
        "best_val_epoch": best["epoch"],
        "best_val_acc": best["val_acc"],
        "test_acc_at_best_val": best["test_acc"],
        "test_acc_last": history[-1]["test_acc"],
        "memorised_noisy_last": history[-1]["memorised_noisy"],
        "epoch_time_s_median": statistics.median(s["epoch_time_s"] for s in history),
        "train_acc_noisy_aux_last": history[-1]["train_acc_noisy_aux"] if aux is not None else None,
        "detection": (detection(model, aux, data, config.eval_batch_size)
                      if aux is not None and data.realised_rate > 0 else None),
        "config": config.used_settings(),
    }
