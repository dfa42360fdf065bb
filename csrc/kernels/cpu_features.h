// What the CPU running the process can do, read once, and the compiler region that builds a kernel
// file for one instruction set whatever the build flags: one build serves every x86 CPU, each kernel
// runs only after its check.
#pragma once

// The kernels are x86 intrinsics built with GCC or Clang; elsewhere the graphs use ggml's operations.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define MINICPMV_X86_KERNELS 1
#else
#define MINICPMV_X86_KERNELS 0
#endif

namespace minicpmv {

// AVX-512 with the bf16 dot product (vdpbf16ps), and the bf16 kernels not switched off: the bf16 kernels.
bool cpu_has_avx512_bf16();
// AVX-512 with the int8 dot product (vpdpbusd), and the int8 kernels not switched off: the int8 kernels.
bool cpu_has_avx512_vnni();
// AVX2 with FMA and F16C (x86 CPUs since 2013), and the int8 kernels not switched off: the int8 kernels'
// AVX2 form for prompt batches.
bool cpu_has_avx2_int8();
// The same CPU, and the vision kernels (the bf16 switch) not switched off: f16_kernels.h.
bool cpu_has_avx2_f16();

// Which of our kernel families the dispatch may pick. Tests only (minicpmv._core._testing.use_kernels):
// switching one off makes every path the dispatch can take on some CPU run on this one (avx512 off: the
// AVX-512 checks answer no, as on an AVX2 laptop). Graphs built afterwards follow it; never change it
// while a graph computes.
struct KernelChoice {
    bool int8 = true;
    bool bf16 = true;  // the vision tower's kernels: bf16 (AVX-512 BF16), f16 with FMA (AVX2)
    bool avx512 = true;
};
KernelChoice kernel_choice();
void set_kernel_choice(KernelChoice choice);

}  // namespace minicpmv

#define MINICPMV_PRAGMA(x) _Pragma(#x)
// Everything between MINICPMV_TARGET_BEGIN("avx512f,...") and MINICPMV_TARGET_END() (lambdas
// included, hence a region rather than per-function attributes) is compiled for those features.
#if defined(__clang__)
#define MINICPMV_TARGET_BEGIN(features) \
    MINICPMV_PRAGMA(clang attribute push(__attribute__((target(features))), apply_to = function))
#define MINICPMV_TARGET_END() MINICPMV_PRAGMA(clang attribute pop)
#else
#define MINICPMV_TARGET_BEGIN(features) MINICPMV_PRAGMA(GCC push_options) MINICPMV_PRAGMA(GCC target(features))
#define MINICPMV_TARGET_END() MINICPMV_PRAGMA(GCC pop_options)
#endif
