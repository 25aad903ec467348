/* C23 free_sized and free_aligned_sized (declared here, weak: glibc's
 * headers may lack them, and its library too, as 2.36's do; the program
 * stops with status 2 without them), at every size range: small classes,
 * 64 KiB (a large run), 4 MiB and 40 MiB (huge mappings), blocks of
 * malloc, calloc, realloc and aligned_alloc kept live side by side with
 * their contents checked, so that a block freed into the wrong class shows.
 *
 * argv[1] == "double-small" / "double-large" / "double-huge": a free_sized
 * twice (the test runs them as the misuse cases; prints "survived" if the
 * process goes on). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void free_sized(void *p, size_t size) __attribute__((weak));
void free_aligned_sized(void *p, size_t alignment, size_t size) __attribute__((weak));

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "free_sized: FAILED: %s\n", what);
        abort();
    }
}

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(seed + i * 13);
}

static int intact(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed + i * 13)) return 0;
    return 1;
}

static int misuse(const char *c) {
    size_t size = !strcmp(c, "double-small") ? 48 : !strcmp(c, "double-large") ? 64 << 10 : 4 << 20;
    void *p = malloc(size);
    printf("misuse-address %p\n", p);
    fflush(stdout);
    free_sized(p, size);
    free_sized(p, size);
    /* Ignored: the block must still go to one caller only. */
    void *a = malloc(size), *b = malloc(size);
    if (a == b) {
        puts("handed out twice");
        return 1;
    }
    puts("survived");
    return 0;
}

static const size_t sizes[] = {1,     2,     8,     9,      16,      17,      24,       40,     64,
                               65,    100,   128,   200,    256,     500,     1000,     1024,   1500,
                               2048,  3000,  4096,  5000,   8192,    12000,   16384,    16385,  30000,
                               65536, 70000, 200000, 1 << 20, 4 << 20, 40 << 20};
#define N (sizeof sizes / sizeof sizes[0])
static const size_t aligns[] = {1, 8, 16, 32, 64, 256, 4096, 65536};

int main(int argc, char **argv) {
    if (!free_sized || !free_aligned_sized) {
        puts("free_sized or free_aligned_sized missing");
        return 2;
    }
    if (argc > 1) return misuse(argv[1]);
    for (int round = 0; round < 4; round++) {
        unsigned char *m[N], *c[N], *r[N], *a[N];
        size_t rsize[N];
        for (size_t i = 0; i < N; i++) {
            size_t s = sizes[i], al = aligns[(i + round) % 8];
            m[i] = malloc(s);
            c[i] = calloc(1, s);
            /* realloc to this size from another: the block is this size's. */
            rsize[i] = s;
            r[i] = realloc(malloc(sizes[(i + 5) % N]), s);
            a[i] = aligned_alloc(al, s);
            check(m[i] && c[i] && r[i] && a[i], "allocations");
            check(((uintptr_t)a[i] & (al - 1)) == 0, "aligned_alloc's alignment");
            for (size_t j = 0; j < s; j += 4096) check(c[i][j] == 0, "calloc zeroed");
            fill(m[i], s, (unsigned)i);
            fill(c[i], s, (unsigned)i + 1);
            fill(r[i], s, (unsigned)i + 2);
            fill(a[i], s, (unsigned)i + 3);
        }
        for (size_t i = 0; i < N; i++) {
            size_t s = sizes[i], al = aligns[(i + round) % 8];
            check(intact(m[i], s, (unsigned)i), "malloc's block");
            check(intact(c[i], s, (unsigned)i + 1), "calloc's block");
            check(intact(r[i], s, (unsigned)i + 2), "realloc's block");
            check(intact(a[i], s, (unsigned)i + 3), "aligned_alloc's block");
            free_sized(m[i], s);
            free_sized(c[i], s);
            free_sized(r[i], rsize[i]);
            free_aligned_sized(a[i], al, s);
        }
    }
    /* calloc(n, s): the size is n * s. Many of one size, freed sized and
     * handed out again. */
    for (size_t s = 1; s <= 2100; s += 7) {
        unsigned char *v[48];
        for (int i = 0; i < 48; i++) {
            v[i] = calloc(s, 1);
            fill(v[i], s, (unsigned)(s + i));
        }
        for (int i = 0; i < 48; i += 3) free_sized(v[i], s);
        for (int i = 0; i < 48; i += 3) {
            v[i] = malloc(s);
            fill(v[i], s, (unsigned)(s + i));
        }
        for (int i = 0; i < 48; i++) {
            check(intact(v[i], s, (unsigned)(s + i)), "small round trip");
            free_sized(v[i], s);
        }
    }
    /* Null does nothing; size 0 and a bad alignment go through free. */
    free_sized(NULL, 16);
    free_aligned_sized(NULL, 64, 16);
    free_sized(malloc(0), 0);
    free_aligned_sized(aligned_alloc(64, 0), 64, 0);
    free_aligned_sized(malloc(100), 3, 100);
    puts("free-sized ok");
    return 0;
}
