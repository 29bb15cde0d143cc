"""Geometric ops: crops, resizes, flips (torchvision v2 names and semantics).

Each op's parameters are per-sample integer boxes drawn for the whole batch at once;
``apply`` is the pure-torch reference. Crops are expressed as a region
``(top, left, height, width)`` in input coordinates that may reach outside the image
(padding), which is also how the fused kernel sees them: one affine map per sample.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ._base import ImageState, ParamContext, Transform, rows_where

_MODES = {"nearest": "nearest", "nearest-exact": "nearest-exact", "nearest_exact": "nearest-exact",
          "bilinear": "bilinear", "bicubic": "bicubic"}
_PIL_CODES = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def interpolation_mode(interpolation) -> str:
    """Normalize a torchvision ``InterpolationMode``, PIL int code or string to a torch mode."""
    name = getattr(interpolation, "value", interpolation)
    if isinstance(name, int):
        name = _PIL_CODES.get(name, name)
    mode = _MODES.get(str(name).lower()) if isinstance(name, str) else None
    if mode is None:
        raise ValueError(f"unsupported interpolation {interpolation!r}; "
                         f"use one of {sorted(set(_MODES.values()))}")
    return mode


def size_pair(size, name: str = "size") -> tuple[int, int]:
    """``size`` as (height, width): an int is square, a 1-sequence too (torchvision's convention)."""
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) == 1:
        return size[0], size[0]
    if len(size) != 2:
        raise ValueError(f"{name} must be an int or a sequence of 1 or 2 ints, got {size}")
    return size


def resample(img: torch.Tensor, height: int, width: int, mode: str = "bilinear",
             antialias: bool = True) -> torch.Tensor:
    """Resize one ``[C, h, w]`` image (any dtype) to float32 ``[C, height, width]``.

    Bilinear/bicubic with ``antialias`` widen the filter by the downscale factor (the
    PIL-style triangle/cubic filter), which is what torchvision does for tensors.
    """
    x = img.float()
    if tuple(x.shape[-2:]) == (height, width):
        return x
    kwargs = {"antialias": antialias, "align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(x[None], size=(height, width), mode=mode, **kwargs)[0]


# -- padding / region extraction ------------------------------------------------------

def _source_index(coords: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """Map possibly out-of-range coordinates into [0, n) for a padding mode."""
    if mode == "edge":
        return coords.clamp(0, n - 1)
    if n == 1:
        return torch.zeros_like(coords)
    if mode == "reflect":          # ... 2 1 | 0 1 2 | 1 0 ...  (edge not repeated)
        period = 2 * (n - 1)
        c = coords.remainder(period)
        return torch.where(c < n, c, period - c)
    if mode == "symmetric":        # ... 1 0 | 0 1 2 | 2 1 ...  (edge repeated)
        period = 2 * n
        c = coords.remainder(period)
        return torch.where(c < n, c, period - 1 - c)
    raise ValueError(f"padding_mode must be constant, edge, reflect or symmetric, got {mode!r}")


def extract_region(img: torch.Tensor, top: int, left: int, height: int, width: int,
                   fill=0.0, padding_mode: str = "constant") -> torch.Tensor:
    """The ``height x width`` window of ``img`` at ``(top, left)``; outside is padded.

    Inside the image this is a view; only windows that reach outside allocate.
    """
    _, h, w = img.shape
    if top >= 0 and left >= 0 and top + height <= h and left + width <= w:
        return img[:, top:top + height, left:left + width]
    if padding_mode == "constant":
        out = torch.empty((img.shape[0], height, width), dtype=torch.float32, device=img.device)
        out[:] = torch.as_tensor(fill, dtype=torch.float32, device=img.device).reshape(-1, 1, 1)
        y0, y1 = max(top, 0), min(top + height, h)
        x0, x1 = max(left, 0), min(left + width, w)
        if y0 < y1 and x0 < x1:
            out[:, y0 - top:y1 - top, x0 - left:x1 - left] = img[:, y0:y1, x0:x1]
        return out
    rows = _source_index(torch.arange(top, top + height, device=img.device), h, padding_mode)
    cols = _source_index(torch.arange(left, left + width, device=img.device), w, padding_mode)
    return img[:, rows][:, :, cols]


@dataclass
class CropParams:
    """Per-sample crop windows, in input pixel coordinates (may reach outside).

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> images = torch.zeros(4, 3, 32, 48, dtype=torch.uint8)
        >>> T.RandomResizedCrop(16).draw_params(images, seed=0)
        CropParams(top=tensor([1, 4, 0, 1]), left=tensor([ 2,  4, 11, 23]), height=tensor([23, 22, 14, 30]), width=tensor([29, 28, 11, 23]))
    """

    top: torch.Tensor     # [B] int64
    left: torch.Tensor    # [B] int64
    height: torch.Tensor  # [B] int64
    width: torch.Tensor   # [B] int64

    def boxes(self) -> list[list[int]]:
        """Each sample's window as ``[top, left, height, width]`` Python ints."""
        return torch.stack([self.top, self.left, self.height, self.width], 1).tolist()


def affine_points(scale_x, scale_y, shift_x, shift_y) -> torch.Tensor:
    """``[B, 3, 3]`` map ``(x, y) -> (scale_x * x + shift_x, scale_y * y + shift_y)``."""
    scale_x = torch.as_tensor(scale_x, dtype=torch.float64)
    m = torch.zeros(scale_x.shape[0], 3, 3, dtype=torch.float64)
    m[:, 0, 0], m[:, 1, 1], m[:, 2, 2] = scale_x, torch.as_tensor(scale_y, dtype=torch.float64), 1.0
    m[:, 0, 2], m[:, 1, 2] = torch.as_tensor(shift_x, dtype=torch.float64), torch.as_tensor(shift_y, dtype=torch.float64)
    return m


def crop_points(params: CropParams) -> torch.Tensor:
    """Points move by minus the window's corner."""
    ones = torch.ones_like(params.top, dtype=torch.float64).cpu()
    return affine_points(ones, ones, -params.left.cpu().double(), -params.top.cpu().double())


def _crop_sizes(params: CropParams) -> torch.Tensor:
    return torch.stack([params.height, params.width], dim=1)


def _crop_each(state: ImageState, params: CropParams, fill=0.0, padding_mode="constant",
               out_size: tuple[int, int] | None = None, mode="bilinear", antialias=True) -> ImageState:
    """Crop each sample to its window, then optionally resample to ``out_size``."""
    outs = []
    for img, (top, left, h, w) in zip(state.as_list(), params.boxes()):
        region = extract_region(img, top, left, h, w, fill, padding_mode)
        outs.append(resample(region, *out_size, mode, antialias) if out_size else region.float())
    return ImageState(_stack_if_same(outs), state.dtype)


def _stack_if_same(images: list[torch.Tensor]):
    if images and all(im.shape == images[0].shape for im in images):
        return torch.stack(images)
    return images


# -- the ops ---------------------------------------------------------------------------

class RandomResizedCrop(Transform):
    """Crop a random area and aspect ratio of each sample, then resize it to ``size``.

    Same sampling as ``torchvision.transforms.v2.RandomResizedCrop``: up to 10
    attempts of (area fraction ~ U(scale), log-aspect ~ U(log ratio)); the first that
    fits is used, else a center crop clamped to the ratio range. Here the 10 attempts
    of every sample are drawn at once and the first valid one picked without a loop
    or host synchronization.

    Args:
        size: output ``(height, width)`` or an int for a square.
        scale: range of the crop area as a fraction of the image area.
        ratio: range of the crop aspect ratio (width / height).
        interpolation: ``"bilinear"`` (default), ``"bicubic"``, ``"nearest"`` or a
            torchvision ``InterpolationMode``.
        antialias: filter when downscaling (torchvision's default ``True``).

    Shape:
        any ``[C, H, W]`` per sample -> ``[C, size[0], size[1]]``.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.RandomResizedCrop(16)(torch.zeros(2, 3, 40, 30, dtype=torch.uint8), seed=0).shape
        torch.Size([2, 3, 16, 16])
    """

    geometric = True
    attempts = 10

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0),
                 interpolation="bilinear", antialias: bool | None = True):
        self.size = size_pair(size)
        if scale[0] > scale[1] or ratio[0] > ratio[1]:
            raise ValueError("scale and ratio should be of kind (min, max)")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.mode = interpolation_mode(interpolation)
        self.antialias = bool(antialias) if antialias is not None else False

    def extra_repr(self) -> str:
        return f"size={self.size}, scale={self.scale}, ratio={self.ratio}, interpolation={self.mode!r}"

    def make_params(self, ctx: ParamContext) -> CropParams:
        n = self.attempts
        u = ctx.uniform(4 * n).double()            # per attempt: area, log-ratio, top, left
        height = ctx.sizes[:, 0:1].double()
        width = ctx.sizes[:, 1:2].double()
        area = height * width
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        target_area = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 0:n])
        aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, n:2 * n])
        # torch.round is round-half-even, like Python's round() used by torchvision.
        w = torch.round(torch.sqrt(target_area * aspect))
        h = torch.round(torch.sqrt(target_area / aspect))
        valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        top = torch.floor(u[:, 2 * n:3 * n] * (height - h + 1)).clamp(max=height - h)
        left = torch.floor(u[:, 3 * n:4 * n] * (width - w + 1)).clamp(max=width - w)

        # First valid attempt per sample (argmax of a bool picks the first True).
        first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)
        any_valid = valid.any(dim=1)
        pick = lambda t: t.gather(1, first).squeeze(1)  # noqa: E731
        fb_top, fb_left, fb_h, fb_w = self._fallback(height.squeeze(1), width.squeeze(1))
        choose = lambda a, b: torch.where(any_valid, a, b).to(torch.int64)  # noqa: E731
        return CropParams(top=choose(pick(top), fb_top), left=choose(pick(left), fb_left),
                          height=choose(pick(h), fb_h), width=choose(pick(w), fb_w))

    def _fallback(self, height: torch.Tensor, width: torch.Tensor):
        """Center crop with the aspect ratio clamped into ``ratio`` (torchvision's fallback)."""
        in_ratio = width / height
        lo, hi = self.ratio
        w = torch.where(in_ratio < lo, width, torch.where(in_ratio > hi, torch.round(height * hi), width))
        h = torch.where(in_ratio < lo, torch.round(width / lo), height)
        return torch.div(height - h, 2, rounding_mode="floor"), torch.div(width - w, 2, rounding_mode="floor"), h, w

    def output_sizes(self, sizes, params):
        return torch.tensor(self.size, dtype=torch.int64, device=sizes.device).expand(len(sizes), 2)

    def forward_matrix(self, params, sizes):
        h, w = self.size
        scale = affine_points(w / params.width.cpu().double(), h / params.height.cpu().double(), 0.0, 0.0)
        return scale @ crop_points(params)

    def apply(self, state, params):
        return _crop_each(state, params, out_size=self.size, mode=self.mode, antialias=self.antialias)


def resized_output_size(height: int, width: int, size, max_size: int | None) -> tuple[int, int]:
    """Output size of ``Resize`` for one input size (torchvision's rule)."""
    if size is not None and not isinstance(size, int) and len(size) == 2:
        return int(size[0]), int(size[1])
    short, long = (width, height) if width <= height else (height, width)
    if size is None:
        new_short, new_long = int(max_size * short / long), max_size
    else:
        requested = size if isinstance(size, int) else int(size[0])
        new_short, new_long = requested, int(requested * long / short)
        if max_size is not None and new_long > max_size:
            new_short, new_long = int(max_size * new_short / new_long), max_size
    return (new_long, new_short) if width <= height else (new_short, new_long)


@dataclass
class SizeParams:
    """Per-sample output sizes of a deterministic resize.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.Resize(16).draw_params(torch.zeros(2, 3, 32, 48), seed=0)
        SizeParams(height=tensor([16, 16]), width=tensor([24, 24]))
    """

    height: torch.Tensor  # [B] int64
    width: torch.Tensor   # [B] int64


class Resize(Transform):
    """Resize each sample (torchvision v2 ``Resize`` semantics).

    Args:
        size: ``(h, w)``; or an int / 1-sequence for the smaller edge (aspect kept,
            so a batch of mixed aspect ratios comes out ragged); or ``None`` with
            ``max_size`` to bound the longer edge.
        interpolation, antialias: as in :class:`RandomResizedCrop`.
        max_size: upper bound of the longer edge after an int resize.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.Resize(10)(torch.zeros(1, 3, 20, 40)).shape
        torch.Size([1, 3, 10, 20])
    """

    geometric = True

    def __init__(self, size, interpolation="bilinear", max_size: int | None = None,
                 antialias: bool | None = True):
        if size is None and max_size is None:
            raise ValueError("size and max_size cannot both be None")
        if isinstance(size, Sequence) and len(size) not in (1, 2):
            raise ValueError(f"size must be an int or a sequence of 1 or 2 ints, got {size}")
        if max_size is not None and size is not None and not isinstance(size, int) and len(size) == 2:
            raise ValueError("max_size is only allowed when size is an int, a 1-sequence or None")
        if max_size is not None and isinstance(size, int) and max_size <= size:
            raise ValueError(f"max_size ({max_size}) must be larger than size ({size})")
        self.size = list(size) if isinstance(size, Sequence) else size
        self.max_size = max_size
        self.mode = interpolation_mode(interpolation)
        self.antialias = bool(antialias) if antialias is not None else False

    def extra_repr(self) -> str:
        return f"size={self.size}, max_size={self.max_size}, interpolation={self.mode!r}"

    def make_params(self, ctx: ParamContext) -> SizeParams:
        out = [resized_output_size(h, w, self.size, self.max_size) for h, w in ctx.sizes.tolist()]
        t = torch.tensor(out, dtype=torch.int64, device=ctx.sizes.device).reshape(-1, 2)
        return SizeParams(height=t[:, 0], width=t[:, 1])

    def output_sizes(self, sizes, params):
        return torch.stack([params.height, params.width], 1)

    def forward_matrix(self, params, sizes):
        return affine_points(params.width.cpu().double() / sizes[:, 1].double(),
                             params.height.cpu().double() / sizes[:, 0].double(), 0.0, 0.0)

    def apply(self, state, params):
        dense = state.images if isinstance(state.images, torch.Tensor) else None
        targets = torch.stack([params.height, params.width], 1).tolist()
        if dense is not None and len(dense) and all(t == targets[0] for t in targets):
            x = dense.float()
            if tuple(x.shape[-2:]) == tuple(targets[0]):
                return ImageState(x, state.dtype, owned=state.owned or x is not state.images)
            kwargs = {"antialias": self.antialias, "align_corners": False} if self.mode in ("bilinear", "bicubic") else {}
            return ImageState(F.interpolate(x, size=targets[0], mode=self.mode, **kwargs), state.dtype)
        outs = [resample(img, h, w, self.mode, self.antialias) for img, (h, w) in zip(state.as_list(), targets)]
        return ImageState(_stack_if_same(outs), state.dtype)


class CenterCrop(Transform):
    """Crop the center of each sample; pad with zeros where the crop is larger.

    Args:
        size: output ``(h, w)`` or an int for a square.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.CenterCrop(4)(torch.arange(36.).reshape(1, 1, 6, 6))[0, 0, 0].tolist()
        [7.0, 8.0, 9.0, 10.0]
    """

    geometric = True

    def __init__(self, size):
        self.size = size_pair(size)

    def extra_repr(self) -> str:
        return f"size={self.size}"

    def make_params(self, ctx: ParamContext) -> CropParams:
        ch, cw = self.size
        h, w = ctx.sizes[:, 0], ctx.sizes[:, 1]

        def anchor(n, c):
            # Inside: torchvision's int(round((n - c) / 2)); larger crop: pad (c - n) // 2 before.
            inside = torch.round((n - c).double() / 2.0).to(torch.int64)
            return torch.where(n >= c, inside, -torch.div(c - n, 2, rounding_mode="floor"))

        full = lambda v, t: torch.full_like(t, v)  # noqa: E731
        return CropParams(top=anchor(h, ch), left=anchor(w, cw), height=full(ch, h), width=full(cw, w))

    def output_sizes(self, sizes, params):
        return _crop_sizes(params)

    def forward_matrix(self, params, sizes):
        return crop_points(params)

    def apply(self, state, params):
        return _crop_each(state, params)


@dataclass
class PadCropParams(CropParams):
    """A crop window in the coordinates of the input, after padding (may reach outside)."""


class RandomCrop(Transform):
    """Crop a random window of ``size`` from each sample, optionally padding first.

    Args:
        size: output ``(h, w)`` or an int.
        padding: int, ``(lr, tb)`` or ``(left, top, right, bottom)`` added around
            every image before cropping.
        pad_if_needed: pad images smaller than ``size`` (on both sides, as torchvision).
        fill: constant padding value (number or per-channel tuple), in the image's range.
        padding_mode: ``"constant"``, ``"edge"``, ``"reflect"`` or ``"symmetric"``.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.RandomCrop(8, padding=2)(torch.zeros(3, 3, 8, 8), seed=1).shape
        torch.Size([3, 3, 8, 8])
    """

    geometric = True

    def __init__(self, size, padding=None, pad_if_needed: bool = False, fill=0,
                 padding_mode: str = "constant"):
        self.size = size_pair(size)
        if padding_mode not in ("constant", "edge", "reflect", "symmetric"):
            raise ValueError(f"padding_mode must be constant, edge, reflect or symmetric, got {padding_mode!r}")
        self.padding = _parse_padding(padding)
        self.pad_if_needed = pad_if_needed
        self.fill = fill
        self.padding_mode = padding_mode

    def extra_repr(self) -> str:
        return f"size={self.size}, padding={self.padding}, pad_if_needed={self.pad_if_needed}"

    def make_params(self, ctx: ParamContext) -> PadCropParams:
        ch, cw = self.size
        pl, pt, pr, pb = self.padding
        h, w = ctx.sizes[:, 0], ctx.sizes[:, 1]
        pad_top = torch.full_like(h, pt)
        pad_left = torch.full_like(w, pl)
        padded_h, padded_w = h + pt + pb, w + pl + pr
        if self.pad_if_needed:
            dh, dw = (ch - padded_h).clamp(min=0), (cw - padded_w).clamp(min=0)
            pad_top, pad_left = pad_top + dh, pad_left + dw
            padded_h, padded_w = padded_h + 2 * dh, padded_w + 2 * dw
        too_small = (padded_h < ch) | (padded_w < cw)
        if bool(too_small.any()):
            i = int(rows_where(too_small)[0])
            raise ValueError(f"RandomCrop: required crop size {self.size} is larger than the "
                             f"(padded) input size {(int(padded_h[i]), int(padded_w[i]))} of sample {i} in the batch")
        u = ctx.uniform(2).double()
        top = torch.floor(u[:, 0] * (padded_h - ch + 1)).to(torch.int64).clamp(max=padded_h - ch)
        left = torch.floor(u[:, 1] * (padded_w - cw + 1)).to(torch.int64).clamp(max=padded_w - cw)
        full = lambda v, t: torch.full_like(t, v)  # noqa: E731
        return PadCropParams(top=top - pad_top, left=left - pad_left, height=full(ch, h), width=full(cw, w))

    def output_sizes(self, sizes, params):
        return _crop_sizes(params)

    def forward_matrix(self, params, sizes):
        return crop_points(params)

    def apply(self, state, params):
        return _crop_each(state, params, fill=self.fill, padding_mode=self.padding_mode)


def _parse_padding(padding) -> tuple[int, int, int, int]:
    """torchvision's padding forms to (left, top, right, bottom)."""
    if padding is None:
        return (0, 0, 0, 0)
    if isinstance(padding, int):
        return (padding,) * 4
    padding = [int(p) for p in padding]
    if len(padding) == 1:
        return (padding[0],) * 4
    if len(padding) == 2:
        return (padding[0], padding[1], padding[0], padding[1])
    if len(padding) == 4:
        return tuple(padding)
    raise ValueError(f"padding must be an int or a sequence of 1, 2 or 4 ints, got {padding}")


@dataclass
class FlipParams:
    """Per-sample flip decisions.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.RandomHorizontalFlip().draw_params(torch.zeros(4, 3, 8, 8), seed=0)
        FlipParams(apply=tensor([ True, False,  True, False]))
    """

    apply: torch.Tensor  # [B] bool


class _RandomFlip(Transform):
    dim = -1

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = float(p)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def make_params(self, ctx: ParamContext) -> FlipParams:
        # u in [0, 1): p=0 never flips, p=1 always does.
        return FlipParams(apply=ctx.uniform(1)[:, 0] < self.p)

    def forward_matrix(self, params, sizes):
        flip = params.apply.cpu()
        extent = sizes[:, 1 if self.dim == -1 else 0].double()
        sign = torch.where(flip, -1.0, 1.0).double()
        shift = torch.where(flip, extent, torch.zeros_like(extent))
        ones, zeros = torch.ones_like(extent), torch.zeros_like(extent)
        if self.dim == -1:
            return affine_points(sign, ones, shift, zeros)
        return affine_points(ones, sign, zeros, shift)

    def apply(self, state, params):
        rows = rows_where(params.apply).tolist()
        if isinstance(state.images, torch.Tensor):
            if not rows:
                return state
            out = state.writable_dense()           # in place unless it is the caller's tensor
            idx = torch.tensor(rows, device=out.device)
            out[idx] = out[idx].flip(self.dim)
            return ImageState(out, state.dtype)
        imgs = list(state.images)
        for r in rows:
            imgs[r] = imgs[r].flip(self.dim)
        return ImageState(imgs, state.dtype)


class RandomHorizontalFlip(_RandomFlip):
    """Flip each sample left-right with probability ``p`` (drawn per sample).

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.RandomHorizontalFlip(p=1.0)(torch.tensor([[[[1, 2, 3]]]], dtype=torch.uint8))[0, 0, 0].tolist()
        [3, 2, 1]
    """

    dim = -1


class RandomVerticalFlip(_RandomFlip):
    """Flip each sample top-bottom with probability ``p`` (drawn per sample).

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.RandomVerticalFlip(p=1.0)(torch.tensor([[[[1], [2]]]], dtype=torch.uint8))[0, 0, :, 0].tolist()
        [2, 1]
    """

    dim = -2
