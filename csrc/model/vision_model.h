// The vision half of MiniCPM-V 2.6 loaded from its "mmproj" GGUF (docs/model.md §4, §5, §9): the SigLIP
// encoder and the perceiver resampler. Immutable after loading, like Model.
#pragma once

#include "core/model_weights.h"

#include <memory>
#include <string>
#include <vector>

#include <ggml-backend.h>

namespace minicpmv {

class GgufFile;

struct VisionConfig {
    int32_t n_embd = 0;           // SigLIP width (1152)
    int32_t n_ff = 0;             // SigLIP MLP width (4304)
    int32_t n_head = 0;           // 16
    int32_t head_dim = 0;         // n_embd / n_head (72)
    int32_t n_layer = 0;          // 27
    int32_t patch_size = 0;       // 14
    int32_t image_size = 0;       // slicing scale resolution (448)
    int32_t pos_side = 0;         // the position table is pos_side² rows (70 × 70)
    float eps = 0.0f;             // LayerNorm epsilon
    int32_t embed = 0;            // resampler width = LLM width (3584)
    int32_t n_query = 0;          // resampler queries per slice (64)
    int32_t resampler_heads = 0;  // embed / 128
};

struct VisionLayer {
    ggml_tensor * ln1_w;
    ggml_tensor * ln1_b;
    ggml_tensor * q_w;
    ggml_tensor * q_b;
    ggml_tensor * k_w;
    ggml_tensor * k_b;
    ggml_tensor * v_w;
    ggml_tensor * v_b;
    ggml_tensor * out_w;
    ggml_tensor * out_b;
    ggml_tensor * ln2_w;
    ggml_tensor * ln2_b;
    ggml_tensor * fc1_w;
    ggml_tensor * fc1_b;
    ggml_tensor * fc2_w;
    ggml_tensor * fc2_b;
};

struct VisionWeights {
    ggml_tensor * patch_w;  // [p, p, 3, n_embd]
    ggml_tensor * patch_b;
    ggml_tensor * pos_embd;  // [n_embd, pos_side²]
    std::vector<VisionLayer> layers;
    ggml_tensor * post_ln_w;
    ggml_tensor * post_ln_b;
    // resampler
    ggml_tensor * query;  // [embed, n_query]
    ggml_tensor * kv_w;   // [n_embd, embed]
    ggml_tensor * ln_q_w;
    ggml_tensor * ln_q_b;
    ggml_tensor * ln_kv_w;
    ggml_tensor * ln_kv_b;
    ggml_tensor * attn_q_w;
    ggml_tensor * attn_q_b;
    ggml_tensor * attn_k_w;
    ggml_tensor * attn_k_b;
    ggml_tensor * attn_v_w;
    ggml_tensor * attn_v_b;
    ggml_tensor * attn_out_w;
    ggml_tensor * attn_out_b;
    ggml_tensor * ln_post_w;
    ggml_tensor * ln_post_b;
    ggml_tensor * proj;         // stored transposed: mul_mat(proj, x) = x @ proj
    ggml_tensor * pos_embed_k;  // llama.cpp's 70×70 key-position table; unused (computed per grid)
    // The model runs on the CPU device: the graphs may use the int8/bf16 kernels (custom ops only ggml's
    // CPU backend runs). Off on other devices, even for weights kept in CPU memory (model_weights.h).
    bool cpu_kernels = false;
};

class VisionModel {
  public:
    // Throws Error(io/bad_format) as Model does; `expected_embed` is the LLM width the resampler must match.
    VisionModel(const std::string & mmproj_path, ggml_backend_dev_t device, int32_t expected_embed, bool cpu_repack,
                bool use_mmap);
    ~VisionModel();

    const VisionConfig & config() const { return config_; }
    const VisionWeights & weights() const { return weights_; }
    size_t weights_bytes() const { return storage_->size_bytes(); }
    void check_file() const { storage_->check_intact(); }

  private:
    std::unique_ptr<GgufFile> file_;
    VisionConfig config_;
    std::unique_ptr<Weights> storage_;
    VisionWeights weights_;
};

}  // namespace minicpmv
