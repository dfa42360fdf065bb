#include "core/model_weights.h"

#include "core/error.h"
#include "core/gguf_file.h"

#include <ggml-alloc.h>
#include <ggml.h>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <thread>
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
        throw Error(ErrorCode::bad_format,
                    where + " has shape " + shape_str(t->ne, ggml_n_dims(t)) + ", expected " + shape_str(spec.ne.data(), n));
    }
    if (spec.vector_f32 && t->type != GGML_TYPE_F32) {
        throw Error(ErrorCode::bad_format, where + " must be f32, found " + ggml_type_name(t->type));
    }
    // Integer types (I8…I64) and F64 have no matrix product: ggml would abort in the graph.
    const bool numeric =
        t->type < GGML_TYPE_COUNT && ggml_type_size(t->type) != 0 &&
        (ggml_is_quantized(t->type) || t->type == GGML_TYPE_F32 || t->type == GGML_TYPE_F16 || t->type == GGML_TYPE_BF16);
    if (!numeric || t->ne[0] % ggml_blck_size(t->type) != 0) {
        throw Error(ErrorCode::bad_format, where + " has an unusable type " + ggml_type_name(t->type));
    }
}

// Refuses a tensor holding NaN or infinity (in its values, or in its blocks' scales): a corrupt file, or
// a type field changed to another type of the same byte size (Q3_K read as IQ3_S) would else load
// and answer NaN logits. ggml's own check, as llama.cpp's --check-tensors; the tensors are split
// over a few threads (about 0.7 s per 4.7 GB on one thread, page cache warm).
void check_values(const GgufFile & file, const std::vector<const ggml_tensor *> & tensors) {
    const size_t n_threads = std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 8);
    std::vector<const ggml_tensor *> bad(n_threads, nullptr);
    std::vector<std::thread> threads;
    for (size_t k = 0; k < n_threads; ++k) {
        threads.emplace_back([&, k] {
            for (size_t i = k; i < tensors.size() && bad[k] == nullptr; i += n_threads) {
                const ggml_tensor * t = tensors[i];
                if (!ggml_validate_row_data(t->type, file.tensor_data(t), ggml_nbytes(t))) bad[k] = t;
            }
        });
    }
    for (std::thread & t : threads) t.join();
    for (const ggml_tensor * t : bad) {
        if (t == nullptr) continue;
        throw Error(ErrorCode::bad_format, file.path() + ": tensor '" + ggml_get_name(t) + "' (" + ggml_type_name(t->type) +
                                               ") holds NaN or infinite values: a corrupt file, or a wrong type");
    }
}

// ggml's "CPU_REPACK" buffer type (the CPU device's extra buffer types, looked up by that exact name:
// never AMX or any other extra type) keeps quantized matrices interleaved for its GEMM/GEMV kernels
// (q4_K 8x8 with AVX2/AVX-512 here): prefill and decode of a Q4_K_M file run faster than with the
// per-row vec_dot path (numbers in README, Benchmarks). nullptr where the device is not the CPU.
ggml_backend_buffer_type_t cpu_repack_buffer_type(ggml_backend_dev_t device) {
    if (ggml_backend_dev_type(device) != GGML_BACKEND_DEVICE_TYPE_CPU) return nullptr;
    auto get_extra = reinterpret_cast<ggml_backend_dev_get_extra_bufts_t>(
        ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(device), "ggml_backend_dev_get_extra_bufts"));
    if (get_extra == nullptr) return nullptr;
    for (ggml_backend_buffer_type_t * b = get_extra(device); b != nullptr && *b != nullptr; ++b) {
        if (std::strcmp(ggml_backend_buft_name(*b), "CPU_REPACK") == 0) return *b;
    }
    return nullptr;
}

// Whether ggml multiplies by `w` from a `buft` buffer (type, row count and CPU features decide): asks
// the device about a mul_mat with `w` placed in an empty buffer of that type, as llama.cpp does.
bool mul_mat_supported_in(ggml_backend_dev_t device, ggml_backend_buffer_type_t buft, ggml_tensor * w) {
    ggml_init_params params{2 * ggml_tensor_overhead(), nullptr, /*no_alloc =*/true};
    ggml_context * ctx = ggml_init(params);
    ggml_tensor * op = ggml_mul_mat(ctx, w, ggml_new_tensor_2d(ctx, GGML_TYPE_F32, w->ne[0], 1));
    ggml_backend_buffer_t probe = ggml_backend_buft_alloc_buffer(buft, 0);
    w->buffer = probe;
    const bool ok = ggml_backend_dev_supports_op(device, op);
    w->buffer = nullptr;
    ggml_backend_buffer_free(probe);
    ggml_free(ctx);
    return ok;
}

// Drops the whole pages of [data, data + size) from this process's resident set once their bytes
// live elsewhere (the page cache keeps them; nothing reads them through the mapping again).
void release_mapped_pages(const void * data, size_t size) {
    const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
    const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + size) / page * page;
    if (end > begin) madvise(reinterpret_cast<void *>(begin), end - begin, MADV_DONTNEED);
}

// Matrices that ggml_get_rows reads (embedding tables): a repacked layout has no row lookup.
bool is_lookup_table(const std::string & name) { return name == "token_embd.weight" || name == "v.position_embd.weight"; }

}  // namespace

Weights::Weights(const GgufFile & file, const std::vector<WeightSpec> & table, ggml_backend_dev_t device, bool cpu_repack,
                 bool use_mmap) {
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
    std::vector<const ggml_tensor *> all;
    for (const auto & [name, t] : tensors_) all.push_back(t);
    check_values(file, all);

    ggml_backend_dev_props props;
    ggml_backend_dev_get_props(device, &props);
    try {
        const bool host = props.caps.buffer_from_host_ptr;
        if (host) {
            // CPU: the matrices the repacked kernels take are copied into that layout once.
            std::vector<ggml_tensor *> packed;
            if (ggml_backend_buffer_type_t repack = cpu_repack ? cpu_repack_buffer_type(device) : nullptr) {
                size_t total = 0;
                for (auto & [name, t] : tensors_) {
                    if (ggml_n_dims(t) != 2 || is_lookup_table(name) || !mul_mat_supported_in(device, repack, t)) continue;
                    packed.push_back(t);
                    total += GGML_PAD(ggml_backend_buft_get_alloc_size(repack, t), ggml_backend_buft_get_alignment(repack));
                }
                if (!packed.empty()) {
                    repacked_ = ggml_backend_buft_alloc_buffer(repack, total);
                    if (repacked_ == nullptr)
                        throw Error(ErrorCode::io, file.path() + ": out of memory for the repacked weights");
                    ggml_backend_buffer_set_usage(repacked_, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
                    ggml_tallocr alloc = ggml_tallocr_new(repacked_);
                    for (ggml_tensor * t : packed) {
                        if (ggml_tallocr_alloc(&alloc, t) != GGML_STATUS_SUCCESS) {
                            throw Error(ErrorCode::io, file.path() + ": cannot allocate '" + ggml_get_name(t) + "'");
                        }
                        ggml_backend_tensor_set(t, file.tensor_data(t), 0, ggml_nbytes(t));  // repacks
                        release_mapped_pages(file.tensor_data(t), ggml_nbytes(t));
                    }
                }
            }
        }
        if (host && use_mmap) {
            // The rest: wrap the whole mapping, tensors point into it (no copy; pages load on first use
            // and are shared between processes).
            buffer_ = ggml_backend_dev_buffer_from_host_ptr(device, file.mapping(), file.mapping_size(), max_tensor);
            if (buffer_ == nullptr) throw Error(ErrorCode::io, file.path() + ": cannot map weights for the device");
            mapped_ = &file;
            for (auto & [name, t] : tensors_) {
                if (t->buffer != nullptr) continue;  // repacked
                const enum ggml_status st = ggml_backend_tensor_alloc(buffer_, t, const_cast<void *>(file.tensor_data(t)));
                if (st != GGML_STATUS_SUCCESS) throw Error(ErrorCode::io, file.path() + ": cannot place tensor '" + name + "'");
            }
        } else {
            // A discrete device, or use_mmap off: the device's own memory, the weights copied in once.
            // In the CPU's allocated memory, streaming a decode step runs ~10 % faster than through
            // the file's page-cache pages (benchmarks/compare.py).
            ggml_backend_buffer_type_t buft = ggml_backend_dev_buffer_type(device);
            size_t total = 0;
            for (auto & [name, t] : tensors_) {
                if (t->buffer == nullptr)
                    total += GGML_PAD(ggml_backend_buft_get_alloc_size(buft, t), ggml_backend_buft_get_alignment(buft));
            }
            buffer_ = ggml_backend_buft_alloc_buffer(buft, total);
            if (buffer_ == nullptr) throw Error(ErrorCode::io, file.path() + ": out of device memory for weights");
            ggml_tallocr alloc = ggml_tallocr_new(buffer_);
            for (auto & [name, t] : tensors_) {
                if (t->buffer != nullptr) continue;  // repacked
                if (ggml_tallocr_alloc(&alloc, t) != GGML_STATUS_SUCCESS)
                    throw Error(ErrorCode::io, file.path() + ": cannot allocate '" + name + "'");
                ggml_backend_tensor_set(t, file.tensor_data(t), 0, ggml_nbytes(t));
                release_mapped_pages(file.tensor_data(t), ggml_nbytes(t));
            }
        }
    } catch (...) {
        // A constructor that throws runs no destructor: give back what was allocated.
        if (buffer_ != nullptr) ggml_backend_buffer_free(buffer_);
        if (repacked_ != nullptr) ggml_backend_buffer_free(repacked_);
        throw;
    }
    ggml_backend_buffer_set_usage(buffer_, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
}

Weights::~Weights() {
    if (buffer_ != nullptr) ggml_backend_buffer_free(buffer_);
    if (repacked_ != nullptr) ggml_backend_buffer_free(repacked_);
}

void Weights::check_intact() const {
    if (mapped_ != nullptr) mapped_->check_intact();
}

ggml_tensor * Weights::get(const std::string & name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) throw Error(ErrorCode::invalid_argument, "no weight named '" + name + "'");
    return it->second;
}

}  // namespace minicpmv
