// cxx-larson SECONDS MIN_SIZE MAX_SIZE CHUNKS_PER_THREAD ROUNDS SEED THREADS
//
// Larson's server simulation (Larson & Krishnan, ISMM 1998) through C++
// `operator new` and `operator delete`, with the arguments of the Rust
// `larson` workload. Each of THREADS worker arrays holds CHUNKS live
// blocks; a worker thread ROUNDS x CHUNKS times deletes the block in a
// random slot and puts a new one of a random size in MIN_SIZE..=MAX_SIZE
// there, writing its first and last byte. Then it hands the array to a new
// thread and exits, so blocks are deleted by threads other than the ones
// that allocated them, and threads come and go. Every finished thread is
// joined (by a reaper thread) and the threads created are counted, as in
// the Rust version.
//
// Blocks come and go through `std::allocator<unsigned char>`, the path of
// the standard containers, so the compiler's flag decides which `operator
// delete` runs: built with `-fno-sized-deallocation` (workload
// `cxx-larson`) `operator delete(void*)`, with `-fsized-deallocation`
// (`cxx-larson-sized`, the default of C++14 and later) `operator
// delete(void*, std::size_t)`, which an allocator can serve without
// looking the size up. (Not `delete` of objects of a class per size: the
// dispatch to the class of a random size is an indirect branch that
// mispredicts on every op, and cost as much as the allocator.) One op is
// one delete plus one new.
#include <atomic>
#include <cstddef>
#include <deque>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "bench.h"

#ifdef __cpp_sized_deallocation
#define WORKLOAD "cxx-larson-sized"
#define SIZED 1
#else
#define WORKLOAD "cxx-larson"
#define SIZED 0
#endif

namespace {

// Blocks come from `std::allocator`, as those of the standard containers
// do: `allocate(n)` is `::operator new(n)`, `deallocate(p, n)` is
// `::operator delete(p, n)` when sized deallocation is on and
// `::operator delete(p)` when it is off (libstdc++'s `new_allocator`).
std::allocator<unsigned char> blocks;

inline unsigned char *make(std::size_t size) {
    unsigned char *p = blocks.allocate(size);
    bench_touch(p, size);
    return p;
}

inline void destroy(unsigned char *p, std::size_t size) { blocks.deallocate(p, size); }

struct Config {
    std::size_t min_size, max_size, chunks, rounds, threads;
    uint64_t seed;
};

struct Heap {
    std::vector<unsigned char *> blocks;
    std::vector<std::size_t> sizes;
    bench_rng rng;
};

Config config;
std::atomic<bool> stop{false};
std::atomic<bool> spawn_failed{false};
std::atomic<uint64_t> total_ops{0};
std::atomic<uint64_t> created{0};

// The reaper's queue: threads to join, oldest first (a thread is queued
// when it is created, so the oldest has most likely exited; joining a
// newer, running one first would let exited threads and their stacks pile
// up), and how many chains have ended.
pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
std::deque<pthread_t> *to_join;
std::size_t chains_ended = 0;
uint64_t joined = 0;

void hand_over(pthread_t t) {
    pthread_mutex_lock(&lock);
    to_join->push_back(t);
    pthread_cond_signal(&cond);
    pthread_mutex_unlock(&lock);
}

void chain_ended() {
    pthread_mutex_lock(&lock);
    chains_ended++;
    pthread_cond_signal(&cond);
    pthread_mutex_unlock(&lock);
}

void free_heap(Heap *h) {
    for (std::size_t i = 0; i < h->blocks.size(); i++) {
        destroy(h->blocks[i], h->sizes[i]);
    }
    delete h;
}

void *work(void *arg) {
    Heap *h = static_cast<Heap *>(arg);
    const std::size_t n = config.chunks * config.rounds;
    uint64_t done = 0;
    for (std::size_t k = 0; k < n; k++) {
        std::size_t i = bench_below(&h->rng, config.chunks);
        destroy(h->blocks[i], h->sizes[i]);
        std::size_t size = bench_range(&h->rng, config.min_size, config.max_size);
        h->blocks[i] = make(size);
        h->sizes[i] = size;
        done++;
        if (stop.load(std::memory_order_relaxed)) {
            break;
        }
    }
    total_ops.fetch_add(done, std::memory_order_relaxed);
    if (stop.load(std::memory_order_relaxed)) {
        free_heap(h);
        chain_ended();
        return nullptr;
    }
    pthread_t next;
    if (pthread_create(&next, nullptr, work, h) != 0) {
        spawn_failed.store(true);
        stop.store(true);
        free_heap(h);
        chain_ended();
        return nullptr;
    }
    created.fetch_add(1, std::memory_order_relaxed);
    hand_over(next);
    return nullptr;
}

void *reap(void *) {
    pthread_mutex_lock(&lock);
    for (;;) {
        if (!to_join->empty()) {
            pthread_t t = to_join->front();
            to_join->pop_front();
            pthread_mutex_unlock(&lock);
            pthread_join(t, nullptr);
            joined++;
            pthread_mutex_lock(&lock);
        } else if (chains_ended == config.threads) {
            break;
        } else {
            pthread_cond_wait(&cond, &lock);
        }
    }
    pthread_mutex_unlock(&lock);
    return nullptr;
}

}  // namespace

int main(int argc, char **argv) {
    bench_args(argc, argv, 7,
               "cxx-larson SECONDS MIN_SIZE MAX_SIZE CHUNKS_PER_THREAD ROUNDS SEED THREADS");
    double seconds = bench_seconds(argv);
    config.min_size = bench_u64(argv, 1, "MIN_SIZE", 1);
    config.max_size = bench_u64(argv, 2, "MAX_SIZE", config.min_size);
    config.chunks = bench_u64(argv, 3, "CHUNKS_PER_THREAD", 1);
    config.rounds = bench_u64(argv, 4, "ROUNDS", 1);
    config.seed = bench_u64(argv, 5, "SEED", 0);
    config.threads = bench_u64(argv, 6, "THREADS", 1);
    to_join = new std::deque<pthread_t>();

    // The warm-up: the main thread fills every array, as the original does.
    std::vector<Heap *> heaps;
    for (std::size_t t = 0; t < config.threads; t++) {
        Heap *h = new Heap;
        h->rng = bench_rng_new(config.seed + t);
        h->blocks.resize(config.chunks);
        h->sizes.resize(config.chunks);
        for (std::size_t i = 0; i < config.chunks; i++) {
            std::size_t size = bench_range(&h->rng, config.min_size, config.max_size);
            h->blocks[i] = make(size);
            h->sizes[i] = size;
        }
        heaps.push_back(h);
    }

    pthread_t reaper = bench_spawn(reap, nullptr);
    double t0 = bench_now();
    for (Heap *h : heaps) {
        hand_over(bench_spawn(work, h));
        created.fetch_add(1, std::memory_order_relaxed);
    }
    double deadline = t0 + seconds;
    while (!stop.load() && bench_now() < deadline) {
        double next = bench_now() + 0.01;
        bench_sleep_until(next < deadline ? next : deadline);
    }
    stop.store(true);
    pthread_join(reaper, nullptr);
    double elapsed = bench_now() - t0;
    if (spawn_failed.load()) {
        fprintf(stderr, "error: a thread could not be created after %llu threads\n",
                     (unsigned long long)created.load());
        return 1;
    }
    uint64_t ops = total_ops.load();
    uint64_t c = created.load();
#if SIZED
    void *del = reinterpret_cast<void *>(
        static_cast<void (*)(void *, std::size_t) noexcept>(&::operator delete));
#else
    void *del = reinterpret_cast<void *>(static_cast<void (*)(void *) noexcept>(&::operator delete));
#endif
    void *nw = reinterpret_cast<void *>(static_cast<void *(*)(std::size_t)>(&::operator new));
    char extra[1024];
    snprintf(extra, sizeof extra,
             "threads created=%llu joined=%llu ops/thread=%llu, sized_delete=%d, new_from=%s, "
             "delete_from=%s",
             (unsigned long long)c, (unsigned long long)joined,
             (unsigned long long)(c != 0 ? ops / c : 0), SIZED, bench_object_of(nw),
             bench_object_of(del));
    bench_result(WORKLOAD, ops, elapsed, extra);
    delete to_join;
    return 0;
}
