// C++ new/delete go through malloc/free: operator new's memory is hakmem's.
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
    auto u = std::make_unique<std::string>(1000, 'z');
    std::printf("newdelete ok %zu\n", malloc_usable_size(u.get()) >= sizeof(std::string) ? (size_t)1 : (size_t)0);
    return 0;
}
