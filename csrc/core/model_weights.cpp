#include "core/model_weights.h"

#include "core/error.h"
#include "core/gguf_file.h"
#include "core/log.h"

#include <ggml-alloc.h>
#include <ggml.h>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
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

// Matrices that ggml_get_rows reads (embedding tables); the other matrices are read by ggml_mul_mat
// (the few that are not, resampler.query and the unused pos_embed_k, are asked about a product too:
// what a device refuses is the size, not the op).
bool is_lookup_table(const std::string & name) { return name == "token_embd.weight" || name == "v.position_embd.weight"; }

// Whether `device` runs the operation that reads the matrix `w` (a row lookup or a product, see
// is_lookup_table) with `w` in a `buft` buffer: type, size, row count and CPU features decide. Asks the
// device about that op with `w` placed in an empty buffer of that type, as llama.cpp does.
bool op_supported_in(ggml_backend_dev_t device, ggml_backend_buffer_type_t buft, ggml_tensor * w, bool lookup) {
    ggml_init_params params{2 * ggml_tensor_overhead(), nullptr, /*no_alloc =*/true};
    ggml_context * ctx = ggml_init(params);
    ggml_tensor * op = lookup ? ggml_get_rows(ctx, w, ggml_new_tensor_1d(ctx, GGML_TYPE_I32, 1))
                              : ggml_mul_mat(ctx, w, ggml_new_tensor_2d(ctx, GGML_TYPE_F32, w->ne[0], 1));
    ggml_backend_buffer_t probe = ggml_backend_buft_alloc_buffer(buft, 0);
    w->buffer = probe;
    const bool ok = ggml_backend_dev_supports_op(device, op);
    w->buffer = nullptr;
    ggml_backend_buffer_free(probe);
    ggml_free(ctx);
    return ok;
}

// The most bytes of `w`'s rows (same type and row length) that `device` runs the op on: ggml's
// backends do not publish their per-tensor limit (Vulkan: maxStorageBufferRange), so it is found by
// bisection over the row count with the same question. 0: not at any size (the type, say).
size_t largest_supported(ggml_backend_dev_t device, const ggml_tensor * w, bool lookup) {
    ggml_init_params params{ggml_tensor_overhead(), nullptr, /*no_alloc =*/true};
    int64_t lo = 0, hi = w->ne[1];  // supported up to lo rows, not at hi
    while (hi - lo > 1) {
        const int64_t mid = lo + (hi - lo) / 2;
        ggml_context * ctx = ggml_init(params);
        const bool ok = op_supported_in(device, ggml_backend_dev_buffer_type(device),
                                        ggml_new_tensor_2d(ctx, w->type, w->ne[0], mid), lookup);
        ggml_free(ctx);
        (ok ? lo : hi) = mid;
    }
    return static_cast<size_t>(lo) * ggml_row_size(w->type, w->ne[0]);
}

std::string mb(size_t bytes) {
    char s[32];
    std::snprintf(s, sizeof s, "%.1f MB", bytes / 1e6);
    return s;
}

// Whether matrix `w` must stay in CPU memory because `device` (not the CPU) cannot run its op from its
// own memory; ggml's scheduler would else abort the process ("pre-allocated tensor in a buffer that
// cannot run the operation"). The session's scheduler has the CPU backend last for such ops
// (session.cpp). Throws Error(unsupported) where the CPU cannot run the op either. Vectors and the
// patch kernel (1.4 MB at full size) are not asked about.
bool keep_on_cpu(const GgufFile & file, ggml_backend_dev_t device, const std::string & name, ggml_tensor * w) {
    const bool lookup = is_lookup_table(name);
    if (ggml_n_dims(w) != 2 || op_supported_in(device, ggml_backend_dev_buffer_type(device), w, lookup)) return false;
    const char * op = lookup ? "get_rows" : "mul_mat";
    const size_t limit = largest_supported(device, w, lookup);
    const std::string why =
        std::string(ggml_backend_dev_name(device)) + " cannot run " + op + " on it (" +
        (limit == 0 ? std::string("not for ") + ggml_type_name(w->type) : "it takes at most " + mb(limit) + " in one tensor") +
        ")";
    const std::string what = "tensor '" + name + "' (" + ggml_type_name(w->type) + ", " + mb(ggml_nbytes(w)) + ")";
    ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (cpu == nullptr || !op_supported_in(cpu, ggml_backend_dev_buffer_type(cpu), w, lookup)) {
        throw Error(ErrorCode::unsupported, file.path() + ": " + what + ": " + why + ", nor can the CPU");
    }
    log_message(LogLevel::info, "%s: %s stays in CPU memory, where the CPU computes its %s: %s", file.path().c_str(),
                what.c_str(), op, why.c_str());
    return true;
}

// Drops the whole pages of [data, data + size) from this process's resident set once their bytes
// live elsewhere (the page cache keeps them; nothing reads them through the mapping again).
void release_mapped_pages(const void * data, size_t size) {
    const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
    const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + size) / page * page;
    if (end > begin) madvise(reinterpret_cast<void *>(begin), end - begin, MADV_DONTNEED);
}

}  // namespace

Weights::Weights(const GgufFile & file, const std::vector<WeightSpec> & table, ggml_backend_dev_t device, bool cpu_repack,
                 bool use_mmap) {
    std::unordered_set<std::string> expected;
    for (const WeightSpec & spec : table) {
        ggml_tensor * t = file.tensor(spec.name.c_str());
        check_tensor(file, spec, t);
        tensors_[spec.name] = t;
        expected.insert(spec.name);
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
    const bool on_cpu = ggml_backend_dev_type(device) == GGML_BACKEND_DEVICE_TYPE_CPU;
    ggml_backend_buffer_type_t repack = cpu_repack ? cpu_repack_buffer_type(device) : nullptr;
    std::vector<ggml_tensor *> packed, kept, rest;
    for (const WeightSpec & spec : table) {  // the table's order, so the log lists kept weights in a stable order
        ggml_tensor * t = tensors_.at(spec.name);
        // CPU: the matrices the repacked kernels take are copied into that layout once (a repacked
        // layout has no row lookup).
        if (repack != nullptr && ggml_n_dims(t) == 2 && !is_lookup_table(spec.name) &&
            op_supported_in(device, repack, t, false)) {
            packed.push_back(t);
        } else if (!on_cpu && keep_on_cpu(file, device, spec.name, t)) {
            kept.push_back(t);
        } else {
            rest.push_back(t);
        }
    }
    try {
        place(file, packed, device, repack, false);
        ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
        place(file, kept, cpu, ggml_backend_dev_buffer_type(cpu), use_mmap);
        // Over the mapping where the device reads host memory; else (a discrete device, or use_mmap
        // off) copied into the device's own memory once. In the CPU's allocated memory, streaming a
        // decode step runs ~10 % faster than through the file's page-cache pages (benchmarks/compare.py).
        place(file, rest, device, ggml_backend_dev_buffer_type(device), props.caps.buffer_from_host_ptr && use_mmap);
    } catch (...) {
        // A constructor that throws runs no destructor: give back what was allocated.
        for (ggml_backend_buffer_t b : buffers_) ggml_backend_buffer_free(b);
        throw;
    }
}

// Puts `tensors` in one new buffer: over the whole file mapping when `over_mapping` (no copy; pages load
// on first use and are shared between processes), else copied into a `buft` buffer (ggml repacks on the
// way into CPU_REPACK) and their pages of the mapping released.
void Weights::place(const GgufFile & file, const std::vector<ggml_tensor *> & tensors, ggml_backend_dev_t device,
                    ggml_backend_buffer_type_t buft, bool over_mapping) {
    if (tensors.empty()) return;
    size_t total = 0, max_tensor = 0;
    for (const ggml_tensor * t : tensors) {
        total += GGML_PAD(ggml_backend_buft_get_alloc_size(buft, t), ggml_backend_buft_get_alignment(buft));
        max_tensor = std::max(max_tensor, ggml_nbytes(t));
    }
    ggml_backend_buffer_t buffer =
        over_mapping ? ggml_backend_dev_buffer_from_host_ptr(device, file.mapping(), file.mapping_size(), max_tensor)
                     : ggml_backend_buft_alloc_buffer(buft, total);
    if (buffer == nullptr) {
        throw Error(ErrorCode::io, file.path() +
                                       (over_mapping ? ": cannot map weights for " : ": out of memory for weights on ") +
                                       ggml_backend_dev_name(device) + " (" + ggml_backend_buft_name(buft) + ")");
    }
    buffers_.push_back(buffer);
    ggml_backend_buffer_set_usage(buffer, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    if (over_mapping) mapped_ = &file;
    ggml_tallocr alloc = ggml_tallocr_new(buffer);
    for (ggml_tensor * t : tensors) {
        void * data = const_cast<void *>(file.tensor_data(t));
        const ggml_status st = over_mapping ? ggml_backend_tensor_alloc(buffer, t, data) : ggml_tallocr_alloc(&alloc, t);
        if (st != GGML_STATUS_SUCCESS)
            throw Error(ErrorCode::io, file.path() + ": cannot place tensor '" + ggml_get_name(t) + "'");
        if (over_mapping) continue;
        ggml_backend_tensor_set(t, data, 0, ggml_nbytes(t));
        release_mapped_pages(data, ggml_nbytes(t));
    }
}

Weights::~Weights() {
    for (ggml_backend_buffer_t b : buffers_) ggml_backend_buffer_free(b);
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
