"""CDR's threshold: the k-th largest score |g * w|, found on the device by radix select.

Non-negative float32 values order exactly like their int32 bit patterns, so the k-th largest
score can be found one digit at a time: histogram bits 31..21 of every score, find the bin that
holds the k-th largest, histogram bits 20..10 of the scores in that bin, then bits 9..0. After
three levels the digits spell the k-th largest value itself, bit for bit. No sort, no host
sync: the threshold stays a device tensor.

The scores seen are either all of them (exact mode: the same threshold as ``torch.topk``) or a
stratified random sample: one VEC-chunk at a hashed position in each of the first ``n_windows``
windows of STRIDE elements. The caller chooses the geometry and the rank within the sample
(``cdr_fast.sampling`` holds that policy and its error bound); this file only executes it. Level 1
reads g and w at the sampled chunks and writes their scores to a compact scratch buffer; levels
2 and 3 read only the scratch. With a window of 64, level 1 touches one 32-byte sector in eight,
so the whole estimate moves about 1.75 B per parameter, against 20 B for the update pass.
"""

from __future__ import annotations

import triton
import triton.language as tl

LEVEL_BITS = (11, 11, 10)  # digits, high to low: bits 31..21, 20..10, 9..0
BINS = 2048  # 2 ** max(LEVEL_BITS)


@triton.jit
def _sample_scores_kernel(
    w_ptr, g_ptr, n, n_windows, scratch_ptr, hist_ptr, seed,
    STRIDE: tl.constexpr, VEC: tl.constexpr, CHUNKS: tl.constexpr, BINS: tl.constexpr, HASH: tl.constexpr,
):
    """Level 1: score one VEC-chunk in each of the first ``n_windows`` STRIDE-windows, store it to
    scratch, histogram bits 31..21.

    Lanes past ``n`` or past the last window store -1.0 to the scratch, which no later level counts.
    """
    pid = tl.program_id(0)
    window = pid * CHUNKS + tl.arange(0, CHUNKS)
    if STRIDE > VEC:
        # A random chunk inside each window (multiplicative hash of the window index and seed).
        h = (window ^ seed).to(tl.uint32) * HASH
        h = h ^ (h >> 15)
        phase = (h % (STRIDE // VEC)).to(tl.int64) * VEC
    else:
        phase = tl.zeros([CHUNKS], dtype=tl.int64)
    base = tl.multiple_of(window.to(tl.int64) * STRIDE + phase, VEC)
    # Loaded as [CHUNKS, VEC] tiles: each row is VEC contiguous floats at a VEC-aligned offset, which
    # every Triton from 3.6 turns into 128-bit loads (through a reshape, 3.6 does not see it).
    offs = base[:, None] + tl.arange(0, VEC)[None, :]
    if STRIDE > VEC:  # whole windows only: the caller's sample size does not depend on the phase
        inside = tl.broadcast_to((window < n_windows)[:, None], [CHUNKS, VEC])
    else:
        inside = offs < n
    g = tl.load(g_ptr + offs, mask=inside, other=0.0)
    w = tl.load(w_ptr + offs, mask=inside, other=0.0)
    score = tl.reshape(tl.where(inside, tl.abs(g * w), -1.0), [CHUNKS * VEC])
    inside = tl.reshape(inside, [CHUNKS * VEC])
    slot = pid.to(tl.int64) * CHUNKS * VEC + tl.arange(0, CHUNKS * VEC)
    tl.store(scratch_ptr + slot, score)
    key = score.to(tl.int32, bitcast=True) >> 21
    counts = tl.histogram(key, BINS, mask=inside)
    tl.atomic_add(hist_ptr + tl.arange(0, BINS), counts, mask=counts > 0)  # empty bins cost no atomic


@triton.jit
def _refine_histogram_kernel(
    scratch_ptr, n_scratch, hist_ptr, state_ptr,
    PREFIX_SHIFT: tl.constexpr, SHIFT: tl.constexpr, BITS: tl.constexpr, BINS: tl.constexpr, BLOCK: tl.constexpr,
):
    """Levels 2 and 3: histogram the next digit of the scores whose higher digits match the prefix."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n_scratch
    bits = tl.load(scratch_ptr + offs, mask=inside, other=-1.0).to(tl.int32, bitcast=True)
    prefix = tl.load(state_ptr + 1).to(tl.int32)
    selected = inside & (bits >= 0) & ((bits >> PREFIX_SHIFT) == prefix)
    key = (bits >> SHIFT) & ((1 << BITS) - 1)
    counts = tl.histogram(key, BINS, mask=selected)
    tl.atomic_add(hist_ptr + tl.arange(0, BINS), counts, mask=counts > 0)  # most bins are empty here


@triton.jit
def _select_digit_kernel(
    hist_ptr, state_ptr, thr_ptr, k,
    FIRST: tl.constexpr, LAST: tl.constexpr, BITS: tl.constexpr, BINS: tl.constexpr,
):
    """One program: the bin holding the k-th largest, from high bins down.

    state = [k still to find inside the chosen prefix, prefix digits so far] (int64).
    """
    bins = tl.arange(0, BINS)
    h = tl.load(hist_ptr + bins).to(tl.int64)
    tl.store(hist_ptr + bins, tl.zeros([BINS], dtype=tl.int32))  # zero again for the next call: no memset launch
    total = tl.sum(h, axis=0)
    if FIRST:
        k_left = k + tl.zeros([], dtype=tl.int64)
        prefix = tl.zeros([], dtype=tl.int64)
    else:
        k_left = tl.load(state_ptr)
        prefix = tl.load(state_ptr + 1)
    at_or_below = tl.cumsum(h, axis=0)  # C(b) = count of bins <= b
    chosen = tl.sum((at_or_below <= total - k_left).to(tl.int64), axis=0)  # first b with T - C(b) < k
    above = total - tl.sum(tl.where(bins <= chosen, h, 0), axis=0)
    prefix = (prefix << BITS) | chosen
    tl.store(state_ptr, k_left - above)
    tl.store(state_ptr + 1, prefix)
    if LAST:
        tl.store(thr_ptr, prefix.to(tl.int32).to(tl.float32, bitcast=True))


def scratch_size(n_windows: int, vec: int, chunks: int = 256) -> int:
    """Floats of scratch the level-1 kernel writes for ``n_windows`` windows (whole programs)."""
    return triton.cdiv(n_windows, chunks) * chunks * vec


def cdr_threshold(w, g, k: int, scratch, hist, state, thr, *, stride: int, n_windows: int, vec: int,
                  hash_multiplier: int, seed: int = 0, chunks: int = 256) -> None:
    """Write the k-th largest of the scores seen (all of ``|g * w|``, or a sample) into ``thr``.

    Args:
        w, g: flat float32 CUDA (or interpreter) tensors holding the scored parameters and grads.
        k: rank to select among the scores seen, 1 <= k <= their number.
        scratch: float32 buffer of ``scratch_size(n_windows, vec, chunks)`` elements.
        hist: int32 buffer of ``3 * BINS`` elements, zero on entry (allocate it with
            ``torch.zeros``); each level's select leaves its histogram zero again on return.
        state: int64 buffer of 2 elements.
        thr: float32 0-d tensor, written.
        stride, n_windows, vec: window width, windows read, and the chunk read from each. With
            ``stride == vec`` and ``n_windows = cdiv(n, vec)`` every score is seen.
        hash_multiplier, seed: place the chunk inside each window (ignored when stride == vec).
    """
    assert k >= 1 and scratch.numel() >= scratch_size(n_windows, vec, chunks)
    levels = hist.view(len(LEVEL_BITS), BINS)
    grid = (triton.cdiv(n_windows, chunks),)
    _sample_scores_kernel[grid](w, g, w.numel(), n_windows, scratch, levels[0], seed & 0x7FFFFFFF,
                                STRIDE=stride, VEC=vec, CHUNKS=chunks, BINS=BINS, HASH=hash_multiplier)
    n_scratch = grid[0] * chunks * vec
    shift = 32
    for level, bits in enumerate(LEVEL_BITS):
        prefix_shift, shift = shift, shift - bits
        if level > 0:
            block = 4096
            _refine_histogram_kernel[(triton.cdiv(n_scratch, block),)](
                scratch, n_scratch, levels[level], state,
                PREFIX_SHIFT=prefix_shift, SHIFT=shift, BITS=bits, BINS=BINS, BLOCK=block)
        _select_digit_kernel[(1,)](levels[level], state, thr, k,
                                   FIRST=level == 0, LAST=level == len(LEVEL_BITS) - 1, BITS=bits, BINS=BINS)
