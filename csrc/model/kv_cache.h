// The decoder's key/value cache: per layer one K and one V tensor of [head_dim·n_head_kv, n_ctx, n_slots].
// Slot 0 holds the conversation; beam search uses one slot per beam. Values are stored un-transposed,
// as ggml_flash_attn_ext reads them.
#pragma once

#include "model/model_config.h"

#include <vector>

#include <ggml-backend.h>

namespace minicpmv {

class KvCache {
  public:
    KvCache(const LlmConfig & config, int n_ctx, int n_slots, ggml_type type, ggml_backend_dev_t device);
    ~KvCache();
    KvCache(const KvCache &) = delete;
    KvCache & operator=(const KvCache &) = delete;

    ggml_tensor * k(int layer) const { return k_[layer]; }
    ggml_tensor * v(int layer) const { return v_[layer]; }
    int n_ctx() const { return n_ctx_; }
    int n_slots() const { return n_slots_; }
    size_t size_bytes() const;

    // Slot d receives the first n_pos positions of slot sources[d] (all copies read before any write,
    // so any mapping, including permutations, is valid).
    void copy_slots(const std::vector<int> & sources, int n_pos);

  private:
    int n_ctx_;
    int n_slots_;
    ggml_context * ctx_ = nullptr;
    ggml_backend_buffer_t buffer_ = nullptr;
    std::vector<ggml_tensor *> k_;
    std::vector<ggml_tensor *> v_;
};

}  // namespace minicpmv
