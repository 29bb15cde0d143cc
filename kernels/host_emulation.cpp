// The fused kernels compiled for the CPU: fused.cu built with emulation.h, plus
// C entry points that launch them over a grid (loaded with ctypes by
// gpuaug/fused/emulated.py) and report the descriptor layout for the layout test.
#include <cstddef>

#include "emulation.h"

thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

#include "fused.cu"

extern "C" {

void gpuaug_emu_hpass(unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by,
                      const SampleDesc* descs, float* scratch, int out_w) {
    GPUAUG_EMULATE_LAUNCH((dim3{gx, gy, gz}), (dim3{bx, by, 1}), gpuaug_hpass(descs, scratch, out_w));
}

void gpuaug_emu_vpass(unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by,
                      const SampleDesc* descs, const float* scratch, float* window,
                      unsigned long long* luma_sums, void* out, float bound, int fuse_output, int out_h,
                      int out_w, int out_c, int out_dtype, long long stride_n, long long stride_c,
                      long long stride_y, long long stride_x) {
    GPUAUG_EMULATE_LAUNCH((dim3{gx, gy, gz}), (dim3{bx, by, 1}),
                          gpuaug_vpass(descs, scratch, window, luma_sums, out, bound, fuse_output, out_h, out_w,
                                       out_c, out_dtype, stride_n, stride_c, stride_y, stride_x));
}

void gpuaug_emu_warp(unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by,
                     const SampleDesc* descs, const float* window, float* warped, unsigned long long* luma_sums,
                     void* out, float bound, int fuse_output, int out_h, int out_w, int out_c, int out_dtype,
                     long long stride_n, long long stride_c, long long stride_y, long long stride_x) {
    GPUAUG_EMULATE_LAUNCH((dim3{gx, gy, gz}), (dim3{bx, by, 1}),
                          gpuaug_warp(descs, window, warped, luma_sums, out, bound, fuse_output, out_h, out_w,
                                      out_c, out_dtype, stride_n, stride_c, stride_y, stride_x));
}

void gpuaug_emu_color(unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by,
                      const SampleDesc* descs, const float* window, const unsigned long long* luma_sums,
                      void* out, float bound, int out_h, int out_w, int out_c, int out_dtype,
                      long long stride_n, long long stride_c, long long stride_y, long long stride_x) {
    GPUAUG_EMULATE_LAUNCH((dim3{gx, gy, gz}), (dim3{bx, by, 1}),
                          gpuaug_color(descs, window, luma_sums, out, bound, out_h, out_w, out_c, out_dtype,
                                       stride_n, stride_c, stride_y, stride_x));
}

// sizeof(SampleDesc), then the offset of every field in declaration order; returns the count written.
int gpuaug_descriptor_layout(long long* out, int capacity) {
    const long long values[] = {
        (long long)sizeof(SampleDesc),
        offsetof(SampleDesc, src), offsetof(SampleDesc, scratch_offset), offsetof(SampleDesc, src_h),
        offsetof(SampleDesc, src_w), offsetof(SampleDesc, src_stride_c), offsetof(SampleDesc, src_stride_y),
        offsetof(SampleDesc, src_stride_x), offsetof(SampleDesc, src_channels), offsetof(SampleDesc, src_dtype),
        offsetof(SampleDesc, box_top), offsetof(SampleDesc, box_left), offsetof(SampleDesc, box_h),
        offsetof(SampleDesc, box_w), offsetof(SampleDesc, resized_h), offsetof(SampleDesc, resized_w),
        offsetof(SampleDesc, win_top), offsetof(SampleDesc, win_left), offsetof(SampleDesc, flip_x),
        offsetof(SampleDesc, flip_y), offsetof(SampleDesc, antialias), offsetof(SampleDesc, warp),
        offsetof(SampleDesc, warp_mode), offsetof(SampleDesc, warp_fill), offsetof(SampleDesc, warp_pad_),
        offsetof(SampleDesc, n_color),
        offsetof(SampleDesc, color_op), offsetof(SampleDesc, color_factor), offsetof(SampleDesc, contrast_step),
        offsetof(SampleDesc, grayscale), offsetof(SampleDesc, fill), offsetof(SampleDesc, mul),
        offsetof(SampleDesc, add),
    };
    int n = (int)(sizeof values / sizeof values[0]);
    for (int i = 0; i < n && i < capacity; ++i) out[i] = values[i];
    return n;
}

}  // extern "C"
