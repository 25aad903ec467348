/*
 * hakmem.h: hakmem's own C calls, and glibc's <malloc.h> extension API,
 * which libhakmem.so and libhakmem.a (and a Rust binary built with the
 * `hakmem` crate's `override` feature) export with hakmem's figures.
 *
 * malloc, free, calloc, realloc and the rest of the standard set need no
 * header of hakmem's: <stdlib.h> declares them, and linking hakmem (or
 * LD_PRELOAD) makes them hakmem's. See docs/C_ABI.md.
 *
 *     cc app.c $(pkg-config --cflags --libs hakmem)                  (shared)
 *     cc -static app.c $(pkg-config --cflags --libs --static hakmem)  (static)
 *
 * Licensed under either of the Apache License, Version 2.0 or the MIT
 * license, at your option.
 */
#ifndef HAKMEM_H
#define HAKMEM_H

#include <stddef.h>
#include <stdio.h> /* FILE, for malloc_info; on glibc, also __GLIBC__ */

#ifdef __cplusplus
extern "C" {
#endif

/* Functions that cannot throw: glibc's marking where there is one (a
 * declaration of ours must match glibc's in C++), else none. */
#ifdef __THROW
#define HAKMEM_NOTHROW __THROW
#else
#define HAKMEM_NOTHROW
#endif

/* ---- hakmem's own calls ---------------------------------------------- */

/* The statistics, every field a size_t. Fields are only ever appended, so
 * a program and a library built from different versions of this header
 * agree on the fields both know (see hakmem_stats). */
struct hakmem_stats {
    size_t mapped_bytes;       /* mapped from the OS now: regions, huge blocks */
    size_t peak_mapped_bytes;  /* the most mapped at once */
    size_t in_use_bytes;       /* in use by the program: the next three */
    size_t small_in_use_bytes; /*   small blocks, at their class's block size */
    size_t large_in_use_bytes; /*   large blocks, as whole runs of 64 KiB slabs */
    size_t huge_in_use_bytes;  /*   huge blocks, as their whole mappings */
    size_t free_bytes;         /* free bytes held (mallinfo2's fordblks) */
    size_t releasable_bytes;   /* what hakmem_trim gives back now (keepcost) */
    size_t metadata_bytes;     /* permanent metadata: heaps, caches */
    size_t regions_live;       /* 2 MiB regions mapped now */
    size_t regions_mapped;     /* regions mapped since start */
    size_t regions_released;   /* regions given back since start */
    size_t slabs_in_use;       /* 64 KiB slabs of small blocks in use */
    size_t large_blocks;       /* large blocks in use (above 16 KiB, to 1 MiB) */
    size_t huge_blocks;        /* huge blocks in use (a mapping each) */
    size_t peak_huge_blocks;   /* the most huge blocks live at once */
    size_t huge_mapped;        /* huge blocks mapped since start */
    size_t slabs_purged;       /* slabs purged (MADV_DONTNEED) since start */
    size_t heaps_created;      /* per-thread heaps created since start */
    size_t slabs_abandoned;    /* slabs left by exiting threads */
    size_t slabs_adopted;      /* of those, taken over by other threads */
    size_t remote_frees;       /* blocks freed by a thread not their slab's owner */
    size_t invalid_frees;      /* invalid frees reported */
    size_t out_of_memory;      /* allocations that returned null for lack of memory */
};

/* Fills the first `size` bytes at `out` (pass sizeof *out) with the
 * statistics now and returns sizeof(struct hakmem_stats) as the library
 * has it: fields past the library's are zeroed, and a smaller return than
 * `size` says which. A null `out` only returns the size. Cold: it walks
 * the calling thread's slabs, as mallinfo2 does. */
size_t hakmem_stats(struct hakmem_stats *out, size_t size) HAKMEM_NOTHROW;

/* Gives back to the OS everything hakmem can reach: the calling thread's
 * cached blocks, empty slabs, retained regions, cached huge mappings (the
 * same as malloc_trim). */
void hakmem_trim(void) HAKMEM_NOTHROW;

/* Writes a heap profile (docs/PROFILING.md) to `path`, or, for NULL, to
 * HAKMEM_PROF_FILE's next name; 0 when written, -1 when the profiler is off
 * (HAKMEM_PROF unset) or the file could not be written. */
int hakmem_prof_dump(const char *path) HAKMEM_NOTHROW;

/* Writes the "hakmem: stats:" summary, the one HAKMEM_STATS=1 prints at
 * exit, to file descriptor `fd` (2 for stderr). */
void hakmem_print_stats(int fd) HAKMEM_NOTHROW;

/* Stores the value in force of the option `name` ("HAKMEM_PURGE_DELAY_MS",
 * ...; docs/OPTIONS.md) in *value and returns 0; -1 with EINVAL for a name
 * hakmem does not have. Numbers are as they are, switches 0 or 1,
 * HAKMEM_INVALID_FREE 0 (abort) or 1 (ignore), HAKMEM_SECURE_POISON 0
 * (off), 1 (line) or 2 (full), HAKMEM_THP 0 (system), 1 (off),
 * 2 (huge) or 3 (all);
 * HAKMEM_PURGE_THRESHOLD as mallopt's
 * M_TRIM_THRESHOLD last set it, if it did. */
int hakmem_option_get(const char *name, size_t *value) HAKMEM_NOTHROW;

/* The build's feature combination, as the exit statistics' build= shows
 * it ("hakmem+box-refactor+fast-path" by default): a static string. */
const char *hakmem_build(void) HAKMEM_NOTHROW;

/* ---- C23's sized frees (not in every C library's <stdlib.h>) ---------- */

void free_sized(void *p, size_t size) HAKMEM_NOTHROW;
void free_aligned_sized(void *p, size_t alignment, size_t size) HAKMEM_NOTHROW;

/* ---- glibc's <malloc.h> extension API, with hakmem's figures ---------- */

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
/* glibc's own declarations (struct mallinfo2 arrived in 2.33): including
 * <malloc.h> before or after this header is then no redefinition. */
#ifdef __cplusplus
} /* extern "C" */
#endif
#include <malloc.h>
#ifdef __cplusplus
extern "C" {
#endif
#else
/* Another C library: glibc's layouts and numbers, for hakmem's functions. */
#ifndef HAKMEM_MALLINFO_DEFINED
#define HAKMEM_MALLINFO_DEFINED
struct mallinfo2 {
    size_t arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost;
};
struct mallinfo {
    int arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost;
};
#endif
#ifndef M_TRIM_THRESHOLD
#define M_MXFAST 1
#define M_TRIM_THRESHOLD -1
#define M_TOP_PAD -2
#define M_MMAP_THRESHOLD -3
#define M_MMAP_MAX -4
#define M_CHECK_ACTION -5
#define M_PERTURB -6
#define M_ARENA_TEST -7
#define M_ARENA_MAX -8
#endif
struct mallinfo2 mallinfo2(void);
struct mallinfo mallinfo(void);
void malloc_stats(void);
int malloc_info(int options, FILE *fp);
int mallopt(int param, int value);
int malloc_trim(size_t pad);
size_t malloc_usable_size(void *p);
#endif

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* HAKMEM_H */
