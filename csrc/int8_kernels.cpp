#include "int8_kernels.h"

#include "cpu_weights.h"
#include "kquant_blocks.h"

#include <ggml.h>

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define MINICPMV_INT8_KERNELS 1
#else
#define MINICPMV_INT8_KERNELS 0
#endif

namespace minicpmv {

#if MINICPMV_INT8_KERNELS

namespace {

constexpr int64_t kBlock = 256;
// Weights are read this many bytes ahead of use. The hardware prefetchers stop at 4 KiB page
// boundaries, and the mapped file is in 4 KiB pages: without this a decode step waited on memory for
// ~25 % of its time (2048-4096 measured best on the full model, benchmarks/compare.py).
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

bool cpu_has_avx512_vnni() {
    static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
                            __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
    return has;
}

}  // namespace

// Compiled for AVX-512 VNNI whatever the build flags; run only after cpu_has_avx512_vnni().
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")
#endif

namespace {

// ggml's q8_K rounding (quantize_row_q8_K): scale 127 / max|x|, round half to even; a zero block stays 0.
void quantize_block(const float * x, ActBlock & a) {
    __m512 v[16];
    __m512 amax = _mm512_setzero_ps();
    for (int i = 0; i < 16; ++i) {
        v[i] = _mm512_loadu_ps(x + 16 * i);
        amax = _mm512_max_ps(amax, _mm512_abs_ps(v[i]));
    }
    const float max = _mm512_reduce_max_ps(amax);
    std::memset(&a, 0, sizeof a);
    if (max == 0.0f) return;
    const float iscale = 127.0f / max;
    a.d = 1.0f / iscale;
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
// by their sub-block's scale. The mins come off per block through the activations' sums of 32.
template <int NC>
void q4_K_rows(const char * w, size_t w_stride, int64_t nb, int64_t r0, int64_t r1, const ActBlock * const * a, float * const * y,
               const float * bias) {
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    const __m512i ctl0 = word_broadcast_control(0, 2), ctl1 = word_broadcast_control(1, 3);
    const __m512i ctl2 = word_broadcast_control(4, 6), ctl3 = word_broadcast_control(5, 7);
    for (int64_t r = r0; r < r1; ++r) {
        const auto * row = reinterpret_cast<const BlockQ4K *>(w + r * w_stride);
        __m512 acc[NC];
        __m128 acc_min[NC];
        for (int c = 0; c < NC; ++c) {
            acc[c] = _mm512_setzero_ps();
            acc_min[c] = _mm_setzero_ps();
        }
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
                const __m128i m = _mm_madd_epi16(mins, _mm_loadu_si128(reinterpret_cast<const __m128i *>(A.sum32)));
                acc_min[c] = _mm_fmadd_ps(_mm_cvtepi32_ps(m), _mm_set1_ps(dmin * A.d), acc_min[c]);
            }
        }
        for (int c = 0; c < NC; ++c) y[c][r] = _mm512_reduce_add_ps(acc[c]) - hsum(acc_min[c]) + (bias ? bias[r] : 0.0f);
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

// Rows [r0, r1) of a q6_K matrix times NC activation rows. Per half of 128 values: ql's 64 bytes give
// values 0-63 (low nibbles) and 64-127 (high nibbles) in order; qh's 32 bytes, repeated in both
// 256-bit halves and shifted per half, put each value's top 2 bits at 0x30. maddubs takes the
// unsigned q (q − 32 is restored per block through the activations' sums of 16).
template <int NC>
void q6_K_rows(const char * w, size_t w_stride, int64_t nb, int64_t r0, int64_t r1, const ActBlock * const * a, float * const * y,
               const float * bias) {
    const __m512i low4 = _mm512_set1_epi8(0x0F), top2 = _mm512_set1_epi8(0x30);
    const __m512i shl = words_by_half(4, 2), shr = words_by_half(0, 2);
    const __m512i idx[2][2] = {{scale_lanes(0), scale_lanes(4)}, {scale_lanes(8), scale_lanes(12)}};
    constexpr int kAndOr = 0xEA;  // ternary logic (A & B) | C
    for (int64_t r = r0; r < r1; ++r) {
        const auto * row = reinterpret_cast<const BlockQ6K *>(w + r * w_stride);
        __m512 acc[NC];
        for (int c = 0; c < NC; ++c) acc[c] = _mm512_setzero_ps();
        for (int64_t b = 0; b < nb; ++b) {
            const BlockQ6K & B = row[b];
            prefetch_ahead<sizeof B>(&B);
            const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(B.scales)));
            const __m512i sc = _mm512_castsi256_si512(sc16);
            __m512i q[2][2], s[2][2];
            for (int h = 0; h < 2; ++h) {
                const __m512i ql = _mm512_loadu_si512(B.ql + 64 * h);
                const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(B.qh + 32 * h)));
                q[h][0] = _mm512_ternarylogic_epi32(_mm512_sllv_epi16(qh, shl), top2, _mm512_and_si512(ql, low4), kAndOr);
                q[h][1] = _mm512_ternarylogic_epi32(_mm512_srlv_epi16(qh, shr), top2,
                                                    _mm512_and_si512(_mm512_srli_epi16(ql, 4), low4), kAndOr);
                s[h][0] = _mm512_permutexvar_epi16(idx[h][0], sc);
                s[h][1] = _mm512_permutexvar_epi16(idx[h][1], sc);
            }
            const float d = _cvtsh_ss(B.d);
            for (int c = 0; c < NC; ++c) {
                const ActBlock & A = a[c][b];
                __m512i p = _mm512_madd_epi16(_mm512_maddubs_epi16(q[0][0], _mm512_loadu_si512(A.q)), s[0][0]);
                p = _mm512_dpwssd_epi32(p, _mm512_maddubs_epi16(q[0][1], _mm512_loadu_si512(A.q + 64)), s[0][1]);
                p = _mm512_dpwssd_epi32(p, _mm512_maddubs_epi16(q[1][0], _mm512_loadu_si512(A.q + 128)), s[1][0]);
                p = _mm512_dpwssd_epi32(p, _mm512_maddubs_epi16(q[1][1], _mm512_loadu_si512(A.q + 192)), s[1][1]);
                const __m256i offset = _mm256_madd_epi16(sc16, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(A.sum16)));
                p = _mm512_sub_epi32(p, _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_slli_epi32(offset, 5), 0));
                acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_set1_ps(d * A.d), acc[c]);
            }
        }
        for (int c = 0; c < NC; ++c) y[c][r] = _mm512_reduce_add_ps(acc[c]) + (bias ? bias[r] : 0.0f);
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
            case 1: q4 ? q4_K_rows<1>(w, w_stride, nb, r0, r1, a, out, bias) : q6_K_rows<1>(w, w_stride, nb, r0, r1, a, out, bias); break;
            case 2: q4 ? q4_K_rows<2>(w, w_stride, nb, r0, r1, a, out, bias) : q6_K_rows<2>(w, w_stride, nb, r0, r1, a, out, bias); break;
            case 3: q4 ? q4_K_rows<3>(w, w_stride, nb, r0, r1, a, out, bias) : q6_K_rows<3>(w, w_stride, nb, r0, r1, a, out, bias); break;
            default: q4 ? q4_K_rows<4>(w, w_stride, nb, r0, r1, a, out, bias) : q6_K_rows<4>(w, w_stride, nb, r0, r1, a, out, bias); break;
        }
    }
}

// Blocks of all rows, dealt round-robin to the threads.
void quantize_rows(const char * x, size_t x_stride, int64_t K, int64_t N, char * xq, size_t xq_stride, int ith, int nth) {
    const int64_t nb = K / kBlock;
    for (int64_t i = ith; i < N * nb; i += nth) {
        const int64_t n = i / nb, b = i % nb;
        quantize_block(reinterpret_cast<const float *>(x + n * x_stride) + b * kBlock,
                       reinterpret_cast<ActBlock *>(xq + n * xq_stride)[b]);
    }
}

void op_int8_rows(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * x = dst->src[0];
    quantize_rows(static_cast<const char *>(x->data), x->nb[1], x->ne[0], x->ne[1], static_cast<char *>(dst->data), dst->nb[1], ith, nth);
}

// The weight comes as userdata (not a graph source: ggml's scheduler then never asks where it lives).
void op_int8_linear(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const ggml_tensor * w = static_cast<const ggml_tensor *>(userdata);
    const ggml_tensor * xq = dst->src[0];
    const ggml_tensor * bias = dst->src[1];
    const int64_t M = w->ne[1];
    const int64_t r0 = M * ith / nth, r1 = M * (ith + 1) / nth;
    product_rows(static_cast<const char *>(w->data), w->nb[1], w->type, w->ne[0], r0, r1, static_cast<const char *>(xq->data), xq->nb[1],
                 xq->ne[1], static_cast<char *>(dst->data), dst->nb[1], bias ? static_cast<const float *>(bias->data) : nullptr);
}

}  // namespace

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace {

int64_t act_row_bytes(int64_t K) { return K / kBlock * static_cast<int64_t>(sizeof(ActBlock)); }

bool usable_type(int type) { return type == GGML_TYPE_Q4_K || type == GGML_TYPE_Q6_K; }

}  // namespace

bool int8_kernels_usable(const ggml_tensor * w) {
    return w != nullptr && usable_type(w->type) && ggml_n_dims(w) == 2 && w->ne[0] % kBlock == 0 && in_cpu_memory(w) &&
           cpu_has_avx512_vnni();
}

ggml_tensor * int8_rows(ggml_context * ctx, ggml_tensor * x) {
    GGML_ASSERT(x->type == GGML_TYPE_F32 && ggml_n_dims(x) <= 2 && x->nb[0] == sizeof(float) && x->ne[0] % kBlock == 0);
    ggml_tensor * args[] = {x};
    ggml_tensor * xq = ggml_custom_4d(ctx, GGML_TYPE_I8, act_row_bytes(x->ne[0]), x->ne[1], 1, 1, args, 1, op_int8_rows, GGML_N_TASKS_MAX,
                                      nullptr);
    ggml_set_name(xq, "int8_rows");
    return xq;
}

ggml_tensor * int8_linear(ggml_context * ctx, ggml_tensor * w, ggml_tensor * xq, ggml_tensor * bias) {
    GGML_ASSERT(int8_kernels_usable(w) && xq->type == GGML_TYPE_I8 && xq->ne[0] == act_row_bytes(w->ne[0]) && ggml_is_contiguous(xq));
    GGML_ASSERT(bias == nullptr || (bias->type == GGML_TYPE_F32 && bias->ne[0] == w->ne[1] && ggml_is_contiguous(bias)));
    ggml_tensor * args[] = {xq, bias};
    ggml_tensor * y = ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], xq->ne[1], 1, 1, args, 2, op_int8_linear, GGML_N_TASKS_MAX, w);
    ggml_format_name(y, "int8_linear-%s", w->name);
    return y;
}

bool int8_matmul(const void * w, int type, int64_t K, int64_t M, const float * x, int64_t N, float * y) {
    GGML_ASSERT(usable_type(type) && K % kBlock == 0);
    if (!cpu_has_avx512_vnni()) return false;
    const size_t x_stride = K * sizeof(float), xq_stride = act_row_bytes(K);
    std::vector<char> xq(xq_stride * N);
    quantize_rows(reinterpret_cast<const char *>(x), x_stride, K, N, xq.data(), xq_stride, 0, 1);
    product_rows(static_cast<const char *>(w), ggml_row_size(static_cast<ggml_type>(type), K), static_cast<ggml_type>(type), K, 0, M,
                 xq.data(), xq_stride, N, reinterpret_cast<char *>(y), M * sizeof(float), nullptr);
    return true;
}

#else  // not x86 with GCC/Clang: the graphs use ggml's own products

bool int8_kernels_usable(const ggml_tensor *) { return false; }

ggml_tensor * int8_rows(ggml_context *, ggml_tensor *) { GGML_ABORT("int8_rows: not in this build (check int8_kernels_usable first)"); }

ggml_tensor * int8_linear(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *) {
    GGML_ABORT("int8_linear: not in this build (check int8_kernels_usable first)");
}

bool int8_matmul(const void *, int, int64_t, int64_t, const float *, int64_t, float *) { return false; }

#endif

}  // namespace minicpmv
