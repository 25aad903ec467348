/* libhakmem.so loaded with dlopen after start-up (not preloaded): the
 * library must load (its initial-exec TLS has to fit glibc's static TLS
 * surplus) and its malloc/free, reached through dlsym, must serve threads
 * that start before and after the load. The program's own malloc stays
 * glibc's. Exits 0 and prints "dlopen ok" on success. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *(*hk_malloc)(size_t);
static void (*hk_free)(void *);
static size_t (*hk_usable)(void *);

static pthread_barrier_t loaded;

static void *work(void *arg);

/* Started before the load: waits until the library is there. */
static void *early_work(void *arg) {
    pthread_barrier_wait(&loaded);
    return work(arg);
}

static void *work(void *arg) {
    (void)arg;
    enum { N = 2000 };
    static __thread void *live[N];
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < N; i++) {
            size_t size = 8 + (size_t)(i * 37 % 4000);
            char *p = hk_malloc(size);
            if (p == NULL || hk_usable(p) < size)
                abort();
            memset(p, i & 0xff, size);
            live[i] = p;
        }
        for (int i = 0; i < N; i++)
            hk_free(live[i]);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: dlopen /path/to/libhakmem.so\n");
        return 2;
    }
    /* A thread that exists before the library does. */
    pthread_t early;
    pthread_barrier_init(&loaded, NULL, 2);
    pthread_create(&early, NULL, early_work, NULL);
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        fprintf(stderr, "dlopen failed: %s\n", dlerror());
        return 1;
    }
    hk_malloc = (void *(*)(size_t))dlsym(h, "malloc");
    hk_free = (void (*)(void *))dlsym(h, "free");
    hk_usable = (size_t(*)(void *))dlsym(h, "malloc_usable_size");
    if (!hk_malloc || !hk_free || !hk_usable) {
        fprintf(stderr, "dlsym failed\n");
        return 1;
    }
    pthread_barrier_wait(&loaded);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, work, NULL);
    work(NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    pthread_join(early, NULL);
    printf("dlopen ok\n");
    return 0;
}
