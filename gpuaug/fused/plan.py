"""Planning: which ops fuse into one kernel pass, and their per-sample descriptors.

A fused segment is a run of consecutive ops that fits the kernel's structure::

    [crops / flips] [one resize] [crops / flips] [one warp] [flips] [ColorJitter] [grayscale] [ToDtype] [Normalize]

(crops include RandomZoomOut; a warp is RandomAffine, RandomRotation or RandomPerspective)

(``ToDtype`` to a float dtype may sit anywhere before ``Normalize``). Anything else
(another resize, nearest/bicubic interpolation, reflect padding, a non-gpuaug op...)
ends the segment and runs through the reference, so any pipeline works and the
common recipes run fully fused.

:func:`build_descriptors` turns the segment's *reference* parameters into the
descriptor table, so the fused path renders exactly the draws the reference would.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..transforms import _affine, _augment, _color, _dtype, _geometry
from ..transforms._base import Transform, register_segment_describer
from . import descriptor as D

_GEOMETRY = "geometry"
_PIXEL = "pixel"


def _kind(op: Transform) -> str | None:
    """How an op takes part in a fused segment, or None if it cannot."""
    if isinstance(op, _geometry.RandomResizedCrop):
        return "crop+resize" if op.mode == "bilinear" else None
    if isinstance(op, _geometry.Resize):
        return "resize" if op.mode == "bilinear" else None
    if isinstance(op, _geometry.RandomCrop):
        return "crop" if op.padding_mode == "constant" else None
    if isinstance(op, (_geometry.CenterCrop, _affine.RandomZoomOut)):
        return "crop"
    if isinstance(op, (_affine.RandomAffine, _affine.RandomPerspective)):
        # The kernel always blends a fill by coverage; fill=None (plain zero padding) is
        # the reference's alone.
        return "warp" if op.fill is not None else None
    if isinstance(op, (_geometry.RandomHorizontalFlip, _geometry.RandomVerticalFlip)):
        return "flip"
    if isinstance(op, _color.ColorJitter):
        return "color"
    if isinstance(op, (_augment.RandomInvert, _augment.RandomSolarize, _augment.RandomPosterize)):
        return "pixel"
    if isinstance(op, (_color.Grayscale, _color.RandomGrayscale)):
        return "gray"
    if isinstance(op, _dtype.ToDtype):
        return "dtype" if op.dtype in (torch.float32, torch.float16, torch.bfloat16) else None
    if isinstance(op, _dtype.Normalize):
        return "normalize"
    return None


# Order of the stages inside a segment; an op may not go back to an earlier stage.
_STAGE = {"crop": 0, "flip": 0, "crop+resize": 1, "resize": 1, "warp": 2, "color": 3, "pixel": 3, "gray": 4,
          "normalize": 5}
_PIXEL_SLOTS = 4          # invert/solarize/posterize ops per segment (MAX_COLOR_OPS minus the jitter's 4)


@dataclass
class Segment:
    """A run of consecutive ops: fused into kernel passes, or run by the reference."""

    start: int                      # position of the first op in the flattened pipeline
    ops: list[Transform] = field(default_factory=list)
    fused: bool = False

    def describe(self) -> str:
        names = ", ".join(type(op).__name__ for op in self.ops)
        how = "fused (2-4 kernel launches)" if self.fused else "reference (torch ops)"
        return f"ops {self.start}..{self.start + len(self.ops) - 1} {how}: {names}"


def plan_segments(ops: list[Transform]) -> list[Segment]:
    """Split a flattened pipeline into fused and reference segments."""
    segments: list[Segment] = []
    stage = -1          # highest stage used in the current fused segment
    resized = False
    pixel_ops = 0
    for position, op in enumerate(ops):
        kind = _kind(op)
        current = segments[-1] if segments else None
        if kind is None:
            if current is None or current.fused:
                segments.append(Segment(position, fused=False))
            segments[-1].ops.append(op)
            continue
        fits = current is not None and current.fused
        if fits:
            if kind == "dtype":
                fits = stage < _STAGE["normalize"]
            elif kind == "crop":
                fits = stage <= 1
            elif kind == "flip":
                fits = stage <= 2          # before or after the warp: both fold into the maps
            elif kind in ("crop+resize", "resize"):
                fits = stage <= 0 and not resized
            elif kind == "warp":
                fits = stage <= 1          # one warp per segment, after the crops and the resize
            elif kind == "pixel":
                fits = stage <= 3 and pixel_ops < _PIXEL_SLOTS    # after the jitter, in order
            else:
                fits = _STAGE[kind] > stage
        if not fits:
            segments.append(Segment(position, fused=True))
            stage, resized, pixel_ops = -1, False, 0
        segments[-1].ops.append(op)
        if kind != "dtype":
            stage = max(stage, _STAGE[kind])
        resized = resized or kind in ("crop+resize", "resize")
        pixel_ops += kind == "pixel"
    return segments


@dataclass
class FusedBatch:
    """Everything one fused launch needs, built on the host."""

    table: np.ndarray               # [B] DESCRIPTOR_DTYPE
    out_h: int
    out_w: int
    out_c: int
    bound: float                    # clamp bound of the color ops in the working range
    dtype: torch.dtype              # logical dtype after the segment
    scratch_floats: int             # size of the horizontal-pass scratch
    needs_contrast: bool
    has_warp: bool = False


class _Geometry:
    """Per-sample geometry, composed op by op (all ``[B]`` int64 tensors).

    The current image is ``window`` of the source ``box`` resampled to ``resized``,
    shown mirrored where ``flip_x`` / ``flip_y``.
    """

    def __init__(self, heights: torch.Tensor, widths: torch.Tensor):
        zeros = torch.zeros_like(heights)
        self.box = [zeros.clone(), zeros.clone(), heights.clone(), widths.clone()]   # top, left, h, w
        self.resized = [heights.clone(), widths.clone()]
        self.win = [zeros.clone(), zeros.clone()]
        self.size = [heights.clone(), widths.clone()]
        self.flip = [torch.zeros_like(heights, dtype=torch.bool), torch.zeros_like(heights, dtype=torch.bool)]
        self.has_resize = False
        self.warp: torch.Tensor | None = None      # [B, 3, 3] once a warp op came

    def flip_axis(self, axis: int, apply: torch.Tensor) -> None:
        if self.warp is None:
            self.flip[axis] = self.flip[axis] ^ apply
            return
        # After the warp, a flip only reorders the output pixels: x -> W-1-x composed
        # on the right of the warp's output-to-input map.
        mirror = torch.eye(3, dtype=torch.float64).repeat(len(apply), 1, 1)
        extent = (self.size[1] if axis == 1 else self.size[0]).double() - 1
        mirror[:, 1 - axis, 1 - axis] = -1.0
        mirror[:, 1 - axis, 2] = extent
        self.warp = torch.where(apply.reshape(-1, 1, 1), self.warp @ mirror, self.warp)

    def crop(self, top, left, h, w):
        # A crop of the (possibly mirrored) current image is, in window coordinates,
        # the mirrored interval where the image is mirrored.
        top = torch.where(self.flip[0], self.size[0] - top - h, top)
        left = torch.where(self.flip[1], self.size[1] - left - w, left)
        if self.has_resize:
            self.win = [self.win[0] + top, self.win[1] + left]
        else:
            self.box = [self.box[0] + top, self.box[1] + left, h.clone(), w.clone()]
            self.resized = [h.clone(), w.clone()]
        self.size = [h.clone(), w.clone()]

    def resize(self, h, w):
        self.resized = [h.clone(), w.clone()]
        self.size = [h.clone(), w.clone()]
        self.has_resize = True


def build_descriptors(ops: list[Transform], params: list, images: list[torch.Tensor],
                      dtype: torch.dtype, pre_flips: torch.Tensor | None = None) -> FusedBatch | None:
    """Descriptors of a fused segment for one batch, or None if this batch cannot fuse
    (its output sizes differ).

    Args:
        ops, params: the segment's ops and their reference parameters.
        images: the segment's input, ``[C, H, W]`` per sample (uint8 or float32).
        dtype: the logical dtype of the input.
        pre_flips: ``[B, 2]`` (top-bottom, left-right) flips of the input, e.g. EXIF
            orientation the decoder left to us: they start the composed map.
    """
    n = len(images)
    heights = torch.tensor([im.shape[-2] for im in images], dtype=torch.int64)
    widths = torch.tensor([im.shape[-1] for im in images], dtype=torch.int64)
    geo = _Geometry(heights, widths)
    if pre_flips is not None:
        geo.flip = [pre_flips[:, 0].cpu().clone(), pre_flips[:, 1].cpu().clone()]
    table = D.empty_descriptors(n)
    scale = 1.0                     # working range -> logical range
    logical = dtype
    antialias = 1
    fill = np.zeros((n, 3), np.float32)
    out_c = 3
    mean, std = [0.0] * 3, [1.0] * 3
    # Color ops clamp to their logical range; in the working range (the input's own
    # values, ToDtype's scale not yet applied) that bound is range / scale.
    color_bound = (255.0 if dtype == torch.uint8 else 1.0)

    for op, p in zip(ops, params):
        if isinstance(op, _geometry.RandomResizedCrop):
            geo.crop(p.top.cpu(), p.left.cpu(), p.height.cpu(), p.width.cpu())
            h, w = op.size
            geo.resize(torch.full_like(heights, h), torch.full_like(widths, w))
            antialias = int(op.antialias)
        elif isinstance(op, _geometry.Resize):
            geo.resize(p.height.cpu(), p.width.cpu())
            antialias = int(op.antialias)
        elif isinstance(op, (_geometry.CenterCrop, _geometry.RandomCrop, _affine.RandomZoomOut)):
            geo.crop(p.top.cpu(), p.left.cpu(), p.height.cpu(), p.width.cpu())
            if isinstance(op, (_geometry.RandomCrop, _affine.RandomZoomOut)):
                fill[:] = np.broadcast_to(np.asarray(op.fill, np.float32), (3,)) / scale
        elif isinstance(op, (_geometry.RandomHorizontalFlip, _geometry.RandomVerticalFlip)):
            axis = 1 if isinstance(op, _geometry.RandomHorizontalFlip) else 0
            geo.flip_axis(axis, p.apply.cpu())
        elif isinstance(op, (_affine.RandomAffine, _affine.RandomPerspective)):
            geo.warp = p.matrix.cpu().double()
            table["warp_mode"] = D.WARP_NEAREST if op.mode == "nearest" else D.WARP_BILINEAR
            table["warp_fill"] = np.asarray(op.fill_values(3), np.float32) / scale
        elif isinstance(op, _color.ColorJitter):
            _pack_color(table, p)
            color_bound = (255.0 if logical == torch.uint8 else 1.0) / scale
        elif isinstance(op, (_augment.RandomInvert, _augment.RandomSolarize, _augment.RandomPosterize)):
            logical_bound = 255.0 if logical == torch.uint8 else 1.0
            if isinstance(op, _augment.RandomInvert):
                code, factor = D.INVERT, 0.0
            elif isinstance(op, _augment.RandomSolarize):
                if op.threshold > logical_bound:
                    return None                    # the reference raises the error about it
                code, factor = D.SOLARIZE, op.threshold / scale
            else:
                if logical != torch.uint8:
                    return None                    # float posterize: the reference's formula
                code, factor = D.POSTERIZE, float(op.bits)
            _append_pixel_op(table, p.apply.cpu().numpy(), code, factor)
            color_bound = logical_bound / scale
        elif isinstance(op, _color.RandomGrayscale):
            table["grayscale"] = p.apply.cpu().numpy().astype(np.int32)
        elif isinstance(op, _color.Grayscale):
            table["grayscale"] = 1
            out_c = op.num_output_channels
        elif isinstance(op, _dtype.ToDtype):
            if op.scale and logical == torch.uint8:
                scale = 1.0 / 255.0
            logical = op.dtype
        elif isinstance(op, _dtype.Normalize):
            mean = list(np.broadcast_to(np.asarray(op.mean, np.float64), (3,)))
            std = list(np.broadcast_to(np.asarray(op.std, np.float64), (3,)))
        else:  # pragma: no cover - plan_segments only fuses the ops above
            raise TypeError(f"{type(op).__name__} cannot be fused")

    out_h, out_w = geo.size
    if n and not (bool((out_h == out_h[0]).all()) and bool((out_w == out_w[0]).all())):
        return None
    # A box reaching outside the source (padding before a resize) needs nothing
    # special: the kernel reads the fill there, as the reference filters across its pad.
    box_h = geo.box[2]
    table["box_top"], table["box_left"], table["box_h"], table["box_w"] = (t.numpy() for t in geo.box)
    table["resized_h"], table["resized_w"] = (t.numpy() for t in geo.resized)
    table["win_top"], table["win_left"] = (t.numpy() for t in geo.win)
    table["flip_y"], table["flip_x"] = (t.numpy().astype(np.int32) for t in geo.flip)
    table["antialias"] = antialias
    if geo.warp is not None:
        table["warp"] = geo.warp.reshape(n, 9).numpy().astype(np.float32)
    table["fill"] = fill
    for c in range(3):
        table["mul"][:, c] = scale / std[c]
        table["add"][:, c] = -mean[c] / std[c]
    scratch_rows = box_h.numpy().astype(np.int64) * 3 * int(out_w[0] if n else 0)
    table["scratch_offset"] = np.concatenate([[0], np.cumsum(scratch_rows)[:-1]]) if n else []
    return FusedBatch(table=table, out_h=int(out_h[0]) if n else 0, out_w=int(out_w[0]) if n else 0,
                      out_c=out_c, bound=float(color_bound), dtype=logical,
                      scratch_floats=int(scratch_rows.sum()) if n else 0,
                      needs_contrast=bool((table["contrast_step"] >= 0).any()),
                      has_warp=geo.warp is not None)


def _append_pixel_op(table: np.ndarray, apply: np.ndarray, code: int, factor: float) -> None:
    """Add a pixel op after each applying sample's color steps."""
    for b in np.flatnonzero(apply):
        k = table["n_color"][b]
        table["color_op"][b, k] = code
        table["color_factor"][b, k] = factor
        table["n_color"][b] = k + 1


def _pack_color(table: np.ndarray, p: _color.ColorJitterParams) -> None:
    """The enabled jitter ops of each sample, in that sample's order."""
    factors = [None if f is None else f.cpu().numpy() for f in p.factors()]
    order = p.order.cpu().numpy()
    for b in range(len(table)):
        k = 0
        for op in order[b]:
            if factors[op] is None:
                continue
            table["color_op"][b, k] = op
            table["color_factor"][b, k] = factors[op][b]
            if op == D.CONTRAST:
                table["contrast_step"][b] = k
            k += 1
        table["n_color"][b] = k


def describe_segments(ops: list[Transform]) -> list[str]:
    """One line per segment of :func:`plan_segments` (what ``Compose.plan()`` prints)."""
    return [segment.describe() for segment in plan_segments(ops)]


register_segment_describer(describe_segments)
