// libhakmem.so's own operator new and delete (docs/C_ABI.md), every
// variant, called by name so that each one is linked (the test checks the
// program's undefined symbols): memory that works and is aligned; each
// operator resolving to libhakmem.so; libstdc++'s failure semantics
// (new-handler, std::bad_alloc, null from the nothrow forms), which need
// the C++ unwinder to pass through the operators' assembly frames.
//
// argv[1] == "double-delete": a sized delete twice (reported and aborted:
// the test runs it as the misuse cases). Compiled with -fsized-deallocation.
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <malloc.h>
#include <new>
#include <sys/resource.h>

static void check(bool ok, const char *what) {
    if (!ok) {
        std::fprintf(stderr, "operators: FAILED: %s\n", what);
        std::abort();
    }
}

// Keeps the compiler from eliding an allocation or a store.
static void escape(void *p) { asm volatile("" : : "r"(p) : "memory"); }

static void fill(void *p, std::size_t n, unsigned seed) {
    auto *b = static_cast<unsigned char *>(p);
    for (std::size_t i = 0; i < n; i++) b[i] = static_cast<unsigned char>(seed + i * 7);
    escape(p);
}

static bool intact(const void *p, std::size_t n, unsigned seed) {
    escape(const_cast<void *>(p));
    auto *b = static_cast<const unsigned char *>(p);
    for (std::size_t i = 0; i < n; i++)
        if (b[i] != static_cast<unsigned char>(seed + i * 7)) return false;
    return true;
}

static bool aligned(const void *p, std::size_t a) { return reinterpret_cast<std::uintptr_t>(p) % a == 0; }

struct alignas(64) Line {
    char b[64];
};
struct alignas(4096) Page {
    char b[100];
};
static int live_counted = 0;
struct Counted {
    long v[3];
    Counted() { live_counted++; }
    ~Counted() { live_counted--; }
};
struct alignas(64) CountedLine {
    char b[80];
    CountedLine() { live_counted++; }
    ~CountedLine() { live_counted--; }
};

// ---- (a) every variant, memory and alignment --------------------------------

static void every_variant() {
    // new-expressions: the compiler picks the operators (sized deletes for
    // complete types, the aligned ones for alignas(64) and (4096)).
    auto *l = new long(5);
    check(*l == 5, "new long");
    delete l;  // _ZdlPvm
    auto *c = new Counted[7];  // cookie: delete[] knows the size
    check(live_counted == 7, "new Counted[7]");
    delete[] c;  // _ZdaPvm
    check(live_counted == 0, "delete[] Counted");
    auto *bytes = new char[1000];
    fill(bytes, 1000, 1);
    check(intact(bytes, 1000, 1), "new char[1000]");
    delete[] bytes;  // _ZdaPv
    auto *line = new Line;
    check(aligned(line, 64), "new Line: 64-aligned");
    fill(line, sizeof *line, 2);
    check(intact(line, sizeof *line, 2), "new Line");
    delete line;  // _ZdlPvmSt11align_val_t
    auto *lines = new CountedLine[5];
    check(aligned(lines, 64) && live_counted == 5, "new CountedLine[5]");
    delete[] lines;  // _ZdaPvmSt11align_val_t
    auto *page = new Page;
    check(aligned(page, 4096), "new Page: 4096-aligned");
    fill(page, sizeof *page, 3);
    check(intact(page, sizeof *page, 3), "new Page");
    delete page;
    auto *pages = new Page[3];
    check(aligned(pages, 4096), "new Page[3]");
    fill(pages, 3 * sizeof *pages, 4);
    check(intact(pages, 3 * sizeof *pages, 4), "new Page[3] memory");
    delete[] pages;
    auto *nl = new (std::nothrow) long[10];
    check(nl != nullptr, "new (nothrow) long[10]");
    delete[] nl;
    auto *np = new (std::nothrow) Page;
    check(np != nullptr && aligned(np, 4096), "new (nothrow) Page");
    delete np;

    // Each operator by name.
    const std::align_val_t a64{64}, a4k{4096};
    void *p;
    p = ::operator new(24);
    fill(p, 24, 5);
    check(intact(p, 24, 5), "_Znwm");
    ::operator delete(p);
    p = ::operator new[](24);
    ::operator delete[](p);
    p = ::operator new(100, std::nothrow);
    check(p, "_ZnwmRKSt9nothrow_t");
    ::operator delete(p, std::nothrow);
    p = ::operator new[](100, std::nothrow);
    check(p, "_ZnamRKSt9nothrow_t");
    ::operator delete[](p, std::nothrow);
    p = ::operator new(100, a64);
    check(aligned(p, 64), "_ZnwmSt11align_val_t");
    ::operator delete(p, a64);
    p = ::operator new[](100, a4k);
    check(aligned(p, 4096), "_ZnamSt11align_val_t");
    ::operator delete[](p, a4k);
    p = ::operator new(100, a4k, std::nothrow);
    check(p && aligned(p, 4096), "_ZnwmSt11align_val_tRKSt9nothrow_t");
    ::operator delete(p, a4k, std::nothrow);
    p = ::operator new[](100, a64, std::nothrow);
    check(p && aligned(p, 64), "_ZnamSt11align_val_tRKSt9nothrow_t");
    ::operator delete[](p, a64, std::nothrow);
    p = ::operator new(100);
    ::operator delete(p, 100);
    p = ::operator new[](100);
    ::operator delete[](p, 100);
    p = ::operator new(100, a64);
    ::operator delete(p, 100, a64);
    p = ::operator new[](100, a4k);
    ::operator delete[](p, 100, a4k);
    // new(0): a unique block; sized delete of size 0 and of null.
    void *z1 = ::operator new(0), *z2 = ::operator new(0);
    check(z1 && z2 && z1 != z2, "new(0) unique");
    ::operator delete(z1, std::size_t(0));
    ::operator delete(z2);
    ::operator delete(nullptr, 64);
    ::operator delete[](nullptr, 64);
    ::operator delete(nullptr, 64, a64);
    ::operator delete(nullptr);
}

// Sized deletes at every size, kept live side by side: a block freed into
// the class of another size would be handed out again over its neighbours
// (or its usable size would be short), which the patterns show.
static void sized_delete_at_every_size() {
    static const std::size_t sizes[] = {1,    2,     7,     8,     9,      15,      16,       17,
                                        24,   31,    32,    33,    48,     63,      64,       65,
                                        100,  127,   128,   129,   200,    255,     256,      257,
                                        500,  511,   512,   513,   1000,   1023,    1024,     1025,
                                        2000, 2047,  2048,  2049,  3000,   4095,    4096,     4097,
                                        6000, 8191,  8192,  8193,  12000,  16383,   16384,    16385,
                                        30000, 65536, 100000, 262144, 1 << 20, 4 << 20, 40 << 20};
    const std::size_t n = sizeof sizes / sizeof sizes[0];
    static const std::size_t aligns[] = {8, 16, 32, 64, 128, 256, 4096, 65536};
    for (int round = 0; round < 4; round++) {
        void *plain[n], *array[n], *al[n];
        for (std::size_t i = 0; i < n; i++) {
            std::size_t s = sizes[i], a = aligns[i % 8];
            plain[i] = ::operator new(s);
            array[i] = ::operator new[](s);
            al[i] = ::operator new(s, std::align_val_t(a));
            check(malloc_usable_size(plain[i]) >= s, "usable size of new(s)");
            check(malloc_usable_size(al[i]) >= s && aligned(al[i], a), "aligned new(s, a)");
            fill(plain[i], s, unsigned(i));
            fill(array[i], s, unsigned(i + 1));
            fill(al[i], s, unsigned(i + 2));
        }
        for (std::size_t i = 0; i < n; i++) {
            std::size_t s = sizes[i], a = aligns[i % 8];
            check(intact(plain[i], s, unsigned(i)), "pattern of new(s)");
            check(intact(array[i], s, unsigned(i + 1)), "pattern of new[](s)");
            check(intact(al[i], s, unsigned(i + 2)), "pattern of new(s, a)");
            if ((i + round) % 2 == 0) {
                ::operator delete(plain[i], s);
                ::operator delete[](array[i], s);
                ::operator delete(al[i], s, std::align_val_t(a));
            } else {
                ::operator delete(plain[i]);
                ::operator delete[](array[i]);
                ::operator delete[](al[i], s, std::align_val_t(a));
            }
        }
    }
    // Many small blocks of one size freed sized and handed out again.
    for (std::size_t s = 1; s <= 1100; s += 3) {
        void *v[64];
        for (int i = 0; i < 64; i++) {
            v[i] = ::operator new(s);
            fill(v[i], s, unsigned(s + i));
        }
        for (int i = 0; i < 64; i += 2) ::operator delete(v[i], s);
        for (int i = 0; i < 64; i += 2) {
            v[i] = ::operator new(s);
            fill(v[i], s, unsigned(s + i));
        }
        for (int i = 0; i < 64; i++) {
            check(intact(v[i], s, unsigned(s + i)), "small sized round trip");
            ::operator delete(v[i], s);
        }
    }
}

// ---- (b) the operators are libhakmem.so's ------------------------------------

static const char *const names[] = {
    "_Znwm",
    "_Znam",
    "_ZnwmRKSt9nothrow_t",
    "_ZnamRKSt9nothrow_t",
    "_ZnwmSt11align_val_t",
    "_ZnamSt11align_val_t",
    "_ZnwmSt11align_val_tRKSt9nothrow_t",
    "_ZnamSt11align_val_tRKSt9nothrow_t",
    "_ZdlPv",
    "_ZdaPv",
    "_ZdlPvm",
    "_ZdaPvm",
    "_ZdlPvSt11align_val_t",
    "_ZdaPvSt11align_val_t",
    "_ZdlPvmSt11align_val_t",
    "_ZdaPvmSt11align_val_t",
    "_ZdlPvRKSt9nothrow_t",
    "_ZdaPvRKSt9nothrow_t",
    "_ZdlPvSt11align_val_tRKSt9nothrow_t",
    "_ZdaPvSt11align_val_tRKSt9nothrow_t",
};

static bool in_hakmem(const void *f) {
    Dl_info info;
    return f && dladdr(f, &info) && info.dli_fname && std::strstr(info.dli_fname, "libhakmem");
}

static void resolved_to_hakmem() {
    for (const char *name : names) {
        void *f = dlsym(RTLD_DEFAULT, name);
        if (!in_hakmem(f)) {
            Dl_info info{};
            if (f) dladdr(f, &info);
            std::fprintf(stderr, "operators: %s is %p in %s\n", name, f, info.dli_fname ? info.dli_fname : "?");
            check(false, "an operator is not libhakmem.so's");
        }
    }
    // What this program's own calls are bound to (its GOT entries).
    void *(*nw)(std::size_t) = &::operator new;
    void (*dl)(void *, std::size_t) noexcept = &::operator delete;
    void *(*nwa)(std::size_t, std::align_val_t) = &::operator new[];
    check(in_hakmem(reinterpret_cast<void *>(nw)), "&operator new is libhakmem.so's");
    check(in_hakmem(reinterpret_cast<void *>(dl)), "&operator delete(void *, size_t) is libhakmem.so's");
    check(in_hakmem(reinterpret_cast<void *>(nwa)), "&operator new[](size_t, align_val_t) is libhakmem.so's");
    check(reinterpret_cast<void *>(nw) == dlsym(RTLD_DEFAULT, "_Znwm"), "&operator new is dlsym's");
}

// ---- (c) failure: new-handler, bad_alloc, nothrow ----------------------------

static volatile std::size_t huge = std::size_t(1) << 62;
static int handler_calls = 0;

static void throwing_handler() {
    handler_calls++;
    throw std::bad_alloc();
}

// Each throwing form: std::bad_alloc reaches the caller.
template <typename F> static bool throws_bad_alloc(F f) {
    try {
        void *p = f();
        escape(p);
        return false;
    } catch (const std::bad_alloc &) {
        return true;
    }
}

static void failure_semantics() {
    check(std::get_new_handler() == nullptr, "no handler at start");
    // new-expression of a size no address space holds.
    try {
        char *p = new char[huge];
        escape(p);
        check(false, "new char[1 << 62] returned");
    } catch (const std::bad_alloc &e) {
        check(std::strlen(e.what()) > 0, "what()");
    }
    check(throws_bad_alloc([] { return ::operator new(huge); }), "_Znwm throws");
    check(throws_bad_alloc([] { return ::operator new[](huge); }), "_Znam throws");
    check(throws_bad_alloc([] { return ::operator new(huge, std::align_val_t(64)); }), "_ZnwmSt11align_val_t throws");
    check(throws_bad_alloc([] { return ::operator new[](huge, std::align_val_t(4096)); }), "_ZnamSt11align_val_t throws");
    // A bad alignment throws (libstdc++'s rule), also with a handler.
    check(throws_bad_alloc([] { return ::operator new(64, std::align_val_t(3)); }), "align 3 throws");
    check(throws_bad_alloc([] { return ::operator new[](64, std::align_val_t(0)); }), "align 0 throws");
    // Without a handler the nothrow forms give null.
    check(::operator new(huge, std::nothrow) == nullptr, "_ZnwmRKSt9nothrow_t null");
    check(::operator new[](huge, std::nothrow) == nullptr, "_ZnamRKSt9nothrow_t null");
    check(::operator new(huge, std::align_val_t(64), std::nothrow) == nullptr, "aligned nothrow null");
    check(::operator new[](huge, std::align_val_t(64), std::nothrow) == nullptr, "aligned nothrow[] null");
    check(::operator new(64, std::align_val_t(48), std::nothrow) == nullptr, "nothrow align 48 null");
    check(new (std::nothrow) char[huge] == nullptr, "new (nothrow) char[huge]");

    // A handler that throws: called once each time, its exception reaches
    // the caller of a throwing form and is caught by a nothrow form.
    std::set_new_handler(throwing_handler);
    int before = handler_calls;
    check(throws_bad_alloc([] { return ::operator new(huge); }), "_Znwm: the handler's bad_alloc");
    check(throws_bad_alloc([] { return new char[huge]; }), "_Znam: the handler's bad_alloc");
    check(throws_bad_alloc([] { return ::operator new(huge, std::align_val_t(64)); }), "aligned: the handler's");
    check(throws_bad_alloc([] { return ::operator new[](huge, std::align_val_t(64)); }), "aligned[]: the handler's");
    check(handler_calls == before + 4, "the handler called by each throwing form");
    before = handler_calls;
    check(throws_bad_alloc([] { return ::operator new(64, std::align_val_t(3)); }), "align 3 with a handler");
    check(::operator new(64, std::align_val_t(3), std::nothrow) == nullptr, "nothrow align 3 with a handler");
    check(handler_calls == before, "a bad alignment never calls the handler");
    check(::operator new(huge, std::nothrow) == nullptr, "nothrow catches the handler's exception");
    check(::operator new[](huge, std::nothrow) == nullptr, "nothrow[] catches");
    check(::operator new(huge, std::align_val_t(128), std::nothrow) == nullptr, "aligned nothrow catches");
    check(::operator new[](huge, std::align_val_t(128), std::nothrow) == nullptr, "aligned nothrow[] catches");
    check(handler_calls == before + 4, "the handler called by each nothrow form");
    std::set_new_handler(nullptr);
}

// A handler that frees a reserve and returns: the retry succeeds. An
// address-space limit makes the second of two large blocks fail.
static char *reserve = nullptr;
static int reserve_frees = 0;

static void freeing_handler() {
    check(reserve != nullptr, "the handler called once only");
    delete[] reserve;
    reserve = nullptr;
    reserve_frees++;
    malloc_trim(0);  // cached huge mappings go back to the OS too
}

static std::size_t address_space_in_use() {
    FILE *f = std::fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    check(f && std::fscanf(f, "%lu", &pages) == 1, "statm");
    std::fclose(f);
    return pages * 4096;
}

static void retry_after_the_handler() {
    const std::size_t big = std::size_t(128) << 20;
    struct rlimit old;
    check(getrlimit(RLIMIT_AS, &old) == 0, "getrlimit");
    struct rlimit lim = old;
    lim.rlim_cur = address_space_in_use() + big + (std::size_t(96) << 20);
    if (old.rlim_cur != RLIM_INFINITY && old.rlim_cur < lim.rlim_cur) {
        std::puts("note: RLIMIT_AS already set; retry test skipped");
        return;
    }
    check(setrlimit(RLIMIT_AS, &lim) == 0, "setrlimit");
    for (int form = 0; form < 4; form++) {
        reserve = new char[big];
        fill(reserve, 4096, 9);
        // Without the handler's help a second one fails: the limit holds one.
        check(::operator new(big, std::nothrow) == nullptr, "the limit holds one block");
        std::set_new_handler(freeing_handler);
        void *p = nullptr;
        int frees = reserve_frees;
        switch (form) {
        case 0: p = ::operator new(big); break;
        case 1: p = ::operator new[](big, std::nothrow); break;
        case 2: p = ::operator new(big, std::align_val_t(4096)); break;
        case 3: p = ::operator new[](big, std::align_val_t(1 << 16), std::nothrow); break;
        }
        check(p != nullptr, "the retry after the handler");
        check(reserve_frees == frees + 1 && reserve == nullptr, "the handler freed the reserve");
        static_cast<char *>(p)[0] = 1;
        static_cast<char *>(p)[big - 1] = 1;
        if (form < 2) ::operator delete(p, big);
        else ::operator delete(p, big, std::align_val_t(form == 2 ? 4096 : 1 << 16));
        std::set_new_handler(nullptr);
    }
    check(setrlimit(RLIMIT_AS, &old) == 0, "setrlimit back");
}

int main(int argc, char **argv) {
    if (argc > 1 && !std::strcmp(argv[1], "double-delete")) {
        auto *p = new long[4];
        std::printf("misuse-address %p\n", static_cast<void *>(p));
        std::fflush(stdout);
        ::operator delete[](p, 4 * sizeof(long));
        ::operator delete[](p, 4 * sizeof(long));
        auto *a = new long[4], *b = new long[4];
        if (a == b) {
            std::puts("handed out twice");
            return 1;
        }
        std::puts("survived");
        return 0;
    }
    every_variant();
    sized_delete_at_every_size();
    resolved_to_hakmem();
    failure_semantics();
    retry_after_the_handler();
    std::printf("operators ok (handler calls %d, reserve frees %d)\n", handler_calls, reserve_frees);
    return 0;
}
