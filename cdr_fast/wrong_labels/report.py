"""What ``find_labels.py`` writes into a finished run's folder, from what the run kept there.

    wrong_labels.csv   the flagged examples (the top n times the flag rate), most suspect first:
                       rank, index in the dataset's training set, file (a folder dataset), split
                       (trained on, or held out), given and suggested label and class name,
                       score, action (relabel, review or drop: ``fix``), and the clean label
                       where known
    wrong_labels.png   the top suspects' images, captioned given -> suggested (images only)
    cleaned/ | cleaned.npz | cleaned_labels.npz   the cleaned labels in the input's format
                       (``fix``)

The ranking is the best detector's (``cdr_fast.detection.BEST``), on the run's ``evidence.npz``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic_io import write_csv_atomic
from ..checks import check_choice, check_positive_int, check_range
from ..data import dataset_spec
from ..detection import BEST, EVIDENCE_FILE, get_detector, load_evidence, rank_suspects
from ..detection.metrics import correction_accuracy
from ..detection.count import relabel_confidently
from .fix import FIXES, clean_builtin, clean_folder, clean_npz, cleaned_labels, fix_actions
from .gallery import suspects_figure
from .images import example_images


@dataclass
class LabelReport:
    flagged: int  # examples flagged
    relabelled: int  # of them, relabelled in the cleaned copy (the rest: for review, or dropped)
    scored: int  # examples judged (the whole training set, trained on and held out, but the canaries)
    rate: float  # the share flagged: the run's flag rate, or the one asked for
    files: list[Path]  # what was written
    canaries: int = 0  # planted flips: the count's reference, never flagged (their labels are kept)
    precision: float | None = None  # against the clean labels, where known
    correction_accuracy: float | None = None


def run_settings(run_dir: Path) -> dict[str, Any]:
    """The settings the run wrote into ``config.json`` when it started."""
    try:
        return json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{run_dir / 'config.json'}: cannot read the run's settings ({err})") from None


def label_report(run_dir: str | Path, top_images: int = 48, fix: str = "relabel", progress: bool = True,
                 flag_rate: float | None = None, detector: str = BEST) -> LabelReport:
    """Write the report of the finished run in ``run_dir``, flagging ``flag_rate`` of the scored
    examples (None: the run's flag rate) as ranked by ``detector``; ValueError (one line) if it cannot."""
    run_dir = Path(run_dir)
    check_choice("fix", fix, FIXES)
    check_positive_int("top images", top_images)
    ranker = get_detector(detector)
    if flag_rate is not None:
        check_range("flag rate", flag_rate, 0.0, 1.0, closed=True)
    if not (run_dir / "summary.json").is_file() or not (run_dir / EVIDENCE_FILE).is_file():
        raise ValueError(f"{run_dir}: no finished run with its evidence ({EVIDENCE_FILE}); train it first")
    settings = run_settings(run_dir)
    e = load_evidence(run_dir)
    if not ranker.applies_to(e):
        raise ValueError(f"detector {detector!r} reads {', '.join(ranker.reads)}, which this run's evidence lacks")
    rate = e.flag_rate if flag_rate is None else flag_rate
    ranking = rank_suspects(ranker.suspects(e), rate, e.judged)
    order = ranking.order[:ranking.count]
    actions = fix_actions(ranking.flagged, relabel_confidently(e, ranking.suggested), fix)

    rows: list[dict[str, Any]] = []
    for rank, i in enumerate(order, 1):
        given, suggestion = int(e.given_label[i]), int(ranking.suggested[i])
        row: dict[str, Any] = {"rank": rank, "index": int(e.index[i])}
        if e.files is not None:
            row["file"] = e.files[i]
        row.update(split="train" if e.trained[i] else "held_out", given_label=given, given_class=e.class_name(given),
                   suggested_label=suggestion, suggested_class=e.class_name(suggestion),
                   score=round(float(ranking.score[i]), 6), action=actions[i])
        if e.clean_label is not None:
            row["clean_label"] = int(e.clean_label[i])
        rows.append(row)
    files = [run_dir / "wrong_labels.csv"]
    write_csv_atomic(files[0], rows)

    dataset, data_dir = settings["dataset"], settings.get("data_dir")
    shown = order[:top_images]
    images = example_images(dataset, data_dir, e.index[shown], e.files)
    if images.dim() == 4:  # feature vectors have no picture
        files.append(run_dir / "wrong_labels.png")
        captions = [f"#{k + 1} {e.class_name(int(e.given_label[i]))} → {e.class_name(int(ranking.suggested[i]))}"
                    for k, i in enumerate(shown)]
        suspects_figure(images, captions, files[-1], f"{len(shown)} most suspect of {ranking.count} flagged "
                        f"({dataset}, {int(e.judged.sum())} examples judged): given → suggested")

    # The evidence covers the dataset's whole training set in its order: its labels are the given ones.
    labels, keep = cleaned_labels(e.given_label, e.index, actions, ranking.suggested)
    if dataset == "folder":
        files.append(run_dir / "cleaned")
        clean_folder(Path(data_dir), files[-1], e.files, e.class_names, labels, keep, progress)
    elif dataset == "npz":
        files.append(run_dir / "cleaned.npz")
        clean_npz(Path(data_dir), files[-1], labels, keep)
    else:
        assert not dataset_spec(dataset).user_data
        files.append(run_dir / "cleaned_labels.npz")
        clean_builtin(files[-1], labels, keep)

    report = LabelReport(ranking.count, int((actions == "relabel").sum()), int(e.judged.sum()), rate, files,
                         canaries=int(e.canary.sum()))
    if e.clean_label is not None:
        truly = (e.given_label != e.clean_label) & e.judged
        report.precision = float((ranking.flagged & truly).sum() / ranking.count) if ranking.count else float("nan")
        report.correction_accuracy = correction_accuracy(ranking.flagged, ranking.suggested, e.given_label,
                                                         e.clean_label)
    return report
