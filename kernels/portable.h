// What lets a header of device functions compile as plain C++ too: without a CUDA
// compiler, __device__ means nothing and __forceinline__ means inline. (emulation.h
// defines the same for the host build of the kernels; identical redefinitions are fine.)
#pragma once

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
#include <cmath>
#include <cstring>
#ifndef __device__
#define __device__
#endif
#ifndef __forceinline__
#define __forceinline__ inline
#endif
#endif
