// Float to the output dtypes, bit for bit as torch converts (round to nearest even):
// shared by the CUDA kernels (fused.cu) and the CPU path (cpu_render.cpp).
#pragma once

#include "portable.h"

__device__ __forceinline__ unsigned int float_bits(float v) {
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
    return __float_as_uint(v);
#else
    unsigned int u;
    std::memcpy(&u, &v, sizeof u);
    return u;
#endif
}

__device__ __forceinline__ unsigned short float_to_half_bits(float v) {
    // Round to nearest even, with subnormals, infinities and NaN (what torch's .half() does).
    unsigned int x = float_bits(v);
    unsigned int sign = (x >> 16) & 0x8000u;
    unsigned int mag = x & 0x7fffffffu;
    if (mag >= 0x7f800000u) return (unsigned short)(sign | (mag > 0x7f800000u ? 0x7e00u : 0x7c00u));
    if (mag >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);          // overflow -> inf
    if (mag < 0x38800000u) {                                                   // subnormal or zero
        if (mag < 0x33000000u) return (unsigned short)sign;
        unsigned int e = mag >> 23;
        unsigned int m = (mag & 0x7fffffu) | 0x800000u;
        unsigned int shift = 126u - e;                                         // 14..24
        unsigned int half = m >> shift;
        unsigned int rem = m & ((1u << shift) - 1u);
        unsigned int mid = 1u << (shift - 1u);
        if (rem > mid || (rem == mid && (half & 1u))) half += 1u;
        return (unsigned short)(sign | half);
    }
    unsigned int h = ((mag - 0x38000000u) >> 13);
    unsigned int rem = mag & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h += 1u;
    return (unsigned short)(sign | h);
}

__device__ __forceinline__ unsigned short float_to_bf16_bits(float v) {
    unsigned int x = float_bits(v);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((x >> 16) | 0x40u);  // quiet NaN
    x += 0x7fffu + ((x >> 16) & 1u);                                                    // round to nearest even
    return (unsigned short)(x >> 16);
}
