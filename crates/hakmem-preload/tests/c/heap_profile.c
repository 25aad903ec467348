/* The heap profiler under LD_PRELOAD (tests/heap_profile.rs): three sites
 * whose bytes are known. One keeps 80% of the live bytes, one 20%, one
 * allocates a lot and frees all of it. A SIGUSR2 (HAKMEM_PROF_SIGNAL=1)
 * writes the profile the test reads; the exit writes another. The program
 * then prints each site's address (for the test to find its frames) and
 * the requested sizes it allocated, one line per kind of block. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

static void *keep80[48 << 10];
static void *keep20[48 << 10];
static void *scratch[64 << 10];
static char out_buf[1 << 16];

/* n blocks of size bytes into out; prints "alloc SITE N SIZE". */
__attribute__((noinline)) static void fill(const char *site, void **out, int n, size_t size) {
    for (int i = 0; i < n; i++) {
        char *p = malloc(size);
        if (!p)
            abort();
        p[0] = (char)i;
        out[i] = p;
    }
    printf("alloc %s %d %zu\n", site, n, size);
}

__attribute__((noinline)) void hp_site_keep80(void) {
    fill("keep80", keep80, 40 << 10, 1000);
    fill("keep80", keep80 + (40 << 10), 40, 200 << 10);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void hp_site_keep20(void) {
    fill("keep20", keep20, 48 << 10, 250);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void hp_site_churn(void) {
    for (int round = 0; round < 2; round++) {
        fill("churn", scratch, 64 << 10, 500);
        for (int i = 0; i < (64 << 10); i++)
            free(scratch[i]);
        fill("churn", scratch, 256, 96 << 10);
        for (int i = 0; i < 256; i++)
            free(scratch[i]);
    }
    __asm__ volatile("" ::: "memory");
}

int main(void) {
    /* A buffer of our own: stdio allocates none inside a site. */
    setvbuf(stdout, out_buf, _IOFBF, sizeof out_buf);
    hp_site_keep80();
    hp_site_churn();
    hp_site_keep20();
    /* Hardened builds keep freed blocks in a quarantine until they leave
     * it, and only then is their free seen; malloc_trim empties it. */
    malloc_trim(0);
    raise(SIGUSR2);
    /* And one through the C API, to the path the test names (looked up:
     * under LD_PRELOAD the program links no hakmem of its own). */
    int (*dump)(const char *) = (int (*)(const char *))dlsym(RTLD_DEFAULT, "hakmem_prof_dump");
    if (dump == NULL || dump(getenv("HP_DUMP_PATH")) != 0) {
        fprintf(stderr, "hakmem_prof_dump failed\n");
        return 1;
    }
    printf("site hp_site_keep80 %p\n", (void *)hp_site_keep80);
    printf("site hp_site_keep20 %p\n", (void *)hp_site_keep20);
    printf("site hp_site_churn %p\n", (void *)hp_site_churn);
    fflush(stdout);
    return 0;
}
