#include "kernels/cpu_features.h"

#include <atomic>

namespace minicpmv {

namespace {

std::atomic<bool> g_int8_on{true}, g_bf16_on{true}, g_avx512_on{true};

}  // namespace

KernelChoice kernel_choice() { return {g_int8_on.load(), g_bf16_on.load(), g_avx512_on.load()}; }

void set_kernel_choice(KernelChoice choice) {
    g_int8_on.store(choice.int8);
    g_bf16_on.store(choice.bf16);
    g_avx512_on.store(choice.avx512);
}

#if MINICPMV_X86_KERNELS

namespace {

bool cpu_has_avx512_base() {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
}

bool cpu_has_avx2_base() {
    static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    return has;
}

}  // namespace

bool cpu_has_avx512_bf16() {
    static const bool has = cpu_has_avx512_base() && __builtin_cpu_supports("avx512bf16");
    return has && g_avx512_on.load(std::memory_order_relaxed) && g_bf16_on.load(std::memory_order_relaxed);
}

bool cpu_has_avx512_vnni() {
    static const bool has = cpu_has_avx512_base() && __builtin_cpu_supports("avx512vnni");
    return has && g_avx512_on.load(std::memory_order_relaxed) && g_int8_on.load(std::memory_order_relaxed);
}

bool cpu_has_avx2_int8() { return cpu_has_avx2_base() && g_int8_on.load(std::memory_order_relaxed); }

bool cpu_has_avx2_f16() { return cpu_has_avx2_base() && g_bf16_on.load(std::memory_order_relaxed); }

#else

bool cpu_has_avx512_bf16() { return false; }
bool cpu_has_avx512_vnni() { return false; }
bool cpu_has_avx2_int8() { return false; }
bool cpu_has_avx2_f16() { return false; }

#endif

}  // namespace minicpmv
