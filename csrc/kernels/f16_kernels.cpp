#include "kernels/f16_kernels.h"

#include "core/cpu_weights.h"
#include "kernels/cpu_features.h"

#include <ggml.h>

#include <algorithm>
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

// gelu_pytorch_tanh(x) = x / (1 + exp(−2u)), u = √(2/π)·(x + 0.044715·x³), 8 lanes: exp through Cephes'
// expf (bf16_kernels' exp16 on 256 bits; 2^n built in the exponent bits), ~1 ulp, where ggml's tanh op
// would call libm once per value (12 % of an image's encoding).
__m256 gelu_tanh8(__m256 x) {
    const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
    const __m256 u = _mm256_mul_ps(_mm256_fmadd_ps(x3, _mm256_set1_ps(0.044715f), x), _mm256_set1_ps(0.79788456080286535588f));
    // exp(t), t = −2u kept where exp is finite and 2^n a normal number
    const __m256 t =
        _mm256_max_ps(_mm256_min_ps(_mm256_mul_ps(u, _mm256_set1_ps(-2.0f)), _mm256_set1_ps(88.0f)), _mm256_set1_ps(-87.0f));
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
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), _mm256_mul_ps(p, two_n)));
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

}  // namespace

bool f16_kernels_usable(const ggml_tensor * w) {
    return w != nullptr && w->type == GGML_TYPE_F16 && ggml_n_dims(w) == 2 && w->nb[0] == sizeof(uint16_t) &&
           in_cpu_memory(storage(w)) && cpu_has_avx2_f16();
}

ggml_tensor * f16_linear(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, ggml_tensor * bias, Activation act) {
    GGML_ASSERT(f16_kernels_usable(w) && x->type == GGML_TYPE_F32 && ggml_n_dims(x) <= 2 && x->nb[0] == sizeof(float) &&
                x->ne[0] == w->ne[0]);
    GGML_ASSERT(bias == nullptr || (bias->type == GGML_TYPE_F32 && bias->ne[0] == w->ne[1] && ggml_is_contiguous(bias)));
    ggml_tensor * args[] = {x, bias};
    const ggml_custom_op_t op =
        act == Activation::gelu_tanh ? op_f16_linear<Activation::gelu_tanh> : op_f16_linear<Activation::none>;
    ggml_tensor * y = ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], x->ne[1], 1, 1, args, 2, op, GGML_N_TASKS_MAX, w);
    ggml_format_name(y, "f16_linear-%s", w->name);
    return y;
}

bool f16_matmul(const uint16_t * w, int64_t K, int64_t M, const float * x, int64_t N, float * y) {
    if (!cpu_has_avx2_f16()) return false;
    product<Activation::none>(w, K, K, M, x, K, N, y, M, nullptr, 0, 1);
    return true;
}

#else  // not x86 with GCC/Clang: the graphs use ggml's own products

bool f16_kernels_usable(const ggml_tensor *) { return false; }

ggml_tensor * f16_linear(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *, Activation) {
    GGML_ABORT("f16_linear: not in this build (check f16_kernels_usable first)");
}

bool f16_matmul(const uint16_t *, int64_t, int64_t, const float *, int64_t, float *) { return false; }

#endif

}  // namespace minicpmv
