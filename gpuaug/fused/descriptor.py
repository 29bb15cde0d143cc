"""The per-sample descriptor table: Python's mirror of ``kernels/descriptor.h``.

One numpy structured dtype with C alignment, field for field in the header's order;
``tests/test_fused.py`` compares its size and offsets with what the host compiler
reports for the header. Both the CUDA launch and the host emulation are fed by
:func:`pack_descriptors`, so they read the very same bytes.
"""
from __future__ import annotations

import numpy as np

MAX_COLOR_OPS = 8
BRIGHTNESS, CONTRAST, SATURATION, HUE, INVERT, SOLARIZE, POSTERIZE = range(7)
SRC_U8, SRC_F32 = 0, 1
OUT_U8, OUT_F32, OUT_F16, OUT_BF16 = range(4)
WARP_NONE, WARP_BILINEAR, WARP_NEAREST = range(3)

DESCRIPTOR_DTYPE = np.dtype([
    ("src", np.uint64),
    ("scratch_offset", np.int64),
    ("src_h", np.int32), ("src_w", np.int32),
    ("src_stride_c", np.int32), ("src_stride_y", np.int32), ("src_stride_x", np.int32),
    ("src_channels", np.int32), ("src_dtype", np.int32),
    ("box_top", np.int32), ("box_left", np.int32), ("box_h", np.int32), ("box_w", np.int32),
    ("resized_h", np.int32), ("resized_w", np.int32),
    ("win_top", np.int32), ("win_left", np.int32),
    ("flip_x", np.int32), ("flip_y", np.int32),
    ("antialias", np.int32),
    ("warp", np.float32, (9,)),
    ("warp_mode", np.int32),
    ("warp_fill", np.float32, (3,)),
    ("warp_pad_", np.int32),
    ("n_color", np.int32),
    ("color_op", np.int32, (MAX_COLOR_OPS,)),
    ("color_factor", np.float32, (MAX_COLOR_OPS,)),
    ("contrast_step", np.int32),
    ("grayscale", np.int32),
    ("fill", np.float32, (3,)),
    ("mul", np.float32, (3,)),
    ("add", np.float32, (3,)),
], align=True)


def descriptor_layout() -> list[int]:
    """``[sizeof, offset of each field...]`` in declaration order (as the C side reports it)."""
    return [DESCRIPTOR_DTYPE.itemsize] + [DESCRIPTOR_DTYPE.fields[name][1] for name in DESCRIPTOR_DTYPE.names]


def empty_descriptors(n: int) -> np.ndarray:
    """A table of ``n`` descriptors with no color op and no contrast (everything else 0)."""
    table = np.zeros(n, dtype=DESCRIPTOR_DTYPE)
    table["contrast_step"] = -1
    return table
