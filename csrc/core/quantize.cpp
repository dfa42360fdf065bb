#include "core/quantize.h"

#include "core/error.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace minicpmv {

namespace {

// Rows are handed out in chunks of about this many values: large enough that the shared counter is
// touched rarely, small enough that threads finish together and the f32 scratch stays small.
constexpr int64_t kChunkValues = 64 * 1024;

bool is_source_type(ggml_type t) { return t == GGML_TYPE_F32 || t == GGML_TYPE_F16 || t == GGML_TYPE_BF16; }

// The types of the 16 size variants (docs/model.md §10) and their fallbacks; none needs an importance matrix.
bool is_target_type(ggml_type t) {
    switch (t) {
        case GGML_TYPE_F32:
        case GGML_TYPE_F16:
        case GGML_TYPE_BF16:
        case GGML_TYPE_Q4_0:
        case GGML_TYPE_Q4_1:
        case GGML_TYPE_Q5_0:
        case GGML_TYPE_Q5_1:
        case GGML_TYPE_Q8_0:
        case GGML_TYPE_Q2_K:
        case GGML_TYPE_Q3_K:
        case GGML_TYPE_Q4_K:
        case GGML_TYPE_Q5_K:
        case GGML_TYPE_Q6_K: return true;
        default: return false;
    }
}

std::string type_str(ggml_type t) {
    return t >= 0 && t < GGML_TYPE_COUNT ? ggml_type_name(t) : "type " + std::to_string(static_cast<int>(t));
}

// `n` values of the source row(s) at `src` as float32 in `out`.
void to_f32(ggml_type src_type, const void * src, float * out, int64_t n) {
    if (src_type == GGML_TYPE_F16) {
        ggml_fp16_to_fp32_row(static_cast<const ggml_fp16_t *>(src), out, n);
    } else {
        ggml_bf16_to_fp32_row(static_cast<const ggml_bf16_t *>(src), out, n);
    }
}

}  // namespace

size_t quantized_row_size(ggml_type dst_type, int64_t n_per_row) {
    if (!is_target_type(dst_type)) {
        throw Error(ErrorCode::invalid_argument, "quantize: cannot write " + type_str(dst_type));
    }
    if (n_per_row <= 0 || n_per_row % ggml_blck_size(dst_type) != 0) {
        throw Error(ErrorCode::invalid_argument, "quantize: rows of " + std::to_string(n_per_row) +
                                                     " values are not a multiple of " + type_str(dst_type) + "'s block of " +
                                                     std::to_string(ggml_blck_size(dst_type)));
    }
    return ggml_row_size(dst_type, n_per_row);
}

void quantize_rows(ggml_type dst_type, void * dst, ggml_type src_type, const void * src, int64_t nrows, int64_t n_per_row,
                   int n_threads) {
    if (!is_source_type(src_type)) {
        throw Error(ErrorCode::invalid_argument, "quantize: the source must be f32, f16 or bf16, got " + type_str(src_type));
    }
    if (nrows < 0) throw Error(ErrorCode::invalid_argument, "quantize: negative row count");
    const size_t dst_row = quantized_row_size(dst_type, n_per_row);
    const size_t src_row = static_cast<size_t>(n_per_row) * ggml_type_size(src_type);
    const int64_t chunk_rows = std::max<int64_t>(1, kChunkValues / n_per_row);
    const int64_t n_chunks = (nrows + chunk_rows - 1) / chunk_rows;
    if (n_threads <= 0) n_threads = static_cast<int>(std::max(1U, std::thread::hardware_concurrency()));
    n_threads = static_cast<int>(std::min<int64_t>(n_threads, std::max<int64_t>(1, n_chunks)));

    std::atomic<int64_t> next_chunk{0};
    std::atomic<bool> finite{true};
    std::mutex error_mutex;
    std::exception_ptr error;
    auto work = [&] {
        try {
            std::vector<float> scratch(src_type == GGML_TYPE_F32 ? 0 : static_cast<size_t>(chunk_rows * n_per_row));
            for (int64_t c; (c = next_chunk.fetch_add(1)) < n_chunks && finite;) {
                const int64_t first = c * chunk_rows;
                const int64_t rows = std::min(chunk_rows, nrows - first);
                const char * in = static_cast<const char *>(src) + first * src_row;
                const float * values = reinterpret_cast<const float *>(in);
                if (src_type != GGML_TYPE_F32) {
                    to_f32(src_type, in, scratch.data(), rows * n_per_row);
                    values = scratch.data();
                }
                // The K-quants' scale search skips a NaN instead of propagating it: look at the source.
                const int64_t n = rows * n_per_row;
                if (!std::all_of(values, values + n, [](float v) { return std::isfinite(v); })) finite = false;
                char * out = static_cast<char *>(dst) + first * dst_row;
                const size_t written = ggml_quantize_chunk(dst_type, values, out, 0, rows, n_per_row, nullptr);
                // A finite source can still overflow a type's f16 scales.
                if (!ggml_validate_row_data(dst_type, out, written)) finite = false;
            }
        } catch (...) {
            const std::lock_guard<std::mutex> lock(error_mutex);
            error = std::current_exception();
        }
    };
    std::vector<std::thread> helpers;
    for (int i = 1; i < n_threads; ++i) helpers.emplace_back(work);
    work();
    for (std::thread & t : helpers) t.join();
    if (error) std::rethrow_exception(error);
    if (!finite)
        throw Error(
            ErrorCode::bad_format,
            "quantize: the values are not all finite (a NaN or infinity in the source, or a value too large for the type)");
}

}  // namespace minicpmv
