"""One run's folder and everything written into it, atomically.

    config.json    the settings, written when the run starts
    metrics.csv    one row per finished epoch (rewritten from the checkpoint's history when a run
                   resumes, so it always lists the epochs the checkpoint holds)
    checkpoint.pt  everything needed to continue, after every epoch, with a checksum;
                   checkpoint.prev.pt, the one before it, is kept for a resume to fall back to
    .lock          held by the process that runs in the folder
    summary.json   written when the last epoch is done
    detection.csv  where the flips are known: each label detector's AUROC, average precision,
                   precision, recall and correction accuracy, per epoch and at the end (final)
    evidence.npz   every example's probabilities (and AUX offsets), which it was trained on, the
                   class names and file names: all the detectors and the report read; its
                   format: cdr_fast/detection/evidence.py
    evidence/epoch_NNN.npz   with keep_epoch_evidence: each epoch's probabilities
    suspects.csv   every example (the held-out ones too), most likely mislabelled first
    transition_estimated.csv   with tau "auto": the estimated noise transition matrix

``RunFolder.begin`` makes the start-or-resume decision for ``train.py``, the grid and the
benchmarks alike, with one-line errors for a path that cannot be a folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic_io import load_checkpoint, previous, save_checkpoint, write_csv_atomic, write_json_atomic
from ..detection.evidence import EVIDENCE_FILE, Evidence, save_npz_atomic

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_KEYS = {"format", "run_id", "config", "epoch", "model", "optimizer", "scheduler", "history"}
LOCK = ".lock"


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._checkpoint: dict[str, Any] | None = None
        self._lock: Any = None  # the open lock file while this process holds the folder
        self.notes: list[str] = []  # what reading the checkpoint had to work around

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def has_saved_state(self) -> bool:
        """Whether there is a checkpoint to resume from (the previous one counts)."""
        return self.has_checkpoint() or previous(self.checkpoint_path).is_file()

    def is_finished(self) -> bool:
        return (self.path / "summary.json").is_file()

    def summary(self) -> dict[str, Any]:
        return json.loads((self.path / "summary.json").read_text())

    def settings(self) -> dict[str, Any]:
        """What ``config.json`` says (empty: nothing readable yet)."""
        try:
            settings = json.loads((self.path / "config.json").read_text())
        except (OSError, ValueError):
            return {}
        return settings if isinstance(settings, dict) else {}

    def run_id(self) -> str | None:
        """The id of the run this folder holds, as its ``config.json`` names it (None: none yet)."""
        return self.settings().get("run_id")

    def _verified(self, path: Path) -> dict[str, Any]:
        """``path``'s state if it is intact (its checksum), a run's checkpoint, and this run's own."""
        state = load_checkpoint(path)
        if not isinstance(state, dict) or not CHECKPOINT_KEYS <= state.keys():
            raise ValueError(f"{path}: a readable file, but not a cdr-fast run's checkpoint")
        mine = self.run_id()
        if mine is not None and state.get("run_id") != mine:
            raise ValueError(f"{path} belongs to run {state.get('run_id')}, not to {mine}, the run of "
                             f"{self.path / 'config.json'} (copied from another run folder?)")
        return state

    def checkpoint(self) -> dict[str, Any]:
        """The saved state, read once and kept: the checkpoint if it is intact and this run's own,
        else the previous one (``notes`` says so); a ValueError naming both if neither is."""
        if self._checkpoint is None:
            prev = previous(self.checkpoint_path)
            try:
                self._checkpoint = self._verified(self.checkpoint_path)
            except ValueError as err:
                if not prev.is_file():
                    raise
                try:
                    self._checkpoint = self._verified(prev)
                except ValueError as prev_err:
                    raise ValueError(f"no usable checkpoint: {err}; and {prev_err}") from None
                self.notes.append(f"{err}; resuming from the previous checkpoint, {prev.name} (epoch "
                                  f"{self._checkpoint.get('epoch')})")
        return self._checkpoint

    def remove_stale_files(self) -> None:
        """Temporary files a killed writer left (``.NAME.tmp-PID``): only the folder's holder writes
        here, so every one not of this process is stale."""
        for tmp in self.path.glob(".*.tmp-*"):
            if tmp.name.rsplit("-", 1)[-1] != str(os.getpid()):
                try:
                    if tmp.is_dir():
                        shutil.rmtree(tmp)
                    else:
                        tmp.unlink()
                except OSError:
                    pass  # not ours to fight over: it only costs space

    def claim(self) -> None:
        """Hold the folder for this process (an advisory lock, released when the process ends, however
        it ends): a second run started into the same folder is refused, even at the same moment."""
        if self._lock is not None:
            return
        try:
            lock = open(self.path / LOCK, "a+")
        except OSError as err:
            raise ValueError(f"cannot claim the run folder {self.path}: {self.path / LOCK}: {err.strerror} (a read-only "
                             "folder? its files are untouched)") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise ValueError(f"another run is using {self.path}: wait for it, or choose another --out") from None
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def begin(self, resume: bool | None) -> bool:
        """Decide whether this run resumes (True) or starts (False), and make sure the folder exists.

        ``resume=True`` requires a checkpoint, ``False`` refuses to overwrite one, ``None`` (the
        grid's way) resumes when there is one. Raises a ValueError with a one-line message.
        """
        if resume and not self.has_saved_state():
            raise ValueError(f"nothing to resume: {self.checkpoint_path} does not exist (a run stopped before "
                             "its first epoch ended saved nothing: start it again without --resume)")
        self.make()
        self.claim()  # before looking: of two runs started at the same moment, one gets here
        self.remove_stale_files()
        found = self.has_saved_state()
        if resume is False and found:
            self.release()
            raise ValueError(f"{self.path} already holds a run; pass --resume to continue it, or choose another --out")
        return found

    def make(self) -> None:
        for parent in [self.path, *self.path.parents]:
            if parent.exists() and not parent.is_dir():
                raise ValueError(f"cannot use {self.path} as the run folder: {parent} is a file, not a folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"cannot create the run folder {self.path}: {err.strerror}") from None

    def write_config(self, settings: dict[str, Any]) -> None:
        write_json_atomic(self.path / "config.json", settings)

    def write_detection(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            write_csv_atomic(self.path / "detection.csv", list(rows))

    def write_evidence(self, evidence: Evidence) -> None:
        evidence.save(self.path / EVIDENCE_FILE)

    def write_epoch_evidence(self, epoch: int, probs, offsets) -> None:
        """One epoch's probabilities (and AUX offsets) as ``evidence/epoch_NNN.npz``."""
        (self.path / "evidence").mkdir(exist_ok=True)
        arrays = {"probs": np.asarray(probs, dtype=np.float32)}
        if offsets is not None:
            arrays["aux_offsets"] = np.asarray(offsets, dtype=np.float32)
        save_npz_atomic(self.path / "evidence" / f"epoch_{epoch:03d}.npz", arrays)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        save_checkpoint(self.checkpoint_path, state)
        self._checkpoint = None

    def write_transition(self, matrix) -> None:
        """Row i: the estimated distribution of the noisy label of class i."""
        rows = [{"class": i, **{f"p{j}": round(float(v), 6) for j, v in enumerate(row)}} for i, row in enumerate(matrix)]
        write_csv_atomic(self.path / "transition_estimated.csv", rows)

    def write_suspects(self, rows: list[dict[str, Any]]) -> None:
        write_csv_atomic(self.path / "suspects.csv", rows)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.path / "summary.json", summary)
