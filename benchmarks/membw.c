/* Memory read bandwidth: OpenMP threads sum disjoint parts of a buffer far larger than the caches.
 *
 *     cc -O3 -march=native -fopenmp membw.c -o membw && ./membw [threads] [MiB] [passes]
 *
 * Prints the best pass in GB/s (10^9 bytes per second). Built and run by compare.py: the decode rows
 * are compared with this number (a decoder step reads every weight once).
 */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char ** argv) {
    const int threads = argc > 1 ? atoi(argv[1]) : 2;
    const size_t mib = argc > 2 ? (size_t)atol(argv[2]) : 1024;
    const int passes = argc > 3 ? atoi(argv[3]) : 5;
    const size_t n = mib * 1024 * 1024 / sizeof(uint64_t);
    uint64_t * buf = aligned_alloc(64, n * sizeof(uint64_t));
    if (buf == NULL) return 1;
    omp_set_num_threads(threads);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; ++i) buf[i] = i;  /* first touch by the reading thread */

    double best = 0.0;
    uint64_t check = 0;
    for (int p = 0; p < passes; ++p) {
        const double t0 = omp_get_wtime();
        uint64_t total = 0;
        /* Eight independent accumulators: the loop is bound by loads, not by the add chain. */
#pragma omp parallel for schedule(static) reduction(+ : total)
        for (size_t i = 0; i < n; i += 8) {
            total += (buf[i] ^ buf[i + 1]) + (buf[i + 2] ^ buf[i + 3]) + (buf[i + 4] ^ buf[i + 5]) + (buf[i + 6] ^ buf[i + 7]);
        }
        const double dt = omp_get_wtime() - t0;
        check += total;
        const double gbs = (double)(n * sizeof(uint64_t)) / dt / 1e9;
        if (gbs > best) best = gbs;
    }
    printf("%.3f\n", best);
    fprintf(stderr, "checksum %llu\n", (unsigned long long)check);
    free(buf);
    return 0;
}
