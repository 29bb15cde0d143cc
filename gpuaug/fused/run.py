"""Run one fused segment: pack descriptors, allocate buffers, launch the passes.

The same code drives both backends (CUDA through CuPy, and the host emulation of the
same kernel sources); a backend only knows how to launch a named kernel.
"""
from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch

from ..transforms._base import ImageState
from . import descriptor as D
from .plan import build_descriptors

BLOCK = (32, 8)
VPASS_ROWS = 8      # rows per thread in gpuaug_vpass (GPUAUG_VPASS_ROWS in fused.cu)
#: Argument types of each kernel in kernels/fused.cu: p pointer, i int32, f float32,
#: q int64. Both backends marshal arguments from this one table.
KERNEL_SIGNATURES = {
    "gpuaug_hpass": "ppi",
    "gpuaug_vpass": "pppppfiiiiiqqqq",
    "gpuaug_warp": "pppppfiiiiiqqqq",
    "gpuaug_color": "ppppfiiiiqqqq",
}
_OUT_CODES = {torch.uint8: D.OUT_U8, torch.float32: D.OUT_F32, torch.float16: D.OUT_F16,
              torch.bfloat16: D.OUT_BF16}


class Backend(Protocol):
    """Launches the kernels of ``kernels/fused.cu`` on one kind of device."""

    name: str
    launches: int     # kernels launched so far (tests count them)

    def launch(self, kernel: str, grid: tuple[int, int, int], block: tuple[int, int], *args) -> None: ...

    def supports(self, device: torch.device) -> bool: ...


def _grid(width: int, height: int, batch: int) -> tuple[int, int, int]:
    return (math.ceil(width / BLOCK[0]), max(1, math.ceil(height / BLOCK[1])), batch)


def _fill_sources(table: np.ndarray, images: list[torch.Tensor]) -> None:
    for b, im in enumerate(images):
        row = table[b]
        row["src"] = im.data_ptr()
        row["src_h"], row["src_w"] = im.shape[-2:]
        row["src_stride_c"], row["src_stride_y"], row["src_stride_x"] = im.stride()
        row["src_channels"] = im.shape[0]
        row["src_dtype"] = D.SRC_U8 if im.dtype == torch.uint8 else D.SRC_F32


def run_fused_segment(backend: Backend, ops: list, params: list, state: ImageState, final: bool,
                      channels_last: bool = False, pre_flips: torch.Tensor | None = None) -> ImageState | None:
    """Render a fused segment; None when this batch must take the reference instead.

    Args:
        backend: where to launch.
        ops, params: the segment's ops and their reference parameters.
        state: the segment's input.
        final: the segment ends the pipeline: write the final dtype (else float32 in
            the logical range, for the ops that follow).
        channels_last: write the output in channels_last memory format.
        pre_flips: ``[B, 2]`` flips (top-bottom, left-right) of the input to fold in first.
    """
    images = state.as_list()
    if not images:
        return None
    device = images[0].device
    if not backend.supports(device) or any(
            im.shape[0] != 3 or im.dtype not in (torch.uint8, torch.float32) for im in images):
        return None
    fused = build_descriptors(ops, params, images, state.dtype, pre_flips)
    if fused is None:
        return None
    _fill_sources(fused.table, images)
    batch, out_h, out_w, out_c = len(images), fused.out_h, fused.out_w, fused.out_c
    out_dtype = fused.dtype if final else torch.float32
    if out_dtype not in _OUT_CODES:
        return None
    if not final and fused.dtype == torch.uint8:
        fused.table["mul"] = 1.0     # stay in the 0..255 range; finalize() rounds at the end
        fused.table["add"] = 0.0
    out = torch.empty((batch, out_c, out_h, out_w), dtype=out_dtype, device=device,
                      memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if out.numel() == 0:
        return ImageState(out, fused.dtype)

    host_table = torch.from_numpy(fused.table.view(np.uint8))
    if device.type == "cuda":
        host_table = host_table.pin_memory()
    descs = host_table.to(device, non_blocking=True)     # the one upload of the batch's parameters
    scratch = torch.empty(max(fused.scratch_floats, 1), dtype=torch.float32, device=device)
    needs_window = fused.needs_contrast or fused.has_warp
    window = torch.empty((batch, 3, out_h, out_w) if needs_window else (1,), dtype=torch.float32, device=device)
    warped = torch.empty((batch, 3, out_h, out_w) if fused.has_warp and fused.needs_contrast else (1,),
                         dtype=torch.float32, device=device)
    sums = torch.zeros(batch if fused.needs_contrast else 1, dtype=torch.int64, device=device)
    strides = out.stride()
    out_args = (out_h, out_w, out_c, _OUT_CODES[out_dtype], *strides)
    rows_grid = _grid(out_w, math.ceil(out_h / VPASS_ROWS), batch)

    max_rows = int(fused.table["box_h"].max())
    backend.launch("gpuaug_hpass", _grid(out_w, max_rows, batch), BLOCK, descs, scratch, out_w)
    # vpass: 1 = straight to the output; 0 = window + contrast sums; 2 = window for the warp.
    vpass_mode = 2 if fused.has_warp else (0 if fused.needs_contrast else 1)
    backend.launch("gpuaug_vpass", rows_grid, BLOCK, descs, scratch, window, sums, out, fused.bound,
                   vpass_mode, *out_args)
    color_input = window
    if fused.has_warp:
        backend.launch("gpuaug_warp", rows_grid, BLOCK, descs, window, warped, sums, out, fused.bound,
                       int(not fused.needs_contrast), *out_args)
        color_input = warped
    if fused.needs_contrast:
        backend.launch("gpuaug_color", _grid(out_w, out_h, batch), BLOCK, descs, color_input, sums, out,
                       fused.bound, *out_args)
    return ImageState(out, fused.dtype)
