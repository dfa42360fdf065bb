// Matrix products, attention and LayerNorm in bfloat16 with float32 sums, for x86 CPUs with AVX-512
// BF16 (vdpbf16ps), as ggml custom ops. They serve the vision encoder and the resampler: ggml's CPU
// kernels for f16/bf16 weights compute one dot product at a time (ggml-python is built without
// llamafile's sgemm) and run 4-6× slower than this register-blocked kernel on the SigLIP shapes.
//
// Numerics: every input of a product is rounded to bf16 (8 significant bits) and the sums are f32 —
// the precision the MiniCPM-V 2.6 checkpoint is published in and usually run in. The graphs use them
// for f16/bf16 vision files only; an f32 file keeps ggml's f32 operations (exact parity with the
// reference). Bounds: tests/test_vision.py (tiny model) and benchmarks/compare.py (full size, against
// the PyTorch float32 reference).
//
// "bf16 rows": activations already rounded for the next product, a GGML_TYPE_BF16 tensor
// [2·⌈K/2⌉, N] (odd K padded with a zero).
#pragma once

struct ggml_context;
struct ggml_tensor;

namespace minicpmv {

// Whether a graph over weight `w` may use the kernels: `w` is an f16, bf16 or quantized matrix (not
// f32) in CPU memory, in ggml's own layout or as a q4_K matrix in the CPU_REPACK layout, and this CPU
// has AVX-512 BF16.
bool bf16_kernels_usable(const ggml_tensor * w);

enum class Activation { none, gelu_tanh };

struct LinearOptions {
    ggml_tensor * bias = nullptr;      // [M] f32, added to every row
    ggml_tensor * residual = nullptr;  // [M, N] f32, added after the activation
    Activation act = Activation::none;
    bool bf16_out = false;  // return bf16 rows (for another product) instead of f32
};

// act(w·x + bias) + residual, as ggml_mul_mat(w, x) with the extras: w [K, M] (any type ggml can
// dequantize; expanded to bf16 once per call, so worth it for many rows of x), x
// [K, N] f32 with contiguous rows or bf16 rows. Returns [M, N] f32 (or bf16 rows).
ggml_tensor * bf16_linear(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, const LinearOptions & opt);

// LayerNorm(x)·w + b per row (f32 statistics, as ggml_norm), returned as bf16 rows.
ggml_tensor * bf16_layer_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b, float eps);

// softmax(scale·q·kᵀ + mask)·v for every head, as ggml_flash_attn_ext: q [D, Nq, H, Sq] f32 (Sq = S,
// or 1 when the queries are shared), k and v [D, Nk, Hkv, S] f32 or f16 (views with contiguous rows;
// query head h reads key/value head h / (H / Hkv)), mask [Nk, Nq, 1, S] f16 (0 or -inf) or nullptr;
// keys masked for a whole block of queries (a causal tail) cost nothing. Returns [D·H, Nq, S]: the
// heads of each query side by side, f32 or (bf16_out) bf16 rows.
ggml_tensor * bf16_attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, ggml_tensor * mask,
                             float scale, bool bf16_out);

}  // namespace minicpmv
