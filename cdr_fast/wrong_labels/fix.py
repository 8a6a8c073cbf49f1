"""A cleaned copy of a dataset's training labels, in the input's own format, ready to train on.

``relabel`` gives a flagged example its suggested label only where the evidence names that class
with confidence (``cdr_fast.detection.count.relabel_confidently``); the other flagged examples are
marked for review and keep their label. ``drop`` leaves every flagged example out. Every example
is scored, the validation split's too, so a flagged held-out example is fixed as well.

- a folder dataset: a new folder with the same ``train/<class>/`` and ``test/<class>/`` tree, each
  image hard-linked (copied where links are impossible) into its cleaned class folder;
- an npz dataset: a new npz with the same arrays, ``train_labels`` cleaned (or the dropped rows
  removed from every per-example training array);
- a built-in dataset (synthetic noise): ``cleaned_labels.npz`` with ``labels``, the cleaned
  label of every example of the dataset's training set, and ``keep``, false for a dropped one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..checks import check_choice
from ..detection.evidence import save_npz_atomic

FIXES = ("relabel", "drop")


def fix_actions(flagged: np.ndarray, sure: np.ndarray, fix: str) -> np.ndarray:
    """What the cleaned copy does with each scored example: "" (not flagged), "relabel" (flagged,
    and the evidence is sure of the suggestion), "review" (flagged, kept as given) or "drop"."""
    check_choice("fix", fix, FIXES)
    actions = np.full(len(flagged), "", dtype=object)
    if fix == "relabel":
        actions[flagged & sure] = "relabel"
        actions[flagged & ~sure] = "review"
    else:
        actions[flagged] = "drop"
    return actions


def cleaned_labels(labels: np.ndarray, index: np.ndarray, actions: np.ndarray, suggested: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The dataset's whole training label array after the fix, and its keep mask. ``index`` maps
    the scored examples into it; ``actions`` (``fix_actions``) and ``suggested`` are per scored example."""
    out, keep = np.asarray(labels).copy(), np.ones(len(labels), dtype=bool)
    index = np.asarray(index)
    relabel = actions == "relabel"
    out[index[relabel]] = np.asarray(suggested)[relabel]
    keep[index[actions == "drop"]] = False
    return out, keep


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed: copy
        shutil.copy2(source, target)


def clean_folder(root: Path, out: Path, train_files: list[str], class_names: list[str], labels: np.ndarray,
                 keep: np.ndarray, progress: bool = True) -> None:
    """``out``: ``root``'s tree with each training image in its cleaned class folder (dropped ones
    left out) and the test images as they are. An earlier copy at ``out`` is replaced once the new
    one is complete."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    jobs = [(root / f, tmp / "train" / class_names[int(y)] / Path(f).name)
            for f, y, k in zip(train_files, labels, keep) if k]
    jobs += [(p, tmp / p.relative_to(root)) for p in sorted((root / "test").rglob("*")) if p.is_file()]
    for name in class_names:  # every class keeps its folder, even if emptied
        (tmp / "train" / name).mkdir(parents=True, exist_ok=True)
    try:
        for source, target in tqdm(jobs, desc="cleaned copy", unit="file", disable=not progress, leave=False):
            if target.exists():  # two files of one name moved into one class folder
                target = target.with_name(f"{Path(source).parent.name}__{target.name}")
            _link(source, target)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def clean_npz(path: Path, out: Path, labels: np.ndarray, keep: np.ndarray) -> None:
    """``out``: the npz at ``path`` with ``train_labels`` cleaned and dropped rows removed."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    n = len(arrays["train_labels"])
    arrays["train_labels"] = labels.astype(arrays["train_labels"].dtype)
    for key in ("train_images", "train_labels", "train_clean_labels"):
        if key in arrays and len(arrays[key]) == n:
            arrays[key] = arrays[key][keep]
    save_npz_atomic(out, arrays)


def clean_builtin(out: Path, labels: np.ndarray, keep: np.ndarray) -> None:
    save_npz_atomic(out, {"labels": labels.astype(np.int64), "keep": keep})
