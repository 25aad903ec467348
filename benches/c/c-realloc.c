/* c-realloc SECONDS THREADS BUFFERS MIN_FINAL MAX_FINAL MAX_STEP SEED
 *
 * realloc-heavy growth, the way naive string builders and byte vectors
 * grow: each of THREADS threads keeps BUFFERS buffers and over and over
 * appends 1..=MAX_STEP bytes to a random one with realloc to the exact new
 * length, writing the appended bytes. A buffer that would pass its final
 * length (drawn log-uniform in MIN_FINAL..=MAX_FINAL when it starts) is
 * freed and starts again from nothing (realloc(NULL, n)). The buffers
 * grow interleaved, so a block rarely sits at the top of the heap; growth
 * crosses every small size class into large blocks and mappings, where
 * in-place growth or copying decides the speed. One op is one realloc. */
#include "bench.h"

#include <stdatomic.h>

#define CHECK_EVERY 256

struct buffer {
    unsigned char *p;
    size_t len, final_len;
};

struct worker {
    bench_thread t; /* first: bench_run's part */
    uint64_t restarts;
};

static size_t buffers, min_final, max_final, max_step;
static uint64_t seed;
static pthread_barrier_t start;
static atomic_int stop;

static void raise_stop(void) { atomic_store(&stop, 1); }

static void *work(void *arg) {
    struct worker *w = (struct worker *)arg;
    bench_rng rng = bench_rng_new(seed + w->t.index);
    struct buffer *bufs = (struct buffer *)calloc(buffers, sizeof *bufs);
    if (bufs == NULL) {
        bench_oom(buffers * sizeof *bufs);
    }
    for (size_t i = 0; i < buffers; i++) {
        bufs[i].final_len = bench_log_size(&rng, min_final, max_final);
    }
    pthread_barrier_wait(&start);
    uint64_t ops = 0, restarts = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        for (int k = 0; k < CHECK_EVERY; k++) {
            struct buffer *b = &bufs[bench_below(&rng, buffers)];
            size_t step = bench_range(&rng, 1, max_step);
            if (b->len + step > b->final_len) {
                free(b->p);
                b->p = NULL;
                b->len = 0;
                b->final_len = bench_log_size(&rng, min_final, max_final);
                restarts++;
            }
            unsigned char *p = (unsigned char *)realloc(b->p, b->len + step);
            if (p == NULL) {
                bench_oom(b->len + step);
            }
            memset(p + b->len, (int)(ops & 0xff), step);
            b->p = p;
            b->len += step;
            ops++;
        }
    }
    for (size_t i = 0; i < buffers; i++) {
        free(bufs[i].p);
    }
    free(bufs);
    w->t.ops = ops;
    w->restarts = restarts;
    return NULL;
}

int main(int argc, char **argv) {
    bench_args(argc, argv, 7,
               "c-realloc SECONDS THREADS BUFFERS MIN_FINAL MAX_FINAL MAX_STEP SEED");
    double seconds = bench_seconds(argv);
    unsigned threads = (unsigned)bench_u64(argv, 1, "THREADS", 1);
    buffers = bench_u64(argv, 2, "BUFFERS", 1);
    min_final = bench_u64(argv, 3, "MIN_FINAL", 1);
    max_final = bench_u64(argv, 4, "MAX_FINAL", min_final);
    max_step = bench_u64(argv, 5, "MAX_STEP", 1);
    seed = bench_u64(argv, 6, "SEED", 0);

    struct worker *ws = (struct worker *)calloc(threads, sizeof *ws);
    if (ws == NULL) {
        bench_oom(threads * sizeof *ws);
    }
    uint64_t ops;
    double elapsed = bench_run(threads, ws, sizeof *ws, work, &start, raise_stop, seconds, &ops);
    uint64_t restarts = 0;
    for (unsigned t = 0; t < threads; t++) {
        restarts += ws[t].restarts;
    }
    char extra[200];
    snprintf(extra, sizeof extra,
             "threads=%u buffers=%zu final=%zu..=%zu (log-uniform) step=1..=%zu buffers_done=%llu",
             threads, buffers, min_final, max_final, max_step, (unsigned long long)restarts);
    bench_result("c-realloc", ops, elapsed, extra);
    free(ws);
    return 0;
}
