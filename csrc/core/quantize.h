// Weight quantization with ggml's own routines (ggml_quantize_chunk), the rows of one tensor split
// across threads. The converters (minicpmv-quantize, minicpmv-convert --outtype Q4_K_M) call it
// through the binding; which tensor gets which type is their business (convert/quant_rules.py).
#pragma once

#include <cstddef>
#include <cstdint>

#include <ggml.h>

namespace minicpmv {

// Bytes of one row of `n_per_row` values in `dst_type`, after the checks quantize_rows makes on both.
size_t quantized_row_size(ggml_type dst_type, int64_t n_per_row);

// Converts `nrows` rows of `n_per_row` values of `src_type` (F32, F16 or BF16) at `src` into
// `dst_type` (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K), writing
// nrows · ggml_row_size(dst_type, n_per_row) bytes at `dst`. `n_threads` <= 0 uses every hardware
// thread. Throws Error(invalid_argument) for another type or a row length that is not a multiple of
// the type's block (ggml would abort), and Error(bad_format) for a NaN or infinity in the source or the
// result (a file with them is useless).
void quantize_rows(ggml_type dst_type, void * dst, ggml_type src_type, const void * src, int64_t nrows, int64_t n_per_row,
                   int n_threads);

}  // namespace minicpmv
