#include "core/cpu_weights.h"

#include <ggml-backend.h>
#include <ggml.h>

#include <cstring>

namespace minicpmv {

bool in_cpu_memory(const ggml_tensor * w) {
    if (w == nullptr || w->buffer == nullptr || is_cpu_repacked(w)) return false;
    ggml_backend_buffer_type_t buft = ggml_backend_buffer_get_type(w->buffer);
    ggml_backend_dev_t dev = ggml_backend_buft_get_device(buft);
    return (dev == nullptr || ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_CPU) && ggml_backend_buft_is_host(buft);
}

const ggml_tensor * storage(const ggml_tensor * w) { return w->view_src != nullptr ? w->view_src : w; }

bool is_cpu_repacked(const ggml_tensor * w) {
    return w != nullptr && w->buffer != nullptr &&
           std::strcmp(ggml_backend_buft_name(ggml_backend_buffer_get_type(w->buffer)), "CPU_REPACK") == 0;
}

}  // namespace minicpmv
