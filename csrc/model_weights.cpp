#include "model_weights.h"

#include "error.h"
#include "gguf_file.h"

#include <ggml-alloc.h>
#include <ggml.h>

#include <algorithm>
#include <unordered_set>

namespace minicpmv {

namespace {

std::string shape_str(const int64_t * ne, int n) {
    std::string s = "[";
    for (int i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
    return s + "]";
}

void check_tensor(const GgufFile & file, const WeightSpec & spec, const ggml_tensor * t) {
    const std::string where = file.path() + ": tensor '" + spec.name + "'";
    if (t == nullptr) throw Error(ErrorCode::bad_format, where + " is missing");
    const int n = static_cast<int>(spec.ne.size());
    bool same = ggml_n_dims(t) <= n;
    for (int i = 0; i < GGML_MAX_DIMS && same; ++i) same = t->ne[i] == (i < n ? spec.ne[i] : 1);
    if (!same) {
        throw Error(ErrorCode::bad_format, where + " has shape " + shape_str(t->ne, ggml_n_dims(t)) +
                                               ", expected " + shape_str(spec.ne.data(), n));
    }
    if (spec.vector_f32 && t->type != GGML_TYPE_F32) {
        throw Error(ErrorCode::bad_format, where + " must be f32, found " + ggml_type_name(t->type));
    }
    if (t->type >= GGML_TYPE_COUNT || ggml_type_size(t->type) == 0 || t->ne[0] % ggml_blck_size(t->type) != 0) {
        throw Error(ErrorCode::bad_format, where + " has an unusable type " + ggml_type_name(t->type));
    }
}

}  // namespace

Weights::Weights(const GgufFile & file, const std::vector<WeightSpec> & table, ggml_backend_dev_t device) {
    std::unordered_set<std::string> expected;
    size_t max_tensor = 0;
    for (const WeightSpec & spec : table) {
        ggml_tensor * t = file.tensor(spec.name.c_str());
        check_tensor(file, spec, t);
        tensors_[spec.name] = t;
        expected.insert(spec.name);
        max_tensor = std::max(max_tensor, ggml_nbytes(t));
        size_bytes_ += ggml_nbytes(t);
    }
    for (const ggml_tensor * t : file.tensors()) {
        if (!expected.count(ggml_get_name(t))) {
            throw Error(ErrorCode::bad_format, file.path() + ": unexpected tensor '" + ggml_get_name(t) + "'");
        }
    }

    ggml_backend_dev_props props;
    ggml_backend_dev_get_props(device, &props);
    if (props.caps.buffer_from_host_ptr) {
        // The device reads host memory: wrap the whole mapping, tensors point into it (no copy; pages
        // load on first use and are shared between processes).
        buffer_ = ggml_backend_dev_buffer_from_host_ptr(device, file.mapping(), file.mapping_size(), max_tensor);
        if (buffer_ == nullptr) throw Error(ErrorCode::io, file.path() + ": cannot map weights for the device");
        for (auto & [name, t] : tensors_) {
            const enum ggml_status st = ggml_backend_tensor_alloc(buffer_, t, const_cast<void *>(file.tensor_data(t)));
            if (st != GGML_STATUS_SUCCESS) throw Error(ErrorCode::io, file.path() + ": cannot place tensor '" + name + "'");
        }
    } else {
        // A discrete device: allocate its memory and copy the weights over once.
        ggml_backend_buffer_type_t buft = ggml_backend_dev_buffer_type(device);
        size_t total = 0;
        for (auto & [name, t] : tensors_) total += GGML_PAD(ggml_backend_buft_get_alloc_size(buft, t), ggml_backend_buft_get_alignment(buft));
        buffer_ = ggml_backend_buft_alloc_buffer(buft, total);
        if (buffer_ == nullptr) throw Error(ErrorCode::io, file.path() + ": out of device memory for weights");
        ggml_tallocr alloc = ggml_tallocr_new(buffer_);
        for (auto & [name, t] : tensors_) {
            if (ggml_tallocr_alloc(&alloc, t) != GGML_STATUS_SUCCESS) throw Error(ErrorCode::io, file.path() + ": cannot allocate '" + name + "'");
            ggml_backend_tensor_set(t, file.tensor_data(t), 0, ggml_nbytes(t));
        }
    }
    ggml_backend_buffer_set_usage(buffer_, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
}

Weights::~Weights() {
    if (buffer_ != nullptr) ggml_backend_buffer_free(buffer_);
}

ggml_tensor * Weights::get(const std::string & name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) throw Error(ErrorCode::invalid_argument, "no weight named '" + name + "'");
    return it->second;
}

}  // namespace minicpmv
