#include "kernels/f16_kernels.h"

#include "core/cpu_weights.h"
#include "kernels/cpu_features.h"

#include <ggml.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace minicpmv {

#if MINICPMV_X86_KERNELS

namespace {

constexpr int kPanelRows = 16;  // weight rows per panel: two vectors of 8 floats
constexpr int kTileRows = 6;    // activation rows per pass: 12 accumulators, 2 weight vectors, 1 broadcast

}  // namespace

// Compiled for AVX2 with FMA and F16C whatever the build flags; run only after cpu_has_avx2_f16().
MINICPMV_TARGET_BEGIN("avx2,fma,f16c")

namespace {

// Rows r0..r0+n-1 of w (n ≤ 16) as f32, k-major: panel[16·k + r]; rows past n are zeros.
void convert_panel(const uint16_t * w, size_t w_stride, int64_t K, int64_t r0, int n, float * panel) {
    std::fill(panel, panel + kPanelRows * K, 0.0f);
    for (int r = 0; r < n; ++r) {
        const uint16_t * row = w + (r0 + r) * w_stride;
        int64_t k = 0;
        for (; k + 8 <= K; k += 8) {
            alignas(32) float v[8];
            _mm256_store_ps(v, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(row + k))));
            for (int j = 0; j < 8; ++j) panel[kPanelRows * (k + j) + r] = v[j];
        }
        for (; k < K; ++k) panel[kPanelRows * k + r] = _cvtsh_ss(row[k]);
    }
}

// exp(t) for 8 lanes: Cephes' expf (range reduction by ln 2, degree-6 polynomial, as bf16_kernels'
// exp16), 2^n built in the exponent bits; ~1 ulp over [−87, 88], where t is clamped.
__m256 exp8(__m256 t) {
    t = _mm256_max_ps(_mm256_min_ps(t, _mm256_set1_ps(88.0f)), _mm256_set1_ps(-87.0f));  // 2^n stays a normal number
    const __m256 n =
        _mm256_round_ps(_mm256_mul_ps(t, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), t));
    static constexpr float kPoly[] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                      4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
    __m256 p = _mm256_set1_ps(kPoly[0]);
    for (int i = 1; i < 6; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kPoly[i]));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256 two_n =
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
    return _mm256_mul_ps(p, two_n);
}

// gelu_pytorch_tanh(x) = x / (1 + exp(−2u)), u = √(2/π)·(x + 0.044715·x³), where ggml's tanh op would
// call libm once per value (12 % of an image's encoding).
__m256 gelu_tanh8(__m256 x) {
    const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
    const __m256 u = _mm256_mul_ps(_mm256_fmadd_ps(x3, _mm256_set1_ps(0.044715f), x), _mm256_set1_ps(0.79788456080286535588f));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), exp8(_mm256_mul_ps(u, _mm256_set1_ps(-2.0f)))));
}

// The panel's 16 rows times NT activation rows into out[t][0..15]: one FMA chain per output. The loops
// over t are unrolled before GCC looks for values to keep in registers: otherwise the sums stay an
// array in memory, stored at every k (half the speed).
template <int NT>
void panel_tile(const float * panel, int64_t K, const float * const * x, float (*out)[kPanelRows]) {
    __m256 acc0[NT], acc1[NT];
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
        acc0[t] = _mm256_setzero_ps();
        acc1[t] = _mm256_setzero_ps();
    }
    for (int64_t k = 0; k < K; ++k) {
        const __m256 w0 = _mm256_loadu_ps(panel + kPanelRows * k), w1 = _mm256_loadu_ps(panel + kPanelRows * k + 8);
#pragma GCC unroll 8
        for (int t = 0; t < NT; ++t) {
            const __m256 xb = _mm256_broadcast_ss(x[t] + k);
            acc0[t] = _mm256_fmadd_ps(w0, xb, acc0[t]);
            acc1[t] = _mm256_fmadd_ps(w1, xb, acc1[t]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
        _mm256_storeu_ps(out[t], acc0[t]);
        _mm256_storeu_ps(out[t] + 8, acc1[t]);
    }
}

void panel_tile_n(int nt, const float * panel, int64_t K, const float * const * x, float (*out)[kPanelRows]) {
    switch (nt) {
        case 1: return panel_tile<1>(panel, K, x, out);
        case 2: return panel_tile<2>(panel, K, x, out);
        case 3: return panel_tile<3>(panel, K, x, out);
        case 4: return panel_tile<4>(panel, K, x, out);
        case 5: return panel_tile<5>(panel, K, x, out);
        default: return panel_tile<kTileRows>(panel, K, x, out);
    }
}

// Panels of 16 weight rows dealt round-robin to the threads; each is converted once (16·K floats: in
// L2 for SigLIP's K) and run over every activation row. Strides in elements.
template <Activation kAct>
void product(const uint16_t * w, size_t w_stride, int64_t K, int64_t M, const float * x, size_t x_stride, int64_t N, float * y,
             size_t y_stride, const float * bias, int ith, int nth) {
    thread_local std::vector<float> panel;
    panel.resize(kPanelRows * K);
    const int64_t n_panels = (M + kPanelRows - 1) / kPanelRows;
    for (int64_t pi = ith; pi < n_panels; pi += nth) {
        const int64_t r0 = pi * kPanelRows;
        const int n = static_cast<int>(std::min<int64_t>(kPanelRows, M - r0));
        convert_panel(w, w_stride, K, r0, n, panel.data());
        alignas(32) float panel_bias[kPanelRows] = {};
        if (bias != nullptr) std::copy(bias + r0, bias + r0 + n, panel_bias);
        for (int64_t c0 = 0; c0 < N; c0 += kTileRows) {
            const int nt = static_cast<int>(std::min<int64_t>(kTileRows, N - c0));
            const float * xs[kTileRows];
            for (int t = 0; t < nt; ++t) xs[t] = x + (c0 + t) * x_stride;
            alignas(32) float out[kTileRows][kPanelRows];
            panel_tile_n(nt, panel.data(), K, xs, out);
            for (int t = 0; t < nt; ++t) {
                for (int h = 0; h < kPanelRows; h += 8) {
                    __m256 v = _mm256_add_ps(_mm256_load_ps(out[t] + h), _mm256_load_ps(panel_bias + h));
                    if constexpr (kAct == Activation::gelu_tanh) v = gelu_tanh8(v);
                    _mm256_store_ps(out[t] + h, v);
                }
                std::copy(out[t], out[t] + n, y + (c0 + t) * y_stride + r0);
            }
        }
    }
}

// softmax(scale·q·kᵀ + mask)·v (f32_attention's shapes) for the (slice, head) pairs dealt to this
// thread: the pair's keys and values packed into panels of 16 (panel_tile's layout), then per 6 queries
// their scores against every key, the softmax, and the outputs 16 dimensions at a time.
void attention(const ggml_tensor * q, const ggml_tensor * k, const ggml_tensor * v, const ggml_tensor * mask, float scale,
               ggml_tensor * dst, int ith, int nth) {
    const int64_t D = q->ne[0], Nq = q->ne[1], H = q->ne[2], Nk = k->ne[1], Hkv = k->ne[2], S = k->ne[3];
    const int64_t nk_pad = (Nk + kPanelRows - 1) / kPanelRows * kPanelRows, d_panels = (D + kPanelRows - 1) / kPanelRows;
    thread_local std::vector<float> keys, values, probs;
    keys.resize(nk_pad * D);
    values.resize(d_panels * Nk * kPanelRows);
    probs.resize(kTileRows * nk_pad);
    // keys[(16·p + d)... ]: panel p of keys 16p..16p+15, k-major; values[(panel of 16 dims · Nk + key)·16 + dim].
    // Every (slice, head) writes the same places: the padding past Nk keys and D dimensions stays 0.
    std::fill(keys.begin(), keys.end(), 0.0f);
    std::fill(values.begin(), values.end(), 0.0f);
    for (int64_t i = ith; i < S * H; i += nth) {
        const int64_t s = i / H, h = i % H, hk = h / (H / Hkv);
        for (int64_t j = 0; j < Nk; ++j) {
            const auto * kr =
                reinterpret_cast<const float *>(static_cast<const char *>(k->data) + j * k->nb[1] + hk * k->nb[2] + s * k->nb[3]);
            const auto * vr =
                reinterpret_cast<const float *>(static_cast<const char *>(v->data) + j * v->nb[1] + hk * v->nb[2] + s * v->nb[3]);
            float * kp = keys.data() + (j / kPanelRows) * D * kPanelRows + j % kPanelRows;
            for (int64_t d = 0; d < D; ++d) kp[d * kPanelRows] = kr[d];
            for (int64_t d = 0; d < D; ++d) values[((d / kPanelRows) * Nk + j) * kPanelRows + d % kPanelRows] = vr[d];
        }
        const char * qb = static_cast<const char *>(q->data) + h * q->nb[2] + (q->ne[3] == 1 ? 0 : s * q->nb[3]);
        for (int64_t q0 = 0; q0 < Nq; q0 += kTileRows) {
            const int nt = static_cast<int>(std::min<int64_t>(kTileRows, Nq - q0));
            const float * qs[kTileRows];
            const float * ps[kTileRows];
            for (int t = 0; t < nt; ++t) {
                qs[t] = reinterpret_cast<const float *>(qb + (q0 + t) * q->nb[1]);
                ps[t] = probs.data() + t * nk_pad;
            }
            alignas(32) float out[kTileRows][kPanelRows];
            for (int64_t p = 0; p < nk_pad / kPanelRows; ++p) {
                panel_tile_n(nt, keys.data() + p * D * kPanelRows, D, qs, out);
                for (int t = 0; t < nt; ++t) std::copy(out[t], out[t] + kPanelRows, probs.data() + t * nk_pad + p * kPanelRows);
            }
            float inv_sum[kTileRows];
            for (int t = 0; t < nt; ++t) {
                float * x = probs.data() + t * nk_pad;
                const uint16_t * m =
                    mask == nullptr
                        ? nullptr
                        : reinterpret_cast<const uint16_t *>(static_cast<const char *>(mask->data) + (q0 + t) * mask->nb[1] +
                                                             (mask->ne[3] == 1 ? 0 : s * mask->nb[3]));
                float max = -INFINITY;
                for (int64_t j = 0; j < Nk; ++j) {
                    x[j] = scale * x[j] + (m != nullptr ? _cvtsh_ss(m[j]) : 0.0f);
                    max = std::max(max, x[j]);
                }
                if (max == -INFINITY) {  // every key masked: no output
                    std::fill(x, x + Nk, 0.0f);
                    inv_sum[t] = 0.0f;
                    continue;
                }
                __m256 sum = _mm256_setzero_ps();
                int64_t j = 0;
                for (; j + 8 <= Nk; j += 8) {
                    const __m256 xj = _mm256_loadu_ps(x + j);
                    // masked keys (−inf) weigh exactly 0
                    const __m256 e = _mm256_and_ps(exp8(_mm256_sub_ps(xj, _mm256_set1_ps(max))),
                                                   _mm256_cmp_ps(xj, _mm256_set1_ps(-INFINITY), _CMP_NEQ_OQ));
                    _mm256_storeu_ps(x + j, e);
                    sum = _mm256_add_ps(sum, e);
                }
                alignas(32) float lanes[8];
                _mm256_store_ps(lanes, sum);
                float total = 0.0f;
                for (float l : lanes) total += l;
                for (; j < Nk; ++j) {
                    x[j] = x[j] == -INFINITY ? 0.0f : std::exp(x[j] - max);
                    total += x[j];
                }
                inv_sum[t] = 1.0f / total;
            }
            for (int64_t p = 0; p < d_panels; ++p) {
                panel_tile_n(nt, values.data() + p * Nk * kPanelRows, Nk, ps, out);
                const int64_t d0 = p * kPanelRows, nd = std::min<int64_t>(kPanelRows, D - d0);
                for (int t = 0; t < nt; ++t) {
                    float * o =
                        reinterpret_cast<float *>(static_cast<char *>(dst->data) + (q0 + t) * dst->nb[1] + s * dst->nb[2]) +
                        h * D + d0;
                    for (int64_t d = 0; d < nd; ++d) o[d] = out[t][d] * inv_sum[t];
                }
            }
        }
    }
}

}  // namespace

MINICPMV_TARGET_END()

namespace {

// The weight comes as userdata (not a graph source: ggml's scheduler then never asks where it lives).
template <Activation kAct>
void op_f16_linear(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const ggml_tensor * w = static_cast<const ggml_tensor *>(userdata);
    const ggml_tensor * x = dst->src[0];
    const ggml_tensor * bias = dst->src[1];
    product<kAct>(static_cast<const uint16_t *>(w->data), w->nb[1] / sizeof(uint16_t), w->ne[0], w->ne[1],
                  static_cast<const float *>(x->data), x->nb[1] / sizeof(float), x->ne[1], static_cast<float *>(dst->data),
                  dst->nb[1] / sizeof(float), bias ? static_cast<const float *>(bias->data) : nullptr, ith, nth);
}

void op_f32_attention(ggml_tensor * dst, int ith, int nth, void * userdata) {
    float scale;
    std::memcpy(&scale, &userdata, sizeof scale);
    attention(dst->src[0], dst->src[1], dst->src[2], dst->src[3], scale, dst, ith, nth);
}

}  // namespace

bool f16_kernels_usable(const ggml_tensor * w, const ggml_tensor * x) {
    return w != nullptr && w->type == GGML_TYPE_F16 && ggml_n_dims(w) == 2 && w->nb[0] == sizeof(uint16_t) &&
           in_cpu_memory(storage(w)) && x->type == GGML_TYPE_F32 && ggml_n_dims(x) <= 2 && x->nb[0] == sizeof(float) &&
           x->ne[0] == w->ne[0] && cpu_has_avx2_f16();
}

ggml_tensor * f16_linear(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, ggml_tensor * bias, Activation act) {
    GGML_ASSERT(f16_kernels_usable(w, x));
    GGML_ASSERT(bias == nullptr || (bias->type == GGML_TYPE_F32 && bias->ne[0] == w->ne[1] && ggml_is_contiguous(bias)));
    ggml_tensor * args[] = {x, bias};
    const ggml_custom_op_t op =
        act == Activation::gelu_tanh ? op_f16_linear<Activation::gelu_tanh> : op_f16_linear<Activation::none>;
    ggml_tensor * y = ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], x->ne[1], 1, 1, args, 2, op, GGML_N_TASKS_MAX, w);
    ggml_format_name(y, "f16_linear-%s", w->name);
    return y;
}

bool f32_attention_usable(const ggml_tensor * q, const ggml_tensor * k, const ggml_tensor * v, const ggml_tensor * mask) {
    return cpu_has_avx2_f16() && q->type == GGML_TYPE_F32 && k->type == GGML_TYPE_F32 && v->type == GGML_TYPE_F32 &&
           q->nb[0] == sizeof(float) && k->nb[0] == sizeof(float) && v->nb[0] == sizeof(float) && q->ne[0] == k->ne[0] &&
           k->ne[0] == v->ne[0] && k->ne[1] == v->ne[1] && k->ne[2] == v->ne[2] && q->ne[2] % k->ne[2] == 0 &&
           k->ne[3] == v->ne[3] && (q->ne[3] == 1 || q->ne[3] == k->ne[3]) &&
           (mask == nullptr || (mask->type == GGML_TYPE_F16 && mask->nb[0] == sizeof(uint16_t) && mask->ne[0] == k->ne[1] &&
                                mask->ne[1] >= q->ne[1] && (mask->ne[3] == 1 || mask->ne[3] == k->ne[3])));
}

ggml_tensor * f32_attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, ggml_tensor * mask,
                            float scale) {
    GGML_ASSERT(f32_attention_usable(q, k, v, mask));
    void * userdata = nullptr;
    std::memcpy(&userdata, &scale, sizeof scale);
    ggml_tensor * args[] = {q, k, v, mask};
    ggml_tensor * out = ggml_custom_4d(ctx, GGML_TYPE_F32, q->ne[0] * q->ne[2], q->ne[1], k->ne[3], 1, args, 4, op_f32_attention,
                                       GGML_N_TASKS_MAX, userdata);
    ggml_set_name(out, "f32_attention");
    return out;
}

bool f16_matmul(const uint16_t * w, int64_t K, int64_t M, const float * x, int64_t N, float * y) {
    if (!cpu_has_avx2_f16()) return false;
    product<Activation::none>(w, K, K, M, x, K, N, y, M, nullptr, 0, 1);
    return true;
}

#else  // not x86 with GCC/Clang: the graphs use ggml's own products

bool f16_kernels_usable(const ggml_tensor *, const ggml_tensor *) { return false; }

ggml_tensor * f16_linear(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *, Activation) {
    GGML_ABORT("f16_linear: not in this build (check f16_kernels_usable first)");
}

bool f32_attention_usable(const ggml_tensor *, const ggml_tensor *, const ggml_tensor *, const ggml_tensor *) { return false; }

ggml_tensor * f32_attention(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *, ggml_tensor *, float) {
    GGML_ABORT("f32_attention: not in this build (check f32_attention_usable first)");
}

bool f16_matmul(const uint16_t *, int64_t, int64_t, const float *, int64_t, float *) { return false; }

#endif

}  // namespace minicpmv
