"""How the label detectors fare during a run, where the flips are known (synthetic noise, or an
npz's clean labels): ``detection.csv``, per epoch and at the end; and at the end, for every run,
``suspects.csv``, every example ranked by the best detector (``cdr_fast.detection.BEST``)."""

from __future__ import annotations

from typing import Any

from ..detection import BEST, Suspects, detection_rows, rank_suspects, run_detectors
from ..detection.evidence import Evidence
from .evidence_keeper import EvidenceKeeper, judging_rate
from .observers import Observer


def suspect_rows(evidence: Evidence, best: Suspects) -> list[dict[str, Any]]:
    """Every judged example (canaries are not), most suspect first: its index in the dataset (and file, for a folder
    dataset), whether it was trained on or held out, the given and suggested label and class,
    the score, and whether it is among the flagged (the top n times the flag rate)."""
    e, r = evidence, rank_suspects(best, evidence.flag_rate, evidence.judged)
    rows = []
    for i in r.order:
        row: dict[str, Any] = {"index": int(e.index[i])}
        if e.files is not None:
            row["file"] = e.files[i]
        given, suggested = int(e.given_label[i]), int(r.suggested[i])
        row.update(split="train" if e.trained[i] else "held_out", given_label=given,
                   given_class=e.class_name(given), suggested_label=suggested, suggested_class=e.class_name(suggested),
                   score=round(float(r.score[i]), 6), flagged=int(r.flagged[i]))
        rows.append(row)
    return rows


class DetectionLog(Observer):
    """Each epoch (where the flips are known), every detector on the evidence so far; at the end,
    on the final evidence, and ``suspects.csv``. The rows travel in the checkpoint."""

    name = "detection_history"

    def __init__(self, keeper: EvidenceKeeper) -> None:
        self.keeper = keeper
        self.rows: list[dict[str, Any]] = []
        self.final_rows: list[dict[str, Any]] = []

    @staticmethod
    def judged(run) -> bool:
        return run.folder is not None and run.data.train_clean is not None

    def on_run_start(self, run) -> None:
        if self.judged(run) and self.rows:  # a resumed run: the file holds exactly the checkpoint's epochs
            run.folder.write_detection(self.rows)

    def on_epoch_end(self, run, stats: dict[str, Any]) -> None:
        if not self.judged(run):
            return
        k = self.keeper
        e = k.recorder.evidence(k.given, probs=k.epoch_probs, aux_offsets=k.epoch_offsets, planted_labels=k.planted)
        self.rows += detection_rows(run_detectors(e), k.given, k.clean, judging_rate(run.known_noise_rate, e),
                                    judged=k.judged, epoch=run.epoch)
        run.folder.write_detection(self.rows)

    def on_run_end(self, run) -> None:
        e = self.keeper.final
        if e is None:  # nothing written (no run folder)
            return
        suspects = run_detectors(e)  # once, for the rows and the suspects file
        if e.clean_label is not None:
            self.final_rows = detection_rows(suspects, e.given_label, e.clean_label,
                                             judging_rate(run.known_noise_rate, e), judged=e.judged, epoch="final")
            run.folder.write_detection(self.rows + self.final_rows)
        run.folder.write_suspects(suspect_rows(e, suspects[BEST]))

    def state_dict(self) -> Any:
        return self.rows

    def load_state_dict(self, state: Any) -> None:
        self.rows = list(state)
