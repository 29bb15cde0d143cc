// ColorJitter on one sample's float planes, for the fast CPU path (gpuaug/cpu_path.py).
//
// The per-pixel formulas are color.h's, the ones the CUDA kernels use; here each op is
// one loop over the image that the compiler vectorizes (built with -O3 -march=native by
// gpuaug/fused/host.py), instead of the dozen full-tensor torch passes hue takes. Called
// through ctypes, which releases the GIL for the call: the pool threads run in parallel.
#include "color.h"
#include "descriptor.h"

namespace {

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

// Mean luma of the image, as the luma of the channel means (one pass, no luma plane).
// Summed in double in blocks of float partial sums: close to torch's float32 mean.
float mean_luma(const float* __restrict r, const float* __restrict g, const float* __restrict b, long long n) {
    double sum[3] = {0.0, 0.0, 0.0};
    const float* planes[3] = {r, g, b};
    for (int c = 0; c < 3; ++c) {
        const float* p = planes[c];
        for (long long start = 0; start < n; start += 4096) {
            long long end = start + 4096 < n ? start + 4096 : n;
            float block = 0.0f;
            for (long long i = start; i < end; ++i) block += p[i];
            sum[c] += block;
        }
    }
    double inv = n > 0 ? 1.0 / (double)n : 0.0;
    return luma_rgb((float)(sum[0] * inv), (float)(sum[1] * inv), (float)(sum[2] * inv));
}

}  // namespace

extern "C" {

// Apply ColorJitter ops `ops[0..n_ops)` (GPUAUG_BRIGHTNESS ... GPUAUG_HUE, the sample's own
// order) with `factors` to the planes x[0..3*n) (R, then G, then B, n pixels each), in place,
// clamping to [0, bound] after each op as the reference does. Returns 0, or -1 for an
// unknown op code (the planes are then left partly adjusted).
int gpuaug_cpu_jitter(float* x, long long n, const int* ops, const float* factors, int n_ops, float bound) {
    float* r = x;
    float* g = x + n;
    float* b = x + 2 * n;
    for (int k = 0; k < n_ops; ++k) {
        float f = factors[k];
        switch (ops[k]) {
            case GPUAUG_BRIGHTNESS: blend(r, g, b, n, f, 0.0f, bound); break;
            case GPUAUG_CONTRAST: blend(r, g, b, n, f, mean_luma(r, g, b, n), bound); break;
            case GPUAUG_SATURATION: saturate(r, g, b, n, f, bound); break;
            case GPUAUG_HUE: shift_hue(r, g, b, n, f); break;
            default: return -1;
        }
    }
    return 0;
}

}  // extern "C"
