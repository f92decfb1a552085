/* Known hot functions for Kiln's perf golden file: CPU split 60/30/10
 * between burn_a, burn_b and burn_c. Built without inlining and with frame
 * pointers so `perf record -g` sees every frame. */
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

static volatile uint64_t sink;

__attribute__((noinline)) static uint64_t burn_a(void) {
    uint64_t x = 1;
    for (long i = 0; i < 6000000; i++) x = x * 6364136223846793005ULL + (uint64_t)i;
    return x;
}
__attribute__((noinline)) static uint64_t burn_b(void) {
    uint64_t x = 2;
    for (long i = 0; i < 3000000; i++) x = x * 6364136223846793005ULL + (uint64_t)i;
    return x;
}
__attribute__((noinline)) static uint64_t burn_c(void) {
    uint64_t x = 3;
    for (long i = 0; i < 1000000; i++) x = x * 6364136223846793005ULL + (uint64_t)i;
    return x;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 3.0;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    do {
        sink += burn_a() + burn_b() + burn_c();
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9 < seconds);
    return 0;
}
