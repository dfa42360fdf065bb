#include "kernels/cpu_features.h"

namespace minicpmv {

#if MINICPMV_X86_KERNELS

namespace {

bool cpu_has_avx512_base() {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
}

}  // namespace

bool cpu_has_avx512_bf16() {
    static const bool has = cpu_has_avx512_base() && __builtin_cpu_supports("avx512bf16");
    return has;
}

bool cpu_has_avx512_vnni() {
    static const bool has = cpu_has_avx512_base() && __builtin_cpu_supports("avx512vnni");
    return has;
}

#else

bool cpu_has_avx512_bf16() { return false; }
bool cpu_has_avx512_vnni() { return false; }

#endif

}  // namespace minicpmv
