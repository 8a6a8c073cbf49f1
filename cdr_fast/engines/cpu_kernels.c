/* CPU kernels of the compiled engine, for what Inductor cannot express or pays too much to call:
 * the exact k-th largest score (a radix select over the float bits) and the masked update of a
 * small buffer (LeNet size, where a step costs its dispatches, not its bytes).
 *
 * Built on first use by cdr_fast/engines/native.py with the system C compiler (the one
 * torch.compile uses) and called through ctypes. Plain C99, no torch headers.
 * Compiled with -ffp-contract=off: no fused multiply-adds, so each line rounds like the reference.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t bits_of(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

/* The bin holding the k-th largest of a histogram, counted from the top; *k becomes the rank
 * inside that bin. */
static int64_t pick_bin(const uint32_t *hist, int64_t bins, int64_t *k) {
    int64_t b = bins - 1;
    for (; b > 0; --b) {
        if ((int64_t)hist[b] >= *k) break;
        *k -= hist[b];
    }
    return b;
}

/* The k-th largest (1 <= k <= n) of n non-negative float bit patterns, which order like the
 * floats (NaN above +Inf, as in torch.topk): three histogram levels over bits 31..21, 20..10 and
 * 9..0 spell it exactly. v is compacted in place (destroyed). Counts are 32-bit (n < 2^32, which
 * native.py checks): half the memory to clear per level, which at LeNet size is most of the cost. */
static uint32_t select_bits(uint32_t *v, int64_t n, int64_t k) {
    uint32_t hist4[4][2048]; /* interleaved: runs of equal values would stall on one counter */
    uint32_t hist[2048];
    memset(hist4, 0, sizeof hist4);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; ++j) hist4[j][v[i + j] >> 21]++;
    for (; i < n; ++i) hist4[0][v[i] >> 21]++;
    for (int j = 0; j < 2048; ++j) hist[j] = hist4[0][j] + hist4[1][j] + hist4[2][j] + hist4[3][j];
    uint32_t prefix = (uint32_t)pick_bin(hist, 2048, &k);
    const int shifts[2] = {10, 0};
    const uint32_t masks[2] = {2047u, 1023u};
    int prefix_shift = 21;
    for (int level = 0; level < 2; ++level) {
        int64_t m = 0; /* keep the values whose higher digits match: in place, m <= i */
        for (i = 0; i < n; ++i) { /* branch-free: to a branch predictor the test is a coin flip */
            v[m] = v[i];
            m += (v[i] >> prefix_shift) == prefix;
        }
        n = m;
        memset(hist, 0, sizeof hist);
        for (i = 0; i < n; ++i) hist[(v[i] >> shifts[level]) & masks[level]]++;
        uint32_t digit = (uint32_t)pick_bin(hist, (int64_t)masks[level] + 1, &k);
        prefix = (prefix << (level == 0 ? 11 : 10)) | digit;
        prefix_shift = shifts[level];
    }
    return prefix;
}

static inline uint32_t score_bits(const float *a, const float *b, int64_t i) {
    return bits_of(fabsf(b ? a[i] * b[i] : a[i]));
}

enum { SAMPLE_STRIDE = 17, MIN_BANDED = 8192 };

/* The band pass: every score's bits; counts those above hi; gathers those in [lo, hi] into out
 * (out may be scratch that the scores are not read from; m <= i, so it never overtakes). Returns
 * the number gathered. Branch-free: to a branch predictor the band test is noise. */
static int64_t band_pass_scalar(const float *a, const float *b, int64_t n, uint32_t hi, uint32_t lo, uint32_t *out,
                                int64_t *above_out) {
    int64_t above = 0, inside = 0;
    for (int64_t i = 0; i < n; ++i) {
        uint32_t u = score_bits(a, b, i);
        above += u > hi;
        out[inside] = u;
        inside += (u <= hi) & (u >= lo);
    }
    *above_out = above;
    return inside;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_AVX2_PATH 1
/* LEFT_PACK[m]: the lanes set in the 8-bit mask m, in order, for a permute that packs them left. */
static int32_t LEFT_PACK[256][8];
static int left_pack_ready;

static void init_left_pack(void) {
    for (int m = 0; m < 256; ++m) {
        int j = 0;
        for (int lane = 0; lane < 8; ++lane)
            if (m >> lane & 1) LEFT_PACK[m][j++] = lane;
        while (j < 8) LEFT_PACK[m][j++] = 0;
    }
    left_pack_ready = 1; /* idempotent: a race only writes the same table twice */
}

/* band_pass_scalar, 8 scores at a time (AVX2): the band is packed left with a permute looked up
 * by the compare mask, so the gather costs no branch and no per-element store dependency. The
 * bits of |x| have the sign bit clear, so the signed compares order them (NaN above +Inf). */
__attribute__((target("avx2,popcnt"))) static int64_t band_pass_avx2(const float *a, const float *b, int64_t n,
                                                                   uint32_t hi, uint32_t lo, uint32_t *out,
                                                                   int64_t *above_out) {
    const __m256i vhi = _mm256_set1_epi32((int32_t)hi), vlo_minus_1 = _mm256_set1_epi32((int32_t)lo - 1);
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)), ones = _mm256_set1_ps(1.0f);
    int64_t above = 0, inside = 0, i = 0;
    for (; i + 8 <= n; i += 8) { /* without b, x * 1 is x, NaN and Inf included */
        __m256 product = _mm256_mul_ps(_mm256_loadu_ps(a + i), b ? _mm256_loadu_ps(b + i) : ones);
        __m256i u = _mm256_castps_si256(_mm256_and_ps(product, abs_mask));
        __m256i gt = _mm256_cmpgt_epi32(u, vhi);
        __m256i in = _mm256_andnot_si256(gt, _mm256_cmpgt_epi32(u, vlo_minus_1));
        int above_mask = _mm256_movemask_ps(_mm256_castsi256_ps(gt));
        int in_mask = _mm256_movemask_ps(_mm256_castsi256_ps(in));
        __m256i pack = _mm256_loadu_si256((const __m256i *)LEFT_PACK[in_mask]);
        _mm256_storeu_si256((__m256i *)(out + inside), _mm256_permutevar8x32_epi32(u, pack)); /* inside + 8 <= i + 8 <= n */
        above += __builtin_popcount((unsigned)above_mask);
        inside += __builtin_popcount((unsigned)in_mask);
    }
    int64_t tail_above;
    inside += band_pass_scalar(a + i, b ? b + i : NULL, n - i, hi, lo, out + inside, &tail_above);
    *above_out = above + tail_above;
    return inside;
}
#endif

static int force_scalar; /* the tests' switch: the portable path must stay proven on AVX2 machines */

void cdr_force_scalar(int on) { force_scalar = on; }

static int64_t band_pass(const float *a, const float *b, int64_t n, uint32_t hi, uint32_t lo, uint32_t *out,
                         int64_t *above_out) {
#ifdef HAVE_AVX2_PATH
    if (!force_scalar && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt")) {
        if (!left_pack_ready) init_left_pack();
        return band_pass_avx2(a, b, n, hi, lo, out, above_out);
    }
#endif
    return band_pass_scalar(a, b, n, hi, lo, out, above_out);
}

/* *out <- the k-th largest (1 <= k <= n) of |a[i] * b[i]|, or of |a[i]| when b is NULL; scratch:
 * n uint32.
 *
 * A subsample (every 17th score; odd, so rows of power-of-two width are not read at the same
 * columns) bounds a band 4.5 standard deviations of its quantile either side of rank k. One pass
 * counts the scores above the band and gathers those inside it (a few percent; 8 at a time with
 * AVX2 where the CPU has it), and only the band is selected from. If rank k falls outside the
 * band after all, the full select runs: the answer is exact either way, the subsample only
 * decides the work. */
void cdr_kth_largest(const float *a, const float *b, int64_t n, int64_t k, uint32_t *scratch, float *out) {
    uint32_t answer;
    if (n >= MIN_BANDED) {
        int64_t m = 0;
        for (int64_t i = 0; i < n; i += SAMPLE_STRIDE) scratch[m++] = score_bits(a, b, i);
        memcpy(scratch + m, scratch, (size_t)m * sizeof *scratch);
        double q = (double)k / (double)n, centre = q * (double)m;
        double margin = 4.5 * sqrt(q * (1.0 - q) * (double)m) + 2.0;
        int64_t upper = (int64_t)floor(centre - margin), lower = (int64_t)ceil(centre + margin);
        upper = upper < 1 ? 1 : upper;
        lower = lower > m ? m : lower;
        uint32_t hi = select_bits(scratch, m, upper), lo = select_bits(scratch + m, m, lower);
        int64_t above;
        int64_t inside = band_pass(a, b, n, hi, lo, scratch, &above);
        if (above < k && k - above <= inside) {
            answer = select_bits(scratch, inside, k - above);
            goto done;
        }
    }
    for (int64_t i = 0; i < n; ++i) scratch[i] = score_bits(a, b, i);
    answer = select_bits(scratch, n, k);
done:
    memcpy(out, &answer, sizeof *out); /* straight into the caller's 0-d threshold tensor */
}

/* One specialised, branch-free loop per (mask, momentum, RDI) combination, so that each
 * vectorises; the flags are compile-time constants after inlining. Returns the kept count. */
static inline int64_t update_range(float *restrict w, const float *restrict g, float *restrict buf,
                                   const float *restrict w0, int64_t lo, int64_t hi, float thr, float lr,
                                   float momentum, float weight_decay, float rdi_coef, float clip,
                                   const int mask, const int has_momentum, const int has_rdi) {
    int64_t kept = 0;
    for (int64_t start = lo; start < hi; start += 1 << 20) { /* int32 counts per chunk: vectorisable */
        int64_t end = start + (1 << 20) < hi ? start + (1 << 20) : hi;
        int32_t chunk_kept = 0;
        for (int64_t i = start; i < end; ++i) {
            float gi = g[i], wi = w[i], d;
            if (mask) {
                int32_t keep = fabsf(gi * wi) >= thr;
                chunk_kept += keep;
                d = ((float)keep * clip) * gi + weight_decay * wi;
            } else {
                d = gi + weight_decay * wi;
            }
            if (has_rdi) d = d + rdi_coef * (wi - w0[i]);
            if (has_momentum) {
                d = momentum * buf[i] + d;
                buf[i] = d;
            }
            w[i] = wi - lr * d;
        }
        kept += chunk_kept;
    }
    return kept;
}

#define UPDATE(MASK, MOM, RDI) \
    update_range(w, g, buf, w0, lo, hi, thr, lr, momentum, weight_decay, rdi_coef, clip, MASK, MOM, RDI)

static int64_t update_dispatch(float *w, const float *g, float *buf, const float *w0, int64_t lo, int64_t hi,
                               float thr, float lr, float momentum, float weight_decay, float rdi_coef, float clip,
                               int mask) {
    int mom = momentum != 0.0f, rdi = rdi_coef != 0.0f;
    if (mask) {
        if (mom) return rdi ? UPDATE(1, 1, 1) : UPDATE(1, 1, 0);
        return rdi ? UPDATE(1, 0, 1) : UPDATE(1, 0, 0);
    }
    if (mom) return rdi ? UPDATE(0, 1, 1) : UPDATE(0, 1, 0);
    return rdi ? UPDATE(0, 0, 1) : UPDATE(0, 0, 0);
}

/* Engine.masked_update over flat buffers (see cdr_fast/engines/base.py): the threshold is read
 * from, and the kept count added to, the caller's 0-d tensors (no tensor op around the call).
 * The mask multiplies as the published code does: g * ((score >= thr) * clip). */
void cdr_masked_update(float *w, const float *g, float *buf, const float *w0, int64_t n, int64_t n_scored,
                       const float *thr, float lr, float momentum, float weight_decay, float rdi_coef, float clip,
                       int mask, int32_t *kept) {
    int64_t split = mask ? n_scored : 0;
    int64_t count = update_dispatch(w, g, buf, w0, 0, split, *thr, lr, momentum, weight_decay, rdi_coef, clip, mask);
    update_dispatch(w, g, buf, w0, split, n, *thr, lr, momentum, weight_decay, rdi_coef, clip, 0);
    if (mask) *kept += (int32_t)count;
}
