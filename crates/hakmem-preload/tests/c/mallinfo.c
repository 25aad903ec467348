/* glibc's extension API under libhakmem.so: mallinfo2, mallinfo,
 * malloc_stats, malloc_info and mallopt, against a workload whose live
 * bytes are known (malloc_usable_size of every block).
 *
 * argv[1] == "check" [secure]: the figures. Small blocks (two classes),
 * large ones (runs of slabs; huge mappings in hardened builds) and huge
 * ones; uordblks must move by their live bytes within 1% + 256 KiB (8% in
 * hardened builds, whose usable size is the size asked for, not the
 * block's), hblks/hblkhd by the huge ones, and both back when they are
 * freed; the same with blocks left by a thread that exited. Prints
 * "mallinfo2 ..." and calls malloc_stats (the test compares the two), and
 * prints malloc_info's XML between "--- xml" and "--- end" (the test
 * checks its shape). Ends with "mallinfo ok".
 *
 * argv[1] == "trim-threshold" on|off: with "on", mallopt(M_TRIM_THRESHOLD,
 * 0) first; then 40 slabs of small blocks are filled and freed. The test
 * reads slabs_purged in the exit stats (every freed slab purged at once
 * with "on", none with "off" and a long purge delay). */
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "mallinfo: FAILED: %s\n", what);
        abort();
    }
}

static int secure;

/* |got - want| within 1% (8% hardened) + 256 KiB. */
static int near(size_t got, size_t want) {
    size_t slack = want / (secure ? 12 : 100) + (256 << 10);
    return got + slack >= want && got <= want + slack;
}

static size_t diff(size_t a, size_t b) { return a > b ? a - b : 0; }

static void show(const char *when, struct mallinfo2 m) {
    fprintf(stderr,
            "mallinfo: %s: arena=%zu ordblks=%zu smblks=%zu hblks=%zu hblkhd=%zu usmblks=%zu "
            "fsmblks=%zu uordblks=%zu fordblks=%zu keepcost=%zu\n",
            when, m.arena, m.ordblks, m.smblks, m.hblks, m.hblkhd, m.usmblks, m.fsmblks,
            m.uordblks, m.fordblks, m.keepcost);
}

/* What every reading must satisfy. */
static void sane(struct mallinfo2 m) {
    check(m.usmblks == 0, "usmblks is 0");
    check(m.uordblks <= m.arena, "uordblks <= arena");
    check(m.fordblks <= m.arena, "fordblks <= arena");
    check(m.keepcost <= m.arena, "keepcost <= arena");
    check(m.fsmblks <= m.fordblks, "fsmblks <= fordblks");
    check((m.hblks == 0) == (m.hblkhd == 0), "hblks and hblkhd agree");
}

static int clamped(int got, size_t v) { return got == (v > INT_MAX ? INT_MAX : (int)v); }

#define N_SMALL 20000
#define N_MEDIUM 2000
#define N_LARGE 40
#define N_HUGE 4
#define N_THREAD 10000

static void *small[N_SMALL], *medium[N_MEDIUM], *large[N_LARGE], *huge[N_HUGE];
static void *left_behind[N_THREAD];
static size_t left_bytes;

static void *leave_blocks(void *arg) {
    (void)arg;
    for (int i = 0; i < N_THREAD; i++) {
        left_behind[i] = malloc(128);
        check(left_behind[i] != NULL, "thread malloc");
        memset(left_behind[i], 7, 128);
        left_bytes += malloc_usable_size(left_behind[i]);
    }
    return NULL;
}

static char xml[1 << 16];

static int run_check(void) {
    /* Streams first, so that their buffers (malloc'ed on first use) are
     * not among the figures measured below. */
    printf("mallinfo start\n");
    fflush(stdout);
    FILE *f = tmpfile();
    check(f != NULL, "tmpfile");
    fputs("x", f);
    fflush(f);
    rewind(f);

    struct mallinfo2 m0 = mallinfo2();
    show("start", m0);
    sane(m0);

    size_t live_arena = 0, live_mapped = 0;
    for (int i = 0; i < N_SMALL; i++) {
        small[i] = malloc(200);
        check(small[i] != NULL, "malloc 200");
        memset(small[i], 1, 200);
        live_arena += malloc_usable_size(small[i]);
    }
    for (int i = 0; i < N_MEDIUM; i++) {
        medium[i] = malloc(3000);
        check(medium[i] != NULL, "malloc 3000");
        memset(medium[i], 2, 3000);
        live_arena += malloc_usable_size(medium[i]);
    }
    for (int i = 0; i < N_LARGE; i++) {
        large[i] = malloc(100 << 10);
        check(large[i] != NULL, "malloc 100 KiB");
        memset(large[i], 3, 100 << 10);
        /* Hardened builds: every large block is a mapping of its own. */
        if (secure)
            live_mapped += malloc_usable_size(large[i]);
        else
            live_arena += malloc_usable_size(large[i]);
    }
    for (int i = 0; i < N_HUGE; i++) {
        huge[i] = malloc(3 << 20);
        check(huge[i] != NULL, "malloc 3 MiB");
        memset(huge[i], 4, 3 << 20);
        live_mapped += malloc_usable_size(huge[i]);
    }
    size_t n_mapped = N_HUGE + (secure ? N_LARGE : 0);

    struct mallinfo2 m1 = mallinfo2();
    struct mallinfo mi = mallinfo();
    show("live", m1);
    fprintf(stderr, "mallinfo: live arena bytes %zu, mapped %zu in %zu blocks\n", live_arena,
            live_mapped, n_mapped);
    sane(m1);
    check(near(diff(m1.uordblks, m0.uordblks), live_arena), "uordblks grew by the live bytes");
    check(m1.hblks - m0.hblks == n_mapped, "hblks counts the huge blocks");
    check(m1.hblkhd - m0.hblkhd >= live_mapped, "hblkhd covers the huge blocks");
    check(m1.hblkhd - m0.hblkhd <= live_mapped + n_mapped * (128 << 10),
          "hblkhd is the huge blocks' mappings");
    check(m1.arena >= m0.arena + live_arena / 2, "arena grew");
    /* Nothing allocated in between: the same figures, as int. */
    check(clamped(mi.arena, m1.arena) && clamped(mi.ordblks, m1.ordblks) &&
              clamped(mi.smblks, m1.smblks) && clamped(mi.hblks, m1.hblks) &&
              clamped(mi.hblkhd, m1.hblkhd) && clamped(mi.usmblks, m1.usmblks) &&
              clamped(mi.fsmblks, m1.fsmblks) && clamped(mi.uordblks, m1.uordblks) &&
              clamped(mi.fordblks, m1.fordblks) && clamped(mi.keepcost, m1.keepcost),
          "mallinfo is mallinfo2 as int");

    /* malloc_stats on stderr, after the figures it should show. */
    printf("mallinfo2 arena=%zu uordblks=%zu hblks=%zu hblkhd=%zu\n", m1.arena, m1.uordblks,
           m1.hblks, m1.hblkhd);
    fflush(stdout);
    malloc_stats();

    /* malloc_info: the XML into a file, read back, printed for the test. */
    check(malloc_info(0, f) == 0, "malloc_info returns 0");
    fflush(f);
    long len = ftell(f);
    check(len > 0 && len < (long)sizeof xml, "malloc_info wrote a document");
    rewind(f);
    check(fread(xml, 1, (size_t)len, f) == (size_t)len, "read back");
    xml[len] = 0;
    check(!strncmp(xml, "<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n", 43),
          "malloc_info starts as glibc's");
    check(len > 10 && !strcmp(xml + len - 10, "</malloc>\n"), "malloc_info ends as glibc's");
    char want[128];
    snprintf(want, sizeof want, "<total type=\"mmap\" count=\"%zu\" size=\"%zu\"/>\n", m1.hblks,
             m1.hblkhd);
    check(strstr(xml, want) != NULL, "malloc_info's mmap total is mallinfo2's");
    snprintf(want, sizeof want, "<system type=\"current\" size=\"%zu\"/>\n", m1.arena);
    check(strstr(xml, want) != NULL, "malloc_info's system size is mallinfo2's arena");
    printf("--- xml\n%s--- end\n", xml);
    fflush(stdout);
    errno = 0;
    check(malloc_info(1, f) == -1 && errno == EINVAL, "malloc_info(1) is EINVAL");
    fclose(f);

    for (int i = 0; i < N_SMALL; i++) free(small[i]);
    for (int i = 0; i < N_MEDIUM; i++) free(medium[i]);
    for (int i = 0; i < N_LARGE; i++) free(large[i]);
    for (int i = 0; i < N_HUGE; i++) free(huge[i]);
    struct mallinfo2 m2 = mallinfo2();
    show("freed", m2);
    sane(m2);
    check(near(diff(m1.uordblks, m2.uordblks), live_arena), "uordblks fell by the live bytes");
    check(m2.hblks == m0.hblks && m2.hblkhd == m0.hblkhd, "hblks and hblkhd fell back");
    /* 3 MiB mappings are kept for reuse: free, and what trim gives back. */
    check(m2.fordblks >= m0.fordblks + N_HUGE * (3 << 20), "fordblks holds the cached mappings");
    check(m2.keepcost >= N_HUGE * (3 << 20), "keepcost counts the cached mappings");

    check(malloc_trim(0) == 1, "malloc_trim");
    struct mallinfo2 m3 = mallinfo2();
    show("trimmed", m3);
    sane(m3);
    check(m3.keepcost == 0, "nothing left to trim");
    check(m3.arena < m2.arena, "trim gave memory back");

    /* Blocks of a thread that exited: its slabs are abandoned, and
     * counted exactly. */
    pthread_t t;
    check(pthread_create(&t, NULL, leave_blocks, NULL) == 0, "pthread_create");
    check(pthread_join(t, NULL) == 0, "pthread_join");
    struct mallinfo2 m4 = mallinfo2();
    show("thread exited", m4);
    sane(m4);
    check(near(diff(m4.uordblks, m3.uordblks), left_bytes), "uordblks counts abandoned blocks");
    for (int i = 0; i < N_THREAD; i++) free(left_behind[i]);
    /* Freed into slabs of no live thread: collected by trim. */
    check(malloc_trim(0) == 1, "malloc_trim");
    struct mallinfo2 m5 = mallinfo2();
    show("thread's blocks freed", m5);
    sane(m5);
    check(near(diff(m4.uordblks, m5.uordblks), left_bytes), "uordblks fell back");

    /* mallopt: 1 for what hakmem knows (M_MXFAST: glibc's range), 0 else. */
    check(mallopt(M_MMAP_THRESHOLD, 1 << 20) == 1, "M_MMAP_THRESHOLD");
    check(mallopt(M_MMAP_THRESHOLD, 64 << 20) == 1, "M_MMAP_THRESHOLD 64 MiB");
    check(mallopt(M_MXFAST, 64) == 1, "M_MXFAST");
    check(mallopt(M_MXFAST, 0) == 1, "M_MXFAST 0");
    check(mallopt(M_MXFAST, 1000) == 0, "M_MXFAST too big");
    check(mallopt(M_TOP_PAD, 1 << 20) == 1, "M_TOP_PAD");
    check(mallopt(M_MMAP_MAX, 0) == 1, "M_MMAP_MAX");
    check(mallopt(M_CHECK_ACTION, 3) == 1, "M_CHECK_ACTION");
    check(mallopt(M_PERTURB, 0) == 1, "M_PERTURB");
    check(mallopt(M_ARENA_TEST, 8) == 1, "M_ARENA_TEST");
    check(mallopt(M_ARENA_MAX, 2) == 1, "M_ARENA_MAX");
    check(mallopt(M_TRIM_THRESHOLD, 128 << 10) == 1, "M_TRIM_THRESHOLD");
    check(mallopt(M_TRIM_THRESHOLD, -1) == 1, "M_TRIM_THRESHOLD -1");
    check(mallopt(12345, 1) == 0, "an unknown parameter");
    check(mallopt(0, 1) == 0, "parameter 0");
    /* The old SVID numbers: no meaning in glibc nor in hakmem. */
    check(mallopt(M_NLBLKS, 1) == 0 && mallopt(M_GRAIN, 1) == 0 && mallopt(M_KEEP, 1) == 0,
          "SVID parameters");

    /* Still allocating after it all. */
    void *p = malloc(100);
    check(p != NULL, "malloc after");
    free(p);
    printf("mallinfo ok\n");
    return 0;
}

/* 40 slabs of 1 KiB blocks (64 a slab) filled, then freed, the first
 * half of each slab's blocks, then the rest (so each slab empties while
 * another one is the one allocations take from): the slabs go back to
 * their regions, purged at once when the trim threshold is 0. */
static int run_trim_threshold(int on) {
    enum { N = 40 * 64 };
    static void *blocks[N];
    if (on) check(mallopt(M_TRIM_THRESHOLD, 0) == 1, "mallopt(M_TRIM_THRESHOLD, 0)");
    for (int i = 0; i < N; i++) {
        blocks[i] = malloc(1000);
        check(blocks[i] != NULL, "malloc");
        memset(blocks[i], 5, 1000);
    }
    for (int i = 0; i < N; i++)
        if (i % 64 < 32) free(blocks[i]);
    for (int i = 0; i < N; i++)
        if (i % 64 >= 32) free(blocks[i]);
    printf("trim-threshold ok\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "check")) {
        secure = argc >= 3 && !strcmp(argv[2], "secure");
        return run_check();
    }
    if (argc >= 3 && !strcmp(argv[1], "trim-threshold")) return run_trim_threshold(!strcmp(argv[2], "on"));
    fprintf(stderr, "usage: mallinfo check [secure] | trim-threshold on|off\n");
    return 2;
}
