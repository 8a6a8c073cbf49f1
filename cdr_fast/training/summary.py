"""What a finished run reports: its summary, its evidence about the labels, and how the label
detectors fared (``cdr_fast.detection``; per epoch and at the end, where the flips are known)."""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..auxiliary import AuxBias
from ..detection import BEST, Evidence, EvidenceAccumulator, Suspects, confident_learning, detection_rows, run_detectors
from ..detection.report import rank_suspects
from .config import TrainConfig
from .split import NoisySplit


def rate_to_flag(rate: float, probs: np.ndarray, labels: np.ndarray) -> float:
    """The share to flag: ``rate`` where the run knows one (``Trainer.flag_rate``), else confident
    learning's estimate from these probabilities."""
    return rate if math.isfinite(rate) else confident_learning(probs, labels).noise_rate


def epoch_detection(epoch: int, probs: Tensor, offsets: Tensor | None, evidence: EvidenceAccumulator,
                    data: NoisySplit, rate: float) -> list[dict[str, Any]]:
    """The detectors on this epoch's evidence, judged against the known flips (none: no rows)."""
    if data.train_clean is None:
        return []
    labels, p = data.train_y.cpu().numpy(), probs.cpu().numpy()
    suspects = run_detectors(labels, p, *evidence.means(), offsets.cpu().numpy() if offsets is not None else None)
    return detection_rows(suspects, labels, data.train_clean.cpu().numpy(), rate_to_flag(rate, p, labels), epoch=epoch)


@torch.no_grad()
def eval_probabilities(model: nn.Module, images: Tensor, batch_size: int) -> np.ndarray:
    model.eval()
    return torch.cat([torch.softmax(model(images[i:i + batch_size]).float(), 1)
                      for i in range(0, images.shape[0], batch_size)]).cpu().numpy()


def final_evidence(model: nn.Module, aux: AuxBias | None, evidence: EvidenceAccumulator, data: NoisySplit,
                   rate: float, eval_batch_size: int) -> Evidence:
    """The run's ``evidence.npz``: the accumulated means plus the trained network's probabilities."""
    probs = eval_probabilities(model, data.train_x, eval_batch_size)
    labels = data.train_y.cpu().numpy()
    probs_mean, margin_mean, probs_ema = evidence.means()
    return Evidence(index=data.train_index.cpu().numpy(), given_label=labels, probs=probs, probs_mean=probs_mean,
                    margin_mean=margin_mean, probs_ema=probs_ema, epochs=evidence.epochs,
                    clean_label=data.train_clean.cpu().numpy() if data.train_clean is not None else None,
                    aux_offsets=aux.offsets().cpu().numpy() if aux is not None else None,
                    estimated_noise_rate=rate_to_flag(rate, probs, labels))


def final_detection(evidence: Evidence, suspects: dict[str, Suspects]) -> list[dict[str, Any]]:
    """The detectors on the final evidence (``evidence_detectors``; epoch ``final``), where the
    flips are known."""
    e = evidence
    if e.clean_label is None:
        return []
    return detection_rows(suspects, e.given_label, e.clean_label, e.estimated_noise_rate, epoch="final")


def suspect_rows(evidence: Evidence, suspects: dict[str, Suspects]) -> list[dict[str, Any]]:
    """Every training example, most suspect first by the best detector: its index in the dataset,
    the given label, the suggested one, the score, and whether it is among the flagged (the top
    n times the estimated noise rate)."""
    e, r = evidence, rank_suspects(suspects[BEST], evidence.estimated_noise_rate)
    return [{"index": int(e.index[i]), "given_label": int(e.given_label[i]), "suggested_label": int(r.suggested[i]),
             "score": round(float(r.score[i]), 6), "flagged": int(r.flagged[i])} for i in r.order]


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
                estimated_rate: float | None, engine: str, device: str, world_size: int) -> dict[str, Any]:
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
        "detection": detection_summary(detection or []),
        "config": config.used_settings(),
    }
