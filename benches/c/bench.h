/* The common part of the C and C++ workloads of `cargo xtask bench`.
 *
 * Every program takes positional arguments, SECONDS first (a decimal number,
 * so that a smoke test can run one for a fraction of a second), runs for
 * that long by the wall clock and prints one line:
 *
 *   <workload>: <allocator>: <N> ops/s (<ops> ops in <s> s), <extra>,
 *     malloc_from=<path>, peak_rss_kib=<VmHWM>
 *
 * `<allocator>` and `malloc_from=` name the shared object that defines the
 * `malloc` this process calls (`dladdr`), so that the xtask can check that
 * the library it preloaded is the one measured. `peak_rss_kib=` is the
 * process's own high-water mark (`VmHWM` of /proc/self/status).
 *
 * The random generator is the Rust suite's xorshift64* seeded through
 * splitmix64 (benches/src/rng.rs): the same seed gives the same stream.
 *
 * Written in the common subset of C11 and C++17. */
#ifndef HAKMEM_BENCH_H
#define HAKMEM_BENCH_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- arguments ------------------------------------------------------- */

/* Exits with the usage line unless there are exactly `n` arguments. */
static inline void bench_args(int argc, char **argv, int n, const char *usage) {
    (void)argv;
    if (argc != n + 1) {
        fprintf(stderr, "usage: %s\n", usage);
        exit(2);
    }
}

/* Argument `i` (0-based) as a whole number of at least `min`. */
static inline uint64_t bench_u64(char **argv, int i, const char *name, uint64_t min) {
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(argv[i + 1], &end, 10);
    if (errno != 0 || end == argv[i + 1] || *end != '\0' || argv[i + 1][0] == '-' ||
        v < min) {
        fprintf(stderr, "error: %s must be a whole number >= %llu, not %s\n", name,
                (unsigned long long)min, argv[i + 1]);
        exit(2);
    }
    return (uint64_t)v;
}

/* SECONDS (argument 0): a positive decimal number. */
static inline double bench_seconds(char **argv) {
    char *end = NULL;
    double s = strtod(argv[1], &end);
    if (end == argv[1] || *end != '\0' || !(s > 0.0) || s > 1e6) {
        fprintf(stderr, "error: SECONDS must be a positive number, not %s\n", argv[1]);
        exit(2);
    }
    return s;
}

/* ---- time ------------------------------------------------------------ */

static inline double bench_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Sleeps until `bench_now() >= deadline`. */
static inline void bench_sleep_until(double deadline) {
    for (;;) {
        double left = deadline - bench_now();
        if (left <= 0.0) {
            return;
        }
        if (left > 0.05) {
            left = 0.05;
        }
        struct timespec t;
        t.tv_sec = 0;
        t.tv_nsec = (long)(left * 1e9);
        nanosleep(&t, NULL);
    }
}

/* ---- random numbers (xorshift64*, as benches/src/rng.rs) ------------- */

typedef struct {
    uint64_t s;
} bench_rng;

static inline bench_rng bench_rng_new(uint64_t seed) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    bench_rng r;
    r.s = z == 0 ? 1 : z;
    return r;
}

static inline uint64_t bench_next(bench_rng *r) {
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* A number in 0..n (n > 0), by multiply-shift. */
static inline size_t bench_below(bench_rng *r, size_t n) {
    return (size_t)(((bench_next(r) >> 32) * (uint64_t)n) >> 32);
}

/* A number in lo..=hi. */
static inline size_t bench_range(bench_rng *r, size_t lo, size_t hi) {
    return lo + bench_below(r, hi - lo + 1);
}

/* A size in lo..=hi, log-uniform: an octave [2^b, 2^(b+1)) picked
 * uniformly among those that meet the range, then a size uniformly in it,
 * clamped to the range. Small sizes are as likely as large ones per
 * octave, as in real programs. */
static inline size_t bench_log_size(bench_rng *r, size_t lo, size_t hi) {
    unsigned blo = 0, bhi = 0;
    while (((size_t)2 << blo) <= lo) {
        blo++;
    }
    while (((size_t)2 << bhi) <= hi) {
        bhi++;
    }
    unsigned b = blo + (unsigned)bench_below(r, bhi - blo + 1);
    size_t base = (size_t)1 << b;
    size_t s = base + bench_below(r, base);
    return s < lo ? lo : s > hi ? hi : s;
}

/* ---- memory ---------------------------------------------------------- */

/* Writes the first and last byte of a block (Larson's "touch"), through
 * volatile stores so that they are neither elided nor merged. */
static inline void bench_touch(void *p, size_t size) {
    volatile unsigned char *b = (volatile unsigned char *)p;
    b[0] = 'a';
    b[size - 1] = 'b';
}

/* Exits with a message: the allocator returned null. */
static inline void bench_oom(size_t size) {
    fprintf(stderr, "error: out of memory allocating %zu bytes\n", size);
    exit(1);
}

/* The process's peak resident set in KiB (VmHWM), or 0. */
static inline unsigned long bench_peak_rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL) {
        return 0;
    }
    char line[256];
    unsigned long kib = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "VmHWM:", 6) == 0) {
            kib = strtoul(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kib;
}

/* The path of the shared object that defines the function at `f` ("?" if
 * unknown). */
static inline const char *bench_object_of(void *f) {
    Dl_info info;
    if (dladdr(f, &info) != 0 && info.dli_fname != NULL) {
        return info.dli_fname;
    }
    return "?";
}

static inline const char *bench_basename(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash != NULL ? slash + 1 : path;
}

/* Prints the result line. `extra` is "key=value ..." or empty. */
static inline void bench_result(const char *workload, uint64_t ops, double seconds,
                         const char *extra) {
    const char *from = bench_object_of((void *)&malloc);
    double rate = seconds > 0.0 ? (double)ops / seconds : 0.0;
    printf("%s: %s: %.0f ops/s (%llu ops in %.3f s), %s%smalloc_from=%s, peak_rss_kib=%lu\n",
           workload, bench_basename(from), rate, (unsigned long long)ops, seconds, extra,
           extra[0] != '\0' ? ", " : "", from, bench_peak_rss_kib());
    fflush(stdout);
}

/* Starts a thread or exits with a message. */
static inline pthread_t bench_spawn(void *(*body)(void *), void *arg) {
    pthread_t t;
    int e = pthread_create(&t, NULL, body, arg);
    if (e != 0) {
        fprintf(stderr, "error: pthread_create: %s\n", strerror(e));
        exit(1);
    }
    return t;
}

/* ---- timed workers ---------------------------------------------------- */

/* The part of a worker the runner below fills and reads: the first member
 * of a program's `struct worker`. */
typedef struct {
    pthread_t thread;
    unsigned index;
    uint64_t ops; /* what the worker counted, read after the join */
} bench_thread;

/* Runs `threads` workers through `body`, each handed the address of its
 * own, `stride` bytes apart from `first` (an array of the program's
 * workers, each starting with a bench_thread, zeroed): their indexes are
 * set, they start, and they and this thread meet at `start`, which this
 * initialises. The clock starts then; after `seconds`, `stop` is called
 * (it raises the program's stop flag) and every worker is joined. Returns
 * the seconds that passed; `*ops` is the sum of the workers' counts. */
static inline double bench_run(unsigned threads, void *first, size_t stride,
                               void *(*body)(void *), pthread_barrier_t *start,
                               void (*stop)(void), double seconds, uint64_t *ops) {
    pthread_barrier_init(start, NULL, threads + 1);
    for (unsigned t = 0; t < threads; t++) {
        bench_thread *w = (bench_thread *)((char *)first + t * stride);
        w->index = t;
        w->thread = bench_spawn(body, w);
    }
    pthread_barrier_wait(start);
    double t0 = bench_now();
    bench_sleep_until(t0 + seconds);
    stop();
    *ops = 0;
    for (unsigned t = 0; t < threads; t++) {
        bench_thread *w = (bench_thread *)((char *)first + t * stride);
        pthread_join(w->thread, NULL);
        *ops += w->ops;
    }
    return bench_now() - t0;
}

#endif
