#include "kernels/int8_kernels.h"

#include "core/cpu_weights.h"
#include "kernels/cpu_features.h"
#include "kernels/kquant_blocks.h"

#include <ggml.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <type_traits>
#include <vector>

namespace minicpmv {

#if MINICPMV_X86_KERNELS

namespace {

constexpr int64_t kBlock = 256;
// Weights are prefetched this many bytes ahead of use: the hardware prefetchers stop at 4 KiB page
// boundaries, and a mapped file is in 4 KiB pages. Measured on the full model's decode step: ~5 %
// faster over the mapping (noisy; 2-4 KiB best), no change over huge-page memory.
constexpr int kPrefetchAhead = 3072;
// Activation rows taken together per pass over the weights (their accumulators stay in registers).
constexpr int kMaxCols = 4;

// 256 activations rounded to 8 bits, as int8_rows writes them: 576 bytes, so consecutive blocks keep
// the alignment of the row.
struct ActBlock {
    float d;            // value = d·q
    int16_t sum16[16];  // Σ q over each group of 16 (q6_K's scale groups)
    int16_t sum32[8];   // Σ q over each 32 (q4_K's sub-blocks)
    uint8_t pad[12];
    int8_t q[256];   // in order (q6_K's layout)
    int8_t q4[256];  // in q4_K's nibble order: sub-blocks 0,2 | 1,3 | 4,6 | 5,7 (kquant_blocks.h)
};
static_assert(sizeof(ActBlock) == 576, "ActBlock is 9 cache lines");

// ggml's q8_K scale (quantize_row_q8_K) for a block whose largest |x| is max: clears `a` and sets a.d;
// returns the factor that rounds the values to 8 bits, 0 for a block of zeros (which stays 0).
float start_block(float max, ActBlock & a) {
    std::memset(&a, 0, sizeof a);
    if (max == 0.0f) return 0.0f;
    const float iscale = 127.0f / max;
    a.d = 1.0f / iscale;
    return iscale;
}
}  // namespace

// Compiled for AVX-512 VNNI whatever the build flags; run only after cpu_has_avx512_vnni().
MINICPMV_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")

namespace {
namespace avx512 {

// ggml's q8_K rounding (quantize_row_q8_K): scale 127 / max|x| (start_block), round half to even.
void quantize_block(const float * x, ActBlock & a) {
    __m512 v[16];
    __m512 amax = _mm512_setzero_ps();
    for (int i = 0; i < 16; ++i) {
        v[i] = _mm512_loadu_ps(x + 16 * i);
        amax = _mm512_max_ps(amax, _mm512_abs_ps(v[i]));
    }
    const float iscale = start_block(_mm512_reduce_max_ps(amax), a);
    if (iscale == 0.0f) return;
    const __m512 s = _mm512_set1_ps(iscale);
    for (int i = 0; i < 16; ++i) {
        const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(v[i], s));  // MXCSR: nearest, ties to even
        _mm_storeu_si128(reinterpret_cast<__m128i *>(a.q + 16 * i), _mm512_cvtsepi32_epi8(q));
        a.sum16[i] = static_cast<int16_t>(_mm512_reduce_add_epi32(q));
    }
    for (int j = 0; j < 8; ++j) a.sum32[j] = static_cast<int16_t>(a.sum16[2 * j] + a.sum16[2 * j + 1]);
    // The order of q4_K's nibbles: each 64 bytes of qs carry sub-blocks 2c, 2c+2 (low) and 2c+1, 2c+3 (high).
    static constexpr int kFrom[8] = {0, 64, 32, 96, 128, 192, 160, 224};
    for (int p = 0; p < 8; ++p) std::memcpy(a.q4 + 32 * p, a.q + kFrom[p], 32);
}

// Word w of 128-bit lane L gets byte (L < 2 ? first : second) of a 16-byte vector, zero-extended.
__m512i word_broadcast_control(int first, int second) {
    alignas(64) int8_t c[64];
    for (int i = 0; i < 64; ++i) c[i] = i % 2 ? static_cast<int8_t>(0x80) : static_cast<int8_t>(i < 32 ? first : second);
    return _mm512_load_si512(c);
}

// The cache lines of a block of `bytes`, kPrefetchAhead further on.
template <size_t bytes>
void prefetch_ahead(const void * block) {
    const char * p = static_cast<const char *>(block) + kPrefetchAhead;
    for (size_t off = 0; off < bytes; off += 64) _mm_prefetch(p + off, _MM_HINT_T0);
}

float hsum(__m128 v) {
    v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    return _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)));
}

// Rows [r0, r1) of a q4_K matrix times NC activation rows. Per block: 64 bytes of qs hold chunks c, c+1,
// so their low nibbles are sub-blocks 2c, 2c+2 and their high nibbles 2c+1, 2c+3; maddubs multiplies
// them with the activations in that order (ActBlock::q4) into pair sums, madd/dpwssd weighs the pairs
// by their sub-block's scale. The mins come off per block through the activations' sums of 32: with
// several rows, all rows' in one vector (128 bits each), the same products and sums as one row's alone.
template <int NC>
void q4_K_rows(const char * w, size_t w_stride, int64_t nb, int64_t r0, int64_t r1, const ActBlock * const * a, float * const * y,
               const float * bias) {
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    const __m512i ctl0 = word_broadcast_control(0, 2), ctl1 = word_broadcast_control(1, 3);
    const __m512i ctl2 = word_broadcast_control(4, 6), ctl3 = word_broadcast_control(5, 7);
    // NC > 1: per block, the rows' sums of 32 side by side (32 words) and each row's scale over its
    // 4 lanes (16 floats); rows past NC stay zero.
    std::vector<int16_t> sums(NC > 1 ? nb * 32 : 0, 0);
    std::vector<float> scales(NC > 1 ? nb * 16 : 0, 0.0f);
    for (int64_t b = 0; NC > 1 && b < nb; ++b) {
        for (int c = 0; c < NC; ++c) {
            std::memcpy(&sums[b * 32 + 8 * c], a[c][b].sum32, sizeof a[c][b].sum32);
            for (int k = 0; k < 4; ++k) scales[b * 16 + 4 * c + k] = a[c][b].d;
        }
    }
    for (int64_t r = r0; r < r1; ++r) {
        const auto * row = reinterpret_cast<const BlockQ4K *>(w + r * w_stride);
        __m512 acc[NC];
        for (int c = 0; c < NC; ++c) acc[c] = _mm512_setzero_ps();
        __m128 acc_min = _mm_setzero_ps();      // NC == 1
        __m512 acc_mins = _mm512_setzero_ps();  // NC > 1: row c in lanes 4c..4c+3
        for (int64_t b = 0; b < nb; ++b) {
            const BlockQ4K & B = row[b];
            prefetch_ahead<sizeof B>(&B);
            alignas(16) uint8_t sm[16];
            q4_K_scales_mins(B.scales, sm);
            const __m128i sm_v = _mm_load_si128(reinterpret_cast<const __m128i *>(sm));
            const __m512i sm_all = _mm512_broadcast_i32x4(sm_v);
            const __m512i s0 = _mm512_shuffle_epi8(sm_all, ctl0), s1 = _mm512_shuffle_epi8(sm_all, ctl1);
            const __m512i s2 = _mm512_shuffle_epi8(sm_all, ctl2), s3 = _mm512_shuffle_epi8(sm_all, ctl3);
            const __m128i mins = _mm_cvtepu8_epi16(_mm_srli_si128(sm_v, 8));
            const __m512i w0 = _mm512_loadu_si512(B.qs), w1 = _mm512_loadu_si512(B.qs + 64);
            const __m512i l0 = _mm512_and_si512(w0, low4), h0 = _mm512_and_si512(_mm512_srli_epi16(w0, 4), low4);
            const __m512i l1 = _mm512_and_si512(w1, low4), h1 = _mm512_and_si512(_mm512_srli_epi16(w1, 4), low4);
            const float d = _cvtsh_ss(B.d), dmin = _cvtsh_ss(B.dmin);
            for (int c = 0; c < NC; ++c) {
                const ActBlock & A = a[c][b];
                __m512i p = _mm512_madd_epi16(_mm512_maddubs_epi16(l0, _mm512_loadu_si512(A.q4)), s0);
                p = _mm512_dpwssd_epi32(p, _mm512_maddubs_epi16(h0, _mm512_loadu_si512(A.q4 + 64)), s1);
                p = _mm512_dpwssd_epi32(p, _mm512_maddubs_epi16(l1, _mm512_loadu_si512(A.q4 + 128)), s2);
                p = _mm512_dpwssd_epi32(p, _mm512_maddubs_epi16(h1, _mm512_loadu_si512(A.q4 + 192)), s3);
                acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_set1_ps(d * A.d), acc[c]);
            }
            if constexpr (NC == 1) {
                const __m128i m = _mm_madd_epi16(mins, _mm_loadu_si128(reinterpret_cast<const __m128i *>(a[0][b].sum32)));
                acc_min = _mm_fmadd_ps(_mm_cvtepi32_ps(m), _mm_set1_ps(dmin * a[0][b].d), acc_min);
            } else {
                const __m512i m = _mm512_madd_epi16(_mm512_broadcast_i32x4(mins), _mm512_loadu_si512(&sums[b * 32]));
                acc_mins = _mm512_fmadd_ps(_mm512_cvtepi32_ps(m),
                                           _mm512_mul_ps(_mm512_set1_ps(dmin), _mm512_loadu_ps(&scales[b * 16])), acc_mins);
            }
        }
        alignas(64) float lanes[16];
        if constexpr (NC > 1) _mm512_store_ps(lanes, acc_mins);
        for (int c = 0; c < NC; ++c) {
            const float m = hsum(NC == 1 ? acc_min : _mm_load_ps(lanes + 4 * c));
            y[c][r] = _mm512_reduce_add_ps(acc[c]) - m + (bias ? bias[r] : 0.0f);
        }
    }
}

// 32 words: `first` in the low 256 bits, `second` in the high.
__m512i words_by_half(int16_t first, int16_t second) {
    return _mm512_inserti64x4(_mm512_set1_epi16(first), _mm256_set1_epi16(second), 1);
}

// Word indices picking, per 128-bit lane L, word `base + L` of the scales (each lane: 16 values).
__m512i scale_lanes(int base) {
    alignas(64) int16_t idx[32];
    for (int i = 0; i < 32; ++i) idx[i] = static_cast<int16_t>(base + i / 8);
    return _mm512_load_si512(idx);
}

// The 256 unsigned 6-bit values (q + 32) of a q6_K block, in order, 64 per vector. Per half of 128:
// ql's 64 bytes give values 0-63 (low nibbles) and 64-127 (high nibbles) in order; qh's 32 bytes,
// repeated in both 256-bit halves and shifted per half, put each value's top 2 bits at 0x30.
struct Q6KValues {
    __m512i low4, top2, shl, shr;

    // Written out: GCC compiles an implicit constructor without the target pragma.
    Q6KValues()
        : low4(_mm512_set1_epi8(0x0F)), top2(_mm512_set1_epi8(0x30)), shl(words_by_half(4, 2)), shr(words_by_half(0, 2)) {}

    void operator()(const BlockQ6K & B, __m512i v[4]) const {
        constexpr int kAndOr = 0xEA;  // ternary logic (A & B) | C
        for (int h = 0; h < 2; ++h) {
            const __m512i ql = _mm512_loadu_si512(B.ql + 64 * h);
            const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(B.qh + 32 * h)));
            v[2 * h] = _mm512_ternarylogic_epi32(_mm512_sllv_epi16(qh, shl), top2, _mm512_and_si512(ql, low4), kAndOr);
            v[2 * h + 1] = _mm512_ternarylogic_epi32(_mm512_srlv_epi16(qh, shr), top2,
                                                     _mm512_and_si512(_mm512_srli_epi16(ql, 4), low4), kAndOr);
        }
    }
};

// Rows [r0, r1) of a q6_K matrix times NC activation rows. maddubs takes the unsigned values with the
// activations in order (ActBlock::q) into pair sums, madd/dpwssd weighs each 128-bit lane (a group of
// 16) by its scale; q − 32 is restored per block through the activations' sums of 16.
template <int NC>
void q6_K_rows(const char * w, size_t w_stride, int64_t nb, int64_t r0, int64_t r1, const ActBlock * const * a, float * const * y,
               const float * bias) {
    const Q6KValues values;
    const __m512i idx[4] = {scale_lanes(0), scale_lanes(4), scale_lanes(8), scale_lanes(12)};
    for (int64_t r = r0; r < r1; ++r) {
        const auto * row = reinterpret_cast<const BlockQ6K *>(w + r * w_stride);
        __m512 acc[NC];
        for (int c = 0; c < NC; ++c) acc[c] = _mm512_setzero_ps();
        for (int64_t b = 0; b < nb; ++b) {
            const BlockQ6K & B = row[b];
            prefetch_ahead<sizeof B>(&B);
            const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(B.scales)));
            const __m512i sc = _mm512_castsi256_si512(sc16);
            __m512i q[4], s[4];
            values(B, q);
            for (int i = 0; i < 4; ++i) s[i] = _mm512_permutexvar_epi16(idx[i], sc);
            const float d = _cvtsh_ss(B.d);
            for (int c = 0; c < NC; ++c) {
                const ActBlock & A = a[c][b];
                __m512i p = _mm512_madd_epi16(_mm512_maddubs_epi16(q[0], _mm512_loadu_si512(A.q)), s[0]);
                for (int i = 1; i < 4; ++i)
                    p = _mm512_dpwssd_epi32(p, _mm512_maddubs_epi16(q[i], _mm512_loadu_si512(A.q + 64 * i)), s[i]);
                const __m256i offset = _mm256_madd_epi16(sc16, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(A.sum16)));
                p = _mm512_sub_epi32(p, _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_slli_epi32(offset, 5), 0));
                acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_set1_ps(d * A.d), acc[c]);
            }
        }
        for (int c = 0; c < NC; ++c) y[c][r] = _mm512_reduce_add_ps(acc[c]) + (bias ? bias[r] : 0.0f);
    }
}

// --- many activation rows (prompts): 16 weight rows × kTileCols activation rows per tile --------------

constexpr int kPanelRows = 16;
constexpr int kTileCols = 6;
// From this many activation rows a product unpacks its weights once into panels (product_tiles)
// instead of reading the blocks once per kMaxCols rows (product_rows).
constexpr int64_t kMinTileRows = 8;

// One 256-column block of 16 weight rows, unpacked for vpdpbusd: value = d·Σ_g scale_g·(u·a over group
// g) − d2·Σ_g' m_g'·(Σ a over group g'), u the unsigned values. q4_K: groups of 32, m = the mins,
// d2 = dmin. q6_K: groups of 16, m = the scales, d2 = 32·d (u = q + 32).
struct alignas(64) Panel {
    uint8_t u[64][64];        // [quad of columns][row·4 + i]: one vector per 4 columns
    int32_t scale[16][16];    // [group][row]
    uint32_t m_pairs[8][16];  // [pair of groups][row]: two s16 (m of groups 2p, 2p+1)
    float d[16], d2[16];
};

// Rows r0..r0+n-1 of block b into P (rows past n stay as they are: zeros), their unsigned values in
// order first.
void q4_K_panel(const char * w, size_t w_stride, int n, int64_t r0, int64_t b, uint8_t (*values)[256], Panel & P) {
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    for (int r = 0; r < n; ++r) {
        const BlockQ4K & B = reinterpret_cast<const BlockQ4K *>(w + (r0 + r) * w_stride)[b];
        for (int c = 0; c < 4; ++c) {
            const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(B.qs + 32 * c));
            _mm256_storeu_si256(reinterpret_cast<__m256i *>(values[r] + 64 * c), _mm256_and_si256(x, low4));
            _mm256_storeu_si256(reinterpret_cast<__m256i *>(values[r] + 64 * c + 32),
                                _mm256_and_si256(_mm256_srli_epi16(x, 4), low4));
        }
        uint8_t sm[16];
        q4_K_scales_mins(B.scales, sm);
        for (int g = 0; g < 8; ++g) P.scale[g][r] = sm[g];
        for (int p = 0; p < 4; ++p) P.m_pairs[p][r] = sm[8 + 2 * p] | static_cast<uint32_t>(sm[9 + 2 * p]) << 16;
        P.d[r] = _cvtsh_ss(B.d);
        P.d2[r] = _cvtsh_ss(B.dmin);
    }
}

void q6_K_panel(const char * w, size_t w_stride, int n, int64_t r0, int64_t b, uint8_t (*values)[256], Panel & P) {
    const Q6KValues unpack;
    for (int r = 0; r < n; ++r) {
        const BlockQ6K & B = reinterpret_cast<const BlockQ6K *>(w + (r0 + r) * w_stride)[b];
        __m512i v[4];
        unpack(B, v);
        for (int i = 0; i < 4; ++i) _mm512_storeu_si512(values[r] + 64 * i, v[i]);
        for (int g = 0; g < 16; ++g) P.scale[g][r] = B.scales[g];
        for (int p = 0; p < 8; ++p)
            P.m_pairs[p][r] =
                static_cast<uint16_t>(B.scales[2 * p]) | static_cast<uint32_t>(static_cast<uint16_t>(B.scales[2 * p + 1])) << 16;
        P.d[r] = _cvtsh_ss(B.d);
        P.d2[r] = 32.0f * P.d[r];
    }
}

// values [16 rows][256] → P.u [64 quads][16 rows × 4 bytes].
void transpose_quads(const uint8_t (*values)[256], Panel & P) {
    const __m512i rows =
        _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32(256));
    for (int q = 0; q < 64; ++q) {
        _mm512_store_si512(P.u[q], _mm512_i32gather_epi32(rows, values[0] + 4 * q, 1));
    }
}

int32_t load_i32(const void * p) {
    int32_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

// One tile: the panel's 16 rows × NT activation rows over all nb blocks into acc (a row per lane).
// GQ quads per group (8: q4_K, 4: q6_K); the activations' group sums sit at `sums` bytes into their
// ActBlock (sum32 or sum16).
template <int NT, int GQ>
void panel_tile(const Panel * panels, int64_t nb, const ActBlock * const * a, size_t sums, __m512 * acc) {
    constexpr int kGroups = 64 / GQ;
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const Panel & P = panels[b];
        __m512i blk[NT], mn[NT];
        for (int t = 0; t < NT; ++t) blk[t] = mn[t] = _mm512_setzero_si512();
        for (int g = 0; g < kGroups; ++g) {
            __m512i sum[NT];
            for (int t = 0; t < NT; ++t) sum[t] = _mm512_setzero_si512();
            for (int j = 0; j < GQ; ++j) {
                const int q = g * GQ + j;
                const __m512i u = _mm512_load_si512(P.u[q]);
                for (int t = 0; t < NT; ++t)
                    sum[t] = _mm512_dpbusd_epi32(sum[t], u, _mm512_set1_epi32(load_i32(a[t][b].q + 4 * q)));
            }
            const __m512i sc = _mm512_load_si512(P.scale[g]);
            for (int t = 0; t < NT; ++t) blk[t] = _mm512_add_epi32(blk[t], _mm512_mullo_epi32(sum[t], sc));
        }
        for (int p = 0; p < kGroups / 2; ++p) {
            const __m512i m = _mm512_load_si512(P.m_pairs[p]);
            for (int t = 0; t < NT; ++t) {
                mn[t] = _mm512_dpwssd_epi32(mn[t], m,
                                            _mm512_set1_epi32(load_i32(reinterpret_cast<const char *>(&a[t][b]) + sums + 4 * p)));
            }
        }
        const __m512 d = _mm512_load_ps(P.d), d2 = _mm512_load_ps(P.d2);
        for (int t = 0; t < NT; ++t) {
            const __m512 v = _mm512_fmsub_ps(_mm512_cvtepi32_ps(blk[t]), d, _mm512_mul_ps(_mm512_cvtepi32_ps(mn[t]), d2));
            acc[t] = _mm512_fmadd_ps(v, _mm512_set1_ps(a[t][b].d), acc[t]);
        }
    }
}

template <int GQ>
void panel_tile_n(int nt, const Panel * panels, int64_t nb, const ActBlock * const * a, size_t sums, __m512 * acc) {
    switch (nt) {
        case 1: return panel_tile<1, GQ>(panels, nb, a, sums, acc);
        case 2: return panel_tile<2, GQ>(panels, nb, a, sums, acc);
        case 3: return panel_tile<3, GQ>(panels, nb, a, sums, acc);
        case 4: return panel_tile<4, GQ>(panels, nb, a, sums, acc);
        case 5: return panel_tile<5, GQ>(panels, nb, a, sums, acc);
        default: return panel_tile<kTileCols, GQ>(panels, nb, a, sums, acc);
    }
}

// Panels of 16 weight rows dealt round-robin to the threads; each thread unpacks its panel once (all
// blocks, ~5.6 KiB each: in L2) and runs every tile of activation rows over it.
void product_tiles(const char * w, size_t w_stride, ggml_type type, int64_t K, int64_t M, const char * xq, size_t xq_stride,
                   int64_t N, char * y, size_t y_stride, const float * bias, int ith, int nth) {
    const int64_t nb = K / kBlock, n_panels = (M + kPanelRows - 1) / kPanelRows;
    const bool q4 = type == GGML_TYPE_Q4_K;
    thread_local std::vector<Panel> panels;
    panels.resize(nb);
    alignas(64) uint8_t values[kPanelRows][256];
    for (int64_t pi = ith; pi < n_panels; pi += nth) {
        const int64_t r0 = pi * kPanelRows;
        const int n = static_cast<int>(std::min<int64_t>(kPanelRows, M - r0));
        for (int64_t b = 0; b < nb; ++b) {
            if (n < kPanelRows) {  // the last panel: rows past M are zeros
                std::memset(values, 0, sizeof values);
                panels[b] = Panel{};
            }
            (q4 ? q4_K_panel : q6_K_panel)(w, w_stride, n, r0, b, values, panels[b]);
            transpose_quads(values, panels[b]);
        }
        const __mmask16 rows = static_cast<__mmask16>((1u << n) - 1);
        const __m512 bias_v = bias ? _mm512_maskz_loadu_ps(rows, bias + r0) : _mm512_setzero_ps();
        for (int64_t c0 = 0; c0 < N; c0 += kTileCols) {
            const int nt = static_cast<int>(std::min<int64_t>(kTileCols, N - c0));
            const ActBlock * a[kTileCols];
            for (int t = 0; t < nt; ++t) a[t] = reinterpret_cast<const ActBlock *>(xq + (c0 + t) * xq_stride);
            __m512 acc[kTileCols];
            if (q4) {
                panel_tile_n<8>(nt, panels.data(), nb, a, offsetof(ActBlock, sum32), acc);
            } else {
                panel_tile_n<4>(nt, panels.data(), nb, a, offsetof(ActBlock, sum16), acc);
            }
            for (int t = 0; t < nt; ++t) {
                _mm512_mask_storeu_ps(reinterpret_cast<float *>(y + (c0 + t) * y_stride) + r0, rows,
                                      _mm512_add_ps(acc[t], bias_v));
            }
        }
    }
}

// Rows [r0, r1) of w times the N activation rows xq (row n at xq + n·xq_stride bytes) into y (row n at
// y + n·y_stride bytes), kMaxCols activation rows per pass over the weights.
void product_rows(const char * w, size_t w_stride, ggml_type type, int64_t K, int64_t r0, int64_t r1, const char * xq,
                  size_t xq_stride, int64_t N, char * y, size_t y_stride, const float * bias) {
    const int64_t nb = K / kBlock;
    for (int64_t c0 = 0; c0 < N; c0 += kMaxCols) {
        const int nc = static_cast<int>(std::min<int64_t>(kMaxCols, N - c0));
        const ActBlock * a[kMaxCols];
        float * out[kMaxCols];
        for (int c = 0; c < nc; ++c) {
            a[c] = reinterpret_cast<const ActBlock *>(xq + (c0 + c) * xq_stride);
            out[c] = reinterpret_cast<float *>(y + (c0 + c) * y_stride);
        }
        const bool q4 = type == GGML_TYPE_Q4_K;
        switch (nc) {
            case 1:
                q4 ? q4_K_rows<1>(w, w_stride, nb, r0, r1, a, out, bias) : q6_K_rows<1>(w, w_stride, nb, r0, r1, a, out, bias);
                break;
            case 2:
                q4 ? q4_K_rows<2>(w, w_stride, nb, r0, r1, a, out, bias) : q6_K_rows<2>(w, w_stride, nb, r0, r1, a, out, bias);
                break;
            case 3:
                q4 ? q4_K_rows<3>(w, w_stride, nb, r0, r1, a, out, bias) : q6_K_rows<3>(w, w_stride, nb, r0, r1, a, out, bias);
                break;
            default:
                q4 ? q4_K_rows<4>(w, w_stride, nb, r0, r1, a, out, bias) : q6_K_rows<4>(w, w_stride, nb, r0, r1, a, out, bias);
                break;
        }
    }
}

// w [K, M] times N activation rows: thread ith of nth computes its share of the output rows.
void product(const char * w, size_t w_stride, ggml_type type, int64_t K, int64_t M, const char * xq, size_t xq_stride, int64_t N,
             char * y, size_t y_stride, const float * bias, bool per_row, int ith, int nth) {
    if (N >= kMinTileRows && !per_row) {
        product_tiles(w, w_stride, type, K, M, xq, xq_stride, N, y, y_stride, bias, ith, nth);
    } else {
        product_rows(w, w_stride, type, K, M * ith / nth, M * (ith + 1) / nth, xq, xq_stride, N, y, y_stride, bias);
    }
}

}  // namespace avx512
}  // namespace

MINICPMV_TARGET_END()

// --- AVX2 (CPUs without AVX-512): ggml's own dot products for prompt batches --------------------------
//
// ggml 0.15's AVX2 dot product of a q4_K/q6_K row with a q8_K row sums each block in eight int32 lanes
// (lane k: values 4k..4k+3 of every 32, each 32 weighted by its scale), adds d·lanes to eight f32 lanes
// block by block (q4_K's mins into four more), and adds the lanes up at the end in a fixed tree. The same
// operations run here in the same order, so each output equals ggml_mul_mat's to the bit and a row's
// logits do not depend on which path its batch took (#14). What changes is the work per block: ggml
// unpacks nibbles, 6-bit values and scales once per (weight row, activation row); here each weight row is
// unpacked once per batch and its 32-value chunks then meet kCols activation rows, two weight rows at a
// time (prompts: ~2× ggml's rate).
MINICPMV_TARGET_BEGIN("avx2,fma,f16c")

namespace {
namespace avx2 {

// From this many activation rows a product unpacks its weights (fewer: ggml's vec_dot, the same numbers).
constexpr int64_t kMinRows = 8;
constexpr int kCols = 4;

// ggml's q8_K rounding, as avx512::quantize_block (without the q4 copy only the AVX-512 kernels read).
void quantize_block(const float * x, ActBlock & a) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 amax = _mm256_setzero_ps();
    for (int i = 0; i < 32; ++i) amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * i)));
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    const float iscale = start_block(_mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m))), a);
    if (iscale == 0.0f) return;
    const __m256 s = _mm256_set1_ps(iscale);
    for (int i = 0; i < 16; ++i) {
        const __m256i q0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16 * i), s));  // nearest, ties to even
        const __m256i q1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16 * i + 8), s));
        const __m256i q16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8);  // in order
        _mm_storeu_si128(reinterpret_cast<__m128i *>(a.q + 16 * i),
                         _mm_packs_epi16(_mm256_castsi256_si128(q16), _mm256_extracti128_si256(q16, 1)));
        __m128i t = _mm_add_epi32(_mm256_castsi256_si128(_mm256_add_epi32(q0, q1)),
                                  _mm256_extracti128_si256(_mm256_add_epi32(q0, q1), 1));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
        a.sum16[i] = static_cast<int16_t>(_mm_cvtsi128_si32(_mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1))));
    }
    for (int j = 0; j < 8; ++j) a.sum32[j] = static_cast<int16_t>(a.sum16[2 * j] + a.sum16[2 * j + 1]);
}

// One weight block unpacked: its values as unsigned bytes in order (q4_K: q; q6_K: q + 32), each 32's
// scale as the 16 words vpmaddwd weighs its lanes with (q4_K: the sub-block's scale; q6_K: the first
// group's in words 0-7, the second's in 8-15), and what the block's offset needs (q4_K: the 8 mins;
// q6_K: the 16 scales, for the −32·scale·Σa that turns q + 32 back into q).
struct alignas(32) RowBlock {
    uint8_t u[256];
    int16_t scale[8][16];
    int16_t offset[16];
    float d, dmin;
};

void unpack(const BlockQ4K & B, RowBlock & P) {
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    for (int j = 0; j < 4; ++j) {  // 32 bytes of qs: values 64j.. in the low nibbles, 64j+32.. in the high
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(B.qs + 32 * j));
        _mm256_store_si256(reinterpret_cast<__m256i *>(P.u + 64 * j), _mm256_and_si256(x, low4));
        _mm256_store_si256(reinterpret_cast<__m256i *>(P.u + 64 * j + 32), _mm256_and_si256(_mm256_srli_epi16(x, 4), low4));
    }
    uint8_t sm[16];
    q4_K_scales_mins(B.scales, sm);
    for (int g = 0; g < 8; ++g) {
        _mm256_store_si256(reinterpret_cast<__m256i *>(P.scale[g]), _mm256_set1_epi16(sm[g]));
        P.offset[g] = sm[8 + g];
        P.offset[8 + g] = 0;
    }
    P.d = _cvtsh_ss(B.d);
    P.dmin = _cvtsh_ss(B.dmin);
}

void unpack(const BlockQ6K & B, RowBlock & P) {
    const __m256i low4 = _mm256_set1_epi8(0x0F), low2 = _mm256_set1_epi8(0x03);
    // 2 bits of qh at `shift`, moved to bits 4-5 (16-bit shifts: the bits that cross bytes are masked off)
    auto top = [&](__m256i qh, int shift) {
        return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, shift), low2), 4);
    };
    for (int h = 0; h < 2; ++h) {  // each half of 128 values: 64 bytes of ql, 32 of qh
        const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(B.ql + 64 * h));
        const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(B.ql + 64 * h + 32));
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(B.qh + 32 * h));
        const __m256i v[4] = {
            _mm256_or_si256(_mm256_and_si256(ql0, low4), top(qh, 0)),
            _mm256_or_si256(_mm256_and_si256(ql1, low4), top(qh, 2)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4), top(qh, 4)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4), top(qh, 6)),
        };
        for (int i = 0; i < 4; ++i) _mm256_store_si256(reinterpret_cast<__m256i *>(P.u + 128 * h + 32 * i), v[i]);
    }
    for (int m = 0; m < 8; ++m) {
        for (int w = 0; w < 8; ++w) {
            P.scale[m][w] = B.scales[2 * m];
            P.scale[m][8 + w] = B.scales[2 * m + 1];
        }
    }
    for (int g = 0; g < 16; ++g) P.offset[g] = B.scales[g];
    P.d = _cvtsh_ss(B.d);
    P.dmin = 0.0f;
}

// ggml's hsum_float_8 and the tree of q4_K's four min lanes.
float sum_lanes(__m256 x) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    return _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)));
}

float sum_lanes(__m128 x) {
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    return _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)));
}

// The running sums of one (weight row, activation row) pair between ranges of blocks: ggml's eight
// lanes, and q4_K's four lanes of mins.
struct Sums {
    float acc[8];
    float acc_min[4];
};

// Two unpacked weight rows (p[0], p[1]: nb blocks each) times NC activation rows, added block by block to
// s[c][0..1]. The loops over c are unrolled before GCC looks for values to keep in registers (else the
// sums stay arrays in memory, stored at every step).
template <bool kQ4, int NC>
void two_rows(const RowBlock * const p[2], int64_t nb, const ActBlock * const * a, Sums * const * s) {
    __m256 acc[2][NC];
    __m128 acc_min[2][NC];
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c) {
        for (int r = 0; r < 2; ++r) {
            acc[r][c] = _mm256_loadu_ps(s[c][r].acc);
            acc_min[r][c] = _mm_loadu_ps(s[c][r].acc_min);
        }
    }
    for (int64_t b = 0; b < nb; ++b) {
        const RowBlock &P0 = p[0][b], &P1 = p[1][b];
        __m256i s0[NC], s1[NC];
#pragma GCC unroll 4
        for (int c = 0; c < NC; ++c) s0[c] = s1[c] = _mm256_setzero_si256();
        for (int m = 0; m < 8; ++m) {
            const __m256i u0 = _mm256_load_si256(reinterpret_cast<const __m256i *>(P0.u + 32 * m));
            const __m256i u1 = _mm256_load_si256(reinterpret_cast<const __m256i *>(P1.u + 32 * m));
            const __m256i k0 = _mm256_load_si256(reinterpret_cast<const __m256i *>(P0.scale[m]));
            const __m256i k1 = _mm256_load_si256(reinterpret_cast<const __m256i *>(P1.scale[m]));
#pragma GCC unroll 4
            for (int c = 0; c < NC; ++c) {
                const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(a[c][b].q + 32 * m));
                s0[c] = _mm256_add_epi32(s0[c], _mm256_madd_epi16(_mm256_maddubs_epi16(u0, x), k0));
                s1[c] = _mm256_add_epi32(s1[c], _mm256_madd_epi16(_mm256_maddubs_epi16(u1, x), k1));
            }
        }
#pragma GCC unroll 4
        for (int c = 0; c < NC; ++c) {
            const ActBlock & A = a[c][b];
            if constexpr (kQ4) {
                const __m128i sums = _mm_loadu_si128(reinterpret_cast<const __m128i *>(A.sum32));
                const __m128i m0 = _mm_madd_epi16(_mm_load_si128(reinterpret_cast<const __m128i *>(P0.offset)), sums);
                const __m128i m1 = _mm_madd_epi16(_mm_load_si128(reinterpret_cast<const __m128i *>(P1.offset)), sums);
                acc_min[0][c] = _mm_fmadd_ps(_mm_set1_ps(-A.d * P0.dmin), _mm_cvtepi32_ps(m0), acc_min[0][c]);
                acc_min[1][c] = _mm_fmadd_ps(_mm_set1_ps(-A.d * P1.dmin), _mm_cvtepi32_ps(m1), acc_min[1][c]);
            } else {
                const __m256i sums = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(A.sum16));
                const __m256i o0 = _mm256_madd_epi16(sums, _mm256_load_si256(reinterpret_cast<const __m256i *>(P0.offset)));
                const __m256i o1 = _mm256_madd_epi16(sums, _mm256_load_si256(reinterpret_cast<const __m256i *>(P1.offset)));
                s0[c] = _mm256_sub_epi32(s0[c], _mm256_slli_epi32(o0, 5));
                s1[c] = _mm256_sub_epi32(s1[c], _mm256_slli_epi32(o1, 5));
            }
            acc[0][c] = _mm256_fmadd_ps(_mm256_set1_ps(A.d * P0.d), _mm256_cvtepi32_ps(s0[c]), acc[0][c]);
            acc[1][c] = _mm256_fmadd_ps(_mm256_set1_ps(A.d * P1.d), _mm256_cvtepi32_ps(s1[c]), acc[1][c]);
        }
    }
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c) {
        for (int r = 0; r < 2; ++r) {
            _mm256_storeu_ps(s[c][r].acc, acc[r][c]);
            _mm_storeu_ps(s[c][r].acc_min, acc_min[r][c]);
        }
    }
}

template <bool kQ4>
void two_rows_n(int nc, const RowBlock * const p[2], int64_t nb, const ActBlock * const * a, Sums * const * s) {
    switch (nc) {
        case 1: return two_rows<kQ4, 1>(p, nb, a, s);
        case 2: return two_rows<kQ4, 2>(p, nb, a, s);
        case 3: return two_rows<kQ4, 3>(p, nb, a, s);
        default: return two_rows<kQ4, kCols>(p, nb, a, s);
    }
}

// ggml's hsum_float_8 of the eight lanes, plus the tree of q4_K's four min lanes.
float total(const Sums & s, bool q4) {
    const float lanes = sum_lanes(_mm256_loadu_ps(s.acc));
    return q4 ? lanes + sum_lanes(_mm_loadu_ps(s.acc_min)) : lanes;
}

// Chunks of weight rows dealt round-robin to the threads, taken with up to kPassCols activation rows at a
// time and the blocks in ranges of kRangeBlocks. Within a range, four activation rows' blocks (18 KiB)
// stay in L1 while every pair of the chunk's unpacked rows (in L2, ~160 KiB) runs over them; the sums
// carry from range to range in the order of ggml's loop over blocks. Measured against whole rows
// unpacked and activation rows streamed past them (one thread, the full model's shapes, 512 rows): ffn_down
// (K = 18944) ~70 → ~95 G ops/s per core, the others ~85 → ~95.
template <typename Block>
void product(const char * w, size_t w_stride, int64_t K, int64_t M, const char * xq, size_t xq_stride, int64_t N, char * y,
             size_t y_stride, const float * bias, int ith, int nth) {
    constexpr bool kQ4 = std::is_same_v<Block, BlockQ4K>;
    constexpr int64_t kL2Share = 160 * 1024, kRangeBlocks = 8, kPassCols = 128;
    const int64_t nb = K / kBlock, range = std::min(nb, kRangeBlocks);
    const int64_t chunk_rows = std::clamp<int64_t>(kL2Share / (range * static_cast<int64_t>(sizeof(RowBlock))) / 2 * 2, 2, 64);
    thread_local std::vector<RowBlock> unpacked;
    thread_local std::vector<Sums> sums;  // [activation row in the pass][row in the chunk]
    unpacked.resize(chunk_rows * range);
    sums.resize(kPassCols * chunk_rows);
    for (int64_t r_begin = chunk_rows * ith; r_begin < M; r_begin += chunk_rows * nth) {
        const int64_t r_end = std::min(M, r_begin + chunk_rows), n_pairs = (r_end - r_begin + 1) / 2;
        for (int64_t pass = 0; pass < N; pass += kPassCols) {
            const int64_t pass_end = std::min(N, pass + kPassCols);
            std::fill_n(sums.begin(), (pass_end - pass) * chunk_rows, Sums{});
            for (int64_t b0 = 0; b0 < nb; b0 += range) {
                const int64_t n_blocks = std::min(range, nb - b0);
                for (int64_t i = 0; i < 2 * n_pairs; ++i) {  // a last single row twice
                    const auto * row = reinterpret_cast<const Block *>(w + std::min(r_begin + i, r_end - 1) * w_stride) + b0;
                    for (int64_t b = 0; b < n_blocks; ++b) unpack(row[b], unpacked[i * range + b]);
                }
                for (int64_t c0 = pass; c0 < pass_end; c0 += kCols) {
                    const int nc = static_cast<int>(std::min<int64_t>(kCols, pass_end - c0));
                    const ActBlock * a[kCols];
                    for (int c = 0; c < nc; ++c) a[c] = reinterpret_cast<const ActBlock *>(xq + (c0 + c) * xq_stride) + b0;
                    for (int64_t pair = 0; pair < n_pairs; ++pair) {
                        const RowBlock * const p[2] = {&unpacked[2 * pair * range], &unpacked[(2 * pair + 1) * range]};
                        Sums * s[kCols];
                        for (int c = 0; c < nc; ++c) s[c] = &sums[(c0 + c - pass) * chunk_rows + 2 * pair];
                        two_rows_n<kQ4>(nc, p, n_blocks, a, s);
                    }
                }
            }
            for (int64_t c = pass; c < pass_end; ++c) {
                float * yc = reinterpret_cast<float *>(y + c * y_stride);
                for (int64_t r = r_begin; r < r_end; ++r) {
                    const float v = total(sums[(c - pass) * chunk_rows + (r - r_begin)], kQ4);
                    yc[r] = bias ? v + bias[r] : v;
                }
            }
        }
    }
}

}  // namespace avx2
}  // namespace

MINICPMV_TARGET_END()

namespace {

// The kernels of this CPU: AVX-512 VNNI, else AVX2 (int8_kernels_usable checked that one is there).

// Blocks of all rows, dealt round-robin to the threads.
template <void (*kQuantize)(const float *, ActBlock &)>
void quantize_rows(const char * x, size_t x_stride, int64_t K, int64_t N, char * xq, size_t xq_stride, int ith, int nth) {
    const int64_t nb = K / kBlock;
    for (int64_t i = ith; i < N * nb; i += nth) {
        const int64_t n = i / nb, b = i % nb;
        kQuantize(reinterpret_cast<const float *>(x + n * x_stride) + b * kBlock,
                  reinterpret_cast<ActBlock *>(xq + n * xq_stride)[b]);
    }
}

void quantize_rows(const char * x, size_t x_stride, int64_t K, int64_t N, char * xq, size_t xq_stride, int ith, int nth) {
    (cpu_has_avx512_vnni() ? quantize_rows<avx512::quantize_block> : quantize_rows<avx2::quantize_block>)(x, x_stride, K, N, xq,
                                                                                                          xq_stride, ith, nth);
}

void product(const char * w, size_t w_stride, ggml_type type, int64_t K, int64_t M, const char * xq, size_t xq_stride, int64_t N,
             char * y, size_t y_stride, const float * bias, bool per_row, int ith, int nth) {
    if (cpu_has_avx512_vnni()) {
        avx512::product(w, w_stride, type, K, M, xq, xq_stride, N, y, y_stride, bias, per_row, ith, nth);
    } else {  // every row as if alone already
        (type == GGML_TYPE_Q4_K ? avx2::product<BlockQ4K> : avx2::product<BlockQ6K>)(w, w_stride, K, M, xq, xq_stride, N, y,
                                                                                     y_stride, bias, ith, nth);
    }
}

void op_int8_rows(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * x = dst->src[0];
    quantize_rows(static_cast<const char *>(x->data), x->nb[1], x->ne[0], x->ne[1], static_cast<char *>(dst->data), dst->nb[1],
                  ith, nth);
}

// The weight comes as userdata (not a graph source: ggml's scheduler then never asks where it lives).
template <bool kPerRow>
void op_int8_linear(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const ggml_tensor * w = static_cast<const ggml_tensor *>(userdata);
    const ggml_tensor * xq = dst->src[0];
    const ggml_tensor * bias = dst->src[1];
    product(static_cast<const char *>(w->data), w->nb[1], w->type, w->ne[0], w->ne[1], static_cast<const char *>(xq->data),
            xq->nb[1], xq->ne[1], static_cast<char *>(dst->data), dst->nb[1],
            bias ? static_cast<const float *>(bias->data) : nullptr, kPerRow, ith, nth);
}

int64_t act_row_bytes(int64_t K) { return K / kBlock * static_cast<int64_t>(sizeof(ActBlock)); }

bool usable_type(int type) { return type == GGML_TYPE_Q4_K || type == GGML_TYPE_Q6_K; }

}  // namespace

bool int8_kernels_usable(const ggml_tensor * w, int64_t n_rows) {
    return w != nullptr && usable_type(w->type) && ggml_n_dims(w) == 2 && w->ne[0] % kBlock == 0 && in_cpu_memory(w) &&
           (cpu_has_avx512_vnni() || (n_rows >= avx2::kMinRows && cpu_has_avx2_int8()));
}

ggml_tensor * int8_rows(ggml_context * ctx, ggml_tensor * x) {
    GGML_ASSERT(x->type == GGML_TYPE_F32 && ggml_n_dims(x) <= 2 && x->nb[0] == sizeof(float) && x->ne[0] % kBlock == 0);
    ggml_tensor * args[] = {x};
    ggml_tensor * xq = ggml_custom_4d(ctx, GGML_TYPE_I8, act_row_bytes(x->ne[0]), x->ne[1], 1, 1, args, 1, op_int8_rows,
                                      GGML_N_TASKS_MAX, nullptr);
    ggml_set_name(xq, "int8_rows");
    return xq;
}

ggml_tensor * int8_linear(ggml_context * ctx, ggml_tensor * w, ggml_tensor * xq, ggml_tensor * bias, bool per_row) {
    GGML_ASSERT(int8_kernels_usable(w, xq->ne[1]) && xq->type == GGML_TYPE_I8 && xq->ne[0] == act_row_bytes(w->ne[0]) &&
                ggml_is_contiguous(xq));
    GGML_ASSERT(bias == nullptr || (bias->type == GGML_TYPE_F32 && bias->ne[0] == w->ne[1] && ggml_is_contiguous(bias)));
    ggml_tensor * args[] = {xq, bias};
    ggml_tensor * y = ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], xq->ne[1], 1, 1, args, 2,
                                     per_row ? op_int8_linear<true> : op_int8_linear<false>, GGML_N_TASKS_MAX, w);
    ggml_format_name(y, "int8_linear-%s", w->name);
    return y;
}

bool int8_matmul(const void * w, int type, int64_t K, int64_t M, const float * x, int64_t N, float * y, bool per_row) {
    GGML_ASSERT(usable_type(type) && K % kBlock == 0);
    if (!cpu_has_avx512_vnni() && !cpu_has_avx2_int8()) return false;
    const size_t x_stride = K * sizeof(float), xq_stride = act_row_bytes(K);
    std::vector<char> xq(xq_stride * N);
    quantize_rows(reinterpret_cast<const char *>(x), x_stride, K, N, xq.data(), xq_stride, 0, 1);
    product(static_cast<const char *>(w), ggml_row_size(static_cast<ggml_type>(type), K), static_cast<ggml_type>(type), K, M,
            xq.data(), xq_stride, N, reinterpret_cast<char *>(y), M * sizeof(float), nullptr, per_row, 0, 1);
    return true;
}

#else  // not x86 with GCC/Clang: the graphs use ggml's own products

bool int8_kernels_usable(const ggml_tensor *, int64_t) { return false; }

ggml_tensor * int8_rows(ggml_context *, ggml_tensor *) {
    GGML_ABORT("int8_rows: not in this build (check int8_kernels_usable first)");
}

ggml_tensor * int8_linear(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *, bool) {
    GGML_ABORT("int8_linear: not in this build (check int8_kernels_usable first)");
}

bool int8_matmul(const void *, int, int64_t, int64_t, const float *, int64_t, float *, bool) { return false; }

#endif

}  // namespace minicpmv
