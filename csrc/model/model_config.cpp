#include "model/model_config.h"

#include "core/error.h"
#include "core/gguf_file.h"
#include "core/gguf_keys.h"

#include <cmath>
#include <string>

namespace minicpmv {

LlmConfig read_llm_config(const GgufFile & file) {
    if (!file.has(keys::architecture)) {
        throw Error(ErrorCode::bad_format, file.path() + ": no general.architecture key");
    }
    const std::string arch = file.get_string(keys::architecture);
    if (arch != "qwen2") {
        throw Error(ErrorCode::bad_format,
                    file.path() + ": architecture is '" + arch + "', expected 'qwen2' (the MiniCPM-V 2.6 language model)");
    }
    LlmConfig c;
    c.n_layer = file.get_size(keys::qwen2_block_count);
    c.n_ctx_train = file.get_size(keys::qwen2_context_length);
    c.n_embd = file.get_size(keys::qwen2_embedding_length);
    c.n_ff = file.get_size(keys::qwen2_feed_forward_length);
    c.n_head = file.get_size(keys::qwen2_head_count);
    c.n_head_kv = file.get_size(keys::qwen2_head_count_kv);
    c.rope_freq_base = file.get_f32(keys::qwen2_rope_freq_base);
    c.rms_eps = file.get_f32(keys::qwen2_rms_eps);
    c.n_vocab = static_cast<int32_t>(file.get_strings(keys::tokenizer_tokens).size());

    auto require = [&](bool ok, const std::string & what) {
        if (!ok) throw Error(ErrorCode::bad_format, file.path() + ": inconsistent hyper-parameters: " + what);
    };
    require(c.n_layer > 0 && c.n_embd > 0 && c.n_ff > 0 && c.n_vocab > 0, "zero-sized model");
    require(c.n_head > 0 && c.n_embd % c.n_head == 0, "embedding_length must be a multiple of head_count");
    require(c.n_head_kv > 0 && c.n_head % c.n_head_kv == 0, "head_count must be a multiple of head_count_kv");
    c.head_dim = c.n_embd / c.n_head;
    // Every Qwen2 head is a multiple of 8 wide (128 in Qwen2-7B); other widths come from an edited file.
    require(c.head_dim % 8 == 0, "head dimension " + std::to_string(c.head_dim) + " is not a multiple of 8");
    require(std::isfinite(c.rope_freq_base) && c.rope_freq_base > 1.0f,
            "rope.freq_base must be a finite number above 1, got " + std::to_string(c.rope_freq_base));
    require(plausible_norm_eps(c.rms_eps), "the RMS norm epsilon must lie in (0, 1), got " + std::to_string(c.rms_eps));
    return c;
}

}  // namespace minicpmv
