// Products of k-quant weights (q4_K, q6_K: the matrices of a Q4_K_M file) with activation rows in
// 8-bit integers, as ggml custom ops. Two forms, picked at run time:
//
// AVX-512 VNNI, decoding and prompts. Decoding (one row per step, one per beam) reads every weight once
// per step, so a block must decode in a handful of 512-bit instructions: ggml 0.15's dot products work
// 32 bytes at a time and reach about 68 % of this machine's bandwidth limit on the full model. Prompt
// batches unpack 16 weight rows at a time into vpdpbusd panels reused by every token, ~1.3× the bf16
// kernels' rate (benchmarks/compare.py). Numerics: each activation row is rounded to 8 bits per block
// of 256 exactly as ggml rounds it for these weights (q8_K: d = max|x| / 127, round half to even), and
// each block's products are summed exactly in integers, so the result is ggml_mul_mat's up to the
// order of the f32 additions (tests/test_int8_kernels.py).
//
// AVX2 (with FMA, F16C), prompt batches of 8+ rows: ggml's own AVX2 dot products, the same operations
// in the same order, so every output equals ggml_mul_mat's to the bit; each weight row is unpacked once
// per batch instead of once per token (~1.7-2× ggml's rate on one core). Fewer rows (decoding) take
// ggml's kernels, which stream the weights at memory speed and give the same numbers.
#pragma once

#include <cstdint>

struct ggml_context;
struct ggml_tensor;

namespace minicpmv {

// Whether int8_linear may take the product of weight `w` with n_rows activation rows: a q4_K or q6_K
// matrix with rows of whole blocks, in ggml's own layout in CPU memory, and this CPU has AVX-512 VNNI,
// or AVX2 (with FMA, F16C) and n_rows makes a prompt batch (checked at run time).
bool int8_kernels_usable(const ggml_tensor * w, int64_t n_rows);

// x [K, N] f32 (contiguous rows, K a multiple of 256) rounded to 8-bit blocks for int8_linear: one
// node per activation, shared by every product that reads it.
ggml_tensor * int8_rows(ggml_context * ctx, ggml_tensor * x);

// w·x (+ bias) as ggml_mul_mat(w, x): w [K, M] (int8_kernels_usable), xq = int8_rows(x), bias [M] f32
// or nullptr. Returns [M, N] f32. per_row: every row of the result as it would be alone (from 8 rows
// on, the panels sum in another order), for decode steps of sequences batched together.
ggml_tensor * int8_linear(ggml_context * ctx, ggml_tensor * w, ggml_tensor * xq, ggml_tensor * bias, bool per_row = false);

// The same product without a graph, on the calling thread (tests): w holds M rows of K values of
// `type` (GGML_TYPE_Q4_K or GGML_TYPE_Q6_K), x N rows of K floats, y N rows of M floats. False (and
// nothing computed) where the CPU has neither AVX-512 VNNI nor AVX2 (whose kernel takes any N here).
bool int8_matmul(const void * w, int type, int64_t K, int64_t M, const float * x, int64_t N, float * y, bool per_row = false);

}  // namespace minicpmv
