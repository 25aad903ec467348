/* c-hot SECONDS THREADS MIN_SIZE MAX_SIZE WINDOW
 *
 * The hot path: each of THREADS threads keeps WINDOW live blocks and,
 * round robin, frees the oldest and mallocs a new one of a size in
 * MIN_SIZE..=MAX_SIZE (drawn in advance, so the loop is malloc and free
 * alone), writing its first and last byte. The threads share nothing: with
 * one thread this is the allocator's fast path, with several it is the
 * fast path in each thread at once (per-thread caches, no contention
 * unless the allocator has some). One op is one free plus one malloc. */
#include "bench.h"

#include <stdatomic.h>

#define SIZES 16384 /* sizes drawn in advance, a power of two */
#define CHECK_EVERY 4096

struct worker {
    bench_thread t; /* first: bench_run's part */
};

static size_t min_size, max_size, window;
static pthread_barrier_t start;
static atomic_int stop;

static void raise_stop(void) { atomic_store(&stop, 1); }

static void *work(void *arg) {
    struct worker *w = (struct worker *)arg;
    bench_rng rng = bench_rng_new(0x5eed + w->t.index);
    size_t *sizes = (size_t *)malloc(SIZES * sizeof *sizes);
    void **live = (void **)malloc(window * sizeof *live);
    if (sizes == NULL || live == NULL) {
        bench_oom(SIZES * sizeof *sizes);
    }
    for (size_t i = 0; i < SIZES; i++) {
        sizes[i] = bench_range(&rng, min_size, max_size);
    }
    for (size_t i = 0; i < window; i++) {
        live[i] = malloc(sizes[i % SIZES]);
        if (live[i] == NULL) {
            bench_oom(sizes[i % SIZES]);
        }
        bench_touch(live[i], sizes[i % SIZES]);
    }
    pthread_barrier_wait(&start);
    uint64_t ops = 0;
    size_t slot = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        for (int k = 0; k < CHECK_EVERY; k++) {
            free(live[slot]);
            size_t size = sizes[ops & (SIZES - 1)];
            void *p = malloc(size);
            if (p == NULL) {
                bench_oom(size);
            }
            bench_touch(p, size);
            live[slot] = p;
            slot = slot + 1 == window ? 0 : slot + 1;
            ops++;
        }
    }
    for (size_t i = 0; i < window; i++) {
        free(live[i]);
    }
    free(live);
    free(sizes);
    w->t.ops = ops;
    return NULL;
}

int main(int argc, char **argv) {
    bench_args(argc, argv, 5, "c-hot SECONDS THREADS MIN_SIZE MAX_SIZE WINDOW");
    double seconds = bench_seconds(argv);
    unsigned threads = (unsigned)bench_u64(argv, 1, "THREADS", 1);
    min_size = bench_u64(argv, 2, "MIN_SIZE", 1);
    max_size = bench_u64(argv, 3, "MAX_SIZE", min_size);
    window = bench_u64(argv, 4, "WINDOW", 1);

    struct worker *ws = (struct worker *)calloc(threads, sizeof *ws);
    if (ws == NULL) {
        bench_oom(threads * sizeof *ws);
    }
    uint64_t ops;
    double elapsed = bench_run(threads, ws, sizeof *ws, work, &start, raise_stop, seconds, &ops);
    char extra[128];
    snprintf(extra, sizeof extra, "threads=%u sizes=%zu..=%zu window=%zu", threads, min_size,
             max_size, window);
    bench_result("c-hot", ops, elapsed, extra);
    free(ws);
    return 0;
}
