"""Out-of-sample probabilities by K-fold cross-validation, and what they change for the detectors.

Confident learning's paper scores each example with a network that never trained on it (K
trainings, each on K-1 folds). Our runs give every detector in-sample readings from one training.
This measures the difference on chosen benchmark cells: for each, K networks are trained with the
cell's own settings on the other folds of its noisy training split, and each predicts its held-out
fold (eval mode, after the last epoch). K times a run's cost, in (cell, fold) jobs on worker
processes.

    kfold.csv   per cell and detector: the in-sample reading (the trained network's final
                probabilities in the cell's evidence.npz) against the K-fold one, in AUROC, average
                precision, precision, recall and correction accuracy. Every detector of the registry that
                reads probabilities reads the one set (as its final, recent and mean reading).
"""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic_io import write_csv_atomic
from ..detection import EVIDENCE_FILE, Evidence, detection_rows, run_detectors
from ..detection.scores import margin
from ..training import Trainer, TrainConfig, prepare_data
from ..trained import predict_probabilities
from ..training.split import NoisySplit


def fold_of(n: int, folds: int, seed: int) -> np.ndarray:
    """Each training example's fold: a seeded balanced assignment."""
    return np.random.default_rng(seed + 104_729).permutation(np.arange(n) % folds)


def _subset(data: NoisySplit, keep: torch.Tensor) -> NoisySplit:
    """The training split's ``keep`` rows as a split of their own (rows renumbered: the fold's
    trainer writes nothing, so no row needs its dataset index)."""
    n, n_val = int(keep.sum()), data.val_index.numel()
    return dataclasses.replace(data, train_x=data.train_x[keep], train_y=data.train_y[keep],
                               train_index=torch.arange(n), val_index=torch.arange(n, n + n_val),
                               train_clean=data.train_clean[keep] if data.train_clean is not None else None)


def one_reading(probs: np.ndarray, labels: np.ndarray) -> Evidence:
    """Evidence whose every reading is ``probs``: each detector then reads the same probabilities."""
    return Evidence(index=np.arange(labels.size), given_label=labels, probs=probs, probs_mean=probs,
                    margin_mean=margin(probs, labels), probs_ema=probs, epochs=1)


def _train_fold(config: TrainConfig, folds: int, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """Worker: train on every fold but ``fold``; the held-out examples' positions and probabilities."""
    torch.set_num_threads(1)
    data = prepare_data(config, torch.device("cpu"))
    held_out = fold_of(data.train_y.numel(), folds, config.seed) == fold
    trainer = Trainer(config, None, progress=False, log=lambda line: None,
                      data=_subset(data, torch.from_numpy(~held_out)))
    trainer.fit()
    return np.flatnonzero(held_out), predict_probabilities(trainer.model, data.train_x[torch.from_numpy(held_out)],
                                                           config.eval_batch_size)


def kfold_report(run_dirs: list[Path], out: Path, folds: int = 2, workers: int = 2, log=print) -> list[dict[str, Any]]:
    """K-fold probabilities for each finished benchmark run in ``run_dirs``; writes ``out/kfold.csv``."""
    configs = [TrainConfig(**json.loads((d / "summary.json").read_text())["config"]) for d in run_dirs]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        jobs = {(i, k): pool.submit(_train_fold, c, folds, k) for i, c in enumerate(configs) for k in range(folds)}
        rows = []
        for i, (run, config) in enumerate(zip(run_dirs, configs)):
            with np.load(run / EVIDENCE_FILE) as f:  # the trained examples' rows, in the training split's order
                trained = f["trained"]
                y, clean, in_sample = f["given_label"][trained], f["clean_label"][trained], f["probs"][trained]
            in_sample = in_sample.astype(np.float64)
            probs = np.zeros_like(in_sample)
            for k in range(folds):
                where, p = jobs[(i, k)].result()
                probs[where] = p
            log(f"{run.name}: {folds} folds done")
            key = dict(dataset=config.dataset, noise_type=config.noise_type, noise_rate=config.noise_rate,
                       seed=config.seed)
            for reading, p in (("in-sample", in_sample), (f"{folds}-fold", probs)):
                rows += detection_rows(run_detectors(one_reading(p, y)), y, clean, float((y != clean).mean()), **key, probabilities=reading)
    write_csv_atomic(out / "kfold.csv", rows)
    return rows
