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
#include <string.h>

/* Twelve independent accumulators hide each instruction's latency; the result is kept alive through
 * a volatile sink so the loop is not removed. */
#define ACCUMULATORS 12
static volatile float sink;

__attribute__((target("avx512f,avx512bw,avx512vnni"))) static long run_int8_vnni512(long iters) {
    __m512i acc[ACCUMULATORS];
    const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
    for (int i = 0; i < ACCUMULATORS; ++i) acc[i] = _mm512_set1_epi32(i);
    for (long n = 0; n < iters; ++n) {
        for (int i = 0; i < ACCUMULATORS; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
        __asm__ volatile("" : "+v"(acc[0]), "+v"(acc[5]), "+v"(acc[11]));
    }
    for (int i = 1; i < ACCUMULATORS; ++i) acc[0] = _mm512_add_epi32(acc[0], acc[i]);
    sink = (float)_mm512_reduce_add_epi32(acc[0]);
    return iters * ACCUMULATORS * 128;
}

__attribute__((target("avx512f,avx512bf16"))) static long run_bf16_512(long iters) {
    __m512 acc[ACCUMULATORS];
    const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3f00);
    for (int i = 0; i < ACCUMULATORS; ++i) acc[i] = _mm512_set1_ps((float)i);
    for (long n = 0; n < iters; ++n) {
        for (int i = 0; i < ACCUMULATORS; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
        __asm__ volatile("" : "+v"(acc[0]), "+v"(acc[5]), "+v"(acc[11]));
    }
    for (int i = 1; i < ACCUMULATORS; ++i) acc[0] = _mm512_add_ps(acc[0], acc[i]);
    sink = _mm512_reduce_add_ps(acc[0]);
    return iters * ACCUMULATORS * 64;
}

/* The products do not depend on the sums, so their inputs are made opaque each round (no instruction:
 * the compiler may not hoist them); six pairs of registers fit the 16 that AVX2 has. */
__attribute__((target("avx2"))) static long run_int8_avx2(long iters) {
    __m256i acc[6], w[6];
    const __m256i a = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
    for (int i = 0; i < 6; ++i) {
        acc[i] = _mm256_set1_epi32(i);
        w[i] = _mm256_set1_epi8((char)(i - 3));
    }
    for (long n = 0; n < iters; ++n) {
        __asm__ volatile("" : "+x"(w[0]), "+x"(w[1]), "+x"(w[2]), "+x"(w[3]), "+x"(w[4]), "+x"(w[5]));
        for (int i = 0; i < 6; ++i) acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(a, w[i]), ones));
    }
    for (int i = 1; i < 6; ++i) acc[0] = _mm256_add_epi32(acc[0], acc[i]);
    int out[8];
    _mm256_storeu_si256((__m256i *)out, acc[0]);
    sink = (float)out[0];
    return iters * 6 * 64; /* 32 products summed into 8 lanes */
}

__attribute__((target("avx2,fma"))) static long run_f32_fma256(long iters) {
    __m256 acc[ACCUMULATORS];
    const __m256 a = _mm256_set1_ps(1.0001f), b = _mm256_set1_ps(0.9999f);
    for (int i = 0; i < ACCUMULATORS; ++i) acc[i] = _mm256_set1_ps((float)i);
    for (long n = 0; n < iters; ++n) {
        for (int i = 0; i < ACCUMULATORS; ++i) acc[i] = _mm256_fmadd_ps(a, acc[i], b);
        __asm__ volatile("" : "+v"(acc[0]), "+v"(acc[5]), "+v"(acc[11]));
    }
    for (int i = 1; i < ACCUMULATORS; ++i) acc[0] = _mm256_add_ps(acc[0], acc[i]);
    float out[8];
    _mm256_storeu_ps(out, acc[0]);
    sink = out[0];
    return iters * ACCUMULATORS * 16;
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
