/* Peak arithmetic rate of the dot-product instructions the kernels are built on, in registers (no
 * memory traffic), on OpenMP threads:
 *
 *     cc -O2 -fopenmp peak.c -o peak && ./peak [threads] [seconds per probe]
 *
 * One line per instruction this CPU has: "<name> <G ops/s>", an op being one multiply or one add
 * (a vpdpbusd on 512 bits: 64 products summed into 16 lanes = 128 ops). compare.py divides the
 * prefill and encode rates by these to say how close the kernels come to the machine's limit.
 *   int8_vnni512  vpdpbusd zmm          (int8_kernels: q4_K/q6_K prompt panels, AVX-512 VNNI)
 *   bf16_512      vdpbf16ps zmm         (bf16_kernels: the vision tower, AVX-512 BF16)
 *   int8_avx2     vpmaddubsw+vpmaddwd+vpaddd ymm (what ggml's AVX2 q4_K/q8_K dot products use)
 *   f32_fma256    vfmadd231ps ymm       (f16/f32 products on AVX2 + FMA)
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

/* Twelve independent accumulators, each its own variable so that they live in registers, hide each
 * instruction's latency; the result goes to a volatile sink so the loop is not removed. */
#define REPEAT12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
static volatile float sink;

__attribute__((target("avx512f,avx512bw,avx512vnni"))) static long run_int8_vnni512(long iters) {
    const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
#define DECLARE(i) __m512i acc##i = _mm512_set1_epi32(i);
#define STEP(i) acc##i = _mm512_dpbusd_epi32(acc##i, a, b);
#define SUM(i) total = _mm512_add_epi32(total, acc##i);
    REPEAT12(DECLARE)
    for (long n = 0; n < iters; ++n) {
        REPEAT12(STEP)
    }
    __m512i total = _mm512_setzero_si512();
    REPEAT12(SUM)
    sink = (float)_mm512_reduce_add_epi32(total);
    return iters * 12 * 128;
#undef DECLARE
#undef STEP
#undef SUM
}

__attribute__((target("avx512f,avx512bf16"))) static long run_bf16_512(long iters) {
    const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3f00);
#define DECLARE(i) __m512 acc##i = _mm512_set1_ps((float)i);
#define STEP(i) acc##i = _mm512_dpbf16_ps(acc##i, a, b);
#define SUM(i) total = _mm512_add_ps(total, acc##i);
    REPEAT12(DECLARE)
    for (long n = 0; n < iters; ++n) {
        REPEAT12(STEP)
    }
    __m512 total = _mm512_setzero_ps();
    REPEAT12(SUM)
    sink = _mm512_reduce_add_ps(total);
    return iters * 12 * 64;
#undef DECLARE
#undef STEP
#undef SUM
}

/* The products do not depend on the sums, so their inputs are made opaque each round (no instruction:
 * the compiler may not hoist them); six pairs of registers fit the 16 that AVX2 has. */
__attribute__((target("avx2"))) static long run_int8_avx2(long iters) {
    const __m256i a = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
    __m256i acc0 = _mm256_setzero_si256(), acc1 = acc0, acc2 = acc0, acc3 = acc0, acc4 = acc0, acc5 = acc0;
    __m256i w0 = _mm256_set1_epi8(-3), w1 = _mm256_set1_epi8(-2), w2 = _mm256_set1_epi8(-1);
    __m256i w3 = _mm256_set1_epi8(1), w4 = _mm256_set1_epi8(2), w5 = _mm256_set1_epi8(3);
#define STEP(i) acc##i = _mm256_add_epi32(acc##i, _mm256_madd_epi16(_mm256_maddubs_epi16(a, w##i), ones));
    for (long n = 0; n < iters; ++n) {
        __asm__ volatile("" : "+x"(w0), "+x"(w1), "+x"(w2), "+x"(w3), "+x"(w4), "+x"(w5));
        STEP(0) STEP(1) STEP(2) STEP(3) STEP(4) STEP(5)
    }
#undef STEP
    const __m256i total = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(acc0, acc1), _mm256_add_epi32(acc2, acc3)),
                                           _mm256_add_epi32(acc4, acc5));
    int out[8];
    _mm256_storeu_si256((__m256i *)out, total);
    sink = (float)out[0];
    return iters * 6 * 64; /* 32 products summed into 8 lanes */
}

__attribute__((target("avx2,fma"))) static long run_f32_fma256(long iters) {
    const __m256 a = _mm256_set1_ps(1.0001f), b = _mm256_set1_ps(0.9999f);
#define DECLARE(i) __m256 acc##i = _mm256_set1_ps((float)i);
#define STEP(i) acc##i = _mm256_fmadd_ps(a, acc##i, b);
#define SUM(i) total = _mm256_add_ps(total, acc##i);
    REPEAT12(DECLARE)
    for (long n = 0; n < iters; ++n) {
        REPEAT12(STEP)
    }
    __m256 total = _mm256_setzero_ps();
    REPEAT12(SUM)
    float out[8];
    _mm256_storeu_ps(out, total);
    sink = out[0];
    return iters * 12 * 16;
#undef DECLARE
#undef STEP
#undef SUM
}

/* Best of a few rounds of `seconds` each, all threads running the probe at once. */
static double probe(long (*run)(long), int threads, double seconds) {
    long iters = 1 << 16;
    for (;;) { /* size one round to about `seconds` */
        const double t0 = omp_get_wtime();
        run(iters);
        if (omp_get_wtime() - t0 > seconds / 4) break;
        iters *= 2;
    }
    iters = (long)(iters * 4);
    double best = 0.0;
    for (int round = 0; round < 3; ++round) {
        double ops = 0.0;
        const double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+ : ops)
        ops += (double)run(iters);
        const double rate = ops / (omp_get_wtime() - t0);
        if (rate > best) best = rate;
    }
    return best / 1e9;
}

int main(int argc, char ** argv) {
    const int threads = argc > 1 ? atoi(argv[1]) : 2;
    const double seconds = argc > 2 ? atof(argv[2]) : 0.5;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw")) {
        printf("int8_vnni512 %.1f\n", probe(run_int8_vnni512, threads, seconds));
    }
    if (__builtin_cpu_supports("avx512bf16")) printf("bf16_512 %.1f\n", probe(run_bf16_512, threads, seconds));
    if (__builtin_cpu_supports("avx2")) printf("int8_avx2 %.1f\n", probe(run_int8_avx2, threads, seconds));
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        printf("f32_fma256 %.1f\n", probe(run_f32_fma256, threads, seconds));
    }
    return 0;
}
