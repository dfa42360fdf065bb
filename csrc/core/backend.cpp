#include "core/backend.h"

#include "core/error.h"

#include <ggml-cpu.h>

#include <algorithm>
#include <cctype>
#include <thread>

namespace minicpmv {

namespace {

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

}  // namespace

std::vector<std::string> available_devices() {
    std::vector<std::string> names;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) names.emplace_back(ggml_backend_dev_name(ggml_backend_dev_get(i)));
    return names;
}

ggml_backend_dev_t select_device(const std::string & name) {
    const std::string want = lower(name);
    if (want.empty() || want == "auto") {
        for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
            ggml_backend_dev_t d = ggml_backend_dev_get(i);
            const auto type = ggml_backend_dev_type(d);
            if (type == GGML_BACKEND_DEVICE_TYPE_GPU || type == GGML_BACKEND_DEVICE_TYPE_IGPU) return d;
        }
        if (ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU)) return cpu;
    } else {
        for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
            ggml_backend_dev_t d = ggml_backend_dev_get(i);
            if (lower(ggml_backend_dev_name(d)) == want) return d;
        }
        for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
            ggml_backend_dev_t d = ggml_backend_dev_get(i);
            if (lower(ggml_backend_reg_name(ggml_backend_dev_backend_reg(d))) == want) return d;
        }
    }
    std::string list;
    for (const std::string & n : available_devices()) list += (list.empty() ? "" : ", ") + n;
    throw Error(ErrorCode::unsupported, "device '" + name + "' is not available in this build (available: " + list + ")");
}

ggml_backend_t init_backend(ggml_backend_dev_t device, int n_threads) {
    ggml_backend_t backend = ggml_backend_dev_init(device, nullptr);
    if (backend == nullptr) {
        throw Error(ErrorCode::unsupported, std::string("cannot initialise device ") + ggml_backend_dev_name(device));
    }
    if (ggml_backend_dev_type(device) == GGML_BACKEND_DEVICE_TYPE_CPU) {
        const int n = n_threads > 0 ? n_threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
        ggml_backend_cpu_set_n_threads(backend, n);
    }
    return backend;
}

}  // namespace minicpmv
