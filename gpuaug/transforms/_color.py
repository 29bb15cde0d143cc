"""Color ops: ColorJitter, Grayscale, RandomGrayscale (torchvision v2 semantics).

They run on dense ``[B, C, H, W]`` float32 batches with per-sample factors. The
working values are in the logical dtype's range (0..255 for uint8 images, 0..1 for
float) and are clamped to it after every op, as torchvision does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ._base import ImageState, ParamContext, Transform, rows_where

# ITU-R BT.601 luma weights, the ones torchvision's rgb_to_grayscale uses.
_LUMA = (0.2989, 0.587, 0.114)


def _dense(state: ImageState, op: str) -> torch.Tensor:
    x = state.writable_dense()
    if x is None:
        raise ValueError(f"{op} needs images of one size; put a crop/resize to a fixed size before it")
    return x


def luma(x: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` -> ``[B, 1, H, W]`` grayscale (BT.601 weights)."""
    r, g, b = x.unbind(dim=-3)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(-3)


def _per_sample(f: torch.Tensor) -> torch.Tensor:
    return f.reshape(-1, 1, 1, 1)


def adjust_brightness(x, factor, bound):
    return (x * _per_sample(factor)).clamp_(0, bound)


def adjust_contrast(x, factor, bound):
    # Blend with the mean gray level of each image (a per-image reduction).
    mean = luma(x).mean(dim=(-3, -2, -1), keepdim=True)
    f = _per_sample(factor)
    return (x * f + mean * (1 - f)).clamp_(0, bound)


def adjust_saturation(x, factor, bound):
    f = _per_sample(factor)
    return (x * f + luma(x) * (1 - f)).clamp_(0, bound)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] to HSV with hue in [0, 1) (hexcone model)."""
    r, g, b = x.unbind(dim=-3)
    maxc, _ = x.max(dim=-3)
    minc, _ = x.min(dim=-3)
    delta = maxc - minc
    gray = delta == 0
    # Safe denominators: gray pixels have hue 0 and saturation 0.
    safe_delta = torch.where(gray, torch.ones_like(delta), delta)
    safe_max = torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    sat = delta / safe_max
    # Position within the sector: (g - b), (b - r) or (r - g) over delta, by the max channel.
    hue = torch.where(maxc == r, g - b, torch.where(maxc == g, 2.0 * delta + b - r, 4.0 * delta + r - g))
    hue = torch.where(gray, torch.zeros_like(hue), hue / safe_delta)
    hue = (hue / 6.0).remainder_(1.0)
    return torch.stack([hue, sat, maxc], dim=-3)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`.

    Channel ``n`` (R: 5, G: 3, B: 1) is ``v - v*s*clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + 6h) mod 6``: the hexcone's six sectors in one expression per channel,
    which is several times cheaper than selecting among v, p, q, t per sector.
    """
    h, s, v = x.unbind(dim=-3)
    h6 = h * 6.0
    chroma = v * s
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = (h6 + n).remainder_(6.0)
        ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
        channels.append(v - chroma * ramp)
    return torch.stack(channels, dim=-3)


def adjust_hue(x, factor, bound):
    hsv = rgb_to_hsv(x / bound)
    hue = (hsv[:, 0] + factor.reshape(-1, 1, 1)).remainder(1.0)
    hsv = torch.stack([hue, hsv[:, 1], hsv[:, 2]], dim=1)
    return hsv_to_rgb(hsv) * bound


_ADJUST = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


@dataclass
class ColorJitterParams:
    """Per-sample jitter factors and the order each sample applies them in.

    A factor tensor is ``None`` when that adjustment is disabled. ``order[b]`` is a
    permutation of (0 brightness, 1 contrast, 2 saturation, 3 hue).

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> params = T.ColorJitter(0.4, 0.4, 0.4, 0.1).draw_params(torch.zeros(2, 3, 8, 8), seed=0)
        >>> params.brightness, params.hue
        (tensor([0.9192, 1.3778]), tensor([ 0.0211, -0.0926]))
        >>> params.order        # 0 brightness, 1 contrast, 2 saturation, 3 hue
        tensor([[1, 0, 3, 2],
                [1, 2, 3, 0]])
    """

    brightness: torch.Tensor | None  # [B] float32
    contrast: torch.Tensor | None
    saturation: torch.Tensor | None
    hue: torch.Tensor | None
    order: torch.Tensor              # [B, 4] int64

    def factors(self):
        return (self.brightness, self.contrast, self.saturation, self.hue)


def _check_range(value, name: str, center: float = 1.0, bound=(0.0, float("inf")), clip_first=True):
    """torchvision's ColorJitter argument rule: a number v means [center-v, center+v]."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"If {name} is a single number, it must be non negative.")
        value = [center - float(value), center + float(value)]
        if clip_first:
            value[0] = max(value[0], 0.0)
    else:
        value = [float(v) for v in value]
        if len(value) != 2:
            raise TypeError(f"{name} should be a single number or a sequence with length 2.")
    if not bound[0] <= value[0] <= value[1] <= bound[1]:
        raise ValueError(f"{name} values should be between {bound}, but got {value}.")
    return None if value[0] == value[1] == center else tuple(value)


class ColorJitter(Transform):
    """Randomly change brightness, contrast, saturation and hue, per sample.

    Factors are drawn uniformly from the ranges torchvision uses (brightness,
    contrast, saturation in ``[max(0, 1-v), 1+v]``; hue in ``[-h, h]``, ``h <= 0.5``),
    and every sample applies the enabled adjustments in its own random order.

    Args:
        brightness, contrast, saturation: a number ``v`` or a ``(min, max)`` range.
        hue: a number ``h`` in [0, 0.5] or a ``(min, max)`` range in [-0.5, 0.5].

    Shape:
        ``[B, 3, H, W]`` -> same.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> x = torch.full((2, 3, 4, 4), 0.5)
        >>> y = T.ColorJitter(brightness=0.5)(x, seed=0)
        >>> y.shape, bool(y[0].ne(y[1]).any())     # each sample its own factor
        (torch.Size([2, 3, 4, 4]), True)
    """

    def __init__(self, brightness=None, contrast=None, saturation=None, hue=None):
        self.brightness = _check_range(brightness, "brightness")
        self.contrast = _check_range(contrast, "contrast")
        self.saturation = _check_range(saturation, "saturation")
        self.hue = _check_range(hue, "hue", center=0.0, bound=(-0.5, 0.5), clip_first=False)

    def extra_repr(self) -> str:
        return (f"brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation}, hue={self.hue}")

    def make_params(self, ctx: ParamContext) -> ColorJitterParams:
        u = ctx.uniform(8)
        ranges = (self.brightness, self.contrast, self.saturation, self.hue)
        factors = [None if r is None else r[0] + (r[1] - r[0]) * u[:, k] for k, r in enumerate(ranges)]
        order = torch.argsort(u[:, 4:8], dim=1, stable=True)
        return ColorJitterParams(*factors, order=order)

    def apply(self, state, params):
        x = _dense(state, "ColorJitter")
        if x.shape[1] != 3 and (params.saturation is not None or params.hue is not None):
            raise ValueError(f"saturation/hue jitter needs 3-channel images, got {x.shape[1]} channels")
        factors = params.factors()
        for step in range(4):
            for op, factor in enumerate(factors):
                if factor is None:
                    continue
                rows = rows_where(params.order[:, step] == op)
                if rows.numel():
                    x[rows] = _ADJUST[op](x[rows], factor[rows].to(x.device), state.bound)
        return ImageState(x, state.dtype)


class Grayscale(Transform):
    """Convert RGB to grayscale with 1 or 3 output channels.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.Grayscale()(torch.ones(1, 3, 2, 2)).shape
        torch.Size([1, 1, 2, 2])
    """

    def __init__(self, num_output_channels: int = 1):
        if num_output_channels not in (1, 3):
            raise ValueError("num_output_channels must be 1 or 3")
        self.num_output_channels = num_output_channels

    def output_channels(self, channels: int) -> int:
        return self.num_output_channels

    def extra_repr(self) -> str:
        return f"num_output_channels={self.num_output_channels}"

    def apply(self, state, params):
        x = _dense(state, "Grayscale")
        if x.shape[1] == 1:
            return ImageState(x.expand(-1, self.num_output_channels, -1, -1).contiguous(), state.dtype)
        gray = luma(x)
        return ImageState(gray.expand(-1, self.num_output_channels, -1, -1).contiguous(), state.dtype)


@dataclass
class GrayscaleParams:
    """Which samples become grayscale.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.RandomGrayscale(0.5).draw_params(torch.zeros(4, 3, 8, 8), seed=0)
        GrayscaleParams(apply=tensor([ True, False,  True, False]))
    """

    apply: torch.Tensor  # [B] bool


class RandomGrayscale(Transform):
    """Make each sample grayscale (kept as 3 channels) with probability ``p``.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> y = T.RandomGrayscale(p=1.0)(torch.rand(2, 3, 4, 4))
        >>> bool((y[:, 0] == y[:, 1]).all())
        True
    """

    def __init__(self, p: float = 0.1):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = float(p)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def make_params(self, ctx: ParamContext) -> GrayscaleParams:
        return GrayscaleParams(apply=ctx.uniform(1)[:, 0] < self.p)

    def apply(self, state, params):
        x = _dense(state, "RandomGrayscale")
        rows = rows_where(params.apply.to(x.device))
        if rows.numel():
            x[rows] = luma(x[rows]).expand(-1, x.shape[1], -1, -1)
        return ImageState(x, state.dtype)
