"""How the approximate CDR threshold samples the scores, and how far off it can be.

Both fused engines cut the scored buffer into windows and read one aligned chunk of ``VEC``
consecutive scores from each *whole* window (a partial window at the end is not read, so the
sample size is known on the host). The threshold is then the exact ``k_s``-th largest score of
the sample, ``k_s = sample_rank(k)``.

Two policies, one per engine, because the hardware rewards different access patterns:

- **stratified** (Triton): a power-of-two window; the chunk's position in each window is drawn
  independently by hashing the window index with the step's seed. On a GPU a gather is free.
- **systematic** (compiled, CPU): the chunk sits at one random position in all windows of a step,
  so strided views read it without a gather (a gather of per-window positions costs 4-8 ms at
  11M weights on the CPU; this, 0.7 ms). The window is an odd number of chunks wide, so rows of
  power-of-two width are not sampled at the same columns every time.

Error bound. The estimate is the exact threshold of rank ``k' = k_s * n / n_sample``. The
sampling error of a quantile puts ``|k' - k| / n`` at standard deviation
``sqrt(q (1 - q) / n_sample)`` for simple random sampling (stratification does no worse), with
``q = k / n``, so at most ``0.5 / sqrt(n_sample)``:

- stratified keeps ``n_sample >= MIN_SAMPLE = 2**20``: sd <= 0.0005, and the bound 0.005 (half
  a percentage point) is ten of them;
- systematic keeps ``n_sample >= CPU_MIN_SAMPLE = 2**18``: sd <= 0.001, the bound is five of
  them. On the CPU the sample costs bandwidth that the update pass needs.

Dropping the partial last window leaves out fewer than one window of scores, under 1/n_sample of
n: it moves k' by less than one part in a million.

So the approximate mask is the exact mask of some ``k'`` within ``0.005 n`` of ``k``. Where no
score value is shared by many parameters at the boundary, the kept fraction is within 0.005 of
``1 - tau``. Where one is (exact zeros from dead units, say, filling rank k), the exact threshold
keeps the whole tie ("ties keep more"); the estimate then keeps all of it, like the exact
threshold, or none of it, like the exact threshold of a rank 0.5% away. Below ``2 * MIN_SAMPLE``
(stratified) or ``3 * CPU_MIN_SAMPLE`` (systematic) scored parameters, every score is used and
the threshold is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

VEC = 4  # 16-byte chunks: one vector load each
MIN_SAMPLE = 2**20
CPU_MIN_SAMPLE = 2**18
HASH_MULTIPLIER = 0x9E3779B1  # Knuth's multiplicative hash (2^32 / golden ratio)


@dataclass(frozen=True)
class SamplePlan:
    """Which scores a threshold reads: ``windows`` windows of ``window`` elements, one VEC-chunk each.

    ``window == VEC`` means every score (exact); then ``windows = ceil(n / VEC)``.
    """

    n: int
    window: int
    windows: int

    @property
    def exact(self) -> bool:
        return self.window == VEC

    @property
    def n_sample(self) -> int:
        return self.n if self.exact else self.windows * VEC

    def rank(self, k: int) -> int:
        """The rank in the sample that estimates rank ``k`` of all n scores (at least 1)."""
        if self.exact:
            return k
        return max(1, (k * self.n_sample + self.n // 2) // self.n)

    def phase(self, seed: int) -> int:
        """Systematic policy: the offset of this step's chunk inside every window (the same for all)."""
        return VEC * ((seed * HASH_MULTIPLIER & 0xFFFFFFFF) % (self.window // VEC))


def _every_score(n: int) -> SamplePlan:
    return SamplePlan(n, VEC, -(-n // VEC))


def stratified_plan(n: int, exact: bool) -> SamplePlan:
    """Triton engine: a power-of-two window keeping at least ``MIN_SAMPLE`` chunks' worth of scores."""
    if exact or n < 2 * MIN_SAMPLE:
        return _every_score(n)
    window = VEC * (1 << ((n // MIN_SAMPLE).bit_length() - 1))
    return SamplePlan(n, window, n // window)


def systematic_plan(n: int, exact: bool) -> SamplePlan:
    """Compiled engine: an odd number (at least 3) of chunks per window, at least ``CPU_MIN_SAMPLE`` scores."""
    chunks = n // CPU_MIN_SAMPLE
    chunks -= chunks % 2 == 0  # odd
    if exact or chunks < 3:
        return _every_score(n)
    window = VEC * chunks
    return SamplePlan(n, window, n // window)
