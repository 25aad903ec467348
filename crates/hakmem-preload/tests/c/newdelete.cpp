// C++ new/delete under hakmem: operator new's memory is hakmem's (its own
// operators, libhakmem.so's; operators.cpp tests every variant).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <malloc.h>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

extern "C" size_t malloc_usable_size(void *);

int main() {
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; t++)
        ts.emplace_back([t] {
            std::map<int, std::string> m;
            for (int i = 0; i < 20000; i++) m[i] = std::string(i % 50, 'a' + t);
            for (int i = 0; i < 20000; i += 2) m.erase(i);
            if (m.size() != 10000) std::abort();
        });
    for (auto &t : ts) t.join();
    auto *x = new long[1000];
    // Freeing operator new's block with free() only works if both are ours;
    // hakmem would report a foreign pointer otherwise.
    std::free(x);
    // A huge block from new[]: hakmem's malloc_usable_size knows it (it
    // answers 0 for memory it does not own), and delete[] must give it back
    // through hakmem's free: the test reads huge_in_use=0 in the exit stats.
    char *big = new char[40 << 20];
    big[0] = 1;
    big[(40 << 20) - 1] = 1;
    if (malloc_usable_size(big) < (40 << 20)) std::abort();
    delete[] big;
    // Over-aligned new (C++17): hakmem's aligned operator new.
    struct alignas(4096) Page { char b[100]; };
    Page *pg = new Page[3];
    if (reinterpret_cast<std::uintptr_t>(pg) % 4096 != 0 || malloc_usable_size(pg) < 3 * sizeof(Page))
        std::abort();
    delete[] pg;
    auto u = std::make_unique<std::string>(1000, 'z');
    std::printf("newdelete ok %zu\n", malloc_usable_size(u.get()) >= sizeof(std::string) ? (size_t)1 : (size_t)0);
    return 0;
}
