// Devices come from ggml's backend registry: whatever the linked ggml was built with (CPU here,
// Metal/Vulkan/CUDA in app builds) is selectable by name.
#pragma once

#include <string>
#include <vector>

#include <ggml-backend.h>

namespace minicpmv {

// "auto" picks the first GPU (or integrated GPU) device and falls back to the CPU; otherwise the name
// matches a device ("CPU", "Vulkan0") or a backend ("cpu", "metal", "vulkan", "cuda": its first
// device), case-insensitively. Throws Error(unsupported) naming the available devices.
ggml_backend_dev_t select_device(const std::string & name);

std::vector<std::string> available_devices();

// A backend instance for `device`; CPU backends get `n_threads` (<= 0: all hardware threads).
ggml_backend_t init_backend(ggml_backend_dev_t device, int n_threads);

}  // namespace minicpmv
