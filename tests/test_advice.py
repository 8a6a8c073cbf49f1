"""The run's warnings (cdr_fast.training.advice): when each speaks, on numbers worked out by hand."""

from __future__ import annotations

import math

from cdr_fast.training.advice import estimate_warning, masking_warning, warmup_warning


def test_masking_less_than_tau_is_named_with_the_measured_share():
    assert masking_warning(60.0, 0.4) is None and masking_warning(64.9, 0.4) is None  # ties within the slack
    line = masking_warning(100.0, 0.4)
    assert "kept 100.0%" in line and "not about 60%" in line and "exact zeros" in line
    assert masking_warning(100.0, 0.0) is None and masking_warning(math.nan, 0.4) is None  # no CDR, no masking


def test_a_warm_up_of_many_passes_is_named_with_a_length_that_fits():
    assert warmup_warning(1500, 32, 54000) is None  # MNIST: under one pass
    line = warmup_warning(1500, 32, 270)  # tiny data: 178 passes
    assert "178 passes over 270 examples" in line and "--tau-warmup-steps 25" in line
    assert "only 30 steps" in warmup_warning(30, 32, 200) and "come out high" in warmup_warning(30, 32, 200)


def test_an_implausible_estimate_is_never_silent():
    assert estimate_warning(0.3, 1500, 32, 54000) is None
    zero = estimate_warning(0.0, 1500, 32, 270)
    assert "0.000 is implausible" in zero and "tau 0 trains plain SGD" in zero and "177.8 passes" in zero
    assert "tau 0" not in estimate_warning(0.95, 100, 32, 5000)
