/* libhakmem.so's C++ operators in a process without libstdc++: their weak
 * references to it are null. They allocate and free; the nothrow forms
 * give null on failure; a throwing form that fails (argv[1] == "throwing")
 * has no std::bad_alloc to throw, so it reports and aborts. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Weak: the program links without libstdc++ and stops with status 2 when
 * nothing defines them. */
void *_Znwm(size_t) __attribute__((weak));
void *_ZnamRKSt9nothrow_t(size_t, const void *) __attribute__((weak));
void *_ZnwmSt11align_val_tRKSt9nothrow_t(size_t, size_t, const void *) __attribute__((weak));
void *_ZnamSt11align_val_t(size_t, size_t) __attribute__((weak));
void _ZdlPvm(void *, size_t) __attribute__((weak));
void _ZdaPv(void *) __attribute__((weak));
void _ZdaPvmSt11align_val_t(void *, size_t, size_t) __attribute__((weak));

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "cxx_from_c: FAILED: %s\n", what);
        _Exit(1);
    }
}

int main(int argc, char **argv) {
    if (!_Znwm || !_ZnamRKSt9nothrow_t || !_ZnwmSt11align_val_tRKSt9nothrow_t || !_ZnamSt11align_val_t ||
        !_ZdlPvm || !_ZdaPv || !_ZdaPvmSt11align_val_t) {
        puts("no C++ operators");
        return 2;
    }
    const size_t huge = (size_t)1 << 62;
    if (argc > 1 && !strcmp(argv[1], "throwing")) {
        puts("reached");
        fflush(stdout);
        void *p = _Znwm(huge);
        printf("survived %p\n", p);
        return 0;
    }
    char *p = _Znwm(100);
    memset(p, 1, 100);
    _ZdlPvm(p, 100);
    p = _ZnamSt11align_val_t(5000, 4096);
    check(((uintptr_t)p & 4095) == 0, "aligned new[]");
    memset(p, 2, 5000);
    _ZdaPvmSt11align_val_t(p, 5000, 4096);
    check(_ZnamRKSt9nothrow_t(huge, NULL) == NULL, "nothrow new[] of 2^62");
    check(_ZnwmSt11align_val_tRKSt9nothrow_t(huge, 64, NULL) == NULL, "aligned nothrow new of 2^62");
    check(_ZnwmSt11align_val_tRKSt9nothrow_t(64, 3, NULL) == NULL, "aligned nothrow new, align 3");
    p = _ZnamRKSt9nothrow_t(10, NULL);
    check(p != NULL, "nothrow new[]");
    _ZdaPv(p);
    puts("cxx-from-c ok");
    return 0;
}
