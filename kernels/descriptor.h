// Per-sample descriptor of the fused stage: the one definition of its layout.
//
// gpuaug/fused/descriptor.py mirrors it field by field (a numpy structured dtype with
// C alignment) and tests/test_fused.py checks sizes and offsets against this header
// as compiled by the host compiler. Only 8-byte and 4-byte fields, the 8-byte ones
// first, so the layout is the same for every compiler (nvrtc, g++) and needs no packing
// pragmas.
#pragma once

#define GPUAUG_MAX_COLOR_OPS 8

// Color operation codes, the ColorJitter order of gpuaug.transforms._color.
#define GPUAUG_BRIGHTNESS 0
#define GPUAUG_CONTRAST 1
#define GPUAUG_SATURATION 2
#define GPUAUG_HUE 3
// Pixel ops after the jitter (gpuaug.transforms._augment); factor: see apply_color.
#define GPUAUG_INVERT 4
#define GPUAUG_SOLARIZE 5
#define GPUAUG_POSTERIZE 6

// Source dtypes.
#define GPUAUG_SRC_U8 0
#define GPUAUG_SRC_F32 1

// Warp sampling modes.
#define GPUAUG_WARP_NONE 0
#define GPUAUG_WARP_BILINEAR 1
#define GPUAUG_WARP_NEAREST 2

// Output dtypes.
#define GPUAUG_OUT_U8 0
#define GPUAUG_OUT_F32 1
#define GPUAUG_OUT_F16 2
#define GPUAUG_OUT_BF16 3

struct SampleDesc {
    // -- source image (ragged: each sample its own size) ----------------------------
    unsigned long long src;        // address of pixel (0, 0, 0)
    long long scratch_offset;      // first float of this sample in the horizontal-pass scratch
    int src_h, src_w;              // size of the source image
    int src_stride_c, src_stride_y, src_stride_x;  // in elements
    int src_channels;              // 1 (gray, read as R=G=B) or 3
    int src_dtype;                 // GPUAUG_SRC_*

    // -- geometry: source box -> resized image -> output window -> flips -----------
    // Output pixel (y, x) reads resized pixel (win_top + y', win_left + x') with
    // x' = flip_x ? W-1-x : x (same for y); the resized image is the box of the
    // source resampled to resized_h x resized_w (bilinear, antialiased when
    // shrinking, torch's interpolate(antialias=True) weights; the reference is
    // gpuaug.transforms._geometry.resample). Reads outside the source or outside the
    // resized image give `fill`.
    int box_top, box_left, box_h, box_w;
    int resized_h, resized_w;
    int win_top, win_left;
    int flip_x, flip_y;
    int antialias;

    // -- warp (gpuaug.transforms._affine): after the resize and its flips ------------
    // Output pixel (x, y) samples the resized window at (u/w, v/w), (u, v, w) =
    // warp * (x, y, 1), in pixel coordinates (centres at integers); outside the window
    // the coverage mask blends in warp_fill (torchvision's rule). Flips after the warp
    // are folded into the matrix.
    float warp[9];                            // row-major 3x3
    int warp_mode;                            // GPUAUG_WARP_*
    float warp_fill[3];
    int warp_pad_;                            // keeps sizeof a multiple of 8

    // -- color (gpuaug.transforms._color), in this sample's order -----------------
    int n_color;                              // number of entries used in color_op
    int color_op[GPUAUG_MAX_COLOR_OPS];       // GPUAUG_BRIGHTNESS ... GPUAUG_POSTERIZE
    float color_factor[GPUAUG_MAX_COLOR_OPS];
    int contrast_step;                        // index of contrast in color_op, -1 if none
    int grayscale;                            // 1: replace RGB by its luma after the color ops

    // -- output --------------------------------------------------------------------
    float fill[3];        // value of pixels outside the image, in the working range
    float mul[3];         // out = value * mul[c] + add[c]  (ToDtype scale and Normalize folded)
    float add[3];
};  // 256 bytes: 2 x 8 + 60 x 4, a multiple of 8 with no implicit padding

// Batch-wide launch parameters (kernel arguments, not part of the table).
//   out_h, out_w:  output size; out_c: 1 or 3 output channels
//   bound:         value range of the working domain (255 for uint8 input, 1 for float)
//   out_dtype:     GPUAUG_OUT_*;  out strides in elements (NCHW or NHWC)
