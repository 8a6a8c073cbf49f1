"""How the approximate CDR threshold samples the scores, and how far off it can be.

The scored buffer is cut into windows and one aligned chunk of ``VEC`` consecutive scores is
taken from each. The Triton engine draws the chunk's position in every window independently
(hashing the window index with the step's seed: a stratified random sample). The compiled CPU
engine takes the chunk at one random position in all windows of a step (a systematic sample
with a random start, which strided views read without a gather) and makes the window an odd
number of chunks wide, so that rows of power-of-two width are not sampled at the same columns.
The threshold is then the exact ``k_s``-th largest score of the sample,
``k_s = round(k * n_sample / n)``.

Error bound. The estimate is the exact threshold of rank ``k' = k_s * n / n_sample``: the
sampling error of a quantile puts ``|k' - k| / n`` at standard deviation
``sqrt(q (1 - q) / n_sample)`` for simple random sampling (stratification does no worse), with
``q = k / n``. ``sample_stride`` keeps ``n_sample`` at least ``min_sample``:

- ``MIN_SAMPLE = 2**20`` (Triton engine): standard deviation at most 0.0005, so the design's
  bound of 0.005 (half a percentage point) is ten of them;
- ``CPU_MIN_SAMPLE = 2**18`` (compiled engine): at most 0.001, the bound is five of them. On the
  CPU, reading the sample costs memory bandwidth the update pass needs; a quarter of the
  sample costs a quarter.

So the approximate mask is the exact mask of some ``k'`` within ``0.005 n`` of ``k``. Where no
score value is shared by many parameters at the boundary, the kept fraction is therefore within
0.005 of ``1 - tau``. Where one is (exact zeros from dead units, say, filling rank k), the exact
threshold keeps the whole tie too ("ties keep more"); the estimate then keeps either all of it,
like the exact threshold, or none of it, like the exact threshold of a rank 0.5% away. Below
``2 * MIN_SAMPLE`` (Triton) or ``3 * CPU_MIN_SAMPLE`` (compiled: its window is an odd number of
chunks, at least 3) scored parameters every score is used and the threshold is exact.
"""

from __future__ import annotations

VEC = 4  # 16-byte chunks: one vector load each
MIN_SAMPLE = 2**20
CPU_MIN_SAMPLE = 2**18
HASH_MULTIPLIER = 0x9E3779B1


def sample_stride(n: int, exact: bool, min_sample: int = MIN_SAMPLE) -> int:
    """Triton engine's window width: VEC (every score) when exact or small, else a power of two
    keeping at least ``min_sample`` scores."""
    if exact or n < 2 * min_sample:
        return VEC
    return VEC * (1 << ((n // min_sample).bit_length() - 1))
