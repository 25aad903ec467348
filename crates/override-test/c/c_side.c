/* The C library of the override test: it allocates and frees with the
 * plain C calls, which the Rust binary linking it (the `hakmem` crate's
 * `override` feature) makes hakmem's, and asks hakmem through hakmem.h
 * for its own view. Nothing here knows about Rust. */
#define _GNU_SOURCE
#include <hakmem.h>

#include <stdlib.h>
#include <string.h>

/* `n` bytes from malloc, each `fill`; null when malloc gives null. */
void *c_alloc(size_t n, unsigned char fill) {
    unsigned char *p = malloc(n);
    if (p != NULL)
        memset(p, fill, n);
    return p;
}

/* `n` zeroed bytes from calloc, grown to `m` by realloc (the new bytes
 * filled with 0x5a). */
void *c_calloc_realloc(size_t n, size_t m) {
    unsigned char *p = calloc(1, n);
    if (p == NULL)
        return NULL;
    unsigned char *q = realloc(p, m);
    if (q == NULL) {
        free(p);
        return NULL;
    }
    if (m > n)
        memset(q + n, 0x5a, m - n);
    return q;
}

/* `n` bytes aligned to `align`, from posix_memalign. */
void *c_aligned(size_t align, size_t n) {
    void *p = NULL;
    return posix_memalign(&p, align, n) == 0 ? p : NULL;
}

/* A copy of `s` made by the C library (strdup calls malloc inside it). */
char *c_strdup(const char *s) {
    return strdup(s);
}

/* Frees a block from anyone's malloc. */
void c_free(void *p) {
    free(p);
}

/* 1 when the `n` bytes at `p` are all `fill`. */
int c_check(const void *p, size_t n, unsigned char fill) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != fill)
            return 0;
    return 1;
}

/* The bytes usable at `p`, as C sees them. */
size_t c_usable_size(void *p) {
    return malloc_usable_size(p);
}

/* Huge blocks in use, through hakmem.h's hakmem_stats. */
size_t c_huge_blocks(void) {
    struct hakmem_stats s;
    if (hakmem_stats(&s, sizeof s) != sizeof s)
        return (size_t)-1;
    return s.huge_blocks;
}

/* The build's name, through hakmem.h. */
const char *c_build(void) {
    return hakmem_build();
}
