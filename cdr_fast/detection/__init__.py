"""Finding the wrong labels: the evidence a training loop records (``recorder``) and a run folder
keeps (``evidence``), the detectors (``scores``, ``confident``, ``adaptive``) and their one
registry (``registry``), how they are judged (``metrics``, ``report``). docs/design.md, "Finding
wrong labels"."""

from .adaptive import AdaptivePosterior, adaptive_posterior, flip_targets
from .confident import ConfidentLearning, confident_learning
from .evidence import EVIDENCE_FILE, Evidence, load_evidence
from .metrics import auroc, average_precision, correction_accuracy, judge, precision_recall
from .recorder import EMA_WEIGHT, EvidenceRecorder
from .registry import BASELINES, BEST, DETECTORS, Detector, get_detector, run_detectors
from .report import Ranking, detection_rows, rank_suspects
from .scores import Suspects, accumulated_margin, aux_offsets, noise_posterior, small_loss

__all__ = [
    "BASELINES", "BEST", "DETECTORS", "EMA_WEIGHT", "EVIDENCE_FILE", "AdaptivePosterior", "ConfidentLearning",
    "Detector", "Evidence", "EvidenceRecorder", "Ranking", "Suspects", "accumulated_margin", "adaptive_posterior",
    "auroc", "aux_offsets", "average_precision", "confident_learning", "correction_accuracy", "detection_rows",
    "flip_targets", "get_detector", "judge", "load_evidence", "noise_posterior", "precision_recall", "rank_suspects",
    "run_detectors", "small_loss",
]
