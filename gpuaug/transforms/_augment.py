"""Pixel-value augmentations with per-sample parameters (torchvision v2 semantics).

GaussianBlur, RandomSolarize, RandomPosterize, RandomAutocontrast, RandomEqualize,
RandomInvert, RandomAdjustSharpness and RandomErasing. Each ``p`` is a per-sample
apply flag (``u < p`` with ``u`` in [0, 1): exact at p=0 and p=1).

The batched functionals below (``gaussian_blur``, ``solarize``, ``posterize``,
``autocontrast``, ``equalize``, ``invert``, ``adjust_sharpness``) take per-sample
parameters as ``[B]`` tensors and work on float32 values in ``[0, bound]`` (255 while
the images are logically uint8, 1.0 for float); RandAugment and friends reuse them.

Two ops quantize by definition. On logically-uint8 images, ``posterize`` and
``equalize`` first round the working values to whole levels (the level the user would
see; working values are otherwise never re-quantized between ops). On float images,
``equalize`` bins with torchvision's float -> uint8 conversion (``trunc(x * 255.999)``)
and ``posterize`` uses torchvision's float formula.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ..rng import bits_to_uniform, philox4x32, random_bits
from ._base import ImageState, ParamContext, Transform, rows_where
from ._geometry import size_pair


def dense_batch(state: ImageState, op: str) -> torch.Tensor:
    """The batch as one writable float32 ``[B, C, H, W]`` tensor (never the caller's)."""
    x = state.writable_dense()
    if x is None:
        raise ValueError(f"{op} needs images of one size; put a crop/resize to a fixed size before it")
    return x


def _per_sample(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``[B]`` parameters as ``[B, 1, 1, 1]`` on the images' device, for broadcasting."""
    return values.to(device=x.device, dtype=torch.float32).reshape(-1, 1, 1, 1)


def random_words(ctx: ParamContext, n: int) -> torch.Tensor:
    """``[B, n]`` uint32 words (int64) of this op's stream: the bits behind ``ctx.uniform``."""
    keys = ctx.keys
    return random_bits(keys.seed, keys.epoch, keys.indices, ctx.position, n).to(ctx.sizes.device)


def box_muller(u1: torch.Tensor, u2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent standard normals from two uniforms in [0, 1) (Box–Muller)."""
    radius = torch.sqrt(-2.0 * torch.log1p(-u1))      # log(1 - u1), 1 - u1 in (0, 1]
    angle = (2.0 * math.pi) * u2
    return radius * torch.cos(angle), radius * torch.sin(angle)


# Philox key of the per-pixel noise stream; the per-sample words go into the counter.
_NOISE_KEY = (0x5EED0E2A, 0x0B0C5E75)


def normal_noise(sample_words: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``[B, *shape]`` float32 standard normals, a pure function of each sample's two words.

    Pixel block ``k`` of sample ``b`` is ``philox4x32((k, w0[b], w1[b], 0), key)``: four
    uniforms, two Box–Muller pairs. Counter-based, so noise of any size needs no state
    and the same bits come out on every device (the float log/cos may differ in the
    last ulp between CPU and GPU).
    """
    n = math.prod(shape)
    batch = sample_words.shape[0]
    blocks = torch.arange((n + 3) // 4, dtype=torch.int64, device=sample_words.device).reshape(1, -1)
    w0, w1 = sample_words[:, 0:1], sample_words[:, 1:2]
    counter = torch.broadcast_tensors(blocks, w0, w1, torch.zeros_like(w0))
    words = torch.stack(philox4x32(counter, _NOISE_KEY), dim=-1)          # [B, blocks, 4]
    u = bits_to_uniform(words)
    z = torch.stack(box_muller(u[..., 0], u[..., 1]) + box_muller(u[..., 2], u[..., 3]), dim=-1)
    return z.reshape(batch, -1)[:, :n].reshape(batch, *shape)


# -- batched functionals ------------------------------------------------------------------

def gaussian_kernels(size: int, sigma: torch.Tensor) -> torch.Tensor:
    """``[B, size]`` normalized 1-D Gaussian kernels, one per sample's sigma."""
    offsets = torch.arange(size, dtype=torch.float32, device=sigma.device) - (size - 1) / 2
    weights = torch.exp(-0.5 * (offsets / sigma.float().reshape(-1, 1)) ** 2)
    return weights / weights.sum(dim=1, keepdim=True)


def gaussian_blur(x: torch.Tensor, kernel_size: tuple[int, int], sigma: torch.Tensor) -> torch.Tensor:
    """Blur each sample with its own sigma (torchvision's kernel and reflect padding).

    The 2-D Gaussian is separable: one horizontal and one vertical grouped convolution
    where every (sample, channel) plane is its own group, carrying its sample's kernel.

    Args:
        x: ``[B, C, H, W]`` float.
        kernel_size: ``(kx, ky)`` odd sizes, x first as in torchvision.
        sigma: ``[B]`` standard deviations (the same along x and y).
    """
    n, c, h, w = x.shape
    kx, ky = kernel_size
    sigma = sigma.to(x.device)
    planes = F.pad(x.reshape(1, n * c, h, w), (kx // 2, kx // 2, ky // 2, ky // 2), mode="reflect")
    row_kernels = gaussian_kernels(kx, sigma).repeat_interleave(c, dim=0).reshape(n * c, 1, 1, kx)
    col_kernels = gaussian_kernels(ky, sigma).repeat_interleave(c, dim=0).reshape(n * c, 1, ky, 1)
    planes = F.conv2d(planes, row_kernels, groups=n * c)
    planes = F.conv2d(planes, col_kernels, groups=n * c)
    return planes.reshape(n, c, h, w)


def invert(x: torch.Tensor, bound: float) -> torch.Tensor:
    return bound - x


def solarize(x: torch.Tensor, threshold: torch.Tensor, bound: float) -> torch.Tensor:
    """Invert the values at or above each sample's ``threshold`` (``[B]``, in ``[0, bound]``)."""
    return torch.where(x >= _per_sample(threshold, x), bound - x, x)


def to_uint8_levels(x: torch.Tensor, bound: float) -> torch.Tensor:
    """Whole uint8 levels (float32) of the values: rounded on the 0..255 scale, or
    torchvision's float -> uint8 conversion (``trunc(x * 255.999)``) for float images."""
    levels = x.round() if bound == 255.0 else (x * (255.0 + 1.0 - 1e-3)).trunc()
    return levels.clamp_(0, 255)


def posterize(x: torch.Tensor, bits: torch.Tensor, bound: float) -> torch.Tensor:
    """Keep the ``bits[b]`` (0..8) most significant bits of each sample's values.

    uint8 scale: ``level & mask`` (= level rounded down to a multiple of 2**(8-bits)),
    8 bits leaving the values untouched; float: ``floor(x * 2**bits) / 2**bits`` clamped
    to the top level, torchvision's formula for float images.
    """
    bits = _per_sample(bits, x)
    if bound == 255.0:
        step = torch.exp2(8.0 - bits)
        return torch.where(bits >= 8, x, torch.floor(to_uint8_levels(x, bound) / step) * step)
    levels = torch.exp2(bits)
    return torch.minimum(torch.floor(x * levels).clamp_(min=0), levels - 1) / levels


def autocontrast(x: torch.Tensor, bound: float) -> torch.Tensor:
    """Stretch each image's channels to the full range; flat channels are kept as they are."""
    low = x.amin(dim=(-2, -1), keepdim=True)
    high = x.amax(dim=(-2, -1), keepdim=True)
    flat = high == low
    low = torch.where(flat, torch.zeros_like(low), low)
    inv_scale = torch.where(flat, torch.ones_like(high), (high - low) / bound)
    return ((x - low) / inv_scale).clamp_(0, bound)


def equalize(x: torch.Tensor, bound: float) -> torch.Tensor:
    """Histogram-equalize every channel of every image on the uint8 scale (torchvision/PIL rule).

    One ``bincount`` builds all ``B * C`` 256-bin histograms at once (each plane's
    levels offset by 256 * plane). PIL's lookup table: ``step = (pixels not at the
    plane's highest level) // 255``, ``lut[0] = 0``,
    ``lut[k] = min((cumhist[k-1] + step // 2) // step, 255)``; planes with ``step == 0``
    (nearly constant) keep their levels.
    """
    n, c, h, w = x.shape
    planes = n * c
    levels = to_uint8_levels(x, bound).to(torch.int64).reshape(planes, h * w)
    offsets = torch.arange(planes, device=x.device).reshape(-1, 1) * 256
    hist = torch.bincount((levels + offsets).flatten(), minlength=planes * 256).reshape(planes, 256)
    top = levels.amax(dim=1, keepdim=True)
    step = torch.div(h * w - hist.gather(1, top), 255, rounding_mode="floor")     # [planes, 1]
    cumulative = hist.cumsum(dim=1)
    shifted = torch.cat([torch.zeros_like(cumulative[:, :1]), cumulative[:, :-1]], dim=1)
    lut = torch.div(shifted + step // 2, step.clamp(min=1), rounding_mode="floor").clamp_(max=255)
    identity = torch.arange(256, device=x.device).expand_as(lut)
    lut = torch.where(step > 0, lut, identity)
    equalized = lut.gather(1, levels).to(torch.float32).reshape(n, c, h, w)
    return equalized if bound == 255.0 else equalized / 255.0


# torchvision's smoothing kernel for sharpness: 1 around, 5 in the middle, normalized.
_SMOOTH = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0


def adjust_sharpness(x: torch.Tensor, factor: torch.Tensor, bound: float) -> torch.Tensor:
    """Blend each sample with its smoothed self: ``factor`` 0 smooths, 1 keeps, >1 sharpens.

    Only interior pixels change (the 3x3 kernel needs all neighbours); images of height
    or width <= 2 are returned unchanged, as in torchvision.
    """
    n, c, h, w = x.shape
    if h <= 2 or w <= 2:
        return x
    kernel = _SMOOTH.to(x.device).reshape(1, 1, 3, 3)
    smooth = F.conv2d(x.reshape(n * c, 1, h, w), kernel).reshape(n, c, h - 2, w - 2)
    out = x.clone()
    inner = x[..., 1:-1, 1:-1]
    f = _per_sample(factor, x)
    out[..., 1:-1, 1:-1] = (smooth + f * (inner - smooth)).clamp_(0, bound)
    return out


# -- ops with a per-sample apply flag -------------------------------------------------------

@dataclass
class ApplyParams:
    """Which samples the op applies to.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.RandomInvert(0.5).draw_params(torch.zeros(4, 3, 8, 8), seed=0)
        ApplyParams(apply=tensor([ True, False,  True, False]))
    """

    apply: torch.Tensor  # [B] bool


def _check_p(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    return float(p)


class _RandomApply(Transform):
    """Apply ``render`` to each sample with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = _check_p(p)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def make_params(self, ctx: ParamContext) -> ApplyParams:
        return ApplyParams(apply=ctx.uniform(1)[:, 0] < self.p)

    def render(self, x: torch.Tensor, bound: float) -> torch.Tensor:
        raise NotImplementedError

    def apply(self, state, params: ApplyParams):
        rows = rows_where(params.apply)
        if rows.numel() == 0:
            return state                     # nothing to do: no copy
        x = dense_batch(state, type(self).__name__)
        rows = rows.to(x.device)
        x.index_copy_(0, rows, self.render(x.index_select(0, rows), state.bound))
        return ImageState(x, state.dtype)


class RandomInvert(_RandomApply):
    """Invert the values of each sample (``bound - x``) with probability ``p``.

    Args:
        p: probability for each sample.

    Shape:
        ``[B, C, H, W]`` -> same.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.RandomInvert(p=1.0)(torch.tensor([[[[0, 200]]]], dtype=torch.uint8))[0, 0, 0].tolist()
        [255, 55]
    """

    def render(self, x, bound):
        return invert(x, bound)


class RandomSolarize(_RandomApply):
    """Invert the values at or above ``threshold`` of each sample with probability ``p``.

    Args:
        threshold: in the images' range (0..255 for uint8 images, 0..1 for float).
        p: probability for each sample.

    Shape:
        ``[B, C, H, W]`` -> same.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.RandomSolarize(128, p=1.0)(torch.tensor([[[[100, 200]]]], dtype=torch.uint8))[0, 0, 0].tolist()
        [100, 55]
    """

    def __init__(self, threshold: float, p: float = 0.5):
        super().__init__(p)
        self.threshold = float(threshold)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, p={self.p}"

    def render(self, x, bound):
        if self.threshold > bound:
            raise TypeError(f"Threshold should be less or equal the maximum value of the dtype, "
                            f"but got {self.threshold} for images in [0, {bound:g}]")
        return solarize(x, torch.full((len(x),), self.threshold), bound)


class RandomPosterize(_RandomApply):
    """Reduce each sample to ``bits`` bits per channel with probability ``p``.

    ``bits`` counts bits of the uint8 scale, as in torchvision; float images use
    torchvision's float rule ``floor(x * 2**bits) / 2**bits``.

    Args:
        bits: 0..8.
        p: probability for each sample.

    Shape:
        ``[B, C, H, W]`` -> same.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.RandomPosterize(2, p=1.0)(torch.tensor([[[[100, 200]]]], dtype=torch.uint8))[0, 0, 0].tolist()
        [64, 192]
    """

    def __init__(self, bits: int, p: float = 0.5):
        super().__init__(p)
        if not isinstance(bits, int) or not 0 <= bits <= 8:
            raise TypeError(f"bits must be a positive integer in the range [0, 8], got {bits} instead.")
        self.bits = bits

    def extra_repr(self) -> str:
        return f"bits={self.bits}, p={self.p}"

    def render(self, x, bound):
        return posterize(x, torch.full((len(x),), float(self.bits)), bound)


class RandomAutocontrast(_RandomApply):
    """Stretch each channel of each sample to the full range with probability ``p``.

    Args:
        p: probability for each sample.

    Shape:
        ``[B, C, H, W]`` -> same.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.RandomAutocontrast(p=1.0)(torch.tensor([[[[50, 100, 150]]]], dtype=torch.uint8))[0, 0, 0].tolist()
        [0, 128, 255]
    """

    def render(self, x, bound):
        return autocontrast(x, bound)


class RandomEqualize(_RandomApply):
    """Histogram-equalize each channel of each sample with probability ``p``.

    Works on the uint8 scale with torchvision's (PIL's) lookup-table rule, for uint8
    and float images alike (float images are binned like torchvision's conversion).

    Args:
        p: probability for each sample.

    Shape:
        ``[B, C, H, W]`` -> same.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> x = (torch.arange(1024) // 16).to(torch.uint8).reshape(1, 1, 32, 32)   # levels 0..63
        >>> y = T.RandomEqualize(p=1.0)(x)
        >>> int(y.min()), int(y.max())
        (0, 255)
    """

    def render(self, x, bound):
        return equalize(x, bound)


class RandomAdjustSharpness(_RandomApply):
    """Change the sharpness of each sample by ``sharpness_factor`` with probability ``p``.

    Args:
        sharpness_factor: 0 gives the smoothed image, 1 the original, 2 doubles the sharpness.
        p: probability for each sample.

    Shape:
        ``[B, C, H, W]`` -> same.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> x = torch.zeros(1, 1, 3, 3); x[0, 0, 1, 1] = 0.5
        >>> round(T.RandomAdjustSharpness(0.0, p=1.0)(x)[0, 0, 1, 1].item(), 4)   # 0.5 * 5 / 13
        0.1923
    """

    def __init__(self, sharpness_factor: float, p: float = 0.5):
        super().__init__(p)
        if sharpness_factor < 0:
            raise ValueError("sharpness_factor must be non-negative")
        self.sharpness_factor = float(sharpness_factor)

    def extra_repr(self) -> str:
        return f"sharpness_factor={self.sharpness_factor}, p={self.p}"

    def render(self, x, bound):
        return adjust_sharpness(x, torch.full((len(x),), self.sharpness_factor), bound)


# -- Gaussian blur --------------------------------------------------------------------------

@dataclass
class BlurParams:
    """Per-sample standard deviation of the Gaussian (the same along x and y).

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.GaussianBlur(5, (0.1, 2.0)).draw_params(torch.zeros(4, 3, 8, 8), seed=0)
        BlurParams(sigma=tensor([0.8582, 1.9473, 0.1370, 1.5960]))
    """

    sigma: torch.Tensor  # [B] float32


def _sigma_range(sigma) -> tuple[float, float]:
    if isinstance(sigma, (int, float)):
        sigma = (float(sigma), float(sigma))
    else:
        sigma = tuple(float(s) for s in sigma)
        if len(sigma) == 1:
            sigma = sigma * 2
        if len(sigma) != 2:
            raise ValueError(f"sigma should be a number or a sequence of 1 or 2 numbers, got {sigma}")
    if not 0.0 < sigma[0] <= sigma[1]:
        raise ValueError(f"sigma values should be positive and of the form (min, max). Got {sigma}")
    return sigma


class GaussianBlur(Transform):
    """Blur each sample with a Gaussian of its own ``sigma ~ U(sigma)``.

    torchvision's kernel (``exp(-t**2 / (2 sigma**2))`` at integer offsets, normalized)
    and reflect padding; the blur runs as two grouped 1-D convolutions over the batch.

    Args:
        kernel_size: odd int, or ``(kx, ky)`` (x first, as in torchvision).
        sigma: a fixed positive number, or a ``(min, max)`` range to draw from.

    Shape:
        ``[B, C, H, W]`` -> same (H, W larger than half the kernel, for reflect padding).

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> x = torch.zeros(2, 1, 5, 5); x[:, :, 2, 2] = 1.0
        >>> y = T.GaussianBlur(3, sigma=(0.5, 2.0))(x, seed=0)
        >>> round(y[0].sum().item(), 4), bool(y[0, 0, 2, 2] != y[1, 0, 2, 2])   # per-sample sigma
        (1.0, True)
    """

    def __init__(self, kernel_size, sigma=(0.1, 2.0)):
        self.kernel_size = size_pair(kernel_size, "kernel_size")
        if any(k <= 0 or k % 2 == 0 for k in self.kernel_size):
            raise ValueError("Kernel size value should be an odd and positive number.")
        self.sigma = _sigma_range(sigma)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, sigma={self.sigma}"

    def make_params(self, ctx: ParamContext) -> BlurParams:
        lo, hi = self.sigma
        return BlurParams(sigma=lo + (hi - lo) * ctx.uniform(1)[:, 0])

    def apply(self, state, params: BlurParams):
        x = dense_batch(state, "GaussianBlur")
        return ImageState(gaussian_blur(x, self.kernel_size, params.sigma), state.dtype)


# -- random erasing -------------------------------------------------------------------------

@dataclass
class EraseParams:
    """Per-sample box to erase; ``apply`` is False where p said no or no box fitted.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> params = T.RandomErasing(1.0).draw_params(torch.zeros(2, 3, 32, 48), seed=0)
        >>> params.apply, params.top, params.left, params.height, params.width
        (tensor([True, True]), tensor([1, 4]), tensor([0, 8]), tensor([31, 23]), tensor([14,  9]))
    """

    apply: torch.Tensor        # [B] bool
    top: torch.Tensor          # [B] int64
    left: torch.Tensor         # [B] int64
    height: torch.Tensor       # [B] int64
    width: torch.Tensor        # [B] int64
    noise_words: torch.Tensor  # [B, 2] int64 uint32 words keying the value="random" noise


class RandomErasing(Transform):
    """Erase a random box of each sample with probability ``p`` (torchvision v2 semantics).

    Box sampling as torchvision: up to 10 attempts of (area fraction ~ U(scale),
    log aspect ~ U(log ratio)), ``h = round(sqrt(area * aspect))``,
    ``w = round(sqrt(area / aspect))``, valid if ``h < H`` and ``w < W``; the first
    valid one is used at a uniform position, and a sample with no valid attempt is left
    unchanged. The 10 attempts of all samples are drawn at once.

    Args:
        p: probability for each sample.
        scale: range of the erased area as a fraction of the image.
        ratio: range of the box aspect ratio (height / width here, as torchvision computes it).
        value: fill in the images' range: a number, one value per channel, or ``"random"``
            for standard normal noise (as torchvision; meant for normalized float images),
            drawn from the counter-based generator so it replays exactly.
        inplace: accepted for compatibility; the caller's tensor is never modified.

    Shape:
        ``[B, C, H, W]`` -> same.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> y = T.RandomErasing(p=1.0, value=0)(torch.ones(4, 3, 32, 32), seed=0)
        >>> bool((y == 0).any()), bool((y == 1).any())
        (True, True)
    """

    attempts = 10

    def __init__(self, p: float = 0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0.0, inplace: bool = False):
        self.p = _check_p(p)
        if not isinstance(value, (int, float, str, tuple, list)):
            raise TypeError("Argument value should be either a number or str or a sequence")
        if isinstance(value, str) and value != "random":
            raise ValueError("If value is str, it should be 'random'")
        if scale[0] > scale[1] or ratio[0] > ratio[1]:
            raise ValueError("Scale and ratio should be of kind (min, max)")
        if scale[0] < 0 or scale[1] > 1:
            raise ValueError("Scale should be between 0 and 1")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.value = value if isinstance(value, str) else (
            [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value])
        self.inplace = inplace

    def extra_repr(self) -> str:
        return f"p={self.p}, scale={self.scale}, ratio={self.ratio}, value={self.value}"

    def make_params(self, ctx: ParamContext) -> EraseParams:
        n = self.attempts
        words = random_words(ctx, 1 + 4 * n + 2)
        u = bits_to_uniform(words[:, :1 + 4 * n]).double()   # apply, then per attempt: area, log-ratio, top, left
        height = ctx.sizes[:, 0:1].double()
        width = ctx.sizes[:, 1:2].double()
        area = height * width * (self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 1:1 + n])
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1 + n:1 + 2 * n])
        h = torch.round(torch.sqrt(area * aspect))           # round half to even, like Python's round
        w = torch.round(torch.sqrt(area / aspect))
        valid = (h < height) & (w < width)
        top = torch.floor(u[:, 1 + 2 * n:1 + 3 * n] * (height - h + 1)).clamp(max=height - h)
        left = torch.floor(u[:, 1 + 3 * n:1 + 4 * n] * (width - w + 1)).clamp(max=width - w)
        first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)   # first valid attempt
        pick = lambda t: t.gather(1, first).squeeze(1).to(torch.int64)  # noqa: E731
        return EraseParams(apply=(u[:, 0] < self.p) & valid.any(dim=1), top=pick(top), left=pick(left),
                           height=pick(h), width=pick(w), noise_words=words[:, 1 + 4 * n:])

    def apply(self, state, params: EraseParams):
        x = dense_batch(state, "RandomErasing")
        n, c, h, w = x.shape
        if self.value != "random" and len(self.value) not in (1, c):
            raise ValueError(f"If value is a sequence, it should have either a single value or {c} "
                             f"(number of input channels)")
        dev = x.device
        top, left = params.top.to(dev).reshape(-1, 1, 1), params.left.to(dev).reshape(-1, 1, 1)
        bottom, right = top + params.height.to(dev).reshape(-1, 1, 1), left + params.width.to(dev).reshape(-1, 1, 1)
        ys = torch.arange(h, device=dev).reshape(1, -1, 1)
        xs = torch.arange(w, device=dev).reshape(1, 1, -1)
        inside = (ys >= top) & (ys < bottom) & (xs >= left) & (xs < right)
        inside = (inside & params.apply.to(dev).reshape(-1, 1, 1)).unsqueeze(1)          # [B, 1, H, W]
        if self.value == "random":
            fill = normal_noise(params.noise_words.to(dev), (c, h, w))
        else:
            fill = torch.tensor(self.value, dtype=torch.float32, device=dev).reshape(1, -1, 1, 1)
        return ImageState(torch.where(inside, fill, x), state.dtype)
