// The fast CPU path's work on one sample after its uint8 resize (gpuaug/cpu_path.py):
// flips, ColorJitter in the sample's own order, ToDtype and Normalize, the output row,
// in one call.
//
// The per-pixel formulas are color.h's and the dtype conversions dtype.h's, the ones the
// CUDA kernels use. Here the sample's pixels sit in three float planes and each op is one
// loop over them that the compiler vectorizes (built with -O3 -march=native by
// gpuaug/native.py), instead of the dozen full-tensor torch passes hue alone takes.
// Called through ctypes, which releases the GIL: the decode pool's threads run it in
// parallel.
#include <vector>

#include "color.h"
#include "descriptor.h"
#include "dtype.h"

// A step that is not a ColorJitter op: per-channel x * mul + add (ToDtype's 1/255, Normalize).
#define GPUAUG_STEP_AFFINE 8
// Floats per step in `values`: {factor, bound} for a jitter op, {mul[3], add[3]} for an affine.
#define GPUAUG_STEP_FLOATS 6

namespace {

// [3, h, w] uint8 with any strides (a flip reverses an axis) -> three float planes.
void load_planes(const unsigned char* src, long long src_c, long long src_y, long long src_x, int h, int w,
                 bool flip_y, bool flip_x, float* planes) {
    const long long n = (long long)h * w;
    for (int y = 0; y < h; ++y) {
        const unsigned char* row = src + (long long)(flip_y ? h - 1 - y : y) * src_y;
        float* r = planes + (long long)y * w;
        float* g = r + n;
        float* b = g + n;
        for (int x = 0; x < w; ++x) {
            const unsigned char* p = row + (long long)(flip_x ? w - 1 - x : x) * src_x;
            r[x] = p[0];
            g[x] = p[src_c];
            b[x] = p[2 * src_c];
        }
    }
}

void blend(float* __restrict r, float* __restrict g, float* __restrict b, long long n, float factor,
           float gray, float bound) {
    for (long long i = 0; i < n; ++i) {
        r[i] = blend_channel(r[i], factor, gray, bound);
        g[i] = blend_channel(g[i], factor, gray, bound);
        b[i] = blend_channel(b[i], factor, gray, bound);
    }
}

void saturate(float* __restrict r, float* __restrict g, float* __restrict b, long long n, float factor,
              float bound) {
    for (long long i = 0; i < n; ++i) {
        float gray = luma_rgb(r[i], g[i], b[i]);
        r[i] = blend_channel(r[i], factor, gray, bound);
        g[i] = blend_channel(g[i], factor, gray, bound);
        b[i] = blend_channel(b[i], factor, gray, bound);
    }
}

void shift_hue(float* __restrict r, float* __restrict g, float* __restrict b, long long n, float shift) {
    for (long long i = 0; i < n; ++i) {
        float pr = r[i], pg = g[i], pb = b[i];
        shift_hue_rgb(pr, pg, pb, 6.0f * shift);
        r[i] = pr;
        g[i] = pg;
        b[i] = pb;
    }
}

// Mean of one plane: float partial sums in 16 independent lanes (a vector add the compiler
// needs no reassociation for) over blocks of 4096, added up in double.
double plane_mean(const float* __restrict p, long long n) {
    double total = 0.0;
    for (long long start = 0; start < n; start += 4096) {
        long long end = start + 4096 < n ? start + 4096 : n;
        float lanes[16] = {0.0f};
        long long i = start;
        for (; i + 16 <= end; i += 16)
            for (int j = 0; j < 16; ++j) lanes[j] += p[i + j];
        float block = 0.0f;
        for (; i < end; ++i) block += p[i];
        for (int j = 0; j < 16; ++j) block += lanes[j];
        total += block;
    }
    return n > 0 ? total / (double)n : 0.0;
}

// One ColorJitter op on the planes, clamped to [0, bound] as the reference does.
void jitter_op(float* planes, long long n, int op, float factor, float bound) {
    float* r = planes;
    float* g = planes + n;
    float* b = planes + 2 * n;
    switch (op) {
        case GPUAUG_BRIGHTNESS: blend(r, g, b, n, factor, 0.0f, bound); break;
        case GPUAUG_CONTRAST: {
            // The mean luma is the luma of the channel means: one reduction, no luma plane.
            float mean = luma_rgb((float)plane_mean(r, n), (float)plane_mean(g, n), (float)plane_mean(b, n));
            blend(r, g, b, n, factor, mean, bound);
            break;
        }
        case GPUAUG_SATURATION: saturate(r, g, b, n, factor, bound); break;
        default: shift_hue(r, g, b, n, factor); break;
    }
}

void affine_planes(float* planes, long long n, const float* mul, const float* add) {
    for (int c = 0; c < 3; ++c) {
        float* p = planes + c * n;
        for (long long i = 0; i < n; ++i) p[i] = p[i] * mul[c] + add[c];
    }
}

template <int DTYPE>
void store_rows(const float* planes, int h, int w, const float* affine, void* out, long long out_c, long long out_y,
                long long out_x) {
    const long long n = (long long)h * w;
    for (int c = 0; c < 3; ++c) {
        const float mul = affine ? affine[c] : 1.0f, add = affine ? affine[3 + c] : 0.0f;
        for (int y = 0; y < h; ++y) {
            const float* src = planes + c * n + (long long)y * w;
            const long long base = c * out_c + (long long)y * out_y;
            for (int x = 0; x < w; ++x) {
                float v = src[x] * mul + add;
                long long at = base + x * out_x;
                if (DTYPE == GPUAUG_OUT_U8) {
                    // Logical uint8 output: one rounding at the end (half to even, as torch.round).
                    ((unsigned char*)out)[at] = (unsigned char)min_sel(max_sel(rintf(v), 0.0f), 255.0f);
                } else if (DTYPE == GPUAUG_OUT_F32) {
                    ((float*)out)[at] = v;
                } else if (DTYPE == GPUAUG_OUT_F16) {
                    ((unsigned short*)out)[at] = float_to_half_bits(v);
                } else {
                    ((unsigned short*)out)[at] = float_to_bf16_bits(v);
                }
            }
        }
    }
}

}  // namespace

extern "C" {

// ColorJitter ops `ops[0..n_ops)` (GPUAUG_BRIGHTNESS ... GPUAUG_HUE, the sample's order)
// with `factors` on the planes x[0..3*n) (R, G, B, n pixels each), in place. Returns 0, or
// -1 for an unknown op code (nothing changed then).
int gpuaug_cpu_jitter(float* x, long long n, const int* ops, const float* factors, int n_ops, float bound) {
    for (int k = 0; k < n_ops; ++k)
        if (ops[k] < GPUAUG_BRIGHTNESS || ops[k] > GPUAUG_HUE) return -1;
    for (int k = 0; k < n_ops; ++k) jitter_op(x, n, ops[k], factors[k], bound);
    return 0;
}


// One sample after its uint8 resize: flips, the float steps, the output row, in one call.
//
// `src` is the resized crop, [3, h, w] uint8 with any strides (channels-last from the
// resize). Steps run in order on float planes of the working range; each takes
// GPUAUG_STEP_FLOATS values: a ColorJitter op (GPUAUG_BRIGHTNESS ... GPUAUG_HUE) reads
// {factor, bound}, GPUAUG_STEP_AFFINE reads {mul[3], add[3]} (ToDtype's scale and
// Normalize folded). A last affine step is fused into the store. The output row is
// [3, h, w] of `out_dtype` (GPUAUG_OUT_*) with any strides; uint8 output is rounded half
// to even and clamped, as the reference's final conversion. Returns 0, or -1 for an
// unknown step code or output dtype (nothing written then).
int gpuaug_cpu_render(const unsigned char* src, long long src_c, long long src_y, long long src_x, int h, int w,
                      int flip_y, int flip_x, const int* codes, const float* values, int n_steps, void* out,
                      int out_dtype, long long out_c, long long out_y, long long out_x) {
    for (int k = 0; k < n_steps; ++k)
        if (codes[k] < GPUAUG_BRIGHTNESS || (codes[k] > GPUAUG_HUE && codes[k] != GPUAUG_STEP_AFFINE)) return -1;
    if (out_dtype < GPUAUG_OUT_U8 || out_dtype > GPUAUG_OUT_BF16) return -1;
    const long long n = (long long)h * w;
    thread_local std::vector<float> work;        // per pool thread, reused: no page faults per sample
    if ((long long)work.size() < 3 * n) work.resize(3 * n);
    float* planes = work.data();
    load_planes(src, src_c, src_y, src_x, h, w, flip_y != 0, flip_x != 0, planes);
    int last = n_steps;
    const float* final_affine = nullptr;
    if (n_steps > 0 && codes[n_steps - 1] == GPUAUG_STEP_AFFINE) {
        last = n_steps - 1;
        final_affine = values + (size_t)last * GPUAUG_STEP_FLOATS;
    }
    for (int k = 0; k < last; ++k) {
        const float* v = values + (size_t)k * GPUAUG_STEP_FLOATS;
        if (codes[k] == GPUAUG_STEP_AFFINE) affine_planes(planes, n, v, v + 3);
        else jitter_op(planes, n, codes[k], v[0], v[1]);
    }
    switch (out_dtype) {
        case GPUAUG_OUT_U8: store_rows<GPUAUG_OUT_U8>(planes, h, w, final_affine, out, out_c, out_y, out_x); break;
        case GPUAUG_OUT_F32: store_rows<GPUAUG_OUT_F32>(planes, h, w, final_affine, out, out_c, out_y, out_x); break;
        case GPUAUG_OUT_F16: store_rows<GPUAUG_OUT_F16>(planes, h, w, final_affine, out, out_c, out_y, out_x); break;
        default: store_rows<GPUAUG_OUT_BF16>(planes, h, w, final_affine, out, out_c, out_y, out_x); break;
    }
    return 0;
}

}  // extern "C"
