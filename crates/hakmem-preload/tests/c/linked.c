/* A C program linked against hakmem (libhakmem.a or libhakmem.so, as
 * `cargo xtask install` installs them) and compiled against the installed
 * hakmem.h: hakmem_stats, hakmem_trim, hakmem_print_stats,
 * hakmem_option_get and hakmem_build, with glibc's extensions beside.
 * Run by `cargo xtask test` (xtask/src/install.rs) with
 * HAKMEM_PURGE_DELAY_MS=250 in its environment. Prints "linked ok". */
#include <hakmem.h>

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                               \
    do {                                                                       \
        if (!(c)) {                                                            \
            fprintf(stderr, "linked.c:%d: check failed: %s\n", __LINE__, #c);  \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

static struct hakmem_stats now(void) {
    struct hakmem_stats s;
    size_t known = hakmem_stats(&s, sizeof s);
    CHECK(known == sizeof s);
    return s;
}

enum { SMALL = 1000, LARGE = 10 };

int main(void) {
    /* The library's struct is the header's. */
    CHECK(hakmem_stats(NULL, 0) == sizeof(struct hakmem_stats));

    struct hakmem_stats before = now();
    static char *small[SMALL], *large[LARGE];
    size_t small_usable = 0, large_usable = 0;
    for (int i = 0; i < SMALL; i++) {
        small[i] = malloc(100);
        CHECK(small[i] != NULL);
        memset(small[i], i & 0xff, 100);
        small_usable += malloc_usable_size(small[i]);
    }
    for (int i = 0; i < LARGE; i++) {
        large[i] = malloc(200 << 10);
        CHECK(large[i] != NULL);
        large[i][0] = 1;
        large_usable += malloc_usable_size(large[i]);
    }
    char *huge = malloc(8 << 20);
    CHECK(huge != NULL && malloc_usable_size(huge) >= (8 << 20));
    huge[0] = 1;
    /* The C library's own calls allocate from hakmem too. */
    char *copy = strdup("a string copied by the C library");
    CHECK(copy != NULL && malloc_usable_size(copy) > 0);

    struct hakmem_stats during = now();
    CHECK(during.huge_blocks == before.huge_blocks + 1);
    CHECK(during.huge_in_use_bytes >= before.huge_in_use_bytes + (8 << 20));
    CHECK(during.large_blocks >= before.large_blocks + LARGE);
    CHECK(during.large_in_use_bytes >= before.large_in_use_bytes + large_usable);
    CHECK(during.small_in_use_bytes >= before.small_in_use_bytes + small_usable);
    CHECK(during.in_use_bytes == during.small_in_use_bytes + during.large_in_use_bytes +
                                     during.huge_in_use_bytes);
    CHECK(during.mapped_bytes >= during.huge_in_use_bytes + during.large_in_use_bytes);
    CHECK(during.peak_mapped_bytes >= during.mapped_bytes);
    CHECK(during.regions_live >= 1 && during.slabs_in_use >= 1);
    CHECK(during.invalid_frees == 0);
    /* The same figures as glibc's extension API. */
    struct mallinfo2 mi = mallinfo2();
    CHECK(mi.hblks == during.huge_blocks);
    CHECK(mi.hblkhd == during.huge_in_use_bytes);
    printf("during: in_use_bytes=%zu small=%zu large=%zu huge=%zu huge_blocks=%zu\n",
           during.in_use_bytes, during.small_in_use_bytes, during.large_in_use_bytes,
           during.huge_in_use_bytes, during.huge_blocks);

    for (int i = 0; i < SMALL; i++) {
        CHECK(small[i][99] == (char)(i & 0xff));
        free(small[i]);
    }
    for (int i = 0; i < LARGE; i++)
        free(large[i]);
    free(huge);
    free(copy);
    struct hakmem_stats after = now();
    CHECK(after.huge_blocks == before.huge_blocks);
    CHECK(after.large_blocks == before.large_blocks);
    CHECK(after.huge_in_use_bytes == before.huge_in_use_bytes);
    hakmem_trim();
    CHECK(now().releasable_bytes == 0);

    /* A caller that knows fewer fields gets those; one that knows more
     * gets zeros past the library's. */
    size_t two[2] = {0, 0}, more[sizeof(struct hakmem_stats) / sizeof(size_t) + 2];
    memset(more, 0xff, sizeof more);
    CHECK(hakmem_stats((struct hakmem_stats *)two, sizeof two) == sizeof(struct hakmem_stats));
    CHECK(two[0] > 0 && two[1] >= two[0]);
    CHECK(hakmem_stats((struct hakmem_stats *)more, sizeof more) ==
          sizeof(struct hakmem_stats));
    CHECK(more[sizeof more / sizeof more[0] - 1] == 0 && more[sizeof more / sizeof more[0] - 2] == 0);

    /* Options: the environment's, and mallopt's. */
    size_t v = 0;
    CHECK(hakmem_option_get("HAKMEM_PURGE_DELAY_MS", &v) == 0 && v == 250);
    CHECK(hakmem_option_get("HAKMEM_FAST_MAX_BATCH", &v) == 0 && v == 32);
    CHECK(mallopt(M_TRIM_THRESHOLD, 123456) == 1);
    CHECK(hakmem_option_get("HAKMEM_PURGE_THRESHOLD", &v) == 0 && v == 123456);
    errno = 0;
    v = 7;
    CHECK(hakmem_option_get("HAKMEM_NO_SUCH_OPTION", &v) == -1 && errno == EINVAL && v == 7);
    CHECK(hakmem_option_get(NULL, &v) == -1);

    printf("build %s\n", hakmem_build());
    fflush(stdout);
    hakmem_print_stats(1);
    printf("linked ok\n");
    return 0;
}
