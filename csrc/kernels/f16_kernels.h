// The vision tower's kernels for x86 CPUs with AVX2 and FMA but no AVX-512 BF16 (where bf16_kernels.h
// does not run), as ggml custom ops: products of f16 weights (the published vision file) with f32
// activations, and attention in f32. ggml 0.15's f16 product rounds every activation to f16 and
// computes one dot product at a time (29 % of the FMA peak on SigLIP's shapes); this kernel converts 16
// weight rows at a time to f32 once and runs them against 6 activation rows per pass, in registers.
//
// Numerics: activations stay f32 and each output is one chain of f32 FMAs over k in order, whatever
// the batch: closer to the f32 reference than ggml's f16 path (tests/test_vision.py), and a slice's
// result does not depend on the slices beside it.
#pragma once

#include "kernels/bf16_kernels.h"

#include <cstdint>

struct ggml_context;
struct ggml_tensor;

namespace minicpmv {

// Whether f16_linear may take w·x: w an f16 matrix in CPU memory, in ggml's layout, x f32 [K, N] with
// contiguous rows, and this CPU has AVX2, FMA and F16C (checked at run time).
bool f16_kernels_usable(const ggml_tensor * w, const ggml_tensor * x);

// act(w·x + bias) as ggml_mul_mat(w, x) with the extras (f16_kernels_usable(w, x)), bias [M] f32 or
// nullptr. Returns [M, N] f32.
ggml_tensor * f16_linear(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, ggml_tensor * bias, Activation act);

// Whether f32_attention takes these operands: f32 q, k, v with contiguous rows, an f16 mask or none (the
// shapes below), and this CPU has AVX2, FMA and F16C.
bool f32_attention_usable(const ggml_tensor * q, const ggml_tensor * k, const ggml_tensor * v, const ggml_tensor * mask);

// softmax(scale·q·kᵀ + mask)·v for every head and slice, as ggml_flash_attn_ext, in f32 (ggml's rounds
// keys and values to f16): q [D, Nq, H, S or 1], k and v [D, Nk, Hkv, S] (query head h reads key/value
// head h / (H / Hkv)), mask [Nk, ≥Nq, 1, S or 1] f16 (0 or −inf) or nullptr. Returns [D·H, Nq, S] f32.
ggml_tensor * f32_attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, ggml_tensor * mask,
                            float scale);

// The same product without a graph, on the calling thread (tests): w holds M rows of K f16 values, x N
// rows of K floats, y N rows of M floats. False (and nothing computed) where the CPU lacks the kernel.
bool f16_matmul(const uint16_t * w, int64_t K, int64_t M, const float * x, int64_t N, float * y);

}  // namespace minicpmv
