"""Per-sample warps: RandomAffine, RandomRotation, RandomPerspective; and RandomZoomOut.

Every warp is one 3x3 projective matrix per sample that maps an output pixel index
``(x, y, 1)`` to a continuous source pixel coordinate (pixel centres at integers). The
reference samples it with :func:`._warp.warp_images` (``grid_sample``, align_corners=False,
torchvision's fill rule); the fused kernel composes the same matrix with the flips
around it.
Parameters follow torchvision v2's sampling, drawn per sample.

``RandomZoomOut`` is a crop window larger than the image (the outside filled), so it
fuses with the other crops.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ._base import ImageState, ParamContext, Transform
from ._geometry import CropParams, _crop_each, crop_points, interpolation_mode
from ._warp import fill_values, inverse_affine, pixel_frame, warp_images

_WARP_MODES = ("nearest", "bilinear")


@dataclass
class WarpParams:
    """Per-sample projective maps (``[B, 3, 3]`` float64) from output pixel to source pixel.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.RandomRotation(30).draw_params(torch.zeros(1, 3, 32, 48), seed=0).matrix
        tensor([[[ 0.9944,  0.1055, -1.5044],
                 [-0.1055,  0.9944,  2.5663],
                 [ 0.0000,  0.0000,  1.0000]]], dtype=torch.float64)
    """

    matrix: torch.Tensor


class _Warp(Transform):
    """Base of the warp ops: interpolation, fill, and applying the matrices of ``make_params``."""

    def __init__(self, interpolation, fill):
        mode = interpolation_mode(interpolation)
        if mode == "nearest-exact":
            mode = "nearest"
        if mode not in _WARP_MODES:
            raise ValueError(f"{type(self).__name__} supports nearest and bilinear interpolation, got {mode!r}")
        self.mode = mode
        if isinstance(fill, dict):
            raise TypeError("fill per type (dict) is not supported: give a number or a per-channel sequence")
        self.fill = fill          # None: zero padding, no coverage blend (torchvision's rule)

    def fill_values(self, channels: int = 3) -> list[float] | None:
        return fill_values(self.fill, channels)

    def forward_matrix(self, params: WarpParams, sizes) -> torch.Tensor:
        """The inverse of the sampling map, moved from pixel indices to edge coordinates."""
        n = params.matrix.shape[0]
        half = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
        half[:, :2, 2] = 0.5
        unhalf = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
        unhalf[:, :2, 2] = -0.5
        return torch.linalg.inv(half @ params.matrix.cpu().double() @ unhalf)

    def apply(self, state, params: WarpParams):
        x = state.dense()
        if x is None:
            raise ValueError(f"{type(self).__name__} needs images of one size; put a crop/resize before it")
        return ImageState(warp_images(x, params.matrix, self.mode, self.fill), state.dtype)


def _range(value, name: str, center: float = 0.0):
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"If {name} is a single number, it must be positive.")
        return (center - float(value), center + float(value))
    value = tuple(float(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{name} should be a number or a sequence of 2 numbers")
    return value


def _uniform(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * u.double()


def _centre(center, height, width):
    """torchvision's centre argument (pixels from the top-left) in centred coordinates."""
    if center is None:
        return torch.zeros_like(height, dtype=torch.float64), torch.zeros_like(width, dtype=torch.float64)
    return float(center[0]) - width.double() * 0.5, float(center[1]) - height.double() * 0.5


class RandomAffine(_Warp):
    """Random rotation, translation, scale and shear per sample (torchvision v2 semantics).

    Args:
        degrees: rotation range (a number d means (-d, d)).
        translate: ``(a, b)``: horizontal shift in (-a*W, a*W), vertical in (-b*H, b*H),
            rounded to whole pixels.
        scale: ``(lo, hi)`` scale range.
        shear: a number s (x shear in (-s, s)), ``(lo, hi)`` for x, or 4 values for x and y.
        interpolation: ``"nearest"`` (default) or ``"bilinear"``.
        fill: value outside the image (number or per channel), in the image's range.
        center: rotation centre in pixels (default: the image centre).

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.RandomAffine(30, translate=(0.1, 0.1), scale=(0.9, 1.1))(torch.rand(2, 3, 16, 16), seed=0).shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(self, degrees, translate=None, scale=None, shear=None, interpolation="nearest", fill=0,
                 center=None):
        super().__init__(interpolation, fill)
        self.degrees = _range(degrees, "degrees")
        self.translate = None if translate is None else tuple(float(t) for t in translate)
        if self.translate is not None and not all(0.0 <= t <= 1.0 for t in self.translate):
            raise ValueError("translation values should be between 0 and 1")
        self.scale = None if scale is None else tuple(float(s) for s in scale)
        if self.scale is not None and any(s <= 0 for s in self.scale):
            raise ValueError("scale values should be positive")
        if shear is None:
            self.shear = None
        elif isinstance(shear, (int, float)):
            self.shear = (-float(shear), float(shear), 0.0, 0.0)
        else:
            shear = [float(s) for s in shear]
            if len(shear) not in (2, 4):
                raise ValueError("shear should be a number or a sequence of 2 or 4 numbers")
            self.shear = tuple(shear) if len(shear) == 4 else (*shear, 0.0, 0.0)
        self.center = center

    def extra_repr(self) -> str:
        return (f"degrees={self.degrees}, translate={self.translate}, scale={self.scale}, shear={self.shear}, "
                f"interpolation={self.mode!r}")

    def make_params(self, ctx: ParamContext) -> WarpParams:
        u = ctx.uniform(6).cpu()
        h, w = ctx.sizes[:, 0].cpu(), ctx.sizes[:, 1].cpu()
        angle = _uniform(u[:, 0], *self.degrees)
        if self.translate is not None:
            max_dx, max_dy = self.translate[0] * w.double(), self.translate[1] * h.double()
            tx = torch.round(-max_dx + 2 * max_dx * u[:, 1].double())
            ty = torch.round(-max_dy + 2 * max_dy * u[:, 2].double())
        else:
            tx = ty = torch.zeros_like(angle)
        scale = _uniform(u[:, 3], *self.scale) if self.scale is not None else torch.ones_like(angle)
        shear_x = _uniform(u[:, 4], *self.shear[:2]) if self.shear is not None else torch.zeros_like(angle)
        shear_y = _uniform(u[:, 5], *self.shear[2:]) if self.shear is not None else torch.zeros_like(angle)
        cx, cy = _centre(self.center, h, w)
        centred = inverse_affine(angle, tx, ty, scale, shear_x, shear_y, cx, cy)
        to_centre, from_centre = pixel_frame(h, w)
        return WarpParams(from_centre @ centred @ to_centre)


class RandomRotation(RandomAffine):
    """Rotate each sample by its own angle in ``degrees`` (torchvision v2 semantics, ``expand=False``).

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.RandomRotation(15, interpolation="bilinear")(torch.rand(2, 3, 8, 8), seed=0).shape
        torch.Size([2, 3, 8, 8])
    """

    def __init__(self, degrees, interpolation="nearest", expand: bool = False, center=None, fill=0):
        if expand:
            raise NotImplementedError("RandomRotation(expand=True) gives every sample its own size; "
                                      "use expand=False followed by a crop/resize")
        super().__init__(degrees, interpolation=interpolation, fill=fill, center=center)

    def make_params(self, ctx: ParamContext) -> WarpParams:
        u = ctx.uniform(1).cpu()
        h, w = ctx.sizes[:, 0].cpu(), ctx.sizes[:, 1].cpu()
        # torchvision's rotate(angle) is affine(-angle): positive angles turn counter-clockwise.
        angle = -_uniform(u[:, 0], *self.degrees)
        zeros = torch.zeros_like(angle)
        cx, cy = _centre(self.center, h, w)
        centred = inverse_affine(angle, zeros, zeros, torch.ones_like(angle), zeros, zeros, cx, cy)
        to_centre, from_centre = pixel_frame(h, w)
        return WarpParams(from_centre @ centred @ to_centre)


class RandomPerspective(_Warp):
    """Perspective distortion per sample with probability ``p`` (torchvision v2 semantics).

    Each sample moves its four corners inwards by up to ``distortion_scale`` of half its
    size; the matrix maps output pixels back to the source.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.RandomPerspective(0.5, p=1.0)(torch.rand(2, 3, 12, 12), seed=0).shape
        torch.Size([2, 3, 12, 12])
    """

    def __init__(self, distortion_scale: float = 0.5, p: float = 0.5, interpolation="bilinear", fill=0):
        if not 0 <= distortion_scale <= 1:
            raise ValueError("Argument distortion_scale value should be between 0 and 1")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        super().__init__(interpolation, fill)
        self.distortion_scale = float(distortion_scale)
        self.p = float(p)

    def extra_repr(self) -> str:
        return f"distortion_scale={self.distortion_scale}, p={self.p}, interpolation={self.mode!r}"

    def make_params(self, ctx: ParamContext) -> WarpParams:
        u = ctx.uniform(9).cpu().double()
        h, w = ctx.sizes[:, 0].cpu(), ctx.sizes[:, 1].cpu()
        bound_h = torch.floor(self.distortion_scale * torch.div(h, 2, rounding_mode="floor")) + 1
        bound_w = torch.floor(self.distortion_scale * torch.div(w, 2, rounding_mode="floor")) + 1

        def randint(k, lo, hi):          # integer in [lo, hi), like torch.randint
            return torch.minimum(lo + torch.floor(u[:, k] * (hi - lo)), hi - 1)

        zero = torch.zeros_like(bound_w)
        ends = torch.stack([
            torch.stack([randint(0, zero, bound_w), randint(1, zero, bound_h)], 1),
            torch.stack([randint(2, w - bound_w, w.double()), randint(3, zero, bound_h)], 1),
            torch.stack([randint(4, w - bound_w, w.double()), randint(5, h - bound_h, h.double())], 1),
            torch.stack([randint(6, zero, bound_w), randint(7, h - bound_h, h.double())], 1),
        ], 1)                                                                # [B, 4, 2] (x, y)
        starts = torch.stack([torch.stack([zero, zero], 1), torch.stack([w - 1.0, zero], 1),
                              torch.stack([w - 1.0, h - 1.0], 1), torch.stack([zero, h - 1.0], 1)], 1)
        coeffs = perspective_coefficients(starts, ends)
        # torchvision samples at pixel centres (x + 0.5) and maps back with a -0.5.
        shift = torch.eye(3, dtype=torch.float64).repeat(len(u), 1, 1)
        shift[:, :2, 2] = 0.5
        unshift = torch.eye(3, dtype=torch.float64).repeat(len(u), 1, 1)
        unshift[:, :2, 2] = -0.5
        matrix = unshift @ coeffs @ shift
        identity = torch.eye(3, dtype=torch.float64).expand_as(matrix)
        apply = u[:, 8] < self.p
        return WarpParams(torch.where(apply.reshape(-1, 1, 1), matrix, identity))


def perspective_coefficients(starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """``[B, 3, 3]`` homography taking each sample's ``ends`` to its ``starts`` (``[B, 4, 2]``).

    Solves the 8x8 system of the 4 point pairs (float64), then rounds the coefficients to
    float32 as torchvision does before sampling.
    """
    n = starts.shape[0]
    a = torch.zeros(n, 8, 8, dtype=torch.float64)
    b = starts.reshape(n, 8).double()
    for i in range(4):
        x, y = ends[:, i, 0].double(), ends[:, i, 1].double()
        u, v = starts[:, i, 0].double(), starts[:, i, 1].double()
        a[:, 2 * i, 0], a[:, 2 * i, 1], a[:, 2 * i, 2] = x, y, 1.0
        a[:, 2 * i, 6], a[:, 2 * i, 7] = -u * x, -u * y
        a[:, 2 * i + 1, 3], a[:, 2 * i + 1, 4], a[:, 2 * i + 1, 5] = x, y, 1.0
        a[:, 2 * i + 1, 6], a[:, 2 * i + 1, 7] = -v * x, -v * y
    # Least squares rather than solve: tiny images make the system singular (corners coincide).
    coeffs = torch.linalg.lstsq(a, b.unsqueeze(-1), driver="gelsd").solution.squeeze(-1).float().double()
    return torch.cat([coeffs, torch.ones(n, 1, dtype=torch.float64)], 1).reshape(n, 3, 3)


class RandomZoomOut(Transform):
    """Place each sample on a larger canvas filled with ``fill`` (probability ``p``).

    The canvas side is ``r`` times the image's, ``r ~ U(side_range)``, the image at a
    random offset: a crop window larger than the image, so it fuses with crops.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.RandomZoomOut(side_range=(2.0, 2.0), p=1.0)(torch.ones(1, 3, 4, 4), seed=0).shape
        torch.Size([1, 3, 8, 8])
    """

    geometric = True

    def __init__(self, fill=0, side_range=(1.0, 4.0), p: float = 0.5):
        if len(side_range) != 2 or side_range[0] < 1.0 or side_range[0] > side_range[1]:
            raise ValueError(f"Invalid side range provided {side_range}.")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.fill = fill
        self.side_range = (float(side_range[0]), float(side_range[1]))
        self.p = float(p)

    def extra_repr(self) -> str:
        return f"side_range={self.side_range}, p={self.p}"

    def make_params(self, ctx: ParamContext) -> CropParams:
        u = ctx.uniform(4).cpu().double()
        h, w = ctx.sizes[:, 0].cpu(), ctx.sizes[:, 1].cpu()
        r = self.side_range[0] + u[:, 0] * (self.side_range[1] - self.side_range[0])
        canvas_w = torch.floor(w.double() * r).to(torch.int64)
        canvas_h = torch.floor(h.double() * r).to(torch.int64)
        left = torch.floor((canvas_w - w).double() * u[:, 1]).to(torch.int64)
        top = torch.floor((canvas_h - h).double() * u[:, 2]).to(torch.int64)
        apply = u[:, 3] < self.p
        return CropParams(top=torch.where(apply, -top, 0), left=torch.where(apply, -left, 0),
                          height=torch.where(apply, canvas_h, h), width=torch.where(apply, canvas_w, w))

    def output_sizes(self, sizes, params):
        return torch.stack([params.height, params.width], 1).to(sizes.device)

    def forward_matrix(self, params, sizes):
        return crop_points(params)

    def apply(self, state, params):
        return _crop_each(state, params, fill=self.fill)


