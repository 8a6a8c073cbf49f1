"""The label detectors: one registry, read by the run, the report, the benchmark, the K-fold
study and the docs. Adding a detector is one ``Detector`` entry here (its function lives beside
the others: ``scores``, ``confident``, ``adaptive``), plus its tests; every run, report and
benchmark then measures it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..checks import check_choice
from .adaptive import adaptive_posterior, small_loss_or_posterior
from .count import confident_learning_rate
from .confident import confident_learning
from .evidence import Evidence
from .scores import Suspects, accumulated_margin, aux_offsets, small_loss


@dataclass(frozen=True)
class Detector:
    """One detector: its name, its label in tables, the evidence fields it reads, and its
    function of the evidence (a score per example, larger: more likely wrong, and a suggestion)."""

    name: str
    label: str
    reads: tuple[str, ...]
    suspects: Callable[[Evidence], Suspects]

    def applies_to(self, evidence: Evidence) -> bool:
        """Whether the evidence holds what this detector reads (AUX's offsets only AUX runs have)."""
        return all(getattr(evidence, field) is not None for field in self.reads)


# In the tables' order.
DETECTORS: dict[str, Detector] = {d.name: d for d in (
    Detector("small_loss", "small loss", ("probs",), lambda e: small_loss(e.probs, e.given_label)),
    Detector("confident_learning", "confident learning", ("probs",),
             lambda e: confident_learning(e.probs, e.given_label).suspects()),
    Detector("aux_offsets", "AUX offsets", ("aux_offsets",), lambda e: aux_offsets(e.aux_offsets, e.given_label)),
    Detector("accumulated_margin", "accumulated margin", ("margin_mean", "probs_mean"),
             lambda e: accumulated_margin(e.margin_mean, e.probs_mean, e.given_label)),
    Detector("adaptive_posterior", "adaptive posterior", ("probs_ema", "probs_mean"),
             lambda e: adaptive_posterior(e.probs_ema, e.probs_mean, e.given_label).suspects()),
    Detector("small_loss_or_posterior", "small loss or posterior", ("probs_mean",),
             lambda e: small_loss_or_posterior(e.probs_mean, e.given_label, confident_learning_rate(e, "probs_mean"))),
)}
# The one suspects.csv and find_labels.py rank by: the best on the development half of
# results/detection-count (README, "Finding wrong labels", quotes its held-out half).
BEST = "small_loss_or_posterior"
# The usual baselines the best is measured against.
BASELINES = ("small_loss", "confident_learning")


def get_detector(name: str) -> Detector:
    """The registry's entry; an unknown name is a one-line ValueError listing the valid ones."""
    return DETECTORS[check_choice("detector", name, DETECTORS)]


def run_detectors(evidence: Evidence, names: Iterable[str] | None = None) -> dict[str, Suspects]:
    """Each named detector (default: all) that the evidence can feed, by name, in the registry's order."""
    chosen = [get_detector(n) for n in names] if names is not None else list(DETECTORS.values())
    return {d.name: d.suspects(evidence) for d in chosen if d.applies_to(evidence)}
