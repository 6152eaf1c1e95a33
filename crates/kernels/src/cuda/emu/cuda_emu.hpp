// CPU emulation of the subset of CUDA C++ that scalarize's kernels use, so that every kernel of
// the top-level `kernels/` folder runs (slowly, exactly as written) on a machine without a GPU.
// The Rust side (emu/mod.rs) compiles `header + kernel file + generated launchers` with the host
// C++ compiler into a shared library and calls `emu_launch_<kernel>` with cuLaunchKernel-style
// arguments.
//
// Model: blocks run one after another; the threads of a block are coroutines (ucontext) on the
// calling OS thread, one per thread slot, reused by the same slot of later blocks and launches.
// A thread runs until it reaches __syncthreads() or a warp collective (__shfl_*_sync,
// __ballot_sync, __syncwarp), then the next thread runs. __syncthreads()
// releases when every live thread of the block has arrived (exited threads count as arrived);
// a warp collective releases when every lane of its mask has arrived, and the lanes exchange
// values then. Errors real hardware would hang on or leave undefined (a barrier some threads
// never reach, a collective whose mask names an exited or missing lane, lanes of one warp at
// different collectives) stop the launch with a message. Odd-numbered blocks run their threads
// in reverse order, so a read of shared memory that lacks a barrier after the write sees stale
// data in one of the two orders.
#pragma once

#include <setjmp.h>
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define SCALARIZE_EMU 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
// One copy per process; blocks run one at a time and every launch holds the Rust-side lock.
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct float2 {
    float x, y;
};
struct float4 {
    float x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

static uint3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;
static const int warpSize = 32;

using std::isfinite;
using std::isinf;
using std::isnan;

template <class A, class B>
inline std::common_type_t<A, B> min(A a, B b) {
    return b < a ? b : a;
}
template <class A, class B>
inline std::common_type_t<A, B> max(A a, B b) {
    return a < b ? b : a;
}

inline float __int_as_float(int v) {
    float f;
    std::memcpy(&f, &v, 4);
    return f;
}
inline int __float_as_int(float f) {
    int v;
    std::memcpy(&v, &f, 4);
    return v;
}
inline float __uint_as_float(unsigned v) {
    float f;
    std::memcpy(&f, &v, 4);
    return f;
}
inline unsigned __float_as_uint(float f) {
    unsigned v;
    std::memcpy(&v, &f, 4);
    return v;
}
inline double __longlong_as_double(long long v) {
    double d;
    std::memcpy(&d, &v, 8);
    return d;
}
inline long long __double_as_longlong(double d) {
    long long v;
    std::memcpy(&v, &d, 8);
    return v;
}
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
template <class T>
inline T __ldg(const T* p) {
    return *p;
}

namespace emu {

enum State { RUNNABLE, AT_BARRIER, AT_WARP, DONE };
enum WarpOp { SHFL, BALLOT, ANY, ALL, SYNCWARP };

struct Thread {
    ucontext_t ctx;  // only to start the slot's coroutine on its own stack, once
    jmp_buf jb;      // where it continues after a yield
    bool alive;      // the coroutine exists (parked after its last thread, or at a yield)
    State state;
    uint3 idx;
    // The warp collective this thread waits at: operation, mask, value, source lane, result.
    WarpOp op;
    unsigned mask;
    uint64_t value;
    int src;
    uint64_t result;
};

struct Machine {
    std::vector<Thread> threads;
    jmp_buf scheduler;
    std::function<void()> body;
    std::unique_ptr<char[]> stacks;
    size_t stack_threads = 0;
    int current = -1;
    std::string error;
    std::vector<unsigned char> dynamic_shared;
};

static const size_t STACK_BYTES = 256 * 1024;
static Machine M;

inline void fail(const std::string& why) {
    if (M.error.empty()) M.error = why;
}

inline Thread& me() { return M.threads[M.current]; }

inline int linear(const uint3& t) { return t.x + blockDim.x * (t.y + blockDim.y * t.z); }

// Switches use _setjmp/_longjmp, which (unlike swapcontext) make no system call. ucontext
// only starts a slot's coroutine: getcontext and setcontext each make a system call, which
// once per GPU thread was most of an emulated training step.
inline void yield() {
    if (!_setjmp(me().jb)) _longjmp(M.scheduler, 1);
}

// A slot's coroutine: runs the kernel body for the thread it is given, then parks until the
// same slot of a later block (or launch) resumes it with the next thread.
inline void entry() {
    for (;;) {
        M.body();
        me().state = DONE;
        yield();
    }
}

// Runs thread i until it yields or exits.
inline void resume(int i) {
    Thread& t = M.threads[i];
    if (_setjmp(M.scheduler)) return;
    if (!t.alive) {
        t.alive = true;
        setcontext(&t.ctx);
    }
    _longjmp(t.jb, 1);
}

// Abandons every coroutine (after an error some stop mid-kernel; a new stack area invalidates
// them all): each slot starts afresh when next used.
inline void forget_coroutines() {
    for (Thread& t : M.threads) t.alive = false;
}

inline void* dynamic_shared() { return M.dynamic_shared.data(); }

template <class T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8, "warp collectives move at most 8 bytes");
    uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <class T>
inline T from_bits(uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

inline uint64_t collective(WarpOp op, unsigned mask, uint64_t value, int src) {
    Thread& t = me();
    t.op = op;
    t.mask = mask;
    t.value = value;
    t.src = src;
    t.state = AT_WARP;
    yield();
    return me().result;
}

inline int lane_id() { return linear(me().idx) & 31; }

// Resolves the collective warp `w` waits at, if every lane of its mask has arrived.
// Returns true when the lanes were released.
inline bool try_warp(int w, int nthreads) {
    int first = -1;
    for (int l = 0; l < 32 && w * 32 + l < nthreads; ++l) {
        if (M.threads[w * 32 + l].state == AT_WARP) {
            first = w * 32 + l;
            break;
        }
    }
    if (first < 0) return false;
    const Thread& f = M.threads[first];
    for (int l = 0; l < 32; ++l) {
        if (!(f.mask >> l & 1u)) continue;
        const int i = w * 32 + l;
        if (i >= nthreads) {
            fail("warp collective with mask " + std::to_string(f.mask) + " names lane " +
                 std::to_string(l) + " of warp " + std::to_string(w) +
                 ", which does not exist (block of " + std::to_string(nthreads) + " threads)");
            return false;
        }
        const Thread& t = M.threads[i];
        if (t.state == DONE) {
            fail("warp collective in warp " + std::to_string(w) + " waits for lane " +
                 std::to_string(l) + ", which has exited");
            return false;
        }
        if (t.state != AT_WARP) return false;  // still at a block barrier: maybe later
        if (t.op != f.op || t.mask != f.mask) {
            fail("lanes of warp " + std::to_string(w) + " are at different warp collectives");
            return false;
        }
    }
    uint64_t ballot = 0;
    bool any = false, all = true;
    for (int l = 0; l < 32; ++l) {
        if (!(f.mask >> l & 1u)) continue;
        const bool p = M.threads[w * 32 + l].value != 0;
        if (p) ballot |= 1ull << l;
        any = any || p;
        all = all && p;
    }
    for (int l = 0; l < 32; ++l) {
        if (!(f.mask >> l & 1u)) continue;
        Thread& t = M.threads[w * 32 + l];
        switch (t.op) {
            case SHFL:
                t.result = (t.src >= 0 && t.src < 32 && (f.mask >> t.src & 1u))
                               ? M.threads[w * 32 + t.src].value
                               : t.value;
                break;
            case BALLOT: t.result = ballot; break;
            case ANY: t.result = any; break;
            case ALL: t.result = all; break;
            case SYNCWARP: t.result = 0; break;
        }
        t.state = RUNNABLE;
    }
    return true;
}

// Runs one block to completion (or to an error).
inline void run_block(int nthreads, bool reverse) {
    for (int i = 0; i < nthreads; ++i) {
        Thread& t = M.threads[i];
        t.idx = {unsigned(i % blockDim.x), unsigned(i / blockDim.x % blockDim.y),
                 unsigned(i / (blockDim.x * blockDim.y))};
        t.state = RUNNABLE;
        if (t.alive) continue;  // parked at the end of its last thread
        getcontext(&t.ctx);
        t.ctx.uc_stack.ss_sp = M.stacks.get() + size_t(i) * STACK_BYTES;
        t.ctx.uc_stack.ss_size = STACK_BYTES;
        t.ctx.uc_link = nullptr;  // entry() never returns
        makecontext(&t.ctx, entry, 0);
    }
    for (;;) {
        for (int k = 0; k < nthreads; ++k) {
            const int i = reverse ? nthreads - 1 - k : k;
            // A thread runs until it blocks or exits; then the next one.
            while (M.threads[i].state == RUNNABLE) {
                M.current = i;
                threadIdx = M.threads[i].idx;
                resume(i);
                if (!M.error.empty()) return;
            }
        }
        bool any_warp = false, all_done = true;
        for (int i = 0; i < nthreads; ++i) {
            any_warp = any_warp || M.threads[i].state == AT_WARP;
            all_done = all_done && M.threads[i].state == DONE;
        }
        if (all_done) return;
        if (any_warp) {
            bool released = false;
            for (int w = 0; w * 32 < nthreads; ++w) released = try_warp(w, nthreads) || released;
            if (!M.error.empty()) return;
            if (!released) {
                fail("deadlock: some threads wait at a warp collective, others at "
                     "__syncthreads()");
                return;
            }
            continue;
        }
        // Every live thread is at __syncthreads().
        for (int i = 0; i < nthreads; ++i)
            if (M.threads[i].state == AT_BARRIER) M.threads[i].state = RUNNABLE;
    }
}

template <class T>
inline std::decay_t<T> arg(void** args, size_t i) {
    return *static_cast<std::decay_t<T>*>(args[i]);
}

template <class... A, size_t... I>
inline std::tuple<std::decay_t<A>...> unpack(void** args, std::index_sequence<I...>) {
    return std::tuple<std::decay_t<A>...>(arg<A>(args, I)...);
}

// Runs kernel `k` on the grid; returns 0, or 1 with the reason in M.error.
template <class... A>
inline int launch(void (*k)(A...), const unsigned* grid, const unsigned* block,
                  unsigned long shared_bytes, void** args) {
    M.error.clear();
    const long nthreads = long(block[0]) * block[1] * block[2];
    if (nthreads < 1 || nthreads > 1024) {
        fail("block of " + std::to_string(nthreads) + " threads (CUDA allows 1 to 1024)");
        return 1;
    }
    if (M.stack_threads < size_t(nthreads)) {
        // Untouched pages cost nothing; a stack is only written as deep as a thread goes.
        M.stacks.reset(new char[size_t(nthreads) * STACK_BYTES]);
        M.stack_threads = size_t(nthreads);
        forget_coroutines();
    }
    M.threads.resize(nthreads);
    // Poisoned like fresh device memory would be garbage: NaN floats, -1 integers.
    M.dynamic_shared.assign(shared_bytes + 16, 0xff);
    auto params = unpack<A...>(args, std::index_sequence_for<A...>{});
    // Each thread calls the kernel with its own copy of the parameters, as on a GPU.
    M.body = [&params, k]() { std::apply(k, params); };
    blockDim = dim3(block[0], block[1], block[2]);
    gridDim = dim3(grid[0], grid[1], grid[2]);
    long b = 0;
    for (unsigned z = 0; z < grid[2]; ++z)
        for (unsigned y = 0; y < grid[1]; ++y)
            for (unsigned x = 0; x < grid[0]; ++x, ++b) {
                blockIdx = {x, y, z};
                run_block(int(nthreads), b % 2 == 1);
                if (!M.error.empty()) {
                    M.error += " (block " + std::to_string(x) + "," + std::to_string(y) + "," +
                               std::to_string(z) + ")";
                    M.body = nullptr;
                    forget_coroutines();
                    return 1;
                }
            }
    M.body = nullptr;
    return 0;
}

}  // namespace emu

inline void __syncthreads() {
    emu::me().state = emu::AT_BARRIER;
    emu::yield();
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    emu::collective(emu::SYNCWARP, mask, 0, 0);
}
inline void __threadfence() {}
inline void __threadfence_block() {}

template <class T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    const int lane = emu::lane_id();
    const int s = (lane & ~(width - 1)) + (src & (width - 1));
    return emu::from_bits<T>(emu::collective(emu::SHFL, mask, emu::to_bits(v), s));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    const int lane = emu::lane_id();
    int s = lane ^ lane_mask;
    // A source outside the caller's width segment returns the caller's own value.
    if ((s & ~(width - 1)) != (lane & ~(width - 1))) s = lane;
    return emu::from_bits<T>(emu::collective(emu::SHFL, mask, emu::to_bits(v), s));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = emu::lane_id();
    const int s = (lane & (width - 1)) + int(delta) < width ? lane + int(delta) : lane;
    return emu::from_bits<T>(emu::collective(emu::SHFL, mask, emu::to_bits(v), s));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = emu::lane_id();
    const int s = (lane & (width - 1)) >= int(delta) ? lane - int(delta) : lane;
    return emu::from_bits<T>(emu::collective(emu::SHFL, mask, emu::to_bits(v), s));
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
    return unsigned(emu::collective(emu::BALLOT, mask, pred != 0, 0));
}
inline int __any_sync(unsigned mask, int pred) {
    return int(emu::collective(emu::ANY, mask, pred != 0, 0));
}
inline int __all_sync(unsigned mask, int pred) {
    return int(emu::collective(emu::ALL, mask, pred != 0, 0));
}

// Atomics: threads never run at the same time here, so plain read-modify-write is atomic.
template <class T>
inline T atomicAdd(T* p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}
template <class T>
inline T atomicMax(T* p, T v) {
    T old = *p;
    if (v > old) *p = v;
    return old;
}
template <class T>
inline T atomicMin(T* p, T v) {
    T old = *p;
    if (v < old) *p = v;
    return old;
}
template <class T>
inline T atomicExch(T* p, T v) {
    T old = *p;
    *p = v;
    return old;
}
template <class T>
inline T atomicCAS(T* p, T cmp, T v) {
    T old = *p;
    if (old == cmp) *p = v;
    return old;
}

extern "C" const char* emu_last_error() { return emu::M.error.c_str(); }
