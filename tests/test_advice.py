"""The run's warnings (cdr_fast.training.advice): when each speaks, on numbers worked out by hand."""

from __future__ import annotations

import math

from cdr_fast.training.advice import (estimate_warning, fitted_warmup, masking_warning, small_classes_warning,
                                      warmup_warning)


def test_masking_less_than_tau_over_most_of_the_run_is_named_with_the_measured_share():
    assert masking_warning([60.0, 64.9], 0.4) is None  # ties within the slack
    assert masking_warning([100.0, 61.0, 60.5], 0.4) is None  # only the first epoch: not worth a word
    assert masking_warning([100.0, 61.0], 0.4) is None  # half the epochs is not most
    line = masking_warning([100.0, 99.0, 61.0], 0.4)
    assert "kept 99.0%" in line and "median over 3 epochs" in line and "not about 60%" in line
    assert "exact zeros" in line and "raise --tau" in line
    assert masking_warning([100.0], 0.0) is None and masking_warning([math.nan], 0.4) is None  # no CDR, no masking
    assert masking_warning([], 0.4) is None


def test_a_warm_up_of_many_passes_is_cut_and_a_short_one_named():
    assert fitted_warmup(1500, 32, 54000) == (1500, None)  # MNIST: under one pass
    assert fitted_warmup(1500, 32, 5400) == (1500, None)  # mnist-mini: 8.9 passes, as the README measured
    steps, line = fitted_warmup(1500, 32, 270)  # tiny data: 178 passes, cut to the 300-step floor
    assert steps == 300 and "178 passes over 270 examples" in line and "running 300 steps" in line
    assert "give --tau a rate" in line  # 300 steps are still 36 passes there
    steps, line = fitted_warmup(20000, 32, 5400)  # 119 passes, cut to 3 (506 steps)
    assert steps == 506 and "rough" not in line
    assert warmup_warning(1500, 32, 54000) is None
    assert "only 30 steps" in warmup_warning(30, 32, 200) and "come out high" in warmup_warning(30, 32, 200)


def test_an_implausible_estimate_is_never_silent():
    assert estimate_warning(0.3, 1500, 32, 54000) is None
    zero = estimate_warning(0.0, 1500, 32, 270)
    assert "0.000 is implausible" in zero and "tau 0 trains plain SGD" in zero and "177.8 passes" in zero
    assert "tau 0" not in estimate_warning(0.95, 100, 32, 5000)


def test_classes_with_fewer_than_two_training_examples_are_named():
    assert small_classes_warning([5, 2, 9], ["a", "b", "c"]) is None
    line = small_classes_warning([5, 1, 0], ["cat", "dog", "emu"])
    assert "2 class(es) have fewer than 2 training examples" in line and "'dog' (1), 'emu' (0)" in line
    assert "'1' (1)" in small_classes_warning([3, 1], None)  # unnamed classes: their numbers
