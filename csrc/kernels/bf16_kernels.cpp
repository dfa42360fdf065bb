#include "kernels/bf16_kernels.h"

#include "core/cpu_weights.h"
#include "kernels/cpu_features.h"
#include "kernels/kquant_blocks.h"

#include <ggml-backend.h>
#include <ggml.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace minicpmv {

#if MINICPMV_X86_KERNELS

namespace {

// The tile: kMR rows of the broadcast operand (tokens, queries) × 16·NV columns of a packed panel
// (output features, keys, value features), kMR·NV accumulators in registers. A "pair" is two
// consecutive values along the summed dimension, the unit of vdpbf16ps: packed panels are
// [pairs][16·NV] dwords, broadcast rows are bf16 rows of even length.
constexpr int64_t kMR = 12;
constexpr int64_t kPanel = 32;

int64_t n_pairs(int64_t k) { return (k + 1) / 2; }

// The CPU_REPACK layout read back row by row is q4_K's block_q4_Kx8 (8-byte interleave, the layout
// this ggml picks on AVX2 CPUs); other repacked layouts are not read (those graphs keep ggml's kernels).
bool readable_repacked(const ggml_tensor * w) { return w->type == GGML_TYPE_Q4_K && w->ne[1] % 8 == 0 && ggml_n_dims(w) == 2; }
}  // namespace

// The kernels are compiled for AVX-512 BF16 whatever the build flags (lambdas included, hence a
// region rather than per-function attributes) and only run after cpu_has_avx512_bf16().
MINICPMV_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,f16c,fma")

namespace {

__mmask16 lanes(int64_t n) {
    return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << std::max<int64_t>(n, 0)) - 1);
}

// ggml aligns tensors to 32 bytes; packed panels start at the next 64-byte boundary (the tensor has
// 64 spare bytes), so that each pair of a panel is one aligned vector load.
template <typename T>
T * align64(void * p) {
    return reinterpret_cast<T *>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t{63});
}

// 64-byte aligned scratch memory (one per thread and call).
struct Scratch {
    std::vector<uint8_t> bytes;
    template <typename T>
    T * get(size_t n) {
        bytes.resize(n * sizeof(T) + 64);
        return align64<T>(bytes.data());
    }
};

// Flags travel in the custom op's userdata pointer itself (flags_as_userdata below).
template <typename T>
T flags_from_userdata(const void * userdata) {
    T t;
    std::memcpy(&t, &userdata, sizeof t);
    return t;
}

// One row of f32, f16 or bf16 values → bf16 (round to nearest even), zero-padded to an even length.
void row_to_bf16(const void * src, ggml_type type, int64_t n, uint16_t * dst) {
    for (int64_t k = 0; k < n; k += 16) {
        const __mmask16 m = lanes(n - k);
        __m512 v;
        if (type == GGML_TYPE_F32) {
            v = _mm512_maskz_loadu_ps(m, static_cast<const float *>(src) + k);
        } else {
            const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t *>(src) + k);
            v = type == GGML_TYPE_F16 ? _mm512_cvtph_ps(h) : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
        }
        _mm256_mask_storeu_epi16(dst + k, m, (__m256i)(_mm512_cvtneps_pbh(v)));
    }
    if (n % 2) dst[n] = 0;
}

// exp(x) for 16 lanes: Cephes' expf (range reduction by ln 2, degree-6 polynomial), ~1 ulp.
inline __m512 exp16(__m512 x) {
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.3762626647949f)), _mm512_set1_ps(-87.3365478515625f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

// gelu_pytorch_tanh(x) = 0.5·x·(1 + tanh(u)) = x / (1 + exp(−2u)), u = √(2/π)·(x + 0.044715·x³).
inline __m512 gelu_tanh16(__m512 x) {
    const __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
    const __m512 u = _mm512_mul_ps(_mm512_fmadd_ps(x3, _mm512_set1_ps(0.044715f), x), _mm512_set1_ps(0.79788456080286535588f));
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), exp16(_mm512_mul_ps(u, _mm512_set1_ps(-2.0f)))));
}

// acc[i][h] (16 lanes: columns 16h..16h+15 of the panel) = Σ_p a_i[p]·b[p][...] for kMR broadcast
// rows a_i (bf16, row stride lda elements) and one packed panel b; `store(i, h, acc)` gets the sums.
template <int NV, typename Store>
inline void tile(const uint16_t * a, int64_t lda, const uint32_t * b, int64_t pairs, Store store) {
    static_assert(NV == 1 || NV == 2, "a panel is 16 or 32 columns wide");
    // Two flat arrays (not one [kMR][NV]) so that the compiler keeps all of them in registers.
    __m512 acc0[kMR], acc1[kMR];
    for (int i = 0; i < kMR; ++i) acc0[i] = acc1[i] = _mm512_setzero_ps();
    const int32_t * rows[kMR];
    for (int i = 0; i < kMR; ++i) rows[i] = reinterpret_cast<const int32_t *>(a + i * lda);
    for (int64_t p = 0; p < pairs; ++p) {
        const __m512bh b0 = (__m512bh)(_mm512_load_si512(b + p * NV * 16));
        const __m512bh b1 = NV == 2 ? (__m512bh)(_mm512_load_si512(b + p * NV * 16 + 16)) : b0;
#pragma GCC unroll 12
        for (int i = 0; i < kMR; ++i) {
            const __m512bh ai = (__m512bh)(_mm512_set1_epi32(rows[i][p]));
            acc0[i] = _mm512_dpbf16_ps(acc0[i], ai, b0);
            if constexpr (NV == 2) acc1[i] = _mm512_dpbf16_ps(acc1[i], ai, b1);
        }
    }
    // Through a buffer with constant indices: a variable index into acc0/acc1 would keep them in
    // memory, and the compiler would store every accumulator on every step of the loop above.
    alignas(64) float sums[kMR][NV * 16];
#pragma GCC unroll 12
    for (int i = 0; i < kMR; ++i) {
        _mm512_store_ps(sums[i], acc0[i]);
        if constexpr (NV == 2) _mm512_store_ps(sums[i] + 16, acc1[i]);
    }
    for (int i = 0; i < kMR; ++i) {
        for (int h = 0; h < NV; ++h) store(i, h, _mm512_load_ps(sums[i] + 16 * h));
    }
}

// Packs rows 0..31 (fewer: zeros) of a matrix of width n (row j at src + j·ld bytes) into a 32-wide
// panel: dword [p][j] = (bf16 row j value 2p, value 2p+1).
void pack_rows(const char * src, size_t ld, ggml_type type, int64_t n_rows, int64_t n, uint16_t * scratch, uint32_t * panel) {
    const int64_t pairs = n_pairs(n);
    for (int64_t j = 0; j < kPanel; ++j) {
        if (j < n_rows) {
            row_to_bf16(src + j * ld, type, n, scratch);
            const uint32_t * r = reinterpret_cast<const uint32_t *>(scratch);
            for (int64_t p = 0; p < pairs; ++p) panel[p * kPanel + j] = r[p];
        } else {
            for (int64_t p = 0; p < pairs; ++p) panel[p * kPanel + j] = 0;
        }
    }
}

// Packs columns c0..c0+16·nv−1 (past `width`: zeros) of an f32 or f16 matrix with n_rows rows (row r
// at src + r·ld bytes) along its rows: dword [p][j] = (bf16 of row 2p column c0+j, row 2p+1 column c0+j).
void pack_columns(const char * src, size_t ld, ggml_type type, int64_t n_rows, int64_t c0, int64_t width, int nv,
                  uint32_t * panel) {
    for (int64_t p = 0; p < n_pairs(n_rows); ++p) {
        for (int h = 0; h < nv; ++h) {
            const __mmask16 m = lanes(width - c0 - 16 * h);
            auto bf16_of_row = [&](int64_t r) {
                if (r >= n_rows || m == 0) return _mm512_setzero_si512();
                const char * row = src + r * ld;
                const __m512 f =
                    type == GGML_TYPE_F16
                        ? _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t *>(row) + c0 + 16 * h))
                        : _mm512_maskz_loadu_ps(m, reinterpret_cast<const float *>(row) + c0 + 16 * h);
                return _mm512_cvtepu16_epi32((__m256i)(_mm512_cvtneps_pbh(f)));
            };
            // The even row's value in the low half of each dword, the odd row's in the high half.
            const __m512i d = _mm512_or_si512(bf16_of_row(2 * p), _mm512_slli_epi32(bf16_of_row(2 * p + 1), 16));
            _mm512_store_si512(panel + (p * nv + h) * 16, d);
        }
    }
}

// One past the last key that some of `rows` mask rows (f16, 0 or -inf; row i at m + i·ld bytes)
// leave open: with a causal mask the keys after it need neither scores nor products.
int64_t open_keys(const char * m, size_t ld, int64_t rows, int64_t n_keys) {
    int64_t end = 0;
    const __m512i neg_inf = _mm512_set1_epi16(static_cast<short>(0xFC00));
    for (int64_t i = rows - 1; i >= 0; --i) {  // last row first: in a causal mask it is the widest
        const uint16_t * row = reinterpret_cast<const uint16_t *>(m + i * ld);
        for (int64_t j = (n_keys - 1) / 32 * 32; j >= end; j -= 32) {
            const __mmask32 valid = n_keys - j >= 32 ? ~__mmask32{0} : static_cast<__mmask32>((1ull << (n_keys - j)) - 1);
            const __mmask32 open = _mm512_mask_cmpneq_epi16_mask(valid, _mm512_maskz_loadu_epi16(valid, row + j), neg_inf);
            if (open != 0) {
                end = std::max<int64_t>(end, j + 32 - __builtin_clz(open));
                break;
            }
        }
    }
    return end;
}

// Stores 16 lanes as f32 or as bf16 at element `col` of a row.
inline void store_lanes(char * row, int64_t col, __mmask16 m, __m512 v, bool bf16) {
    if (bf16) {
        _mm256_mask_storeu_epi16(reinterpret_cast<uint16_t *>(row) + col, m, (__m256i)(_mm512_cvtneps_pbh(v)));
    } else {
        _mm512_mask_storeu_ps(reinterpret_cast<float *>(row) + col, m, v);
    }
}

// --- linear ----------------------------------------------------------------------------------------------------

// 16 rows × 16 dwords transposed in registers: rows[r] lane c → out[c] lane r.
inline void transpose16(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int i = 0; i < 8; ++i) {
        const int a = (i / 4) * 8 + i % 4;  // rows {0-3, 8-11} with {4-7, 12-15}
        t[a] = _mm512_shuffle_i32x4(r[a], r[a + 4], 0x88);
        t[a + 4] = _mm512_shuffle_i32x4(r[a], r[a + 4], 0xdd);
    }
    for (int i = 0; i < 8; ++i) {
        r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
    }
}

// 256 values of a q4_K block (scales and mins already decoded) → f32.
inline void q4_K_to_f32(float d, float dmin, const uint8_t sc[8], const uint8_t mn[8], const uint8_t * qs, float * y) {
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    for (int g = 0; g < 4; ++g) {
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(qs + 32 * g));
        const __m256i nib[2] = {_mm256_and_si256(q, low4), _mm256_and_si256(_mm256_srli_epi16(q, 4), low4)};
        for (int h = 0; h < 2; ++h) {
            const __m512 a = _mm512_set1_ps(d * sc[2 * g + h]), b = _mm512_set1_ps(dmin * mn[2 * g + h]);
            const __m512 v0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(nib[h])));
            const __m512 v1 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(nib[h], 1)));
            _mm512_storeu_ps(y + 64 * g + 32 * h, _mm512_fmsub_ps(v0, a, b));
            _mm512_storeu_ps(y + 64 * g + 32 * h + 16, _mm512_fmsub_ps(v1, a, b));
        }
    }
}

void q4_K_block_to_f32(const BlockQ4K & b, float * y) {
    uint8_t sm[16];
    q4_K_scales_mins(b.scales, sm);
    q4_K_to_f32(ggml_fp16_to_fp32(b.d), ggml_fp16_to_fp32(b.dmin), sm, sm + 8, b.qs, y);
}

// Row `lane` (0..7) of one block_q4_Kx8 (see is_repacked) → f32, as dequantize_row_q4_K gives it.
void q4_Kx8_block_to_f32(const BlockQ4Kx8 & b, int lane, float * y) {
    uint8_t sc[8], mn[8], qs[128];
    for (int sb = 0; sb < 8; ++sb) {
        // 6-bit scale and min of sub-block sb: lanes 0-3 whole in bytes 0-7 of its 12-byte group,
        // lanes 4-7 split (low 4 bits in bytes 8-11, high 2 bits on top of lanes 0-3's bytes).
        const uint8_t * g = b.scales + (sb < 4 ? sb * 12 : 48 + (sb - 4) * 12);
        if (lane < 4) {
            sc[sb] = g[lane] & 63;
            mn[sb] = g[lane + 4] & 63;
        } else {
            sc[sb] = (g[lane + 4] & 15) | ((g[lane - 4] >> 6) << 4);
            mn[sb] = (g[lane + 4] >> 4) | ((g[lane] >> 6) << 4);
        }
    }
    for (int c = 0; c < 16; ++c) std::memcpy(qs + 8 * c, b.qs + (8 * c + lane) * 8, 8);  // the row's 8-byte chunks
    q4_K_to_f32(ggml_fp16_to_fp32(b.d[lane]), ggml_fp16_to_fp32(b.dmin[lane]), sc, mn, qs, y);
}

// 256 values of a q6_K block → f32 (ggml's dequantize_row_q6_K, 16 lanes at a time).
void q6_K_block_to_f32(const BlockQ6K & b, float * y) {
    const float d = ggml_fp16_to_fp32(b.d);
    const __m128i low4 = _mm_set1_epi8(0x0F), two = _mm_set1_epi8(3), off = _mm_set1_epi8(32);
    for (int n = 0; n < 2; ++n) {
        const uint8_t * ql = b.ql + 64 * n;
        const uint8_t * qh = b.qh + 32 * n;
        const int8_t * sc = b.scales + 8 * n;
        for (int l0 = 0; l0 < 32; l0 += 16) {
            const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i *>(ql + l0));
            const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i *>(ql + l0 + 32));
            const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i *>(qh + l0));
            auto high2 = [&](int shift) {
                return _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(h, shift), two), 4);
            };
            const __m128i q[4] = {
                _mm_sub_epi8(_mm_or_si128(_mm_and_si128(a, low4), high2(0)), off),
                _mm_sub_epi8(_mm_or_si128(_mm_and_si128(c, low4), high2(2)), off),
                _mm_sub_epi8(_mm_or_si128(_mm_and_si128(_mm_srli_epi16(a, 4), low4), high2(4)), off),
                _mm_sub_epi8(_mm_or_si128(_mm_and_si128(_mm_srli_epi16(c, 4), low4), high2(6)), off),
            };
            const int is = l0 / 16;
            for (int k = 0; k < 4; ++k) {
                const __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q[k]));
                _mm512_storeu_ps(y + 128 * n + 32 * k + l0, _mm512_mul_ps(v, _mm512_set1_ps(d * sc[is + 2 * k])));
            }
        }
    }
}

// Values k0..k0+n−1 of row r of w → f32 (n ≤ 256; for quantized types k0 is a multiple of 256 or
// of the block size): the k-quants above, ggml's dequantization for other types.
void weight_segment_to_f32(const ggml_tensor * w, bool repacked, int64_t r, int64_t k0, int64_t n, float * y) {
    const char * row = static_cast<const char *>(w->data) + r * w->nb[1];
    if (repacked) {  // rows in groups of 8, each group a run of K/256 blocks
        const auto * group = static_cast<const BlockQ4Kx8 *>(w->data) + (r / 8) * (w->ne[0] / 256);
        q4_Kx8_block_to_f32(group[k0 / 256], static_cast<int>(r % 8), y);
    } else if (w->type == GGML_TYPE_Q4_K) {
        q4_K_block_to_f32(reinterpret_cast<const BlockQ4K *>(row)[k0 / 256], y);
    } else if (w->type == GGML_TYPE_Q6_K) {
        q6_K_block_to_f32(reinterpret_cast<const BlockQ6K *>(row)[k0 / 256], y);
    } else if (w->type == GGML_TYPE_F32) {
        std::memcpy(y, reinterpret_cast<const float *>(row) + k0, n * sizeof(float));
    } else if (w->type == GGML_TYPE_F16) {
        const uint16_t * h = reinterpret_cast<const uint16_t *>(row) + k0;
        for (int64_t k = 0; k < n; k += 16) {
            const __mmask16 m = lanes(n - k);
            _mm512_mask_storeu_ps(y + k, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, h + k)));
        }
    } else {
        const int64_t blck = ggml_blck_size(w->type);
        ggml_get_type_traits(w->type)->to_float(row + (k0 / blck) * ggml_type_size(w->type), y, n);
    }
}

// Rows r0..r0+31 of the weight matrix w [K, M] as one packed panel ([pairs(K)][32] dwords; rows past M
// are zero): per 256 columns, 16 rows go to bf16 pairs and through a 16×16 transpose into place.
void pack_weight_panel(const ggml_tensor * w, int64_t r0, uint32_t * panel) {
    const int64_t K = w->ne[0], M = w->ne[1];
    const bool repacked = is_cpu_repacked(w);
    alignas(64) float seg[256 + 16];
    alignas(64) uint32_t rows[16][128];  // 16 rows × 128 pairs of the current 256 columns
    for (int64_t k0 = 0; k0 < K; k0 += 256) {
        const int64_t n = std::min<int64_t>(256, K - k0), np = n_pairs(n);
        for (int half = 0; half < 2; ++half) {
            for (int j = 0; j < 16; ++j) {
                const int64_t r = r0 + 16 * half + j;
                if (r >= M) {
                    std::memset(rows[j], 0, sizeof rows[j]);
                    continue;
                }
                weight_segment_to_f32(w, repacked, r, k0, n, seg);
                if (n % 2) seg[n] = 0.0f;
                for (int64_t p = 0; p < np; p += 16) {  // 32 values → 16 pairs
                    const __mmask16 m = lanes(2 * np - 2 * p), m_hi = lanes(2 * np - 2 * p - 16);
                    const __m512bh v =
                        _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m_hi, seg + 2 * p + 16), _mm512_maskz_loadu_ps(m, seg + 2 * p));
                    _mm512_store_si512(rows[j] + p, (__m512i)(v));
                }
            }
            for (int64_t p = 0; p < np; p += 16) {
                __m512i r[16];
                for (int j = 0; j < 16; ++j) r[j] = _mm512_load_si512(rows[j] + p);
                transpose16(r);
                const int64_t count = std::min<int64_t>(16, np - p);
                for (int c = 0; c < count; ++c) _mm512_store_si512(panel + (k0 / 2 + p + c) * kPanel + 16 * half, r[c]);
            }
        }
    }
}

// dst: the rows of x [K, N] (f32) as bf16 rows; threads split the rows.
void op_rows_to_bf16(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * x = dst->src[0];
    const int64_t N = x->ne[1];
    for (int64_t r = N * ith / nth; r < N * (ith + 1) / nth; ++r) {
        row_to_bf16(static_cast<const char *>(x->data) + r * x->nb[1], x->type, x->ne[0],
                    reinterpret_cast<uint16_t *>(static_cast<char *>(dst->data) + r * dst->nb[1]));
    }
}

// dst [M, N] = act(x·wᵀ + bias) + residual: x bf16 rows (src0), bias (src1), residual (src2), either
// absent; the weight w comes as userdata (not a graph source, so that ggml's scheduler never asks
// the CPU_REPACK buffer type about this op). Threads split the 32-row panels of w: each thread packs
// a panel into its own cache-resident buffer, then runs every row of x through it, so each weight is
// read and expanded once per call. Past ~8 MB of activations the rows go in chunks (each chunk packs
// the panels again) so that they are read from cache, not memory.
template <Activation kAct>
void op_linear(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const ggml_tensor * w = static_cast<const ggml_tensor *>(userdata);
    const ggml_tensor * x = dst->src[0];
    const ggml_tensor * bias = dst->src[1];
    const ggml_tensor * residual = dst->src[2];
    const bool bf16_out = dst->type == GGML_TYPE_BF16;
    const int64_t K = w->ne[0], M = w->ne[1], N = x->ne[1], pairs = n_pairs(K);
    const int64_t n_panels = (M + kPanel - 1) / kPanel;
    const int64_t chunk_rows = std::max<int64_t>(kMR, (8 << 20) / (4 * pairs) / kMR * kMR);

    Scratch s_panel, s_tail;
    uint32_t * panel = s_panel.get<uint32_t>(pairs * kPanel);
    // The last block of rows when N is not a multiple of kMR, zero-padded (the kernel reads kMR rows).
    uint16_t * tail = s_tail.get<uint16_t>(kMR * 2 * pairs);
    const int64_t n_tail = N % kMR;
    if (n_tail != 0) {
        std::memset(tail, 0, kMR * 2 * pairs * sizeof(uint16_t));
        for (int64_t i = 0; i < n_tail; ++i) {
            std::memcpy(tail + i * 2 * pairs, static_cast<const char *>(x->data) + (N - n_tail + i) * x->nb[1],
                        2 * pairs * sizeof(uint16_t));
        }
    }
    for (int64_t n0 = 0; n0 < N; n0 += chunk_rows) {
        const int64_t n1 = std::min(N, n0 + chunk_rows);
        for (int64_t c = ith; c < n_panels; c += nth) {
            const int64_t m0 = c * kPanel;
            pack_weight_panel(w, m0, panel);
            const __mmask16 mask0 = lanes(M - m0), mask1 = lanes(M - m0 - 16);
            for (int64_t r0 = n0; r0 < n1; r0 += kMR) {
                const int64_t nr = std::min<int64_t>(kMR, n1 - r0);
                const uint16_t * a =
                    nr < kMR ? tail : reinterpret_cast<const uint16_t *>(static_cast<const char *>(x->data) + r0 * x->nb[1]);
                tile<2>(a, 2 * pairs, panel, pairs, [&](int i, int h, __m512 v) {
                    const int64_t r = r0 + i, m = m0 + 16 * h;
                    if (i >= nr || m >= M) return;
                    const __mmask16 mask = h == 0 ? mask0 : mask1;
                    if (bias != nullptr)
                        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, static_cast<const float *>(bias->data) + m));
                    if constexpr (kAct == Activation::gelu_tanh) v = gelu_tanh16(v);
                    if (residual != nullptr) {
                        v = _mm512_add_ps(
                            v, _mm512_maskz_loadu_ps(mask, reinterpret_cast<const float *>(
                                                               static_cast<const char *>(residual->data) + r * residual->nb[1]) +
                                                               m));
                    }
                    store_lanes(static_cast<char *>(dst->data) + r * dst->nb[1], m, mask, v, bf16_out);
                });
            }
        }
    }
}

// --- LayerNorm -----------------------------------------------------------------------------------------------

void op_layer_norm(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const ggml_tensor * x = dst->src[0];
    const float * w = static_cast<const float *>(dst->src[1]->data);
    const float * b = static_cast<const float *>(dst->src[2]->data);
    const float eps = flags_from_userdata<float>(userdata);
    const int64_t C = x->ne[0], N = x->ne[1];
    for (int64_t r = N * ith / nth; r < N * (ith + 1) / nth; ++r) {
        const float * row = reinterpret_cast<const float *>(static_cast<const char *>(x->data) + r * x->nb[1]);
        __m512 s = _mm512_setzero_ps();
        for (int64_t k = 0; k < C; k += 16) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(lanes(C - k), row + k));
        const __m512 mean = _mm512_set1_ps(_mm512_reduce_add_ps(s) / C);
        __m512 s2 = _mm512_setzero_ps();
        for (int64_t k = 0; k < C; k += 16) {
            const __mmask16 m = lanes(C - k);
            const __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, row + k), mean);
            s2 = _mm512_fmadd_ps(d, d, s2);
        }
        const __m512 rstd = _mm512_set1_ps(1.0f / std::sqrt(_mm512_reduce_add_ps(s2) / C + eps));
        uint16_t * out = reinterpret_cast<uint16_t *>(static_cast<char *>(dst->data) + r * dst->nb[1]);
        for (int64_t k = 0; k < C; k += 16) {
            const __mmask16 m = lanes(C - k);
            const __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, row + k), mean), rstd);
            const __m512 y = _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(m, w + k), _mm512_maskz_loadu_ps(m, b + k));
            _mm256_mask_storeu_epi16(out + k, m, (__m256i)(_mm512_cvtneps_pbh(y)));
        }
        if (C % 2) out[C] = 0;
    }
}

// --- attention -----------------------------------------------------------------------------------------------

struct AttentionFlags {
    float scale;
    bool bf16_out;
};

// One (slice, head) per step, threads interleaved: K packed in panels of 32 keys, V in panels of value
// features along the keys; then per block of kMR queries: scores (bf16 product), exp(score − max)
// in f32, the product of those (as bf16) with V, divided by their sum at the end.
void op_attention(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const ggml_tensor * q = dst->src[0];
    const ggml_tensor * k = dst->src[1];
    const ggml_tensor * v = dst->src[2];
    const ggml_tensor * mask = dst->src[3];
    const AttentionFlags flags = flags_from_userdata<AttentionFlags>(userdata);
    const int64_t D = q->ne[0], Nq = q->ne[1], H = q->ne[2], Nk = k->ne[1], S = k->ne[3];
    const int64_t group = H / k->ne[2];  // query heads per key/value head
    const int64_t d_pairs = n_pairs(D), k_pairs = n_pairs(Nk);
    const int64_t k_panels = (Nk + kPanel - 1) / kPanel;
    const int64_t ld_scores = k_panels * kPanel;

    Scratch s_kp, s_vp, s_scores, s_probs, s_q, s_row;
    uint32_t * kp = s_kp.get<uint32_t>(k_panels * d_pairs * kPanel);
    uint32_t * vp = s_vp.get<uint32_t>((D + kPanel) * k_pairs);
    float * scores = s_scores.get<float>(kMR * ld_scores);
    uint16_t * probs = s_probs.get<uint16_t>(kMR * 2 * k_pairs);
    uint16_t * qb = s_q.get<uint16_t>(kMR * 2 * d_pairs);
    uint16_t * row = s_row.get<uint16_t>(2 * d_pairs);
    // Value panels: 32 features wide, the last one 16 wide when that covers the rest.
    std::vector<std::pair<int64_t, int>> v_panels;  // (first feature, vectors of 16)
    std::vector<size_t> v_offsets;
    size_t v_offset = 0;
    for (int64_t d = 0; d < D; d += kPanel) {
        const int nv = D - d <= 16 ? 1 : 2;
        v_panels.push_back({d, nv});
        v_offsets.push_back(v_offset);
        v_offset += static_cast<size_t>(k_pairs) * 16 * nv;
    }

    for (int64_t item = ith; item < S * H; item += nth) {
        const int64_t s = item / H, h = item % H;
        const char * k0 = static_cast<const char *>(k->data) + (h / group) * k->nb[2] + s * k->nb[3];
        const char * v0 = static_cast<const char *>(v->data) + (h / group) * v->nb[2] + s * v->nb[3];
        const char * q0 = static_cast<const char *>(q->data) + h * q->nb[2] + (s % q->ne[3]) * q->nb[3];
        for (int64_t c = 0; c < k_panels; ++c) {
            pack_rows(k0 + c * kPanel * k->nb[1], k->nb[1], k->type, std::min<int64_t>(kPanel, Nk - c * kPanel), D, row,
                      kp + c * d_pairs * kPanel);
        }
        for (size_t c = 0; c < v_panels.size(); ++c)
            pack_columns(v0, v->nb[1], v->type, Nk, v_panels[c].first, D, v_panels[c].second, vp + v_offsets[c]);

        for (int64_t q_first = 0; q_first < Nq; q_first += kMR) {
            const int64_t nq = std::min<int64_t>(kMR, Nq - q_first);
            for (int64_t i = 0; i < kMR; ++i) {
                if (i < nq) {
                    row_to_bf16(q0 + (q_first + i) * q->nb[1], q->type, D, qb + i * 2 * d_pairs);
                } else {
                    std::memset(qb + i * 2 * d_pairs, 0, 2 * d_pairs * sizeof(uint16_t));
                }
            }
            // Keys past n_open are masked for every query of the block (the causal tail): skipped.
            const char * m0 =
                mask == nullptr ? nullptr
                                : static_cast<const char *>(mask->data) + q_first * mask->nb[1] + (s % mask->ne[3]) * mask->nb[3];
            const int64_t n_open = mask == nullptr ? Nk : open_keys(m0, mask->nb[1], nq, Nk);
            const int64_t open_pairs = n_pairs(n_open);
            // Scores, and (without a mask) each row's maximum over the real keys.
            __m512 vmax[kMR];
            for (int i = 0; i < kMR; ++i) vmax[i] = _mm512_set1_ps(-INFINITY);
            for (int64_t c = 0; c * kPanel < n_open; ++c) {
                tile<2>(qb, 2 * d_pairs, kp + c * d_pairs * kPanel, d_pairs, [&](int i, int hh, __m512 acc) {
                    const int64_t j = c * kPanel + 16 * hh;
                    _mm512_store_ps(scores + i * ld_scores + j, acc);
                    vmax[i] = _mm512_mask_max_ps(vmax[i], lanes(Nk - j), vmax[i], acc);
                });
            }
            float inv_sum[kMR];
            for (int64_t i = 0; i < kMR; ++i) {
                uint16_t * p_row = probs + i * 2 * k_pairs;
                inv_sum[i] = 0.0f;
                if (i >= nq) {
                    std::memset(p_row, 0, 2 * k_pairs * sizeof(uint16_t));
                    continue;
                }
                float * sc = scores + i * ld_scores;
                __m512 shift, mul;
                if (mask != nullptr) {
                    // scale·s + mask first; its maximum shifts the exponentials.
                    const uint16_t * m_row = reinterpret_cast<const uint16_t *>(
                        static_cast<const char *>(mask->data) + (q_first + i) * mask->nb[1] + (s % mask->ne[3]) * mask->nb[3]);
                    __m512 mx = _mm512_set1_ps(-INFINITY);
                    for (int64_t j = 0; j < n_open; j += 16) {
                        const __mmask16 m = lanes(n_open - j);
                        const __m512 x = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(sc + j), _mm512_set1_ps(flags.scale)),
                                                       _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, m_row + j)));
                        _mm512_storeu_ps(sc + j, x);
                        mx = _mm512_mask_max_ps(mx, m, mx, x);
                    }
                    shift = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
                    mul = _mm512_set1_ps(1.0f);
                } else {
                    shift = _mm512_set1_ps(_mm512_reduce_max_ps(vmax[i]));
                    mul = _mm512_set1_ps(flags.scale);
                }
                const bool empty = std::isinf(_mm512_cvtss_f32(shift));  // every key masked out
                __m512 sum = _mm512_setzero_ps();
                for (int64_t j = 0; j < n_open; j += 16) {
                    const __mmask16 m = lanes(n_open - j);
                    const __m512 x = _mm512_loadu_ps(sc + j);
                    __m512 e = empty ? _mm512_setzero_ps() : exp16(_mm512_mul_ps(_mm512_sub_ps(x, shift), mul));
                    // exactly 0 for masked keys and past n_open
                    e = _mm512_maskz_mov_ps(m & _mm512_cmp_ps_mask(x, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ), e);
                    sum = _mm512_add_ps(sum, e);
                    _mm256_mask_storeu_epi16(p_row + j, m, (__m256i)(_mm512_cvtneps_pbh(e)));
                }
                if (n_open % 2) p_row[n_open] = 0;
                const float total = _mm512_reduce_add_ps(sum);
                inv_sum[i] = total > 0.0f ? 1.0f / total : 0.0f;
            }
            for (size_t c = 0; c < v_panels.size(); ++c) {
                const int64_t d0 = v_panels[c].first;
                auto store = [&](int i, int hh, __m512 acc) {
                    const int64_t d = d0 + 16 * hh;
                    if (i >= nq || d >= D) return;
                    char * out = static_cast<char *>(dst->data) + (q_first + i) * dst->nb[1] + s * dst->nb[2];
                    store_lanes(out, h * D + d, lanes(D - d), _mm512_mul_ps(acc, _mm512_set1_ps(inv_sum[i])), flags.bf16_out);
                };
                if (v_panels[c].second == 2) {
                    tile<2>(probs, 2 * k_pairs, vp + v_offsets[c], open_pairs, store);
                } else {
                    tile<1>(probs, 2 * k_pairs, vp + v_offsets[c], open_pairs, store);
                }
            }
        }
    }
}

}  // namespace

MINICPMV_TARGET_END()

namespace {

template <typename T>
void * flags_as_userdata(const T & flags) {
    static_assert(sizeof(T) <= sizeof(void *), "flags must fit in the userdata pointer");
    void * userdata = nullptr;
    std::memcpy(&userdata, &flags, sizeof flags);
    return userdata;
}

// bf16 rows of width n: a BF16 tensor [2·⌈n/2⌉, rows...].
bool is_bf16_rows(const ggml_tensor * t, int64_t n) { return t->type == GGML_TYPE_BF16 && t->ne[0] == 2 * n_pairs(n); }

}  // namespace

bool bf16_kernels_usable(const ggml_tensor * w) {
    if (w == nullptr || w->type == GGML_TYPE_F32 || w->buffer == nullptr || ggml_get_type_traits(w->type)->to_float == nullptr) {
        return false;
    }
    if (!cpu_has_avx512_bf16()) return false;
    if (is_cpu_repacked(w)) return readable_repacked(w);
    return in_cpu_memory(w);
}

ggml_tensor * bf16_linear(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, const LinearOptions & opt) {
    const int64_t K = w->ne[0], M = w->ne[1];
    GGML_ASSERT(ggml_n_dims(w) <= 2 && ggml_get_type_traits(w->type)->to_float != nullptr);
    GGML_ASSERT((x->type == GGML_TYPE_F32 && x->ne[0] == K && x->nb[0] == sizeof(float)) ||
                (is_bf16_rows(x, K) && ggml_is_contiguous(x)));
    GGML_ASSERT(ggml_n_dims(x) <= 2 && (!opt.bf16_out || M % 2 == 0));
    GGML_ASSERT(opt.residual == nullptr ||
                (opt.residual->type == GGML_TYPE_F32 && opt.residual->ne[0] == M && opt.residual->ne[1] == x->ne[1]));
    const int64_t N = x->ne[1];
    if (x->type == GGML_TYPE_F32) {
        ggml_tensor * x_args[] = {x};
        x = ggml_custom_4d(ctx, GGML_TYPE_BF16, 2 * n_pairs(K), N, 1, 1, x_args, 1, op_rows_to_bf16, GGML_N_TASKS_MAX, nullptr);
        ggml_set_name(x, "bf16_rows");
    }
    ggml_tensor * args[] = {x, opt.bias, opt.residual};
    const ggml_custom_op_t op = opt.act == Activation::gelu_tanh ? op_linear<Activation::gelu_tanh> : op_linear<Activation::none>;
    ggml_tensor * y =
        ggml_custom_4d(ctx, opt.bf16_out ? GGML_TYPE_BF16 : GGML_TYPE_F32, M, N, 1, 1, args, 3, op, GGML_N_TASKS_MAX, w);
    ggml_format_name(y, "bf16_linear-%s", w->name);
    return y;
}

ggml_tensor * bf16_layer_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b, float eps) {
    GGML_ASSERT(x->type == GGML_TYPE_F32 && ggml_n_dims(x) <= 2 && x->nb[0] == sizeof(float));
    GGML_ASSERT(w->type == GGML_TYPE_F32 && b->type == GGML_TYPE_F32 && w->ne[0] == x->ne[0] && b->ne[0] == x->ne[0]);
    ggml_tensor * args[] = {x, w, b};
    ggml_tensor * y = ggml_custom_4d(ctx, GGML_TYPE_BF16, 2 * n_pairs(x->ne[0]), x->ne[1], 1, 1, args, 3, op_layer_norm,
                                     GGML_N_TASKS_MAX, flags_as_userdata(eps));
    ggml_set_name(y, "bf16_layer_norm");
    return y;
}

ggml_tensor * bf16_attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, ggml_tensor * mask,
                             float scale, bool bf16_out) {
    GGML_ASSERT(q->type == GGML_TYPE_F32 && (k->type == GGML_TYPE_F32 || k->type == GGML_TYPE_F16) && v->type == k->type);
    GGML_ASSERT(q->ne[0] == k->ne[0] && k->ne[0] == v->ne[0] && k->ne[1] == v->ne[1] && v->ne[2] == k->ne[2] &&
                q->ne[2] % k->ne[2] == 0);
    GGML_ASSERT(q->ne[3] == 1 || q->ne[3] == k->ne[3]);
    GGML_ASSERT(q->nb[0] == sizeof(float) && k->nb[0] == ggml_type_size(k->type) && v->nb[0] == ggml_type_size(v->type));
    GGML_ASSERT(mask == nullptr || (mask->type == GGML_TYPE_F16 && mask->ne[0] == k->ne[1] && mask->ne[1] >= q->ne[1] &&
                                    (mask->ne[3] == 1 || mask->ne[3] == k->ne[3])));
    const int64_t width = q->ne[0] * q->ne[2];
    GGML_ASSERT(!bf16_out || width % 2 == 0);
    const AttentionFlags flags{scale, bf16_out};
    ggml_tensor * args[] = {q, k, v, mask};
    ggml_tensor * out = ggml_custom_4d(ctx, bf16_out ? GGML_TYPE_BF16 : GGML_TYPE_F32, width, q->ne[1], k->ne[3], 1, args, 4,
                                       op_attention, GGML_N_TASKS_MAX, flags_as_userdata(flags));
    ggml_set_name(out, "bf16_attention");
    return out;
}

#else  // not x86 with GCC/Clang: the graphs use ggml's own operations

bool bf16_kernels_usable(const ggml_tensor *) { return false; }

ggml_tensor * bf16_linear(ggml_context *, ggml_tensor *, ggml_tensor *, const LinearOptions &) {
    GGML_ABORT("bf16_linear: not in this build (check bf16_kernels_usable first)");
}

ggml_tensor * bf16_layer_norm(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *, float) {
    GGML_ABORT("bf16_layer_norm: not in this build (check bf16_kernels_usable first)");
}

ggml_tensor * bf16_attention(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *, ggml_tensor *, float, bool) {
    GGML_ABORT("bf16_attention: not in this build (check bf16_kernels_usable first)");
}

#endif

}  // namespace minicpmv
