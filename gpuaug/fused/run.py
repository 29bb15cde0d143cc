"""Render a pipeline through the fused kernels: plan segments, pack descriptors, launch.

The same code drives both backends (CUDA through CuPy, and the host emulation of the
same kernel sources); a backend only knows how to launch a named kernel. This is where
"fused or reference" is decided op by op: segments the kernels cannot take (and
batches they cannot take, such as non-RGB input) run the reference ``apply`` of their
ops from :mod:`gpuaug.transforms`.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..timeline import DISABLED
from ..transforms._base import Compose, Images, ImageState, PipelineParams, check_input_dtype, finalize, flip_each
from . import descriptor as D
from .plan import build_descriptors, plan_segments

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


class KernelBackend:
    """Launches the kernels of ``kernels/fused.cu`` on one kind of device.

    Subclasses (:class:`gpuaug.fused.HostBackend`, :class:`gpuaug.fused.cuda.CudaBackend`)
    implement :meth:`launch` and :meth:`supports`; :meth:`render` is what
    ``Compose.apply_params(..., backend=...)`` and the loader's device stage call.
    """

    name: str = "?"
    launches: int = 0     # kernels launched so far (tests count them)

    def launch(self, kernel: str, grid: tuple[int, int, int], block: tuple[int, int], *args) -> None:
        raise NotImplementedError

    def supports(self, device: torch.device) -> bool:
        raise NotImplementedError

    def render(self, pipe: Compose, images: Images, params: PipelineParams, **options) -> Images:
        """:func:`render_pipeline` with this backend (``options``: its keyword arguments)."""
        return render_pipeline(self, pipe, images, params, **options)


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


def run_fused_segment(backend: KernelBackend, ops: list, params: list, state: ImageState, final: bool,
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


def render_pipeline(backend: KernelBackend, pipe: Compose, images: Images, params: PipelineParams,
                    stack: bool | None = None, channels_last: bool = False, timeline=None, batch: int = 0,
                    pre_flips: torch.Tensor | None = None) -> Images:
    """Render ``params`` on ``images``: fused segments through ``backend``, the rest by the reference.

    The arguments and the result are those of :meth:`gpuaug.transforms.Compose.apply_params`;
    the output matches the reference within the kernels' float tolerance.
    """
    if stack is None:
        stack = isinstance(images, torch.Tensor)
    input_dtype = images.dtype if isinstance(images, torch.Tensor) else (images[0].dtype if images else torch.uint8)
    check_input_dtype(input_dtype)
    if len(images) == 0:
        return pipe.apply_params(images, params, stack=stack, channels_last=channels_last)
    state = ImageState(images, dtype=input_dtype, owned=False)
    timeline = timeline if timeline is not None else DISABLED
    segments = plan_segments(pipe.transforms)
    if pre_flips is not None and not (segments and segments[0].fused and segments[0].start == 0):
        state, pre_flips = ImageState(flip_each(state.as_list(), pre_flips), state.dtype), None
    for k, segment in enumerate(segments):
        seg_params = params.per_op[segment.start:segment.start + len(segment.ops)]
        fused_state = None
        if segment.fused:
            with timeline.span("fused stage", batch):
                fused_state = run_fused_segment(backend, segment.ops, seg_params, state,
                                                final=k == len(segments) - 1, channels_last=channels_last,
                                                pre_flips=pre_flips if k == 0 else None)
        if k == 0 and pre_flips is not None and fused_state is None:
            state = ImageState(flip_each(state.as_list(), pre_flips), state.dtype)   # this batch did not fuse
        if fused_state is not None:
            state = fused_state
            continue
        with timeline.span("other ops", batch):
            for t, p in zip(segment.ops, seg_params):
                state = t.apply(state, p)
    return finalize(state, stack)
