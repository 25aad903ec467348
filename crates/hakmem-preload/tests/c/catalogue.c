/* The misuse catalogue: one misuse a run, `catalogue CASE SIZE`.
 *
 * The program prints "misuse-address 0x..." and "reached" just before the
 * misuse and, if it is still running afterwards, one line "verdict: WORD":
 *   undetected  the misuse went unnoticed (the process carried on);
 *   stale       a freed block still showed its old contents;
 *   clean       a freed block read as zero or poison;
 *   reused      the next allocation of the size returned the freed block;
 *   delayed     it did not;
 *   enomem      an impossible request gave NULL and errno ENOMEM;
 *   bad         it gave something else.
 * A process stopped by a signal after "reached" caught the misuse (the
 * allocator's report, if any, is on stderr). Compiled with -O0
 * -fno-builtin so the compiler neither folds nor removes the misuse. */
#include <alloca.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char in_data[4 << 20];

static void reached(void *p) {
    printf("misuse-address %p\nreached\n", p);
    fflush(stdout);
}

static void verdict(const char *w) {
    printf("verdict: %s\n", w);
    fflush(stdout);
}

/* Allocations of the same size, freed again: whatever the allocator
 * checks when it hands blocks out or takes them back runs now. */
static void churn(size_t size) {
    void *keep[64];
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < 64; i++) {
            keep[i] = malloc(size);
            if (keep[i]) memset(keep[i], 0x11, size);
        }
        for (int i = 0; i < 64; i++) free(keep[i]);
    }
}

static char *block(size_t size) {
    char *p = malloc(size);
    if (!p) { verdict("bad"); exit(2); }
    memset(p, 0x5a, size);
    return p;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: catalogue CASE SIZE\n"); return 2; }
    /* Unbuffered: stdio's buffer must not be an allocation that takes the
     * freed block between the misuse's two halves. */
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *c = argv[1];
    size_t size = strtoul(argv[2], NULL, 0);
    /* A neighbour on each side, so an overflow lands on one of ours. */
    char *before = block(size);
    char *p = block(size);
    char *after = block(size);
    char src[1 << 16];
    memset(src, 0x77, sizeof src);

    if (!strcmp(c, "double-immediate")) {
        free(p); reached(p); free(p);
    } else if (!strcmp(c, "double-delayed")) {
        free(p);
        for (int i = 0; i < 100; i++) malloc(size < 4096 ? 24 + size * 3 : 100); /* other sizes, kept */
        reached(p); free(p);
    } else if (!strcmp(c, "double-interleaved")) {
        free(p); free(after); reached(p); free(p);
    } else if (!strcmp(c, "double-after-reuse")) {
        free(p);
        char *q = malloc(size);
        if (q) memset(q, 0x33, size);
        reached(p); free(p);
    } else if (!strcmp(c, "invalid-stack")) {
        char on_stack[64];
        reached(on_stack + 16); free(on_stack + 16);
    } else if (!strcmp(c, "invalid-alloca")) {
        char *a = alloca(size < 65536 ? size : 65536);
        a[0] = 1;
        reached(a); free(a);
    } else if (!strcmp(c, "invalid-static")) {
        reached(in_data + 4096); free(in_data + 4096);
    } else if (!strcmp(c, "invalid-interior-aligned")) {
        reached(p + 16); free(p + 16);
    } else if (!strcmp(c, "invalid-interior-unaligned")) {
        reached(p + 5); free(p + 5);
    } else if (!strcmp(c, "invalid-just-below")) {
        reached(p - 8); free(p - 8);
    } else if (!strcmp(c, "invalid-just-above")) {
        reached(p + size + 8); free(p + size + 8);
    } else if (!strcmp(c, "invalid-far-away")) {
        char *far = (char *)((uintptr_t)p ^ ((uintptr_t)1 << 44));
        reached(far); free(far);
    } else if (!strcmp(c, "overflow-1-store")) {
        reached(p); p[size] = 'x'; free(p); free(before); free(after); churn(size);
    } else if (!strcmp(c, "overflow-32-memcpy")) {
        reached(p); memcpy(p, src, size + 32); free(p); free(before); free(after); churn(size);
    } else if (!strcmp(c, "underflow-1-store")) {
        reached(p); p[-1] = 'x'; free(p); free(before); free(after); churn(size);
    } else if (!strcmp(c, "underflow-32-memset")) {
        reached(p); memset(p - 32, 'x', 32); free(p); free(before); free(after); churn(size);
    } else if (!strcmp(c, "overflow-1mib")) {
        reached(p); p[size + (1 << 20)] = 'x'; free(p); free(before); free(after); churn(size);
    } else if (!strcmp(c, "write-after-free")) {
        free(p); reached(p); p[size / 2] = 'x'; churn(size);
    } else if (!strcmp(c, "write-after-free-reuse")) {
        free(p); reached(p); memset(p, 'x', size < 64 ? size : 64);
        for (int i = 0; i < 8; i++) { char *q = malloc(size); if (q) memset(q, 0x44, size); }
    } else if (!strcmp(c, "read-after-free")) {
        free(p); reached(p);
        int stale = 0;
        for (size_t i = 16; i < size; i++) stale |= (unsigned char)p[i] == 0x5a;
        verdict(stale ? "stale" : "clean");
        return 0;
    } else if (!strcmp(c, "reuse-malloc")) {
        free(p); reached(p);
        char *q = malloc(size);
        verdict(q == p ? "reused" : "delayed");
        return 0;
    } else if (!strcmp(c, "reuse-realloc")) {
        /* realloc moves the block (it grows past its class or mapping),
         * freeing the old one; the next allocation of the old size must
         * not get it back at once. */
        char *moved = realloc(p, size * 4 + 64);
        reached(p);
        char *q = malloc(size);
        verdict(moved && q == p ? "reused" : "delayed");
        return 0;
    } else if (!strcmp(c, "zero-size-write")) {
        char *z = malloc(0);
        reached(z);
        if (z) { z[0] = 'x'; z[7] = 'y'; }
        free(z);
    } else if (!strcmp(c, "zero-size-read")) {
        volatile char *z = malloc(0);
        reached((void *)z);
        if (z) { char x = z[0]; (void)x; }
        free((void *)z);
    } else if (!strcmp(c, "impossible-size")) {
        reached(NULL);
        errno = 0;
        void *q = malloc((size_t)-1 - size);
        volatile size_t huge_count = (size_t)1 << 40;
        void *r = calloc(huge_count, huge_count);
        void *s = realloc(p, (size_t)-1 - 64);
        verdict(!q && !r && !s && errno == ENOMEM ? "enomem" : "bad");
        return 0;
    } else {
        fprintf(stderr, "unknown case %s\n", c);
        return 2;
    }
    verdict("undetected");
    return 0;
}
