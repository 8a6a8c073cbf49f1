"""The wrong-label report: the layer above training. It reads what a run folder keeps (the
evidence, the given labels, the example and class names, the run's settings) and writes the
suspects, their picture and a cleaned copy of the labels; it never retrains, regenerates the
noise or rebuilds the split. ``find_labels.py`` is ``report(train(...))``."""

from .fix import FIXES
from .report import LabelReport, label_report

__all__ = ["FIXES", "LabelReport", "label_report"]
