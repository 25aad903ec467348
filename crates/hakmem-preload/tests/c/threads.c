/* Every ABI function from several threads, blocks freed by other threads,
 * contents checked. */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 4
#define SLOTS 4096
#define ROUNDS 60000

struct slot { unsigned char *p; size_t n; unsigned char tag; };
static struct slot shared[THREADS][SLOTS];
static pthread_mutex_t locks[THREADS];
static int failed;

static uint64_t next(uint64_t *s) { *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17; return *s; }

static unsigned char *make(uint64_t r, size_t n) {
    void *p = NULL;
    switch (r % 8) {
    case 0: p = calloc(1, n); break;
    case 1: p = aligned_alloc(64, n); break;
    case 2: if (posix_memalign(&p, 128, n)) p = NULL; break;
    case 3: p = memalign(32, n); break;
    case 4: p = reallocarray(NULL, n, 1); break;
    case 5: p = valloc(n); break;
    default: p = malloc(n); break;
    }
    return p;
}

static void check_free(struct slot *s) {
    if (!s->p) return;
    for (size_t i = 0; i < s->n; i += 7)
        if (s->p[i] != s->tag) { __atomic_store_n(&failed, 1, __ATOMIC_SEQ_CST); break; }
    if (malloc_usable_size(s->p) < s->n) failed = 1;
    free(s->p);
    s->p = NULL;
}

static void *work(void *arg) {
    int me = (int)(intptr_t)arg;
    uint64_t seed = 0x9E3779B97F4A7C15ull * (me + 1);
    for (int i = 0; i < ROUNDS; i++) {
        uint64_t r = next(&seed);
        int victim = (int)(r % THREADS);          /* any thread's slots: cross-thread frees */
        int slot = (int)((r >> 8) % SLOTS);
        size_t n = (r >> 20) % 100 == 0 ? 20000 + (r >> 32) % 300000 : 1 + (r >> 32) % 600;
        pthread_mutex_lock(&locks[victim]);
        struct slot *s = &shared[victim][slot];
        if (s->p && (r >> 40) % 4 == 0) {        /* grow or shrink in place or not */
            unsigned char *q = realloc(s->p, n);
            if (!q) { failed = 1; pthread_mutex_unlock(&locks[victim]); continue; }
            size_t keep = s->n < n ? s->n : n;
            for (size_t k = 0; k < keep; k += 7) if (q[k] != s->tag) failed = 1;
            s->p = q;
        } else {
            check_free(s);
            s->p = make(r, n);
            if (!s->p) { failed = 1; pthread_mutex_unlock(&locks[victim]); continue; }
        }
        s->n = n;
        s->tag = (unsigned char)(r >> 56);
        memset(s->p, s->tag, n);
        pthread_mutex_unlock(&locks[victim]);
    }
    return NULL;
}

int main(void) {
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) pthread_mutex_init(&locks[i], NULL);
    for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, work, (void *)(intptr_t)i);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < THREADS; i++) for (int j = 0; j < SLOTS; j++) check_free(&shared[i][j]);
    if (failed) { puts("threads FAILED"); return 1; }
    puts("threads ok");
    return 0;
}
