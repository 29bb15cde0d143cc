// Fused augmentation of a ragged batch: crop + resize (antialiased) + flips + color
// jitter + grayscale + dtype + normalize + layout, in three passes:
//
//   gpuaug_hpass   source (uint8/float, any size)  -> scratch [C, box_h, W] per sample
//   gpuaug_vpass   scratch -> resized window [B, C, H, W] float, and per-sample
//                  fixed-point sums of the luma that contrast needs
//   gpuaug_warp    (only with RandomAffine/Rotation/Perspective) window -> warped window
//   gpuaug_color   resized window -> color ops -> grayscale -> mul/add -> output
//
// When no sample of the batch needs contrast, gpuaug_vpass writes the output itself
// and gpuaug_color is not launched. Separable passes keep the cost of antialiasing
// O(scale) per output pixel instead of O(scale^2).
//
// Every function here is compiled twice: by NVRTC for the GPU, and by the host C++
// compiler with emulation.h for the CPU (tests, and the loader's device="cpu",
// fused=True path). So: no shared memory, no __syncthreads, no warp intrinsics, and
// only the math functions emulation.h provides.
//
// The torch reference that defines each step is named in the comments.
#include "descriptor.h"
#include "color.h"
#include "dtype.h"
// Contrast needs the per-image mean of the luma. Summing it as 2^-20 fixed point in a
// 64-bit integer makes the sum independent of the order threads add it in (float
// atomics are not), so results are reproducible run to run.
#define GPUAUG_FIXED_ONE 1048576.0f

// ---------------------------------------------------------------------------------
// Resampling weights: torch's interpolate(mode="bilinear", antialias=True) rule.
// For output index i of a resize from `in_size` to `out_size`:
//   scale   = in_size / out_size
//   center  = scale * (i + 0.5)
//   support = scale >= 1 ? scale : 1      (triangle filter widened when shrinking)
//   taps j in [xmin, xmin + n), weight = tri((j - center + 0.5) / max(scale, 1))
// Without antialias the filter is never widened (plain bilinear).
// ---------------------------------------------------------------------------------
struct Taps {
    int first;
    int count;
    float center;
    float inv_scale;
};

__device__ __forceinline__ Taps resample_taps(int i, int in_size, int out_size, int antialias) {
    Taps t;
    float scale = (float)in_size / (float)out_size;
    float support = (antialias && scale >= 1.0f) ? scale : 1.0f;
    t.center = scale * ((float)i + 0.5f);
    t.inv_scale = (antialias && scale >= 1.0f) ? 1.0f / scale : 1.0f;
    if (!antialias) {
        // align_corners=False bilinear: sample at center - 0.5, clamped at 0.
        float src = t.center - 0.5f;
        if (src < 0.0f) src = 0.0f;
        t.first = (int)src;
        t.count = (t.first + 1 < in_size) ? 2 : 1;
        t.center = src + 0.5f;
        return t;
    }
    int lo = (int)(t.center - support + 0.5f);   // truncation toward zero, as torch
    if (lo < 0) lo = 0;
    int hi = (int)(t.center + support + 0.5f);
    if (hi > in_size) hi = in_size;
    t.first = lo;
    t.count = hi - lo;
    return t;
}

__device__ __forceinline__ float tap_weight(const Taps& t, int j) {
    float w = 1.0f - fabsf(((float)(t.first + j) - t.center + 0.5f) * t.inv_scale);
    return w > 0.0f ? w : 0.0f;
}

__device__ __forceinline__ float load_source(const SampleDesc& d, int c, int y, int x) {
    if (y < 0 || y >= d.src_h || x < 0 || x >= d.src_w) return d.fill[c];
    int sc = d.src_channels == 1 ? 0 : c;
    long long at = (long long)sc * d.src_stride_c + (long long)y * d.src_stride_y + (long long)x * d.src_stride_x;
    if (d.src_dtype == GPUAUG_SRC_U8) return (float)((const unsigned char*)d.src)[at];
    return ((const float*)d.src)[at];
}

// ---------------------------------------------------------------------------------
// Pass 1: horizontal resample of every box row into the window's columns.
// grid (ceil(W / block.x), ceil(max box_h / block.y), B); scratch [C, box_h, W].
// Reference: gpuaug.transforms._geometry.resample (width part) on extract_region.
// ---------------------------------------------------------------------------------
extern "C" __global__ void gpuaug_hpass(const SampleDesc* __restrict__ descs, float* __restrict__ scratch,
                                        int out_w) {
    const SampleDesc& d = descs[blockIdx.z];
    int x = blockIdx.x * blockDim.x + threadIdx.x;     // window column (before flip)
    int row = blockIdx.y * blockDim.y + threadIdx.y;   // row of the box
    if (x >= out_w || row >= d.box_h) return;
    float* dst = scratch + d.scratch_offset + (long long)row * out_w + x;
    long long plane = (long long)d.box_h * out_w;
    int rx = d.win_left + x;
    int y = d.box_top + row;
    if (rx < 0 || rx >= d.resized_w) {           // padding after the resize
        for (int c = 0; c < 3; ++c) dst[c * plane] = d.fill[c];
        return;
    }
    Taps t = resample_taps(rx, d.box_w, d.resized_w, d.antialias);
    float acc[3] = {0.0f, 0.0f, 0.0f};
    float total = 0.0f;
    int sx0 = d.box_left + t.first;
    if (d.src_dtype == GPUAUG_SRC_U8 && d.src_channels == 3 && y >= 0 && y < d.src_h && sx0 >= 0 &&
        sx0 + t.count <= d.src_w) {
        // The common case, without per-tap bounds and format checks: a uint8 RGB row inside the image.
        const unsigned char* px = (const unsigned char*)d.src + (long long)y * d.src_stride_y +
                                  (long long)sx0 * d.src_stride_x;
        for (int j = 0; j < t.count; ++j, px += d.src_stride_x) {
            float w = tap_weight(t, j);
            acc[0] += w * (float)px[0];
            acc[1] += w * (float)px[d.src_stride_c];
            acc[2] += w * (float)px[2 * d.src_stride_c];
            total += w;
        }
    } else {
        for (int j = 0; j < t.count; ++j) {
            float w = tap_weight(t, j);
            for (int c = 0; c < 3; ++c) acc[c] += w * load_source(d, c, y, sx0 + j);
            total += w;
        }
    }
    float norm = total > 0.0f ? 1.0f / total : 0.0f;
    for (int c = 0; c < 3; ++c) dst[c * plane] = acc[c] * norm;
}

// ---------------------------------------------------------------------------------
// Color ops on one RGB pixel, in the working range [0, bound]: the jitter formulas are
// color.h's, shared with the CPU path. Reference: gpuaug.transforms._color.adjust_*.
// ---------------------------------------------------------------------------------
__device__ __forceinline__ float clampf(float v, float lo, float hi) { return fminf(fmaxf(v, lo), hi); }

__device__ __forceinline__ float luma(const float* p) { return luma_rgb(p[0], p[1], p[2]); }

// Pixel ops of gpuaug.transforms._augment: invert (bound - x), solarize (invert at or
// above the threshold `f`), posterize on uint8 levels (keep `f` bits of round(x)).
__device__ __forceinline__ void pixel_op(int op, float f, float* p, float bound) {
    for (int c = 0; c < 3; ++c) {
        if (op == GPUAUG_INVERT) {
            p[c] = bound - p[c];
        } else if (op == GPUAUG_SOLARIZE) {
            p[c] = p[c] >= f ? bound - p[c] : p[c];
        } else if (f < 8.0f) {   // GPUAUG_POSTERIZE (8 bits: unchanged)
            float step = exp2f(8.0f - f);
            p[c] = floorf(clampf(rintf(p[c]), 0.0f, 255.0f) / step) * step;
        }
    }
}

// Apply color steps [first, last) of the sample's order; `mean` is the contrast mean.
__device__ __forceinline__ void apply_color(const SampleDesc& d, float* p, int first, int last, float mean, float bound) {
    for (int k = first; k < last; ++k) {
        float f = d.color_factor[k];
        int op = d.color_op[k];
        if (op == GPUAUG_HUE) {
            shift_hue_rgb(p[0], p[1], p[2], 6.0f * f);
            continue;
        }
        if (op >= GPUAUG_INVERT) {
            pixel_op(op, f, p, bound);
            continue;
        }
        float gray = op == GPUAUG_SATURATION ? luma(p) : (op == GPUAUG_CONTRAST ? mean : 0.0f);
        for (int c = 0; c < 3; ++c) p[c] = blend_channel(p[c], f, gray, bound);
    }
}

// ---------------------------------------------------------------------------------
// Output: grayscale, folded ToDtype/Normalize, dtype conversion (dtype.h), layout.
// Reference: gpuaug.transforms._base.finalize and _dtype.
// ---------------------------------------------------------------------------------
__device__ __forceinline__ void write_output(const SampleDesc& d, float* p, void* out, int out_dtype, int out_c,
                             long long base, long long stride_c) {
    if (d.grayscale || out_c == 1) {
        float g = luma(p);
        p[0] = g; p[1] = g; p[2] = g;
    }
    // A fixed trip count keeps p[] in registers (a runtime bound would put it on the stack).
#pragma unroll
    for (int c = 0; c < 3; ++c) {
        if (c >= out_c) break;
        long long at = base + c * stride_c;
        if (out_dtype == GPUAUG_OUT_U8) {
            // Logical uint8 output: one rounding at the end (round half to even, as torch.round).
            ((unsigned char*)out)[at] = (unsigned char)clampf(rintf(p[c]), 0.0f, 255.0f);
            continue;
        }
        float v = fmaf(p[c], d.mul[c], d.add[c]);
        if (out_dtype == GPUAUG_OUT_F32) ((float*)out)[at] = v;
        else if (out_dtype == GPUAUG_OUT_F16) ((unsigned short*)out)[at] = float_to_half_bits(v);
        else ((unsigned short*)out)[at] = float_to_bf16_bits(v);
    }
}

struct OutSpec {
    int h, w, c;
    int dtype;
    long long stride_n, stride_c, stride_y, stride_x;
};

// The end of a pixel in passes 2 and 2b: with fuse_output == 1, color ops and the output;
// otherwise into `buffer` (``[3, H, W]`` of this sample) for a later pass, returning, when
// this pass accumulates the contrast sums (fuse_output == 0), the pixel's pre-contrast
// luma in fixed point.
__device__ __forceinline__ unsigned long long finish_pixel(const SampleDesc& d, float* p, int fuse_output,
                                                           float bound, float* buffer, long long plane,
                                                           long long at, void* out, int out_dtype, int out_c,
                                                           long long out_at, long long stride_c) {
    if (fuse_output == 1) {
        apply_color(d, p, 0, d.n_color, 0.0f, bound);
        write_output(d, p, out, out_dtype, out_c, out_at, stride_c);
        return 0;
    }
    for (int c = 0; c < 3; ++c) buffer[c * plane + at] = p[c];
    if (fuse_output != 0 || d.contrast_step < 0) return 0;
    apply_color(d, p, 0, d.contrast_step, 0.0f, bound);
    return (unsigned long long)(luma(p) * GPUAUG_FIXED_ONE + 0.5f);
}

// ---------------------------------------------------------------------------------
// Pass 2: vertical resample into the window; then, by `fuse_output`:
//   0: write the window and the contrast sums; 1: color ops and the output (no sample
//   of the batch needs contrast); 2: write the window only (a warp pass follows).
// Each thread does GPUAUG_VPASS_ROWS rows of one column and adds its luma sum with one
// atomic, so atomics stay rare (they contend on one address per sample).
// grid (ceil(W / block.x), ceil(H / (block.y * GPUAUG_VPASS_ROWS)), B).
// ---------------------------------------------------------------------------------
#define GPUAUG_VPASS_ROWS 8

extern "C" __global__ void gpuaug_vpass(const SampleDesc* __restrict__ descs, const float* __restrict__ scratch,
                                        float* __restrict__ window, unsigned long long* __restrict__ luma_sums,
                                        void* __restrict__ out, float bound, int fuse_output,
                                        int out_h, int out_w, int out_c, int out_dtype,
                                        long long stride_n, long long stride_c, long long stride_y,
                                        long long stride_x) {
    int b = blockIdx.z;
    const SampleDesc& d = descs[b];
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y_first = (blockIdx.y * blockDim.y + threadIdx.y) * GPUAUG_VPASS_ROWS;
    if (x >= out_w || y_first >= out_h) return;
    int y_last = y_first + GPUAUG_VPASS_ROWS < out_h ? y_first + GPUAUG_VPASS_ROWS : out_h;
    const float* col = scratch + d.scratch_offset + x;
    long long plane = (long long)d.box_h * out_w;
    long long plane_out = (long long)out_h * out_w;
    int ox = d.flip_x ? out_w - 1 - x : x;    // flips act on the window
    unsigned long long luma_sum = 0;
    for (int y = y_first; y < y_last; ++y) {
        float p[3];
        int ry = d.win_top + y;
        if (ry < 0 || ry >= d.resized_h) {
            for (int c = 0; c < 3; ++c) p[c] = d.fill[c];
        } else {
            Taps t = resample_taps(ry, d.box_h, d.resized_h, d.antialias);
            float acc[3] = {0.0f, 0.0f, 0.0f};
            float total = 0.0f;
            for (int i = 0; i < t.count; ++i) {
                float w = tap_weight(t, i);
                long long at = (long long)(t.first + i) * out_w;
                for (int c = 0; c < 3; ++c) acc[c] += w * col[c * plane + at];
                total += w;
            }
            float norm = total > 0.0f ? 1.0f / total : 0.0f;
            for (int c = 0; c < 3; ++c) p[c] = acc[c] * norm;
        }
        int oy = d.flip_y ? out_h - 1 - y : y;
        luma_sum += finish_pixel(d, p, fuse_output, bound, window + (long long)b * 3 * plane_out, plane_out,
                                 (long long)oy * out_w + ox, out, out_dtype, out_c,
                                 b * stride_n + oy * stride_y + ox * stride_x, stride_c);
    }
    if (luma_sum != 0) atomicAdd(luma_sums + b, luma_sum);
}

// ---------------------------------------------------------------------------------
// Pass 2b (only when the segment has a warp): sample the window through each sample's
// projective map; then, like pass 2, either the contrast sums (fuse_output=0, into
// `warped`) or the color ops and the output (fuse_output=1).
// Reference: gpuaug.transforms._affine.warp_images (torch grid_sample, zeros outside,
// coverage mask blended with the fill).
// grid (ceil(W / block.x), ceil(H / (block.y * GPUAUG_VPASS_ROWS)), B).
// ---------------------------------------------------------------------------------
__device__ __forceinline__ void warp_sample(const SampleDesc& d, const float* img, int w, int h, int x, int y,
                                            float* p) {
    long long plane = (long long)h * w;
    if (d.warp_mode == GPUAUG_WARP_NONE) {
        for (int c = 0; c < 3; ++c) p[c] = img[c * plane + (long long)y * w + x];
        return;
    }
    const float* m = d.warp;
    float fx = (float)x, fy = (float)y;
    float z = m[6] * fx + m[7] * fy + m[8];
    float sx = (m[0] * fx + m[1] * fy + m[2]) / z;
    float sy = (m[3] * fx + m[4] * fy + m[5]) / z;
    if (d.warp_mode == GPUAUG_WARP_NEAREST) {
        int ix = (int)rintf(sx), iy = (int)rintf(sy);   // grid_sample rounds half to even
        bool inside = ix >= 0 && ix < w && iy >= 0 && iy < h;
        for (int c = 0; c < 3; ++c) p[c] = inside ? img[c * plane + (long long)iy * w + ix] : d.warp_fill[c];
        return;
    }
    float x0f = floorf(sx), y0f = floorf(sy);
    int x0 = (int)x0f, y0 = (int)y0f;
    float ax = sx - x0f, ay = sy - y0f;
    float acc[3] = {0.0f, 0.0f, 0.0f};
    float mask = 0.0f;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        int cx = x0 + (k & 1), cy = y0 + (k >> 1);
        if (cx < 0 || cx >= w || cy < 0 || cy >= h) continue;
        float wgt = ((k & 1) ? ax : 1.0f - ax) * ((k >> 1) ? ay : 1.0f - ay);
        const float* px = img + (long long)cy * w + cx;
        for (int c = 0; c < 3; ++c) acc[c] += wgt * px[c * plane];
        mask += wgt;
    }
    for (int c = 0; c < 3; ++c) p[c] = (acc[c] - d.warp_fill[c]) * mask + d.warp_fill[c];
}

extern "C" __global__ void gpuaug_warp(const SampleDesc* __restrict__ descs, const float* __restrict__ window,
                                       float* __restrict__ warped, unsigned long long* __restrict__ luma_sums,
                                       void* __restrict__ out, float bound, int fuse_output,
                                       int out_h, int out_w, int out_c, int out_dtype,
                                       long long stride_n, long long stride_c, long long stride_y,
                                       long long stride_x) {
    int b = blockIdx.z;
    const SampleDesc& d = descs[b];
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y_first = (blockIdx.y * blockDim.y + threadIdx.y) * GPUAUG_VPASS_ROWS;
    if (x >= out_w || y_first >= out_h) return;
    int y_last = y_first + GPUAUG_VPASS_ROWS < out_h ? y_first + GPUAUG_VPASS_ROWS : out_h;
    long long plane = (long long)out_h * out_w;
    const float* img = window + (long long)b * 3 * plane;
    unsigned long long luma_sum = 0;
    for (int y = y_first; y < y_last; ++y) {
        float p[3];
        warp_sample(d, img, out_w, out_h, x, y, p);
        luma_sum += finish_pixel(d, p, fuse_output, bound, warped + (long long)b * 3 * plane, plane,
                                 (long long)y * out_w + x, out, out_dtype, out_c,
                                 b * stride_n + y * stride_y + x * stride_x, stride_c);
    }
    if (luma_sum != 0) atomicAdd(luma_sums + b, luma_sum);
}

// ---------------------------------------------------------------------------------
// Pass 3: color ops with the contrast mean, then the output.
// grid (ceil(W / block.x), ceil(H / block.y), B).
// ---------------------------------------------------------------------------------
extern "C" __global__ void gpuaug_color(const SampleDesc* __restrict__ descs, const float* __restrict__ window,
                                        const unsigned long long* __restrict__ luma_sums,
                                        void* __restrict__ out, float bound,
                                        int out_h, int out_w, int out_c, int out_dtype,
                                        long long stride_n, long long stride_c, long long stride_y,
                                        long long stride_x) {
    int b = blockIdx.z;
    const SampleDesc& d = descs[b];
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= out_w || y >= out_h) return;
    long long plane = (long long)out_h * out_w;
    const float* src = window + (long long)b * 3 * plane + (long long)y * out_w + x;
    float p[3] = {src[0], src[plane], src[2 * plane]};
    float mean = (float)((double)luma_sums[b] / (double)GPUAUG_FIXED_ONE / (double)plane);
    apply_color(d, p, 0, d.n_color, mean, bound);
    write_output(d, p, out, out_dtype, out_c, b * stride_n + y * stride_y + x * stride_x, stride_c);
}
