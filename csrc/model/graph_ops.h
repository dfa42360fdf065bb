// The blocks the graphs are built from (docs/model.md §4, §5 and the decoder): linear, norms and
// attention, each picking the kernel for its weight — the int8 kernels for q4_K/q6_K matrices, the
// bf16 kernels where the graph uses them, else the f16 kernels for a vision graph's f16 matrices,
// ggml's own operations otherwise — so that decoder.cpp,
// vision_encoder.cpp and resampler.cpp read like the math and each layer is written once.
#pragma once

#include "kernels/bf16_kernels.h"

#include <cstdint>
#include <vector>

struct ggml_context;
struct ggml_tensor;

namespace minicpmv {

class GraphOps {
  public:
    // cpu_kernels: our CPU kernels may be used (the graph runs on the CPU device; see
    // DecoderWeights::cpu_kernels); false: ggml's operations only. bf16: products over f16/bf16/quantized
    // weights, attention and LayerNorm through the bf16 kernels (where the weight allows); false: ggml's
    // operations at the file's precision. per_row: every row of a product computed as if it were alone
    // (decode steps of batched sequences). f16: where the bf16 kernels do not run, products over f16
    // weights and attention through f16_kernels.h (vision graphs of an f16 file; the decoder's prompts
    // keep ggml's operations, which its decode steps share).
    GraphOps(ggml_context * ctx, bool cpu_kernels, bool bf16, bool per_row = false, bool f16 = false)
        : ctx_(ctx), cpu_kernels_(cpu_kernels), bf16_(cpu_kernels && bf16), per_row_(per_row), f16_(cpu_kernels && f16) {}

    ggml_context * ctx() const { return ctx_; }
    bool bf16() const { return bf16_; }

    // act(w·x + bias) + residual, as ggml_mul_mat(w, x) with the extras. opt.bf16_out asks for bf16
    // rows when the bf16 kernel computes the product (see takes_bf16_rows); ignored otherwise.
    ggml_tensor * linear(ggml_tensor * w, ggml_tensor * x, const LinearOptions & opt = {});
    // Whether the product over `w` runs on the bf16 kernel, which reads bf16 rows as they come.
    bool takes_bf16_rows(const ggml_tensor * w) const;

    // LayerNorm(x)·w + b per row; bf16 rows out when bf16_out and the graph uses the bf16 kernels.
    ggml_tensor * layer_norm(ggml_tensor * x, ggml_tensor * w, ggml_tensor * b, float eps, bool bf16_out = false);
    // RMSNorm(x)·w per row.
    ggml_tensor * rms_norm(ggml_tensor * x, ggml_tensor * w, float eps);
    // softmax(scale·q·kᵀ + mask)·v per head (bf16_attention's shapes); f32 softmax and sums in both
    // kernel families. Returns [D·H, Nq, S]; bf16 rows when bf16_out and the graph uses bf16 kernels.
    ggml_tensor * attention(ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, ggml_tensor * mask, float scale, bool bf16_out);

    // Names `t` "<name>-<layer>" (layer < 0: just the name), the key of the evaluation callback.
    ggml_tensor * name(ggml_tensor * t, const char * name, int layer = -1) const;

  private:
    ggml_context * ctx_;
    bool cpu_kernels_;
    bool bf16_;
    bool per_row_;
    bool f16_;
    // The int8 kernels round each activation once for every product that reads it.
    ggml_tensor * rounded_src_ = nullptr;
    ggml_tensor * rounded_ = nullptr;
};

// parts joined along dim, pairwise (a balanced tree: each element is copied log2(parts) times).
ggml_tensor * concat_all(ggml_context * ctx, std::vector<ggml_tensor *> parts, int dim);

// gelu_pytorch_tanh: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), from exact operations.
ggml_tensor * gelu_tanh(ggml_context * ctx, ggml_tensor * x);

}  // namespace minicpmv
