// One weight table per model part (docs/architecture.md §5): every expected tensor with its shape as a function of
// the config. The loader checks name, shape and type of each, rejects leftovers, then places the
// tensors in a backend buffer — zero-copy over the file mapping where the device can read host memory
// (use_mmap), else copied into the device's memory; on the CPU and when asked (cpu_repack), quantized
// matrices that ggml's repacked kernels support are copied into that layout. On another device, a
// weight whose operation the device cannot run (one larger than Vulkan's maxStorageBufferRange) stays
// in CPU memory, and ggml's scheduler runs that operation on the CPU backend.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include <ggml-backend.h>

namespace minicpmv {

class GgufFile;

struct WeightSpec {
    std::string name;
    std::vector<int64_t> ne;  // ggml order (PyTorch shape reversed)
    bool vector_f32 = false;  // norms and biases: always stored as f32
};

class Weights {
  public:
    Weights(const GgufFile & file, const std::vector<WeightSpec> & table, ggml_backend_dev_t device, bool cpu_repack,
            bool use_mmap);
    ~Weights();
    Weights(const Weights &) = delete;
    Weights & operator=(const Weights &) = delete;

    ggml_tensor * get(const std::string & name) const;
    size_t size_bytes() const { return size_bytes_; }
    // GgufFile::check_intact() of the file when tensors are used from its mapping; nothing otherwise.
    void check_intact() const;

  private:
    void place(const GgufFile & file, const std::vector<ggml_tensor *> & tensors, ggml_backend_dev_t device,
               ggml_backend_buffer_type_t buft, bool over_mapping);

    const GgufFile * mapped_ = nullptr;  // the file whose mapping holds tensors, if any
    std::unordered_map<std::string, ggml_tensor *> tensors_;
    // The device's weights, the CPU_REPACK matrices (CPU only) and the weights kept in CPU memory for a
    // device that cannot run their operation: one buffer for each group that has tensors.
    std::vector<ggml_backend_buffer_t> buffers_;
    size_t size_bytes_ = 0;
};

// A model part lists its tensors once (gemma.cpp's ForEachTensor): `for_each(part, visit)` calls
// visit(spec, slot) for every tensor, `slot` being where the part keeps it. The loader's table and
// the binding of the loaded tensors are two walks over that one list.
using TensorVisitor = std::function<void(const WeightSpec & spec, ggml_tensor *& slot)>;

template <class Part, class ForEach>
std::vector<WeightSpec> weight_table(ForEach && for_each) {
    Part part{};
    std::vector<WeightSpec> table;
    for_each(part, [&](const WeightSpec & spec, ggml_tensor *&) { table.push_back(spec); });
    return table;
}

template <class Part, class ForEach>
Part bind_weights(const Weights & weights, ForEach && for_each) {
    Part part{};
    for_each(part, [&](const WeightSpec & spec, ggml_tensor *& slot) { slot = weights.get(spec.name); });
    return part;
}

}  // namespace minicpmv
