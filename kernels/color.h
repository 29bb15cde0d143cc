// Per-pixel color math shared by the CUDA kernels (fused.cu) and the CPU path's plane
// loops (cpu_color.cpp): one definition of each formula for both.
//
// Written without branches on pixel values (selects only) so that a C++ compiler
// vectorizes a loop over pixels and a GPU warp never diverges on pixel content.
// Reference: gpuaug.transforms._color (torchvision's formulas).
#pragma once

#include "portable.h"

#define GPUAUG_LUMA_R 0.2989f   // gpuaug.transforms._color._LUMA (BT.601)
#define GPUAUG_LUMA_G 0.587f
#define GPUAUG_LUMA_B 0.114f

// min/max as selects: they map to one vector instruction on every target (fminf/fmaxf
// need extra NaN handling that keeps g++ from vectorizing).
__device__ __forceinline__ float min_sel(float a, float b) { return a < b ? a : b; }
__device__ __forceinline__ float max_sel(float a, float b) { return a > b ? a : b; }

__device__ __forceinline__ float luma_rgb(float r, float g, float b) {
    return GPUAUG_LUMA_R * r + GPUAUG_LUMA_G * g + GPUAUG_LUMA_B * b;
}

// Brightness (gray = 0), contrast (gray = the image's mean luma) and saturation (gray =
// the pixel's luma): a blend towards gray, clamped to the working range as torchvision does.
__device__ __forceinline__ float blend_channel(float v, float factor, float gray, float bound) {
    return min_sel(max_sel(v * factor + gray * (1.0f - factor), 0.0f), bound);
}

// One channel of the hexcone HSV -> RGB: value - chroma * clamp(min(k, 4 - k), 0, 1) with
// k = (phase + 6 * hue) mod 6, for hue6 = 6 * hue in [0, 6) and phase 5 (R), 3 (G), 1 (B).
__device__ __forceinline__ float hexcone_channel(float value, float chroma, float hue6, float phase) {
    float k = hue6 + phase;
    k = k >= 6.0f ? k - 6.0f : k;
    return value - chroma * max_sel(min_sel(min_sel(k, 4.0f - k), 1.0f), 0.0f);
}

// Rotate the HSV hue of one RGB pixel by `shift6` sixths of a turn (6 * hue factor), keeping
// value and chroma: rgb_to_hsv, hue + factor mod 1, hsv_to_rgb without building HSV. The
// max channel picks the hue sector with red first, then green, as the reference's ties do;
// gray pixels (chroma 0) stay as they are. Any working range: hue does not depend on it.
__device__ __forceinline__ void shift_hue_rgb(float& r, float& g, float& b, float shift6) {
    float value = max_sel(r, max_sel(g, b));
    float chroma = value - min_sel(r, min_sel(g, b));
    float sector = value == r ? g - b : (value == g ? b - r + 2.0f * chroma : r - g + 4.0f * chroma);
    float hue6 = (chroma > 0.0f ? sector / (chroma > 0.0f ? chroma : 1.0f) : 0.0f) + shift6;
    hue6 -= 6.0f * floorf(hue6 * (1.0f / 6.0f));
    r = hexcone_channel(value, chroma, hue6, 5.0f);
    g = hexcone_channel(value, chroma, hue6, 3.0f);
    b = hexcone_channel(value, chroma, hue6, 1.0f);
}
