"""Finding the wrong labels: detectors (``scores``, ``confident``, ``adaptive``), how they are
judged (``metrics``), every detector on one reading (``report``), and the evidence a run keeps
(``evidence``). docs/design.md, "Finding wrong labels"."""

from .adaptive import AdaptivePosterior, adaptive_posterior, flip_targets
from .confident import ConfidentLearning, confident_learning
from .evidence import EVIDENCE_FILE, Evidence, EvidenceAccumulator, load_evidence
from .metrics import auroc, average_precision, correction_accuracy, judge, precision_recall
from .report import BEST, DETECTORS, detection_rows, evidence_detectors, run_detectors
from .scores import Suspects, accumulated_margin, aux_offsets, noise_posterior, small_loss

__all__ = [
    "BEST", "DETECTORS", "EVIDENCE_FILE", "AdaptivePosterior", "ConfidentLearning", "Evidence", "EvidenceAccumulator",
    "Suspects", "accumulated_margin", "adaptive_posterior", "auroc", "aux_offsets", "average_precision",
    "confident_learning", "correction_accuracy", "detection_rows", "evidence_detectors", "flip_targets", "judge",
    "load_evidence", "noise_posterior", "precision_recall", "run_detectors", "small_loss",
]
