/* c-xthread SECONDS THREADS BATCH MIN_SIZE MAX_SIZE
 *
 * Cross-thread frees, every thread both a producer and a consumer:
 * THREADS threads in a ring, each mallocs batches of BATCH blocks of
 * random sizes in MIN_SIZE..=MAX_SIZE (writing each), and hands every
 * batch to the next thread's inbox, which frees them. So every block is
 * freed by a thread other than the one that allocated it, all threads
 * allocate and free at once, and the batch arrays themselves (malloc'd
 * too) travel the same way. An inbox is a lock-free stack of batches,
 * taken whole by its owner (push by compare-and-swap, take by exchange:
 * no ABA); at most INFLIGHT batches wait in one, beyond which the producer
 * frees its own inbox and yields instead of allocating. One op is one
 * block allocated on one thread and freed on another. */
#include "bench.h"

#include <sched.h>
#include <stdatomic.h>

#define INFLIGHT 16

struct batch {
    struct batch *next;
    size_t count;
    void *blocks[];
};

/* One thread: its inbox on a cache line of its own. */
struct worker {
    _Alignas(128) _Atomic(struct batch *) inbox;
    atomic_size_t waiting; /* batches in `inbox` */
    _Alignas(128) pthread_t thread;
    unsigned index;
    uint64_t freed;
};

static size_t batch_size, min_size, max_size;
static unsigned threads;
static struct worker *workers;
static pthread_barrier_t start;
static atomic_int stop;

/* Frees every batch in the list; returns the blocks freed. */
static uint64_t free_all(struct batch *b) {
    uint64_t n = 0;
    while (b != NULL) {
        struct batch *next = b->next;
        for (size_t i = 0; i < b->count; i++) {
            free(b->blocks[i]);
        }
        n += b->count;
        free(b);
        b = next;
    }
    return n;
}

/* Takes the whole inbox of `w`. */
static uint64_t drain(struct worker *w) {
    struct batch *b = atomic_exchange_explicit(&w->inbox, NULL, memory_order_acquire);
    if (b == NULL) {
        return 0;
    }
    size_t taken = 0;
    for (struct batch *x = b; x != NULL; x = x->next) {
        taken++;
    }
    atomic_fetch_sub_explicit(&w->waiting, taken, memory_order_relaxed);
    return free_all(b);
}

static void *work(void *arg) {
    struct worker *w = (struct worker *)arg;
    struct worker *to = &workers[(w->index + 1) % threads];
    bench_rng rng = bench_rng_new(0xc0ffee + w->index);
    uint64_t freed = 0;
    pthread_barrier_wait(&start);
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        freed += drain(w);
        if (atomic_load_explicit(&to->waiting, memory_order_relaxed) >= INFLIGHT) {
            sched_yield();
            continue;
        }
        struct batch *b =
            (struct batch *)malloc(sizeof *b + batch_size * sizeof b->blocks[0]);
        if (b == NULL) {
            bench_oom(sizeof *b);
        }
        for (size_t i = 0; i < batch_size; i++) {
            size_t size = bench_range(&rng, min_size, max_size);
            void *p = malloc(size);
            if (p == NULL) {
                bench_oom(size);
            }
            bench_touch(p, size);
            b->blocks[i] = p;
        }
        b->count = batch_size;
        atomic_fetch_add_explicit(&to->waiting, 1, memory_order_relaxed);
        struct batch *head = atomic_load_explicit(&to->inbox, memory_order_relaxed);
        do {
            b->next = head;
        } while (!atomic_compare_exchange_weak_explicit(&to->inbox, &head, b,
                                                        memory_order_release,
                                                        memory_order_relaxed));
    }
    w->freed = freed;
    return NULL;
}

int main(int argc, char **argv) {
    bench_args(argc, argv, 5, "c-xthread SECONDS THREADS BATCH MIN_SIZE MAX_SIZE");
    double seconds = bench_seconds(argv);
    threads = (unsigned)bench_u64(argv, 1, "THREADS", 2);
    batch_size = bench_u64(argv, 2, "BATCH", 1);
    min_size = bench_u64(argv, 3, "MIN_SIZE", 1);
    max_size = bench_u64(argv, 4, "MAX_SIZE", min_size);

    workers = (struct worker *)aligned_alloc(128, threads * sizeof *workers);
    if (workers == NULL) {
        bench_oom(threads * sizeof *workers);
    }
    memset(workers, 0, threads * sizeof *workers);
    pthread_barrier_init(&start, NULL, threads + 1);
    for (unsigned t = 0; t < threads; t++) {
        workers[t].index = t;
        workers[t].thread = bench_spawn(work, &workers[t]);
    }
    pthread_barrier_wait(&start);
    double t0 = bench_now();
    bench_sleep_until(t0 + seconds);
    atomic_store(&stop, 1);
    uint64_t ops = 0;
    for (unsigned t = 0; t < threads; t++) {
        pthread_join(workers[t].thread, NULL);
        ops += workers[t].freed;
    }
    double elapsed = bench_now() - t0;
    /* What is still in the inboxes is freed here, uncounted. */
    for (unsigned t = 0; t < threads; t++) {
        drain(&workers[t]);
    }
    char extra[128];
    snprintf(extra, sizeof extra, "threads=%u batch=%zu sizes=%zu..=%zu", threads, batch_size,
             min_size, max_size);
    bench_result("c-xthread", ops, elapsed, extra);
    free(workers);
    return 0;
}
