/* Edge cases of every exported function, checked against glibc's rules. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #c); return 1; } } while (0)

/* Allocation before main, from a constructor; freed by main. */
static unsigned char *early;
__attribute__((constructor)) static void before_main(void) {
    early = malloc(100);
    if (early) memset(early, 0x5A, 100);
    free(malloc(1 << 20)); /* and a large block, before main too */
}

int main(void) {
    void *p, *q;
    CHECK(early != NULL && early[0] == 0x5A && early[99] == 0x5A);
    CHECK(malloc_usable_size(early) >= 100);
    free(early);
    /* zero sizes give unique, freeable blocks */
    p = malloc(0); q = malloc(0);
    CHECK(p && q && p != q);
    free(p); free(q);
    free(NULL);
    p = calloc(0, 10); CHECK(p); free(p);
    /* huge sizes: null and ENOMEM */
    errno = 0; CHECK(malloc(SIZE_MAX) == NULL && errno == ENOMEM);
    errno = 0; CHECK(malloc(SIZE_MAX / 2) == NULL && errno == ENOMEM);
    errno = 0; CHECK(calloc(SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);
    errno = 0; CHECK(calloc((size_t)1 << 40, (size_t)1 << 40) == NULL && errno == ENOMEM);
    /* calloc zeroes, including recycled memory */
    for (int i = 0; i < 100; i++) {
        size_t n = 1 + (size_t)i * 997;
        unsigned char *c = malloc(n); memset(c, 0xAB, n); free(c);
        c = calloc(1, n); CHECK(c);
        for (size_t j = 0; j < n; j++) CHECK(c[j] == 0);
        free(c);
    }
    /* realloc rules */
    p = realloc(NULL, 100); CHECK(p); memset(p, 7, 100);
    p = realloc(p, 5000); CHECK(p);
    for (int i = 0; i < 100; i++) CHECK(((unsigned char *)p)[i] == 7);
    errno = 0; q = realloc(p, SIZE_MAX); CHECK(q == NULL && errno == ENOMEM);
    CHECK(((unsigned char *)p)[99] == 7); /* untouched on failure */
    CHECK(realloc(p, 0) == NULL); /* glibc: frees and returns NULL */
    /* reallocarray */
    p = reallocarray(NULL, 10, 10); CHECK(p);
    errno = 0; CHECK(reallocarray(p, SIZE_MAX / 2, 4) == NULL && errno == ENOMEM);
    p = reallocarray(p, 20, 10); CHECK(p); free(p);
    /* posix_memalign */
    CHECK(posix_memalign(&p, 3, 64) == EINVAL);
    CHECK(posix_memalign(&p, 4, 64) == EINVAL); /* not a multiple of sizeof(void*) */
    CHECK(posix_memalign(&p, 0, 64) == EINVAL);
    for (size_t a = sizeof(void *); a <= (size_t)4 << 20; a *= 2) {
        CHECK(posix_memalign(&p, a, 100) == 0 && ((uintptr_t)p % a) == 0);
        memset(p, 1, 100); free(p);
    }
    CHECK(posix_memalign(&p, 64, SIZE_MAX / 2) == ENOMEM);
    CHECK(posix_memalign(&p, 64, 0) == 0); free(p);
    /* aligned_alloc, memalign, valloc, pvalloc */
    errno = 0; CHECK(aligned_alloc(3, 64) == NULL && errno == EINVAL);
    p = aligned_alloc(256, 1000); CHECK(p && (uintptr_t)p % 256 == 0); free(p);
    p = memalign(48, 100); CHECK(p && (uintptr_t)p % 64 == 0); free(p); /* rounded up */
    p = memalign(1 << 16, 10); CHECK(p && (uintptr_t)p % (1 << 16) == 0); free(p);
    p = valloc(10); CHECK(p && (uintptr_t)p % 4096 == 0); free(p);
    p = pvalloc(10); CHECK(p && (uintptr_t)p % 4096 == 0 && malloc_usable_size(p) >= 4096); free(p);
    p = pvalloc(0); CHECK(p && malloc_usable_size(p) >= 4096); free(p);
    /* huge sizes through every function: null and ENOMEM */
    errno = 0; CHECK(realloc(NULL, SIZE_MAX) == NULL && errno == ENOMEM);
    errno = 0; CHECK(reallocarray(NULL, SIZE_MAX, 2) == NULL && errno == ENOMEM);
    errno = 0; CHECK(calloc(SIZE_MAX, 1) == NULL && errno == ENOMEM);
    errno = 0; CHECK(aligned_alloc(64, SIZE_MAX) == NULL && errno == ENOMEM);
    errno = 0; CHECK(memalign(64, SIZE_MAX / 2) == NULL && errno == ENOMEM);
    errno = 0; CHECK(valloc(SIZE_MAX) == NULL && errno == ENOMEM);
    errno = 0; CHECK(pvalloc(SIZE_MAX) == NULL && errno == ENOMEM);
    errno = 0; CHECK(pvalloc(SIZE_MAX - 4095) == NULL && errno == ENOMEM);
    /* alignments beyond the address space (2^63 once overflowed in debug builds) */
    errno = 0; CHECK(aligned_alloc((size_t)1 << 63, 16) == NULL && errno == ENOMEM);
    errno = 0; CHECK(aligned_alloc((size_t)1 << 63, 0) == NULL && errno == ENOMEM);
    errno = 0; CHECK(aligned_alloc((size_t)1 << 62, 16) == NULL && errno == ENOMEM);
    errno = 0; CHECK(aligned_alloc(0, 16) == NULL && errno == EINVAL);
    errno = 0; CHECK(memalign((size_t)1 << 63, 16) == NULL && errno == ENOMEM);
    errno = 0; CHECK(memalign(((size_t)1 << 63) + 1, 16) == NULL && errno == EINVAL);
    p = memalign(0, 10); CHECK(p && (uintptr_t)p % 8 == 0); free(p);
    p = memalign(1, 10); CHECK(p); free(p);
    /* posix_memalign: errors returned, errno and *out untouched */
    q = (void *)0x1234;
    errno = 1234; CHECK(posix_memalign(&q, (size_t)1 << 63, 16) == ENOMEM && errno == 1234);
    errno = 1234; CHECK(posix_memalign(&q, 64, (size_t)1 << 62) == ENOMEM && errno == 1234);
    errno = 1234; CHECK(posix_memalign(&q, 64, SIZE_MAX) == ENOMEM && errno == 1234);
    errno = 1234; CHECK(posix_memalign(&q, 24, 16) == EINVAL && errno == 1234);
    CHECK(q == (void *)0x1234);
    /* realloc(NULL, 0) is a block; reallocarray(p, 0, n) frees like realloc(p, 0) */
    p = realloc(NULL, 0); CHECK(p); free(p);
    p = malloc(10); CHECK(reallocarray(p, 0, 10) == NULL);
    /* realloc keeps contents through every class and into large and huge blocks */
    {
        size_t n = 1, prev = 0;
        unsigned char *b = NULL;
        for (; n <= ((size_t)8 << 20); n = n * 3 / 2 + 1) {
            b = realloc(b, n); CHECK(b && malloc_usable_size(b) >= n);
            for (size_t i = 0; i < prev; i++) CHECK(b[i] == (unsigned char)i);
            for (size_t i = prev; i < n; i++) b[i] = (unsigned char)i;
            prev = n;
        }
        for (n = prev; n > 1; n = n / 3) { /* and back down */
            b = realloc(b, n); CHECK(b);
            for (size_t i = 0; i < n; i += 13) CHECK(b[i] == (unsigned char)i);
        }
        free(b);
    }
    /* aligned blocks of every alignment and many sizes: aligned, usable >= n */
    for (size_t a = 1; a <= ((size_t)1 << 20); a *= 2)
        for (size_t n = 0; n < 70000; n = n * 2 + 3) {
            unsigned char *b = aligned_alloc(a, n);
            CHECK(b && (uintptr_t)b % a == 0 && malloc_usable_size(b) >= n);
            if (n) { b[0] = 1; b[n - 1] = 1; }
            free(b);
        }
    /* successful calls, free included (POSIX 2024), leave errno alone */
    errno = 77;
    for (size_t n = 1; n < ((size_t)64 << 20); n = n * 3 + 1) {
        void *a = malloc(n), *c = calloc(1, n), *m = memalign(4096, n);
        a = realloc(a, n * 2);
        CHECK(a && c && m);
        free(a); free(c); free(m);
    }
    CHECK(malloc_trim(0) == 1);
    CHECK(errno == 77);
    /* usable size of every small size, and some large */
    CHECK(malloc_usable_size(NULL) == 0);
    for (size_t n = 1; n <= 16384; n++) {
        unsigned char *b = malloc(n);
        CHECK(b);
        size_t u = malloc_usable_size(b);
        CHECK(u >= n);
        if (n >= 16) CHECK((uintptr_t)b % 16 == 0);
        b[0] = 1; b[u - 1] = 2; /* all usable bytes are writable */
        free(b);
    }
    size_t bigs[] = {16385, 65536, 100000, 1 << 20, (1 << 20) + 1, 3 << 20, 50 << 20};
    for (size_t i = 0; i < sizeof bigs / sizeof bigs[0]; i++) {
        unsigned char *b = malloc(bigs[i]);
        CHECK(b && malloc_usable_size(b) >= bigs[i] && (uintptr_t)b % 16 == 0);
        b[bigs[i] - 1] = 1;
        free(b);
    }
    /* cfree (gone from glibc's headers, still exported by hakmem) and malloc_trim */
    void (*cfree_fn)(void *) = (void (*)(void *))dlsym(RTLD_DEFAULT, "cfree");
    CHECK(cfree_fn != NULL);
    cfree_fn(malloc(10));
    CHECK(malloc_trim(0) == 1);
    puts("abi-edges ok");
    return 0;
}
