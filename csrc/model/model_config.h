// Hyper-parameters of the Qwen2 decoder, read from the LLM GGUF (docs/model.md §1, §9). Nothing is
// hard-coded: a tiny test model and the real 7B one differ only here.
#pragma once

#include <cstdint>

namespace minicpmv {

class GgufFile;

struct LlmConfig {
    int32_t n_vocab = 0;
    int32_t n_ctx_train = 0;
    int32_t n_embd = 0;
    int32_t n_ff = 0;
    int32_t n_layer = 0;
    int32_t n_head = 0;
    int32_t n_head_kv = 0;
    int32_t head_dim = 0;  // n_embd / n_head
    float rope_freq_base = 0.0f;
    float rms_eps = 0.0f;
};

// Whether a normalisation epsilon (RMSNorm, LayerNorm) is one a model can mean: finite, in (0, 1)
// (1e-6 in Qwen2 and SigLIP); inf, NaN or 0 come from an edited file.
inline bool plausible_norm_eps(float eps) { return eps > 0.0f && eps < 1.0f; }

// Throws Error(bad_format) when the file is not a qwen2 GGUF or the sizes are inconsistent.
LlmConfig read_llm_config(const GgufFile & file);

}  // namespace minicpmv
