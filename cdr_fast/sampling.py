"""How the approximate CDR threshold samples the scores; shared by the Triton and compiled engines.

The scores are sampled stratified: the scored buffer is cut into windows of ``stride``
elements and one aligned chunk of ``VEC`` consecutive elements is taken from each, at a
position drawn by hashing the window index with the step's seed. The threshold is then the
exact ``k_s``-th largest score of the sample, ``k_s = round(k * n_sample / n)``.

Error bound: the kept fraction of the full set differs from the exact top-k's only by the
sampling error of a quantile, standard deviation ``sqrt(q (1 - q) / n_sample)`` for simple
random sampling (stratification does no worse). ``sample_stride`` keeps ``n_sample >= 2**20``,
so the standard deviation is at most 0.0005 and the design's bound of 0.005 (half a percentage
point) is ten of them. Ties need no special care: a score value shared by many parameters falls
on the same side of the threshold in the sample and in the full set. Below ``2 * 2**20`` scored
parameters every score is used, and the threshold is exact.
"""

from __future__ import annotations

VEC = 4  # 16-byte chunks: one vector load each
MIN_SAMPLE = 2**20
HASH_MULTIPLIER = 0x9E3779B1


def sample_stride(n: int, exact: bool) -> int:
    """Window width: VEC (every element) when exact or small, else a power of two keeping >= MIN_SAMPLE."""
    if exact or n < 2 * MIN_SAMPLE:
        return VEC
    return VEC * (1 << ((n // MIN_SAMPLE).bit_length() - 1))
