#include "model/kv_cache.h"

#include "core/error.h"

#include <ggml-alloc.h>
#include <ggml.h>

#include <cstdint>
#include <string>

namespace minicpmv {

KvCache::KvCache(const LlmConfig & config, int n_ctx, int n_slots, ggml_type type, ggml_backend_dev_t device)
    : n_ctx_(n_ctx), n_slots_(n_slots) {
    const size_t n_tensors = 2 * static_cast<size_t>(config.n_layer);
    ggml_init_params params{n_tensors * ggml_tensor_overhead(), nullptr, /*no_alloc =*/true};
    ctx_ = ggml_init(params);
    const int64_t row = static_cast<int64_t>(config.head_dim) * config.n_head_kv;
    for (int il = 0; il < config.n_layer; ++il) {
        k_.push_back(ggml_new_tensor_3d(ctx_, type, row, n_ctx, n_slots));
        v_.push_back(ggml_new_tensor_3d(ctx_, type, row, n_ctx, n_slots));
        ggml_format_name(k_.back(), "cache_k_l%d", il);
        ggml_format_name(v_.back(), "cache_v_l%d", il);
    }
    buffer_ = ggml_backend_alloc_ctx_tensors_from_buft(ctx_, ggml_backend_dev_buffer_type(device));
    if (buffer_ == nullptr) {
        ggml_free(ctx_);
        throw Error(ErrorCode::io, "cannot allocate the KV cache (" + std::to_string(n_ctx) + " positions × " +
                                       std::to_string(n_slots) + " slots)");
    }
    ggml_backend_buffer_clear(buffer_, 0);
}

KvCache::~KvCache() {
    ggml_backend_buffer_free(buffer_);
    ggml_free(ctx_);
}

size_t KvCache::size_bytes() const { return ggml_backend_buffer_get_size(buffer_); }

void KvCache::copy_slots(const std::vector<int> & sources, int n_pos) {
    if (static_cast<int>(sources.size()) > n_slots_ || n_pos > n_ctx_) {
        throw Error(ErrorCode::invalid_argument, "KV slot copy out of range");
    }
    std::vector<std::vector<uint8_t>> staged(sources.size());
    auto copy = [&](ggml_tensor * t) {
        const size_t bytes = static_cast<size_t>(n_pos) * t->nb[1];
        for (size_t d = 0; d < sources.size(); ++d) {
            if (sources[d] == static_cast<int>(d)) continue;
            staged[d].resize(bytes);
            ggml_backend_tensor_get(t, staged[d].data(), static_cast<size_t>(sources[d]) * t->nb[2], bytes);
        }
        for (size_t d = 0; d < sources.size(); ++d) {
            if (sources[d] == static_cast<int>(d)) continue;
            ggml_backend_tensor_set(t, staged[d].data(), d * t->nb[2], bytes);
        }
    };
    for (size_t il = 0; il < k_.size(); ++il) {
        copy(k_[il]);
        copy(v_[il]);
    }
}

}  // namespace minicpmv
