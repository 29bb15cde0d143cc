"""Automatic augmentation policies: RandAugment, TrivialAugmentWide, AutoAugment, AugMix.

torchvision v2 semantics (op set, magnitude tables, affine conventions), with every
sample drawing its own ops, magnitude bins and signs. Parameters are a ``[B, steps]``
table of op ids (into :data:`OPS`) and signed magnitudes in torchvision's units;
``apply`` runs step by step and, within a step, groups the samples by the op they
chose: one batched call per op kind on the rows that picked it (``index_select`` /
``index_copy_``), never a loop over samples.

Geometric ops (ShearX/Y, TranslateX/Y, Rotate) are one affine map per sample,
sampled with ``grid_sample`` as ``torchvision.transforms.v2.functional.affine`` does
(shears about the top-left corner, translations truncated to whole pixels, rotation
about the centre; outside the image, torchvision's fill rule: :mod:`._warp`). Color ops use the batched functionals of :mod:`._augment` and
:mod:`._color` with per-sample factors; values stay float32 in the images' range.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ._augment import (adjust_sharpness, autocontrast, dense_batch, equalize, invert, posterize,
                       solarize)
from ._base import ImageState, ParamContext, Transform
from ._color import adjust_brightness, adjust_saturation, luma
from ._geometry import interpolation_mode
from ._warp import inverse_affine, pixel_frame, warp_images
from ._mix import GAMMA_DRAWS, sample_dirichlet

OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
       "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert")
OP_INDEX = {name: k for k, name in enumerate(OPS)}
IDENTITY = OP_INDEX["Identity"]

# -- magnitude tables (torchvision's _AUGMENTATION_SPACE) ------------------------------------
# Each op maps to (magnitudes(num_bins, height, width) -> [num_bins] tensor or None, signed).

Magnitudes = Callable[[int, int, int], torch.Tensor]


def _ramp(stop: float | Callable[[int, int], float]) -> Magnitudes:
    """``num_bins`` magnitudes from 0 to ``stop`` (a number or a function of (height, width))."""
    def magnitudes(bins: int, height: int, width: int) -> torch.Tensor:
        return torch.linspace(0.0, stop(height, width) if callable(stop) else stop, bins)
    return magnitudes


def _posterize_bits(most: int, span: int) -> Magnitudes:
    """Bits from ``most`` down to ``most - span`` over the bins, rounded to whole bits."""
    def magnitudes(bins: int, height: int, width: int) -> torch.Tensor:
        return (most - torch.arange(bins, dtype=torch.float64) / ((bins - 1) / span)).round()
    return magnitudes


def _thresholds(bins: int, height: int, width: int) -> torch.Tensor:
    """Solarize thresholds as a fraction of the value range, from 1 down to 0."""
    return torch.linspace(1.0, 0.0, bins)


def _space(shear: float, translate_x, translate_y, rotate: float, color: float,
           posterize_bits: tuple[int, int]) -> dict[str, tuple[Magnitudes | None, bool]]:
    """The 13 ops every policy shares (the translations' stops may depend on the size)."""
    return {
        "ShearX": (_ramp(shear), True), "ShearY": (_ramp(shear), True),
        "TranslateX": (_ramp(translate_x), True), "TranslateY": (_ramp(translate_y), True),
        "Rotate": (_ramp(rotate), True),
        "Brightness": (_ramp(color), True), "Color": (_ramp(color), True),
        "Contrast": (_ramp(color), True), "Sharpness": (_ramp(color), True),
        "Posterize": (_posterize_bits(*posterize_bits), False), "Solarize": (_thresholds, False),
        "AutoContrast": (None, False), "Equalize": (None, False),
    }


# Translations up to 150/331 of the side (RandAugment, AutoAugment) or a third (AugMix),
# written as torchvision computes them so that the float32 magnitudes are identical.
_RAND_SPACE = _space(0.3, lambda h, w: 150.0 / 331.0 * w, lambda h, w: 150.0 / 331.0 * h, 30.0, 0.9, (8, 4))
RANDAUGMENT_SPACE = {"Identity": (None, False), **_RAND_SPACE}
TRIVIALAUGMENT_SPACE = {"Identity": (None, False), **_space(0.99, 32.0, 32.0, 135.0, 0.99, (8, 6))}
AUTOAUGMENT_SPACE = {**_RAND_SPACE, "Invert": (None, False)}
AUGMIX_PARTIAL_OPS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Posterize", "Solarize",
                      "AutoContrast", "Equalize")
_AUGMIX_ALL = _space(0.3, lambda h, w: w / 3.0, lambda h, w: h / 3.0, 30.0, 0.9, (4, 4))
AUGMIX_SPACE = {name: _AUGMIX_ALL[name]
                for name in AUGMIX_PARTIAL_OPS + ("Brightness", "Color", "Contrast", "Sharpness")}

# The ImageNet policy of Cubuk et al. (AutoAugment, 2019): 25 sub-policies of two
# (op, probability, magnitude bin out of 10) steps; None: the op takes no magnitude.
IMAGENET_POLICY = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)), (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)), (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)), (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)), (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)), (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)), (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)), (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)), (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)), (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)), (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)), (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)), (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
)


def _index_below(u: torch.Tensor, n: int) -> torch.Tensor:
    """Uniform integers in [0, n) from uniforms in [0, 1)."""
    return torch.floor(u.double() * n).clamp(max=n - 1).to(torch.int64)


def signed_magnitudes(space: dict, names: Sequence[str], local_ops: torch.Tensor, bins: torch.Tensor,
                      num_bins: int, sizes: torch.Tensor, negate: torch.Tensor) -> torch.Tensor:
    """Each sample's magnitude of its op: ``space[name](num_bins, h, w)[bin]``, negated where
    the op is signed and ``negate`` says so; 0 for ops without a magnitude.

    The tables depend on the image size (translations), so they are built once per
    distinct size in the batch (one, for a dense batch) with torch's own linspace.

    Args:
        local_ops, bins, negate: ``[B, S]`` op indices into ``names``, bin indices, bools.
        sizes: ``[B, 2]`` (height, width).
    """
    device = local_ops.device
    unique_sizes, which = torch.unique(sizes.cpu(), dim=0, return_inverse=True)
    table = torch.zeros(len(unique_sizes), len(names), num_bins)
    for s, (height, width) in enumerate(unique_sizes.tolist()):
        for k, name in enumerate(names):
            magnitudes = space[name][0]
            if magnitudes is not None:
                table[s, k] = magnitudes(num_bins, height, width).float()
    value = table[which.reshape(-1, 1), local_ops.cpu(), bins.cpu()].to(device)
    signed = torch.tensor([space[name][1] for name in names], device=device)[local_ops]
    return torch.where(signed & negate, -value, value)


# -- the ops on a batch --------------------------------------------------------------------

def op_matrices(name: str, magnitude: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[n, 3, 3]`` output-pixel -> source-pixel maps of a geometric op, per sample."""
    m = magnitude.detach().double().cpu()
    zeros, ones = torch.zeros_like(m), torch.ones_like(m)
    h, w = torch.full_like(m, height), torch.full_like(m, width)
    corner_x, corner_y = -w / 2, -h / 2          # center=[0, 0] (top-left) in centred coordinates
    if name == "ShearX":
        centred = inverse_affine(zeros, zeros, zeros, ones, torch.rad2deg(torch.atan(m)), zeros, corner_x, corner_y)
    elif name == "ShearY":
        centred = inverse_affine(zeros, zeros, zeros, ones, zeros, torch.rad2deg(torch.atan(m)), corner_x, corner_y)
    elif name == "TranslateX":                   # int(magnitude): whole pixels, truncated
        centred = inverse_affine(zeros, m.trunc(), zeros, ones, zeros, zeros, zeros, zeros)
    elif name == "TranslateY":
        centred = inverse_affine(zeros, zeros, m.trunc(), ones, zeros, zeros, zeros, zeros)
    elif name == "Rotate":                       # rotate(angle) is affine(-angle): counter-clockwise
        centred = inverse_affine(-m, zeros, zeros, ones, zeros, zeros, zeros, zeros)
    else:
        raise ValueError(f"{name} is not a geometric op")
    to_centre, from_centre = pixel_frame(h, w)
    return from_centre @ centred @ to_centre


def _adjust_contrast(x: torch.Tensor, factor: torch.Tensor, bound: float) -> torch.Tensor:
    gray = luma(x) if x.shape[1] == 3 else x
    mean = gray.mean(dim=(-3, -2, -1), keepdim=True)
    f = factor.reshape(-1, 1, 1, 1)
    return (x * f + mean * (1 - f)).clamp_(0, bound)


def _adjust_color(x: torch.Tensor, factor: torch.Tensor, bound: float) -> torch.Tensor:
    return adjust_saturation(x, factor, bound) if x.shape[1] == 3 else x    # one channel: no color


_GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
_COLOR_OPS = {
    "Brightness": lambda x, m, bound: adjust_brightness(x, 1.0 + m, bound),
    "Color": lambda x, m, bound: _adjust_color(x, 1.0 + m, bound),
    "Contrast": lambda x, m, bound: _adjust_contrast(x, 1.0 + m, bound),
    "Sharpness": lambda x, m, bound: adjust_sharpness(x, 1.0 + m, bound),
    "Posterize": lambda x, m, bound: posterize(x, m.trunc(), bound),
    "Solarize": lambda x, m, bound: solarize(x, bound * m, bound),
    "AutoContrast": lambda x, m, bound: autocontrast(x, bound),
    "Equalize": lambda x, m, bound: equalize(x, bound),
    "Invert": lambda x, m, bound: invert(x, bound),
}


def render_op(name: str, x: torch.Tensor, magnitude: torch.Tensor, bound: float, mode: str, fill) -> torch.Tensor:
    """Op ``name`` on every sample of ``x`` ``[n, C, H, W]`` with its own ``magnitude`` ``[n]``."""
    if name == "Identity":
        return x
    if name in _GEOMETRIC:
        return warp_images(x, op_matrices(name, magnitude, *x.shape[-2:]), mode, fill)
    return _COLOR_OPS[name](x, magnitude.to(device=x.device, dtype=torch.float32), bound)


def apply_per_sample_ops(x: torch.Tensor, ops: torch.Tensor, magnitudes: torch.Tensor, bound: float,
                         mode: str, fill) -> torch.Tensor:
    """``x[b] = OPS[ops[b]](x[b], magnitudes[b])`` in place, one batched call per op kind present."""
    ops = ops.cpu()
    for kind in ops.unique().tolist():
        if kind == IDENTITY:
            continue
        rows = (ops == kind).nonzero().flatten()
        rows_dev = rows.to(x.device)
        out = render_op(OPS[kind], x.index_select(0, rows_dev), magnitudes[rows.to(magnitudes.device)],
                        bound, mode, fill)
        x.index_copy_(0, rows_dev, out)
    return x


# -- the transforms ------------------------------------------------------------------------

@dataclass
class AutoAugmentParams:
    """Each sample's op sequence: ``ops[b, s]`` indexes :data:`OPS` (Identity where a
    step does nothing) and ``magnitudes[b, s]`` is its signed magnitude.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> params = T.RandAugment(2, 9).draw_params(torch.zeros(2, 3, 8, 8), seed=0)
        >>> from gpuaug.transforms._auto import OPS
        >>> [[OPS[k] for k in row] for row in params.ops.tolist()]
        [['Rotate', 'AutoContrast'], ['Equalize', 'Rotate']]
        >>> params.magnitudes            # signed, in torchvision's units (degrees for Rotate)
        tensor([[ 9.,  0.],
                [ 0., -9.]])
    """

    ops: torch.Tensor         # [B, steps] int64
    magnitudes: torch.Tensor  # [B, steps] float32


class _AutoAugmentBase(Transform):
    def __init__(self, interpolation, fill):
        mode = interpolation_mode(interpolation)
        mode = "nearest" if mode == "nearest-exact" else mode
        if mode not in ("nearest", "bilinear"):
            raise ValueError(f"{type(self).__name__} supports nearest and bilinear interpolation, got {mode!r}")
        if isinstance(fill, dict):
            raise TypeError("fill per type (dict) is not supported: give a number or a per-channel sequence")
        self.mode = mode
        self.fill = fill

    def _check_channels(self, x: torch.Tensor) -> None:
        if x.shape[1] not in (1, 3):
            raise ValueError(f"{type(self).__name__} expects 1- or 3-channel images, got {x.shape[1]} channels")

    def apply(self, state, params: AutoAugmentParams):
        x = dense_batch(state, type(self).__name__)
        self._check_channels(x)
        for step in range(params.ops.shape[1]):
            x = apply_per_sample_ops(x, params.ops[:, step], params.magnitudes[:, step], state.bound,
                                     self.mode, self.fill)
        return ImageState(x, state.dtype)


def _ops_of(space: dict, local_ops: torch.Tensor) -> torch.Tensor:
    """Indices into ``space``'s names -> indices into :data:`OPS`."""
    to_global = torch.tensor([OP_INDEX[name] for name in space], device=local_ops.device)
    return to_global[local_ops]


class RandAugment(_AutoAugmentBase):
    """``num_ops`` random ops of fixed ``magnitude`` per sample (torchvision v2 RandAugment).

    Each sample picks its own ops uniformly among the 14 of RandAugment (Identity,
    ShearX/Y, TranslateX/Y, Rotate, Brightness, Color, Contrast, Sharpness, Posterize,
    Solarize, AutoContrast, Equalize) and its own signs.

    Args:
        num_ops: ops applied in sequence.
        magnitude: bin index of the magnitudes, in ``[0, num_magnitude_bins)``.
        num_magnitude_bins: number of magnitude bins.
        interpolation: ``"nearest"`` (default) or ``"bilinear"`` for the geometric ops.
        fill: value outside the image after geometric ops (number or per channel, in the
            images' range); ``None`` is zero padding.

    Shape:
        ``[B, C, H, W]`` -> same, C in (1, 3).

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
        >>> T.RandAugment(num_ops=2, magnitude=9)(x, seed=0).shape
        torch.Size([4, 3, 16, 16])
    """

    space = RANDAUGMENT_SPACE

    def __init__(self, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31,
                 interpolation="nearest", fill=None):
        super().__init__(interpolation, fill)
        if not isinstance(num_ops, int) or num_ops < 0:
            raise ValueError(f"num_ops should be a non-negative integer, but got {num_ops} instead.")
        if not 0 <= magnitude < num_magnitude_bins:
            raise ValueError(f"magnitude must be in [0, num_magnitude_bins={num_magnitude_bins}), got {magnitude}")
        self.num_ops = num_ops
        self.magnitude = int(magnitude)
        self.num_magnitude_bins = int(num_magnitude_bins)

    def extra_repr(self) -> str:
        return (f"num_ops={self.num_ops}, magnitude={self.magnitude}, "
                f"num_magnitude_bins={self.num_magnitude_bins}, interpolation={self.mode!r}, fill={self.fill}")

    def make_params(self, ctx: ParamContext) -> AutoAugmentParams:
        n = self.num_ops
        u = ctx.uniform(2 * n)
        local = _index_below(u[:, :n], len(self.space))
        bins = torch.full_like(local, self.magnitude)
        magnitudes = signed_magnitudes(self.space, list(self.space), local, bins, self.num_magnitude_bins,
                                       ctx.sizes, u[:, n:] < 0.5)
        return AutoAugmentParams(ops=_ops_of(self.space, local), magnitudes=magnitudes)


class TrivialAugmentWide(_AutoAugmentBase):
    """One random op with a random magnitude bin per sample (torchvision v2 TrivialAugmentWide).

    Args:
        num_magnitude_bins: number of magnitude bins, each sample drawing one uniformly.
        interpolation: ``"nearest"`` (default) or ``"bilinear"`` for the geometric ops.
        fill: value outside the image after geometric ops; ``None`` is zero padding.

    Shape:
        ``[B, C, H, W]`` -> same, C in (1, 3).

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.TrivialAugmentWide()(torch.rand(3, 3, 16, 16), seed=0).shape
        torch.Size([3, 3, 16, 16])
    """

    space = TRIVIALAUGMENT_SPACE

    def __init__(self, num_magnitude_bins: int = 31, interpolation="nearest", fill=None):
        super().__init__(interpolation, fill)
        if num_magnitude_bins < 1:
            raise ValueError("num_magnitude_bins must be positive")
        self.num_magnitude_bins = int(num_magnitude_bins)

    def extra_repr(self) -> str:
        return f"num_magnitude_bins={self.num_magnitude_bins}, interpolation={self.mode!r}, fill={self.fill}"

    def make_params(self, ctx: ParamContext) -> AutoAugmentParams:
        u = ctx.uniform(3)
        local = _index_below(u[:, 0:1], len(self.space))
        bins = _index_below(u[:, 1:2], self.num_magnitude_bins)
        magnitudes = signed_magnitudes(self.space, list(self.space), local, bins, self.num_magnitude_bins,
                                       ctx.sizes, u[:, 2:3] < 0.5)
        return AutoAugmentParams(ops=_ops_of(self.space, local), magnitudes=magnitudes)


def _policy_name(policy) -> str:
    return str(getattr(policy, "value", policy)).lower()


class AutoAugment(_AutoAugmentBase):
    """The learned AutoAugment policy, one sub-policy drawn per sample (torchvision v2 AutoAugment).

    Each sample picks one of the 25 ImageNet sub-policies; each of its two steps
    applies with the step's probability, with a random sign for signed ops.

    Args:
        policy: ``torchvision.transforms.AutoAugmentPolicy.IMAGENET`` or ``"imagenet"``
            (the CIFAR10 and SVHN policies are not implemented).
        interpolation: ``"nearest"`` (default) or ``"bilinear"`` for the geometric ops.
        fill: value outside the image after geometric ops; ``None`` is zero padding.

    Shape:
        ``[B, C, H, W]`` -> same, C in (1, 3).

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.AutoAugment("imagenet")(torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8), seed=0).dtype
        torch.uint8
    """

    space = AUTOAUGMENT_SPACE
    num_magnitude_bins = 10

    def __init__(self, policy="imagenet", interpolation="nearest", fill=None):
        super().__init__(interpolation, fill)
        if _policy_name(policy) != "imagenet":
            raise ValueError(f"AutoAugment: only the ImageNet policy is implemented, got {policy!r}")
        self.policy = policy
        names = list(self.space)
        self._names = names
        self._policy_ops = torch.tensor([[names.index(op) for op, _, _ in sub] for sub in IMAGENET_POLICY])
        self._policy_probs = torch.tensor([[p for _, p, _ in sub] for sub in IMAGENET_POLICY])
        self._policy_bins = torch.tensor([[0 if b is None else b for _, _, b in sub] for sub in IMAGENET_POLICY])

    def extra_repr(self) -> str:
        return f"policy={_policy_name(self.policy)!r}, interpolation={self.mode!r}, fill={self.fill}"

    def make_params(self, ctx: ParamContext) -> AutoAugmentParams:
        u = ctx.uniform(5)
        device = u.device
        chosen = _index_below(u[:, 0], len(IMAGENET_POLICY))
        local = self._policy_ops.to(device)[chosen]                       # [B, 2]
        applied = u[:, 1:3] < self._policy_probs.to(device)[chosen]
        magnitudes = signed_magnitudes(self.space, self._names, local, self._policy_bins.to(device)[chosen],
                                       self.num_magnitude_bins, ctx.sizes, u[:, 3:5] < 0.5)
        ops = torch.where(applied, _ops_of(self.space, local), IDENTITY)
        return AutoAugmentParams(ops=ops, magnitudes=torch.where(applied, magnitudes, 0.0))


@dataclass
class AugMixParams:
    """Per sample: ``mixture_width`` chains of ops (Identity past the chain's depth) and the
    mixing weights ``[original, chain 1, ..., chain W]`` (they sum to 1).

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> params = T.AugMix().draw_params(torch.zeros(1, 3, 8, 8), seed=0)
        >>> params.ops.shape, round(params.weights.sum().item(), 6)    # 3 chains of up to 3 ops; weights
        (torch.Size([1, 3, 3]), 1.0)
    """

    ops: torch.Tensor         # [B, width, depth] int64
    magnitudes: torch.Tensor  # [B, width, depth] float32
    weights: torch.Tensor     # [B, width + 1] float64


class AugMix(_AutoAugmentBase):
    """AugMix: mix each sample with ``mixture_width`` randomly augmented copies of itself.

    As torchvision v2: ``out = m * x + (1 - m) * sum_i w_i * chain_i(x)`` with
    ``(m, 1 - m) ~ Dirichlet(alpha, alpha)``, ``w ~ Dirichlet(alpha, ..., alpha)``, each
    chain ``chain_depth`` ops long (or 1 to 3 at random), each op drawn with a magnitude
    bin below ``severity`` out of 10. Here the weights, depths, ops and magnitudes are
    all drawn per sample (torchvision draws the depths per batch). The Dirichlet draws
    come from Gamma variates of the counter-based generator (see :mod:`._mix`).

    Args:
        severity: 1..10, the magnitude bins used.
        mixture_width: number of chains.
        chain_depth: ops per chain; negative: 1 to 3 drawn per chain.
        alpha: Dirichlet parameter.
        all_ops: also use Brightness, Color, Contrast and Sharpness.
        interpolation: ``"bilinear"`` (default) or ``"nearest"`` for the geometric ops.
        fill: value outside the image after geometric ops; ``None`` is zero padding.

    Shape:
        ``[B, C, H, W]`` -> same, C in (1, 3).

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.AugMix()(torch.rand(2, 3, 16, 16), seed=0).shape
        torch.Size([2, 3, 16, 16])
    """

    space = AUGMIX_SPACE

    def __init__(self, severity: int = 3, mixture_width: int = 3, chain_depth: int = -1, alpha: float = 1.0,
                 all_ops: bool = True, interpolation="bilinear", fill=None):
        super().__init__(interpolation, fill)
        if not 1 <= severity <= 10:
            raise ValueError(f"The severity must be between [1, 10]. Got {severity} instead.")
        if mixture_width < 1:
            raise ValueError("mixture_width must be positive")
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        self.severity = severity
        self.mixture_width = mixture_width
        self.chain_depth = chain_depth
        self.alpha = float(alpha)
        self.all_ops = all_ops
        self._names = list(self.space) if all_ops else list(AUGMIX_PARTIAL_OPS)

    def extra_repr(self) -> str:
        return (f"severity={self.severity}, mixture_width={self.mixture_width}, chain_depth={self.chain_depth}, "
                f"alpha={self.alpha}, all_ops={self.all_ops}, interpolation={self.mode!r}, fill={self.fill}")

    def make_params(self, ctx: ParamContext) -> AugMixParams:
        width = self.mixture_width
        depth = self.chain_depth if self.chain_depth > 0 else 3
        n_weights = (2 + width) * GAMMA_DRAWS
        u = ctx.uniform(n_weights + width + 3 * width * depth)
        keep = sample_dirichlet(u[:, :2 * GAMMA_DRAWS], [self.alpha] * 2)                  # [B, 2]
        chains = sample_dirichlet(u[:, 2 * GAMMA_DRAWS:n_weights], [self.alpha] * width)    # [B, width]
        weights = torch.cat([keep[:, :1], chains * keep[:, 1:]], dim=1)
        offset = n_weights + width
        if self.chain_depth > 0:
            depths = torch.full((len(u), width), depth, dtype=torch.int64, device=u.device)
        else:
            depths = 1 + _index_below(u[:, n_weights:offset], 3)
        draws = u[:, offset:].reshape(len(u), width, depth, 3)
        local = _index_below(draws[..., 0], len(self._names))
        bins = _index_below(draws[..., 1], self.severity)
        flat = lambda t: t.reshape(len(u), width * depth)  # noqa: E731
        magnitudes = signed_magnitudes(self.space, self._names, flat(local), flat(bins), 10, ctx.sizes,
                                       flat(draws[..., 2] < 0.5)).reshape(local.shape)
        to_global = torch.tensor([OP_INDEX[name] for name in self._names], device=u.device)
        in_chain = torch.arange(depth, device=u.device).reshape(1, 1, -1) < depths.unsqueeze(-1)
        ops = torch.where(in_chain, to_global[local], IDENTITY)
        return AugMixParams(ops=ops, magnitudes=torch.where(in_chain, magnitudes, 0.0), weights=weights)

    def apply(self, state, params: AugMixParams):
        x = dense_batch(state, "AugMix")
        self._check_channels(x)
        weights = params.weights.to(device=x.device, dtype=torch.float32).reshape(*params.weights.shape, 1, 1, 1)
        mixed = weights[:, 0] * x
        for chain in range(params.ops.shape[1]):
            augmented = x.clone()
            for step in range(params.ops.shape[2]):
                augmented = apply_per_sample_ops(augmented, params.ops[:, chain, step],
                                                 params.magnitudes[:, chain, step], state.bound, self.mode, self.fill)
            mixed += weights[:, chain + 1] * augmented
        return ImageState(mixed, state.dtype)
