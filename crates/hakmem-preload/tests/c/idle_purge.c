/* Memory returned while the process is idle (HAKMEM_BACKGROUND_PURGE), as
 * a new user would see it: RSS from /proc/self/statm, threads from
 * /proc/self/status.
 *
 *   idle_purge idle SMALL LARGE HUGE ORDER WATCH_MS
 *     The main thread allocates SMALL MiB of 64 B blocks, LARGE MiB of
 *     256 KiB blocks and HUGE MiB of 4 MiB blocks, writing every byte,
 *     frees them all (ORDER `seq`: the last allocated first; `shuffled`: in
 *     a random order), and then only sleeps, for WATCH_MS, sampling RSS and
 *     the thread count every 10 ms. After the last free it makes no call
 *     into the allocator: no stdio, only system calls.
 *   idle_purge rounds SMALL LARGE HUGE ROUNDS WATCH_MS
 *     ROUNDS times the burst of `idle` and WATCH_MS of sleep.
 *   idle_purge seccomp SMALL LARGE HUGE ROUNDS WATCH_MS
 *     `rounds` under a seccomp filter that answers clone and clone3 with
 *     EPERM (no thread can be created).
 *   idle_purge fork SMALL LARGE HUGE FORKS WATCH_MS
 *     A burst as in `idle`, until the purge thread exists; then a second
 *     thread frees large and huge blocks without a pause while the main
 *     thread forks FORKS times. Each child checks it has one thread,
 *     makes a burst of its own (an eighth), watches WATCH_MS until its own
 *     purge thread came and its RSS went back, then forks a grandchild
 *     that does the same (a daemon's double fork), and exits 0 when both
 *     did.
 *   idle_purge short
 *     A few blocks, a huge one freed, and exit at once.
 *
 * Output: `before_kib=N peak_kib=N freed_kib=N threads=N` after each
 * burst, then `at_ms=T rss_kib=N threads=N` per sample; the fork mode
 * prints `fork ok` or why not.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __x86_64__
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#endif

#ifndef __NR_clone3
#define __NR_clone3 435
#endif

/* Output without stdio (which would allocate). */
static char out[256];
static size_t out_len;

static void put(const char *s) {
    size_t n = strlen(s);
    if (out_len + n < sizeof out) { memcpy(out + out_len, s, n); out_len += n; }
}

static void put_num(long v) {
    char b[24];
    int i = 0;
    if (v < 0) { put("-"); v = -v; }
    do { b[i++] = (char)('0' + v % 10); v /= 10; } while (v);
    char r[24];
    for (int k = 0; k < i; k++) r[k] = b[i - 1 - k];
    r[i] = 0;
    put(r);
}

static void flush_line(void) {
    put("\n");
    ssize_t w = write(1, out, out_len);
    (void)w;
    out_len = 0;
}

static ssize_t read_file(const char *path, char *buf, size_t n) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t r = read(fd, buf, n - 1);
    close(fd);
    if (r < 0) return -1;
    buf[r] = 0;
    return r;
}

static long rss_kib(void) {
    char buf[128];
    if (read_file("/proc/self/statm", buf, sizeof buf) < 0) return -1;
    char *p = buf;
    while (*p && *p != ' ') p++;
    return strtol(p, NULL, 10) * (getpagesize() / 1024);
}

static long threads(void) {
    char buf[4096];
    if (read_file("/proc/self/status", buf, sizeof buf) < 0) return -1;
    char *p = strstr(buf, "Threads:");
    return p ? strtol(p + 8, NULL, 10) : -1;
}

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static uint64_t seed = 0x9e3779b97f4a7c15ull;
static uint64_t next_random(void) {
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    return seed;
}

#define SMALL 64
#define LARGE (256 << 10)
#define HUGE (4 << 20)

/* Allocates, writes and frees the burst; prints the figures. */
static void burst(long small_mib, long large_mib, long huge_mib, int shuffled) {
    long before = rss_kib();
    size_t n[3] = {((size_t)small_mib << 20) / SMALL, ((size_t)large_mib << 20) / LARGE,
                   ((size_t)huge_mib << 20) / HUGE};
    size_t size[3] = {SMALL, LARGE, HUGE};
    size_t total = n[0] + n[1] + n[2];
    /* The blocks are chained through their first word; shuffled, their
     * addresses also go into an array of our own mapping, unmapped before
     * the watch. */
    void **all = NULL;
    size_t all_len = total * sizeof(void *);
    if (shuffled) {
        all = mmap(NULL, all_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (all == MAP_FAILED) _exit(3);
    }
    void *chain = NULL;
    size_t k = 0;
    /* Huge blocks first: freed last (`seq`), they are what the huge cache
     * holds when the program goes idle. */
    for (int c = 2; c >= 0; c--) {
        for (size_t i = 0; i < n[c]; i++) {
            void **p = malloc(size[c]);
            if (!p) _exit(4);
            memset(p, 0x5a, size[c]);
            *p = chain;
            chain = p;
            if (all) all[k++] = p;
        }
    }
    long peak = rss_kib();
    if (all) {
        for (size_t i = total; i > 1; i--) {
            size_t j = next_random() % i;
            void *t = all[i - 1];
            all[i - 1] = all[j];
            all[j] = t;
        }
        for (size_t i = 0; i < total; i++) free(all[i]);
        munmap(all, all_len);
    } else {
        while (chain) {
            void *next = *(void **)chain;
            free(chain);
            chain = next;
        }
    }
    long freed = rss_kib();
    put("before_kib="); put_num(before);
    put(" peak_kib="); put_num(peak);
    put(" freed_kib="); put_num(freed);
    put(" threads="); put_num(threads());
    flush_line();
}

/* Samples RSS and threads every 10 ms for `ms`; no allocator call. */
static void watch(long ms) {
    long start = now_ms();
    for (;;) {
        sleep_ms(10);
        long t = now_ms() - start;
        put("at_ms="); put_num(t);
        put(" rss_kib="); put_num(rss_kib());
        put(" threads="); put_num(threads());
        flush_line();
        if (t >= ms) return;
    }
}

static int refuse_clone(void) {
#ifdef __x86_64__
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
    };
    struct sock_fprog prog = {(unsigned short)(sizeof f / sizeof f[0]), f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
#else
    return -1;
#endif
}

static volatile int stop;

/* Frees large and huge blocks without a pause: the purge thread always has
 * work, so forks come in the middle of its passes. */
static void *churn(void *arg) {
    (void)arg;
    while (!stop) {
        void *p[8];
        for (int i = 0; i < 8; i++) {
            size_t s = (i & 1) ? HUGE : LARGE;
            p[i] = malloc(s);
            if (p[i]) memset(p[i], 1, 4096);
        }
        for (int i = 0; i < 8; i++) free(p[i]);
    }
    return NULL;
}

/* A child: one thread (its parent's purge thread is not copied), a burst,
 * its own purge thread and its RSS back; then, the first generation only,
 * the same for a grandchild forked while that thread runs (a daemon's
 * double fork). */
static int child(long small_mib, long large_mib, long huge_mib, long watch_ms, int generation) {
    if (threads() != 1) return 10;
    long before = rss_kib();
    burst(small_mib, large_mib, huge_mib, 0);
    long start = now_ms();
    int ok = 0;
    while (now_ms() - start < watch_ms) {
        sleep_ms(10);
        if (threads() == 2 && rss_kib() <= before + 4096) {
            ok = 1;
            break;
        }
    }
    if (!ok) return threads() == 2 ? 11 : 12;
    if (generation > 0) return 0;
    pid_t pid = fork();
    if (pid < 0) return 13;
    if (pid == 0) _exit(child(small_mib, large_mib, huge_mib, watch_ms, 1));
    int st = 0;
    if (waitpid(pid, &st, 0) != pid) return 14;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 15;
}

static int fork_mode(long small_mib, long large_mib, long huge_mib, long forks, long watch_ms) {
    burst(small_mib, large_mib, huge_mib, 0);
    long start = now_ms();
    while (threads() < 2) {
        if (now_ms() - start > 5000) {
            ssize_t w = write(1, "the parent's purge thread never came\n", 37);
            (void)w;
            return 1;
        }
        sleep_ms(10);
    }
    pthread_t t;
    if (pthread_create(&t, NULL, churn, NULL) != 0) return 1;
    for (long i = 0; i < forks; i++) {
        sleep_ms(1 + (long)(next_random() % 7));
        pid_t pid = fork();
        if (pid < 0) return 1;
        if (pid == 0) _exit(child(small_mib / 8, large_mib / 8, huge_mib / 8, watch_ms, 0));
        int st = 0;
        long waited = 0;
        while (waitpid(pid, &st, WNOHANG) == 0) {
            if (waited > watch_ms + 20000) {
                kill(pid, SIGKILL);
                waitpid(pid, &st, 0);
                put("child "); put_num(i); put(" hung");
                flush_line();
                return 1;
            }
            sleep_ms(5);
            waited += 5;
        }
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            put("child "); put_num(i); put(" failed: status ");
            put_num(WIFEXITED(st) ? WEXITSTATUS(st) : 1000 + WTERMSIG(st));
            flush_line();
            return 1;
        }
    }
    stop = 1;
    pthread_join(t, NULL);
    put("fork ok");
    flush_line();
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "idle";
    long a[5] = {0};
    for (int i = 0; i < 5 && i + 2 < argc; i++) a[i] = strtol(argv[i + 2], NULL, 10);
    if (strcmp(mode, "idle") == 0) {
        burst(a[0], a[1], a[2], argc > 5 && strcmp(argv[5], "shuffled") == 0);
        watch(a[4]);
        return 0;
    }
    if (strcmp(mode, "rounds") == 0 || strcmp(mode, "seccomp") == 0) {
        if (mode[0] == 's' && refuse_clone() != 0) {
            ssize_t w = write(1, "seccomp unavailable\n", 20);
            (void)w;
            return 0;
        }
        for (long r = 0; r < a[3]; r++) {
            burst(a[0], a[1], a[2], 0);
            watch(a[4]);
        }
        return 0;
    }
    if (strcmp(mode, "fork") == 0) return fork_mode(a[0], a[1], a[2], a[3], a[4]);
    if (strcmp(mode, "short") == 0) {
        for (int i = 0; i < 100; i++) free(malloc(16 + (size_t)i * 40));
        void *big = malloc(8 << 20);
        if (big) memset(big, 1, 8 << 20);
        free(big);
        put("short threads="); put_num(threads());
        flush_line();
        return 0;
    }
    return 2;
}
