"""Finding the wrong labels: detectors (``scores``, ``confident``), how they are judged
(``metrics``), every detector on one reading (``report``), and the evidence a run keeps
(``evidence``). docs/design.md, "Finding wrong labels"."""

from .confident import ConfidentLearning, confident_learning
from .evidence import EVIDENCE_FILE, Evidence, EvidenceAccumulator, load_evidence
from .metrics import auroc, average_precision, correction_accuracy, judge, precision_recall
from .report import BEST, DETECTORS, detection_rows, run_detectors
from .scores import Suspects, accumulated_margin, aux_offsets, noise_posterior, small_loss

__all__ = ["BEST", "DETECTORS", "EVIDENCE_FILE", "ConfidentLearning", "Evidence", "EvidenceAccumulator", "Suspects",
           "accumulated_margin", "auroc", "aux_offsets", "average_precision", "confident_learning",
           "correction_accuracy", "detection_rows", "judge", "load_evidence", "noise_posterior", "precision_recall",
           "run_detectors", "small_loss"]
