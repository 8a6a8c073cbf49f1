"""The wrong-label report of a finished run: what ``find_labels.py`` writes into the run folder.

    wrong_labels.csv   the flagged examples (the top n times the estimated noise rate), most
                       suspect first: rank, index in the dataset's training set, file (a folder
                       dataset), given and suggested label and class name, score, and the clean
                       label where known
    wrong_labels.png   the top suspects' images, captioned given -> suggested
    cleaned/ | cleaned.npz | cleaned_labels.npz   the cleaned labels in the input's format
                       (``cdr_fast.detection.fix``)

The ranking is the best detector's (``cdr_fast.detection.report.BEST``), read from the run's
``evidence.npz``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from ..atomic_io import write_csv_atomic
from ..checks import check_choice, check_positive_int, check_range
from ..data import dataset_spec, load_dataset
from ..detection import BEST, EVIDENCE_FILE, evidence_detectors, load_evidence
from ..detection.fix import FIXES, clean_builtin, clean_folder, clean_npz, cleaned_labels
from ..detection.gallery import suspects_figure
from ..detection.metrics import correction_accuracy, precision_recall
from ..detection.report import rank_suspects
from .config import TrainConfig
from .split import noisy_labels


@dataclass
class LabelReport:
    flagged: int  # examples flagged
    scored: int  # training examples scored
    rate: float  # the share flagged: the estimated noise rate, or the one asked for
    files: list[Path]  # what was written
    precision: float | None = None  # against the clean labels, where known
    correction_accuracy: float | None = None


def _class_name(names: list[str] | None, label: int) -> str:
    return names[label] if names is not None else str(label)


def label_report(run_dir: str | Path, top_images: int = 48, fix: str = "relabel", progress: bool = True,
                 flag_rate: float | None = None) -> LabelReport:
    """Write the report of the finished run in ``run_dir``, flagging ``flag_rate`` of the scored
    examples (None: the run's estimated noise rate); ValueError (one line) if it cannot."""
    run_dir = Path(run_dir)
    check_choice("fix", fix, FIXES)
    check_positive_int("top images", top_images)
    if flag_rate is not None:
        check_range("flag rate", flag_rate, 0.0, 1.0, closed=True)
    if not (run_dir / "summary.json").is_file() or not (run_dir / EVIDENCE_FILE).is_file():
        raise ValueError(f"{run_dir}: no finished run with its evidence ({EVIDENCE_FILE}); train it first")
    config = TrainConfig(**json.loads((run_dir / "summary.json").read_text())["config"])
    e = load_evidence(run_dir)
    data = load_dataset(config.dataset, config.data_dir)
    rate = e.estimated_noise_rate if flag_rate is None else flag_rate
    ranking = rank_suspects(evidence_detectors(e)[BEST], rate)
    score, suggested, flagged, flagged_n = ranking.score, ranking.suggested, ranking.flagged, ranking.count
    order = ranking.order[:flagged_n]
    names = data.class_names

    rows: list[dict[str, Any]] = []
    for rank, i in enumerate(order, 1):
        index, given, suggestion = int(e.index[i]), int(e.given_label[i]), int(suggested[i])
        row: dict[str, Any] = {"rank": rank, "index": index}
        if data.train_files is not None:
            row["file"] = data.train_files[index]
        row.update(given_label=given, given_class=_class_name(names, given), suggested_label=suggestion,
                   suggested_class=_class_name(names, suggestion), score=round(float(score[i]), 6))
        if e.clean_label is not None:
            row["clean_label"] = int(e.clean_label[i])
        rows.append(row)
    files = [run_dir / "wrong_labels.csv", run_dir / "wrong_labels.png"]
    write_csv_atomic(files[0], rows)

    shown = order[:top_images]
    captions = [f"#{k + 1} {_class_name(names, int(e.given_label[i]))} → "
                f"{_class_name(names, int(suggested[i]))}" for k, i in enumerate(shown)]
    suspects_figure(data.train_images[e.index[shown]], captions, files[1],
                    f"{len(shown)} most suspect of {flagged_n} flagged ({config.dataset}, {e.given_label.size} "
                    "training examples scored): given → suggested")

    labels, keep = cleaned_labels(noisy_labels(config, data).numpy(), e.index, flagged, suggested, fix)
    if config.dataset == "folder":
        files.append(run_dir / "cleaned")
        clean_folder(Path(config.data_dir), files[-1], data.train_files, names, labels, keep, progress)
    elif config.dataset == "npz":
        files.append(run_dir / "cleaned.npz")
        clean_npz(Path(config.data_dir), files[-1], labels, keep)
    else:
        assert not dataset_spec(config.dataset).user_data
        files.append(run_dir / "cleaned_labels.npz")
        clean_builtin(files[-1], labels, keep)

    report = LabelReport(flagged_n, score.size, rate, files)
    if e.clean_label is not None:
        truly = e.given_label != e.clean_label
        report.precision = precision_recall(score, truly, flagged_n)[0]
        report.correction_accuracy = correction_accuracy(flagged, suggested, e.given_label, e.clean_label)
    return report
