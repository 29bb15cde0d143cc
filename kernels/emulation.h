// Host emulation of the CUDA subset that fused.cu uses, so the very same kernel source
// compiles as C++ and runs on a CPU (tests on machines without a GPU, and the loader's
// device="cpu", fused=True path).
//
// A launch runs every block of the grid (in parallel with OpenMP when available) and,
// inside a block, every thread one after the other. That is faithful for kernels whose
// threads never wait for each other, which is the rule fused.cu follows: no shared
// memory, no __syncthreads, no warp intrinsics; cross-thread results only through
// atomics on global memory.
#pragma once

#include <cmath>
#include <cstring>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict

struct dim3 {
    unsigned int x, y, z;
};

// The coordinates of the emulated thread; one copy per OS thread.
extern thread_local dim3 threadIdx, blockIdx;
extern thread_local dim3 blockDim, gridDim;

inline unsigned int __float_as_uint(float v) {
    unsigned int u;
    std::memcpy(&u, &v, sizeof u);
    return u;
}

inline float __uint_as_float(unsigned int u) {
    float v;
    std::memcpy(&v, &u, sizeof v);
    return v;
}

inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long value) {
    return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}

inline float atomicAdd(float* address, float value) {
    float old = *address;
    float desired;
    do {
        desired = old + value;
    } while (!__atomic_compare_exchange(address, &old, &desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return old;
}

// Run `call` (a kernel invocation) for every thread of a grid x block launch.
#define GPUAUG_EMULATE_LAUNCH(grid, block, call)                                          \
    do {                                                                                  \
        const dim3 grid_ = (grid), block_ = (block);                                      \
        const long long blocks_ = (long long)grid_.x * grid_.y * grid_.z;                 \
        _Pragma("omp parallel for schedule(dynamic, 4)")                                  \
        for (long long block_id_ = 0; block_id_ < blocks_; ++block_id_) {                 \
            gridDim = grid_;                                                              \
            blockDim = block_;                                                            \
            blockIdx.x = (unsigned int)(block_id_ % grid_.x);                             \
            blockIdx.y = (unsigned int)((block_id_ / grid_.x) % grid_.y);                 \
            blockIdx.z = (unsigned int)(block_id_ / ((long long)grid_.x * grid_.y));      \
            for (unsigned int tz_ = 0; tz_ < block_.z; ++tz_)                             \
                for (unsigned int ty_ = 0; ty_ < block_.y; ++ty_)                         \
                    for (unsigned int tx_ = 0; tx_ < block_.x; ++tx_) {                   \
                        threadIdx.x = tx_;                                                \
                        threadIdx.y = ty_;                                                \
                        threadIdx.z = tz_;                                                \
                        call;                                                             \
                    }                                                                     \
        }                                                                                 \
    } while (0)
