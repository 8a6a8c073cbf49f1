"""The warnings a run gives when it is legal but probably not what the user meant: each returns
one line, or None. The Trainer prints them; they never stop a run."""

from __future__ import annotations

import math
import statistics

# CDR's kept share sits at 1 - tau up to ties; this much above it means ties decide the mask.
KEPT_SLACK_PCT = 5.0
# The warm-up of --tau auto: longer than this many passes over the data and the network memorises
# the noisy labels (the estimate then falls); a rate outside this range is implausible.
WARMUP_EPOCHS_MAX = 20.0  # the default 1,500 steps are 0.9 passes on MNIST, 8.9 on mnist-mini: both fine
# Fewer steps, and the network has not learnt the classes (the estimate comes out high): on the
# 270-image example set, 100 / 300 / 500 / 1,500 steps estimate 0.80 / 0.32 / 0.13 / 0.00 of a true 0.32.
WARMUP_STEPS_MIN = 300
PLAUSIBLE_RATE = (0.005, 0.9)


def masking_warning(kept_pcts: list[float], tau: float) -> str | None:
    """CDR masking much less than tau says on most of the run's epochs (``kept_pcts``, one per
    epoch): ties at the threshold, usually exact zeros. A few epochs (the first ones, while units
    are still dead) say nothing; the line is given once, at the run's end."""
    expected = 100.0 * (1.0 - tau)
    measured = [k for k in kept_pcts if not math.isnan(k)]
    if tau <= 0 or not measured:
        return None
    over = [k for k in measured if k > expected + KEPT_SLACK_PCT]
    if 2 * len(over) <= len(measured):
        return None
    median = statistics.median(measured)
    return (f"CDR kept {median:.1f}% of the scored weights at tau {tau:g} (median over {len(measured)} epochs), not "
            f"about {expected:.0f}%: more than {tau:.0%} of the scores |g w| were exact zeros (weights with no "
            "gradient: dead units, inputs that are always 0), and ties at the threshold are kept, as in the published "
            "code, so CDR held back few of the weights that had a gradient. If you meant it to hold back a share tau of "
            "them, raise --tau; otherwise this run is CDR as published")


def fitted_warmup(steps: int, batch_size: int, num_examples: int) -> tuple[int, str | None]:
    """The --tau auto warm-up to run, and the line that says so: the steps asked for, unless they
    are more than ``WARMUP_EPOCHS_MAX`` passes over the data, which memorise the noisy labels (the
    estimate then comes out low, 0 on small sets); those are cut to 3 passes, or to
    ``WARMUP_STEPS_MIN`` steps if that is more."""
    if steps * batch_size <= WARMUP_EPOCHS_MAX * num_examples:
        return steps, None
    fitted = min(steps, max(round(3 * num_examples / batch_size), WARMUP_STEPS_MIN))
    if fitted == steps:
        return steps, None
    line = (f"a --tau auto warm-up of {steps} steps is {steps * batch_size / num_examples:.0f} passes over "
            f"{num_examples} examples, enough to memorise them: running {fitted} steps instead")
    if fitted * batch_size > WARMUP_EPOCHS_MAX * num_examples:
        line += " (with so few examples the estimate is rough: give --tau a rate if you know it)"
    return fitted, line


def warmup_warning(steps: int, batch_size: int, num_examples: int) -> str | None:
    """A --tau auto warm-up too short to learn the classes (a long one is cut: ``fitted_warmup``)."""
    if steps >= WARMUP_STEPS_MIN:
        return None
    return (f"the --tau auto warm-up runs only {steps} steps: the network may not have learnt the classes and the "
            f"estimate come out high; {WARMUP_STEPS_MIN} or more is safer")


def estimate_warning(rate: float, steps: int, batch_size: int, num_examples: int) -> str | None:
    """An estimated noise rate nobody should train on unawares (tau 0 trains plain SGD)."""
    low, high = PLAUSIBLE_RATE
    if low <= rate <= high:
        return None
    epochs = steps * batch_size / max(num_examples, 1)
    return (f"the estimated noise rate {rate:.3f} is implausible (after {steps} warm-up steps, {epochs:.1f} passes "
            f"over {num_examples} examples){'; tau 0 trains plain SGD' if rate < low else ''}: check the data, "
            "or give --tau a rate")


def small_classes_warning(counts: list[int], names: list[str] | None) -> str | None:
    """Classes with fewer than 2 examples in the training split (after the validation split):
    the network can barely learn them, and the detectors can barely judge their labels."""
    few = [(names[c] if names is not None else str(c), n) for c, n in enumerate(counts) if n < 2]
    if not few:
        return None
    listed = ", ".join(f"{name!r} ({n})" for name, n in few)
    return (f"{len(few)} class(es) have fewer than 2 training examples after the validation split: {listed}; "
            "add examples, merge the class into another, or lower --val-fraction")
