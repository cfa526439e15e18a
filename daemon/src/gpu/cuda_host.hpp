// The small part of the CUDA C language and runtime that kernels/*.cu use,
// for the host compiler, so tests can run those exact sources on the CPU
// (see cuda_host.rs). Blocks run one after another on the calling thread;
// the threads of a block run one after another too, or, for a kernel that
// calls __syncthreads, as fibers that all stop at each barrier. A launch
// can run its blocks and threads in reverse order, so the caller can tell
// a result that depends on the order (a race on a GPU). Buffers end at a
// guard page, and a fault inside a kernel comes back as an error instead
// of killing the process.

#include <cmath>
#include <csetjmp>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <utility>
#include <vector>

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

struct uint3 {
    unsigned x, y, z;
};
typedef uint3 dim3;

thread_local uint3 threadIdx, blockIdx;
thread_local dim3 blockDim, gridDim;

#define __global__
#define __device__ static inline
#define __forceinline__
// One block runs at a time on a thread, so a block's shared memory can be a
// per-thread static.
#define __shared__ static thread_local

static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
// Leading zero bits, 32 for 0, as CUDA's intrinsic.
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }

namespace argus_host {

const size_t PAGE = 4096;
const size_t FIBER_STACK = 64 * 1024;

size_t pages(size_t bytes) { return (bytes + PAGE - 1) / PAGE * PAGE; }

// --- Faults -----------------------------------------------------------------

thread_local sigjmp_buf escape;
thread_local volatile sig_atomic_t in_kernel = 0;
thread_local void* volatile fault_at = nullptr;
struct sigaction previous_segv, previous_bus;

void on_fault(int sig, siginfo_t* info, void* uc) {
    if (in_kernel) {
        in_kernel = 0;
        fault_at = info->si_addr;
        siglongjmp(escape, 1);
    }
    // Not ours (Rust's stack-overflow handler, or a real crash): pass it on.
    struct sigaction* prev = sig == SIGSEGV ? &previous_segv : &previous_bus;
    if (prev->sa_flags & SA_SIGINFO) {
        prev->sa_sigaction(sig, info, uc);
    } else if (prev->sa_handler == SIG_DFL || prev->sa_handler == SIG_IGN) {
        signal(sig, SIG_DFL);
        raise(sig);
    } else {
        prev->sa_handler(sig);
    }
}

void install_fault_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &previous_segv);
        sigaction(SIGBUS, &sa, &previous_bus);
    });
}

// --- Fibers, for kernels with barriers --------------------------------------

struct Fiber {
    ucontext_t ctx;
    uint3 tid;
    bool done, at_barrier;
};

thread_local Fiber* fibers = nullptr;
thread_local unsigned fiber_count = 0, current = 0;
thread_local ucontext_t scheduler;
thread_local char* stacks = nullptr;
thread_local size_t stacks_for = 0;
thread_local void (*body)(void*) = nullptr;
thread_local void* body_arg = nullptr;

void fiber_main() {
    body(body_arg);
    fibers[current].done = true;
    // Returning resumes `scheduler` through uc_link.
}

char* stack_of(unsigned i) {
    // Each stack sits above a guard page, so an overflow faults.
    return stacks + i * (FIBER_STACK + PAGE) + PAGE;
}

bool ensure_stacks(unsigned n) {
    if (stacks_for >= n) return true;
    if (stacks) munmap(stacks, stacks_for * (FIBER_STACK + PAGE));
    size_t len = n * (FIBER_STACK + PAGE);
    void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        stacks = nullptr;
        stacks_for = 0;
        return false;
    }
    stacks = (char*)m;
    stacks_for = n;
    for (unsigned i = 0; i < n; i++) mprotect(stacks + i * (FIBER_STACK + PAGE), PAGE, PROT_NONE);
    return true;
}

// Runs every thread of the current block as a fiber; each runs until its
// next barrier, then the next one does, until all have returned. A barrier
// that some threads of the block never reach is an error.
const char* run_block_fibers(std::vector<Fiber>& fs) {
    unsigned n = (unsigned)fs.size();
    if (!ensure_stacks(n)) return "no memory for the fibers' stacks";
    fibers = fs.data();
    fiber_count = n;
    for (unsigned i = 0; i < n; i++) {
        Fiber& f = fs[i];
        f.done = false;
        f.at_barrier = false;
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = stack_of(i);
        f.ctx.uc_stack.ss_size = FIBER_STACK;
        f.ctx.uc_link = &scheduler;
        makecontext(&f.ctx, fiber_main, 0);
    }
    for (;;) {
        unsigned waiting = 0, finished = 0;
        for (unsigned i = 0; i < n; i++) {
            Fiber& f = fs[i];
            if (f.done) {
                finished++;
                continue;
            }
            f.at_barrier = false;
            current = i;
            threadIdx = f.tid;
            swapcontext(&scheduler, &f.ctx);
            if (f.done)
                finished++;
            else
                waiting++;
        }
        if (waiting == 0) return nullptr;
        if (finished != 0) return "__syncthreads reached by only some threads of a block";
    }
}

} // namespace argus_host

static void __syncthreads() {
    using namespace argus_host;
    if (!fibers) return;
    Fiber& f = fibers[current];
    f.at_barrier = true;
    swapcontext(&f.ctx, &scheduler);
    // Resumed by the scheduler, which set threadIdx back to ours.
}

namespace argus_host {

template <class P, class... B, size_t... I>
void call(void (*kernel)(P, B*...), const unsigned* words, void* const* bufs,
          std::index_sequence<I...>) {
    P p;
    memcpy(&p, words, sizeof(P));
    kernel(p, static_cast<B*>(bufs[I])...);
}

template <class F> void trampoline(void* f) { (*static_cast<F*>(f))(); }

// The `i`th of `n` indices in an `extent`-shaped range, x fastest, counted
// from the end when `reverse`.
uint3 nth(uint64_t i, uint64_t n, const unsigned* extent, bool reverse) {
    if (reverse) i = n - 1 - i;
    return {(unsigned)(i % extent[0]), (unsigned)(i / extent[0] % extent[1]),
            (unsigned)(i / extent[0] / extent[1])};
}

// One launch: the checks the CUDA driver would not make (parameter words
// and buffer count against the kernel's signature), then every block, in
// order or, with `reverse`, last block and last thread first.
// Returns 0, or 1 with `err` filled.
template <class P, class... B>
int launch(const char* name, void (*kernel)(P, B*...), bool barriers, const unsigned* words,
           unsigned nwords, void* const* bufs, unsigned nbufs, const unsigned* grid,
           const unsigned* block, unsigned reverse, char* err, size_t errlen) {
    static_assert(sizeof(P) <= 64, "a kernel's parameter struct is at most 16 words");
    if (nwords * 4 != sizeof(P)) {
        snprintf(err, errlen, "%s: given %u parameter words, its struct has %zu", name, nwords,
                 sizeof(P) / 4);
        return 1;
    }
    if (nbufs != sizeof...(B)) {
        snprintf(err, errlen, "%s: given %u buffers, it takes %zu", name, nbufs, sizeof...(B));
        return 1;
    }
    auto run_thread = [&] { call(kernel, words, bufs, std::index_sequence_for<B...>{}); };
    install_fault_handler();
    gridDim = {grid[0], grid[1], grid[2]};
    blockDim = {block[0], block[1], block[2]};
    unsigned per_block = block[0] * block[1] * block[2];
    std::vector<Fiber> fs(barriers ? per_block : 0);
    const char* failure = nullptr;
    if (sigsetjmp(escape, 1) != 0) {
        fibers = nullptr;
        snprintf(err, errlen,
                 "%s: block (%u, %u, %u) thread (%u, %u, %u) touched %p, outside its buffers",
                 name, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z,
                 fault_at);
        return 1;
    }
    in_kernel = 1;
    uint64_t blocks = (uint64_t)grid[0] * grid[1] * grid[2];
    for (uint64_t b = 0; b < blocks && !failure; b++) {
        blockIdx = nth(b, blocks, grid, reverse);
        if (barriers) {
            // The scheduler resumes fibers in this order at every barrier.
            for (unsigned t = 0; t < per_block; t++) fs[t].tid = nth(t, per_block, block, reverse);
            body = trampoline<decltype(run_thread)>;
            body_arg = &run_thread;
            failure = run_block_fibers(fs);
            fibers = nullptr;
        } else {
            for (unsigned t = 0; t < per_block; t++) {
                threadIdx = nth(t, per_block, block, reverse);
                run_thread();
            }
        }
    }
    in_kernel = 0;
    if (failure) {
        snprintf(err, errlen, "%s: block (%u, %u, %u): %s", name, blockIdx.x, blockIdx.y,
                 blockIdx.z, failure);
        return 1;
    }
    return 0;
}

} // namespace argus_host

// Device memory: `words` 32-bit words ending exactly at a PROT_NONE page, so
// a kernel reading or writing past the end of a buffer faults.
extern "C" uint32_t* argus_host_alloc(size_t words) {
    using namespace argus_host;
    size_t bytes = pages(words * 4);
    void* m = mmap(nullptr, bytes + PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (m == MAP_FAILED) return nullptr;
    char* guard = (char*)m + bytes;
    if (mprotect(guard, PAGE, PROT_NONE) != 0) {
        munmap(m, bytes + PAGE);
        return nullptr;
    }
    return (uint32_t*)(guard - words * 4);
}

extern "C" void argus_host_free(uint32_t* p, size_t words) {
    using namespace argus_host;
    size_t bytes = pages(words * 4);
    char* guard = (char*)p + words * 4;
    munmap(guard - bytes, bytes + PAGE);
}
