/* c-random SECONDS THREADS MIN_SIZE MAX_SIZE SLOTS SEED
 *
 * Random sizes across the small and medium range: each of THREADS threads
 * keeps SLOTS live blocks and over and over frees the block of a random
 * slot and mallocs one of a random size in MIN_SIZE..=MAX_SIZE in its
 * place, writing its first and last byte. Sizes are log-uniform (each
 * power-of-two octave as likely as the next: as many 8-16 B blocks as
 * 8-16 KiB ones), drawn in advance, so the loop is malloc and free alone.
 * The threads share nothing; the window of SLOTS blocks of every size is
 * what makes size classes, page reuse and peak RSS matter. One op is one
 * free plus one malloc. */
#include "bench.h"

#include <stdatomic.h>

#define DRAWS 65536 /* (slot, size) pairs drawn in advance, a power of two */
#define CHECK_EVERY 1024

struct worker {
    bench_thread t; /* first: bench_run's part */
};

static size_t min_size, max_size, slots;
static uint64_t seed;
static pthread_barrier_t start;
static atomic_int stop;

static void raise_stop(void) { atomic_store(&stop, 1); }

static void *work(void *arg) {
    struct worker *w = (struct worker *)arg;
    bench_rng rng = bench_rng_new(seed + w->t.index);
    uint32_t *slot_of = (uint32_t *)malloc(DRAWS * sizeof *slot_of);
    uint32_t *size_of = (uint32_t *)malloc(DRAWS * sizeof *size_of);
    void **live = (void **)malloc(slots * sizeof *live);
    if (slot_of == NULL || size_of == NULL || live == NULL) {
        bench_oom(DRAWS * sizeof *slot_of);
    }
    for (size_t i = 0; i < DRAWS; i++) {
        slot_of[i] = (uint32_t)bench_below(&rng, slots);
        size_of[i] = (uint32_t)bench_log_size(&rng, min_size, max_size);
    }
    for (size_t i = 0; i < slots; i++) {
        size_t size = bench_log_size(&rng, min_size, max_size);
        live[i] = malloc(size);
        if (live[i] == NULL) {
            bench_oom(size);
        }
        bench_touch(live[i], size);
    }
    pthread_barrier_wait(&start);
    uint64_t ops = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        for (int k = 0; k < CHECK_EVERY; k++) {
            size_t d = (size_t)(ops & (DRAWS - 1));
            size_t s = slot_of[d];
            size_t size = size_of[d];
            free(live[s]);
            void *p = malloc(size);
            if (p == NULL) {
                bench_oom(size);
            }
            bench_touch(p, size);
            live[s] = p;
            ops++;
        }
    }
    for (size_t i = 0; i < slots; i++) {
        free(live[i]);
    }
    free(live);
    free(size_of);
    free(slot_of);
    w->t.ops = ops;
    return NULL;
}

int main(int argc, char **argv) {
    bench_args(argc, argv, 6, "c-random SECONDS THREADS MIN_SIZE MAX_SIZE SLOTS SEED");
    double seconds = bench_seconds(argv);
    unsigned threads = (unsigned)bench_u64(argv, 1, "THREADS", 1);
    min_size = bench_u64(argv, 2, "MIN_SIZE", 1);
    max_size = bench_u64(argv, 3, "MAX_SIZE", min_size);
    if (max_size > UINT32_MAX) {
        fprintf(stderr, "error: MAX_SIZE must be below 4 GiB\n");
        return 2;
    }
    slots = bench_u64(argv, 4, "SLOTS", 1);
    if (slots > UINT32_MAX) {
        fprintf(stderr, "error: SLOTS must be below 2^32\n");
        return 2;
    }
    seed = bench_u64(argv, 5, "SEED", 0);

    struct worker *ws = (struct worker *)calloc(threads, sizeof *ws);
    if (ws == NULL) {
        bench_oom(threads * sizeof *ws);
    }
    uint64_t ops;
    double elapsed = bench_run(threads, ws, sizeof *ws, work, &start, raise_stop, seconds, &ops);
    char extra[160];
    snprintf(extra, sizeof extra, "threads=%u sizes=%zu..=%zu (log-uniform) slots=%zu", threads,
             min_size, max_size, slots);
    bench_result("c-random", ops, elapsed, extra);
    free(ws);
    return 0;
}
