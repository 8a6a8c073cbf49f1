/* CPU kernels of the compiled engine: the exact k-th largest score (a radix select over the float
 * bits), the systematic sample of the approximate threshold, and the masked update.
 *
 * Built on first use by cdr_fast/engines/native.py with the system C compiler (the one
 * torch.compile uses) and called through ctypes. Plain C99, no torch headers.
 * Compiled with -ffp-contract=off: no fused multiply-adds, so each line rounds like the reference.
 *
 * Threads: with -fopenmp (native.py adds it where the compiler has it) the two passes over every
 * parameter, the band pass and the update, split the buffer into one contiguous part per thread
 * from PARALLEL_MIN elements on. The library then shares torch's libgomp (the same soname), so
 * torch.set_num_threads governs both. Each element's arithmetic is the same on any split, and
 * the counts are integers: the results do not depend on the thread count.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Below this many elements a pass stays on the calling thread: waking the others costs more
 * than it saves (LeNet's 61k scores take 15 us in one thread). */
enum { PARALLEL_MIN = 1 << 17, MAX_PARTS = 64 };

/* How many contiguous parts a pass over n elements is split into. */
static int parts_for(int64_t n) {
#ifdef _OPENMP
    int t = n >= PARALLEL_MIN ? omp_get_max_threads() : 1;
    return t < 1 ? 1 : t > MAX_PARTS ? MAX_PARTS : t;
#else
    (void)n;
    return 1;
#endif
}

/* Where part p of `parts` starts: multiples of 16 elements (64 bytes), so no two threads write
 * one cache line. */
static int64_t part_start(int64_t n, int parts, int p) {
    return p == parts ? n : (n / parts * p) & ~(int64_t)15;
}

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

/* The k-th largest (1 <= k <= n) of n values below 2^bits (1 <= bits <= 32), spelled digit by
 * digit from the top by histogram levels of at most 11 bits: 31-bit float patterns take three
 * (11/11/9), a band of nearby patterns shifted to start at zero often two. Non-negative floats'
 * bit patterns order like the floats (NaN above +Inf, as in torch.topk). v is compacted in place
 * (destroyed). Counts are 32-bit (n < 2^32, which native.py checks): half the memory to clear per
 * level, which at LeNet size is most of the cost. */
static uint32_t select_bits(uint32_t *v, int64_t n, int64_t k, int bits) {
    uint32_t hist4[4][2048]; /* interleaved: runs of equal values would stall on one counter */
    uint32_t hist[2048];
    int shift = bits > 11 ? bits - 11 : 0;
    const int64_t top_bins = (int64_t)1 << (bits - shift);
    memset(hist4, 0, sizeof hist4);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; ++j) hist4[j][v[i + j] >> shift]++;
    for (; i < n; ++i) hist4[0][v[i] >> shift]++;
    for (int64_t j = 0; j < top_bins; ++j) hist[j] = hist4[0][j] + hist4[1][j] + hist4[2][j] + hist4[3][j];
    uint32_t prefix = (uint32_t)pick_bin(hist, top_bins, &k);
    while (shift > 0) {
        int64_t m = 0; /* keep the values whose higher digits match: in place, m <= i */
        for (i = 0; i < n; ++i) { /* branch-free: to a branch predictor the test is a coin flip */
            v[m] = v[i];
            m += (v[i] >> shift) == prefix;
        }
        n = m;
        const int width = shift < 11 ? shift : 11;
        const uint32_t mask = (1u << width) - 1;
        shift -= width;
        memset(hist, 0, (size_t)(mask + 1) * sizeof *hist);
        for (i = 0; i < n; ++i) hist[(v[i] >> shift) & mask]++;
        prefix = (prefix << width) | (uint32_t)pick_bin(hist, (int64_t)mask + 1, &k);
    }
    return prefix;
}

/* Bits needed to write x (at least 1). */
static int bit_length(uint32_t x) {
    int bits = 1;
    while (bits < 32 && x >> bits) ++bits;
    return bits;
}

enum { FLOAT_BITS = 31 }; /* |x| has the sign bit clear */

static inline uint32_t score_bits(const float *a, const float *b, int64_t i) {
    return bits_of(fabsf(b ? a[i] * b[i] : a[i]));
}

enum { MIN_STRIDE = 17, MIN_BANDED = 8192 };

/* The subsample's stride: odd, so rows of power-of-two width are not read at the same columns,
 * and about n^(1/3) / 1.37, which makes the subsample about (1.6 n)^(2/3) scores. That balances its
 * cost (reading it, two selects: about 3.4 ns a score here) against the band's (2.5 ns a score,
 * and the band holds about 4.4 n / sqrt(subsample) scores). Measured on the project's CPU: at 1M
 * scores, stride 73 selects in 0.19 ms, every 17th in 0.31; at 61k, 29 against 17: 27 us, 31. */
static int64_t subsample_stride(int64_t n) {
    int64_t stride = (int64_t)(cbrt((double)n) * 0.73) | 1;
    return stride < MIN_STRIDE ? MIN_STRIDE : stride;
}

/* The band pass: every score's bits; counts those above hi; gathers those in [lo, hi] into out,
 * as offsets from lo, so the select reads only the bits of hi - lo (out may be scratch that the
 * scores are not read from; m <= i, so it never overtakes). Returns
 * the number gathered. Branch-free: to a branch predictor the band test is noise. */
static int64_t band_pass_scalar(const float *a, const float *b, int64_t n, uint32_t hi, uint32_t lo, uint32_t *out,
                                int64_t *above_out) {
    int64_t above = 0, inside = 0;
    for (int64_t i = 0; i < n; ++i) {
        uint32_t u = score_bits(a, b, i);
        above += u > hi;
        out[inside] = u - lo;
        inside += (u <= hi) & (u >= lo);
    }
    *above_out = above;
    return inside;
}

static int force_scalar; /* the tests' switch: the portable paths must stay proven on AVX2 machines */

void cdr_force_scalar(int on) { force_scalar = on; }

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_AVX2_PATH 1
static int use_avx2(void) { return !force_scalar && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt"); }
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
    const __m256i vhi = _mm256_set1_epi32((int32_t)hi), vlo = _mm256_set1_epi32((int32_t)lo),
                  vlo_minus_1 = _mm256_set1_epi32((int32_t)lo - 1);
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
        _mm256_storeu_si256((__m256i *)(out + inside), _mm256_permutevar8x32_epi32(_mm256_sub_epi32(u, vlo), pack)); /* inside + 8 <= i + 8 <= n */
        above += __builtin_popcount((unsigned)above_mask);
        inside += __builtin_popcount((unsigned)in_mask);
    }
    int64_t tail_above;
    inside += band_pass_scalar(a + i, b ? b + i : NULL, n - i, hi, lo, out + inside, &tail_above);
    *above_out = above + tail_above;
    return inside;
}
#endif

static int64_t band_pass_part(const float *a, const float *b, int64_t n, uint32_t hi, uint32_t lo, uint32_t *out,
                              int64_t *above_out, int avx2) {
#ifdef HAVE_AVX2_PATH
    if (avx2) return band_pass_avx2(a, b, n, hi, lo, out, above_out);
#endif
    (void)avx2;
    return band_pass_scalar(a, b, n, hi, lo, out, above_out);
}

/* The band pass over all n scores, one contiguous part per thread; each part gathers into its
 * own stretch of out (a part's band never outgrows the part), then the stretches are closed up. */
static int64_t band_pass(const float *a, const float *b, int64_t n, uint32_t hi, uint32_t lo, uint32_t *out,
                         int64_t *above_out) {
    int avx2 = 0;
#ifdef HAVE_AVX2_PATH
    avx2 = use_avx2();
    if (avx2 && !left_pack_ready) init_left_pack(); /* before any thread reads it */
#endif
    int parts = parts_for(n);
    int64_t inside[MAX_PARTS], above[MAX_PARTS];
#pragma omp parallel for num_threads(parts) schedule(static, 1) if (parts > 1)
    for (int p = 0; p < parts; ++p) {
        int64_t start = part_start(n, parts, p), end = part_start(n, parts, p + 1);
        inside[p] = band_pass_part(a + start, b ? b + start : NULL, end - start, hi, lo, out + start, &above[p], avx2);
    }
    int64_t total = inside[0], total_above = above[0];
    for (int p = 1; p < parts; ++p) {
        memmove(out + total, out + part_start(n, parts, p), (size_t)inside[p] * sizeof *out);
        total += inside[p];
        total_above += above[p];
    }
    *above_out = total_above;
    return total;
}

/* *out <- the k-th largest (1 <= k <= n) of |a[i] * b[i]|, or of |a[i]| when b is NULL; scratch:
 * n uint32.
 *
 * A strided subsample (see subsample_stride) bounds a band 4.5 standard deviations of its
 * quantile either side of rank k. One pass counts the scores above the band and gathers those
 * inside it (a few percent; 8 at a time with AVX2 where the CPU has it; one part per thread), and
 * only the band is selected from. If rank k falls outside the
 * band after all, the full select runs: the answer is exact either way, the subsample only
 * decides the work. */
void cdr_kth_largest(const float *a, const float *b, int64_t n, int64_t k, uint32_t *scratch, float *out) {
    uint32_t answer;
    if (n >= MIN_BANDED) {
        int64_t m = 0, stride = subsample_stride(n);
        for (int64_t i = 0; i < n; i += stride) scratch[m++] = score_bits(a, b, i);
        memcpy(scratch + m, scratch, (size_t)m * sizeof *scratch);
        double q = (double)k / (double)n, centre = q * (double)m;
        double margin = 4.5 * sqrt(q * (1.0 - q) * (double)m) + 2.0;
        int64_t upper = (int64_t)floor(centre - margin), lower = (int64_t)ceil(centre + margin);
        upper = upper < 1 ? 1 : upper;
        lower = lower > m ? m : lower;
        uint32_t hi = select_bits(scratch, m, upper, FLOAT_BITS), lo = select_bits(scratch + m, m, lower, FLOAT_BITS);
        int64_t above;
        int64_t inside = band_pass(a, b, n, hi, lo, scratch, &above);
        if (above < k && k - above <= inside) {
            answer = lo + select_bits(scratch, inside, k - above, bit_length(hi - lo));
            goto done;
        }
    }
    for (int64_t i = 0; i < n; ++i) scratch[i] = score_bits(a, b, i);
    answer = select_bits(scratch, n, k, FLOAT_BITS);
done:
    memcpy(out, &answer, sizeof *out); /* straight into the caller's 0-d threshold tensor */
}

/* One specialised, branch-free loop per (mask, momentum, RDI) combination, so that each
 * vectorises; the flags are compile-time constants after inlining. Returns the kept count. */
static inline __attribute__((always_inline)) int64_t update_range(
    float *restrict w, const float *restrict g, float *restrict buf, const float *restrict w0, int64_t lo, int64_t hi,
    float thr, float lr, float momentum, float weight_decay, float rdi_coef, float gradient_scale, const int mask,
    const int has_momentum, const int has_rdi) {
    int64_t kept = 0;
    for (int64_t start = lo; start < hi; start += 1 << 20) { /* int32 counts per chunk: vectorisable */
        int64_t end = start + (1 << 20) < hi ? start + (1 << 20) : hi;
        int32_t chunk_kept = 0;
        for (int64_t i = start; i < end; ++i) {
            float gi = g[i], wi = w[i], d;
            if (mask) {
                int32_t keep = fabsf(gi * wi) >= thr;
                chunk_kept += keep;
                d = ((float)keep * gradient_scale) * gi + weight_decay * wi;
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
    update_range(w, g, buf, w0, lo, hi, thr, lr, momentum, weight_decay, rdi_coef, gradient_scale, MASK, MOM, RDI)

#define UPDATE_DISPATCH_BODY                                                     \
    {                                                                            \
        int mom = momentum != 0.0f, rdi = rdi_coef != 0.0f;                      \
        if (mask) {                                                              \
            if (mom) return rdi ? UPDATE(1, 1, 1) : UPDATE(1, 1, 0);             \
            return rdi ? UPDATE(1, 0, 1) : UPDATE(1, 0, 0);                      \
        }                                                                        \
        if (mom) return rdi ? UPDATE(0, 1, 1) : UPDATE(0, 1, 0);                 \
        return rdi ? UPDATE(0, 0, 1) : UPDATE(0, 0, 0);                          \
    }
#define UPDATE_PARAMS                                                                                         \
    float *w, const float *g, float *buf, const float *w0, int64_t lo, int64_t hi, float thr, float lr,       \
        float momentum, float weight_decay, float rdi_coef, float gradient_scale, int mask

static int64_t update_portable(UPDATE_PARAMS) UPDATE_DISPATCH_BODY
#ifdef HAVE_AVX2_PATH
/* The same loops compiled for 8-wide vectors (no FMA: each product still rounds on its own). */
__attribute__((target("avx2"))) static int64_t update_avx2(UPDATE_PARAMS) UPDATE_DISPATCH_BODY
#endif

/* The update of [lo, hi), one contiguous part per thread; returns the kept count. */
static int64_t update_parts(UPDATE_PARAMS) {
    int avx2 = 0;
#ifdef HAVE_AVX2_PATH
    avx2 = use_avx2();
#endif
    int parts = parts_for(hi - lo);
    int64_t kept = 0;
#pragma omp parallel for num_threads(parts) schedule(static, 1) reduction(+ : kept) if (parts > 1)
    for (int p = 0; p < parts; ++p) {
        int64_t start = lo + part_start(hi - lo, parts, p), end = lo + part_start(hi - lo, parts, p + 1);
#ifdef HAVE_AVX2_PATH
        if (avx2) {
            kept += update_avx2(w, g, buf, w0, start, end, thr, lr, momentum, weight_decay, rdi_coef, gradient_scale, mask);
            continue;
        }
#endif
        kept += update_portable(w, g, buf, w0, start, end, thr, lr, momentum, weight_decay, rdi_coef, gradient_scale, mask);
    }
    (void)avx2;
    return kept;
}

/* Engine.masked_update over flat buffers (see cdr_fast/engines/base.py): the threshold is read
 * from, and the kept count added to, the caller's 0-d tensors (no tensor op around the call).
 * The mask multiplies as the published code does: g * ((score >= thr) * gradient_scale). */
void cdr_masked_update(float *w, const float *g, float *buf, const float *w0, int64_t n, int64_t n_scored,
                       const float *thr, float lr, float momentum, float weight_decay, float rdi_coef, float gradient_scale,
                       int mask, int32_t *kept) {
    int64_t split = mask ? n_scored : 0;
    int64_t count = update_parts(w, g, buf, w0, 0, split, *thr, lr, momentum, weight_decay, rdi_coef, gradient_scale, mask);
    update_parts(w, g, buf, w0, split, n, *thr, lr, momentum, weight_decay, rdi_coef, gradient_scale, 0);
    if (mask) *kept += (int32_t)count;
}

/* The systematic sample of cdr_fast/sampling.py: out[4 j + c] <- |a * b| at window * j + phase + c,
 * for each of `windows` windows and c < 4 (one 16-byte chunk per window, at the same phase). */
void cdr_systematic_sample(const float *a, const float *b, int64_t windows, int64_t window, int64_t phase,
                           float *out) {
    const int parts = parts_for(4 * windows);
#pragma omp parallel for num_threads(parts) schedule(static) if (parts > 1)
    for (int64_t j = 0; j < windows; ++j) {
        const int64_t at = window * j + phase;
        for (int c = 0; c < 4; ++c) out[4 * j + c] = fabsf(a[at + c] * b[at + c]);
    }
}
