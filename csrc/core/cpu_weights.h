// Where a weight lives, for the kernels that read weights directly (bf16_kernels, int8_kernels).
#pragma once

struct ggml_tensor;

namespace minicpmv {

// In host memory the CPU reads, in ggml's own layout: CPU buffers and weights mapped from the file (the
// CPU "from pointer" buffer type, which names no device).
bool in_cpu_memory(const ggml_tensor * w);

// The tensor holding w's bytes: w itself, or the weight a reshaped view of it (built into a graph, not
// yet allocated) reads.
const ggml_tensor * storage(const ggml_tensor * w);

// In ggml's CPU_REPACK buffer (Model(cpu_repack=True)): quantized matrices re-laid out for ggml's own
// kernels (q4_K as BlockQ4Kx8, kquant_blocks.h).
bool is_cpu_repacked(const ggml_tensor * w);

}  // namespace minicpmv
