"""Sampling an image through a projective map, shared by the warps and the auto-augment policies.

A map is one ``[B, 3, 3]`` matrix per sample from an output pixel index ``(x, y, 1)``
to a continuous source pixel coordinate (pixel centres at integers). Affine ops are
built in coordinates centred on the image, as torchvision's are
(:func:`inverse_affine`, then :func:`pixel_frame` back to indices).

What lies outside the source follows torchvision v2's rule for tensors
(``_apply_grid_transform``): with ``fill=None`` the zero padding of ``grid_sample``
stays as it is; with a fill (a number or one value per channel) the coverage of every
output pixel is sampled like a fourth channel and picks the fill (nearest) or blends
it in (bilinear) -- so ``fill=0`` and ``fill=None`` differ along the borders.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def pixel_frame(height: torch.Tensor, width: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Matrices from pixel indices to coordinates centred on the image, and back.

    torchvision's affine works in coordinates centred on the image (pixel ``j`` is at
    ``j - w/2 + 0.5``); grid_sample with align_corners=False maps them back the same way.

    Example:
        >>> import torch
        >>> to_centre, from_centre = pixel_frame(torch.tensor([4]), torch.tensor([6]))
        >>> (to_centre @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)).tolist()   # top-left pixel
        [[-2.5, -1.5, 1.0]]
    """
    n = height.shape[0]
    to_centre = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    to_centre[:, 0, 2] = -width.double() / 2 + 0.5
    to_centre[:, 1, 2] = -height.double() / 2 + 0.5
    from_centre = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    from_centre[:, 0, 2] = width.double() / 2 - 0.5
    from_centre[:, 1, 2] = height.double() / 2 - 0.5
    return to_centre, from_centre


def inverse_affine(angle, translate_x, translate_y, scale, shear_x, shear_y, center_x, center_y) -> torch.Tensor:
    """``[B, 3, 3]`` map from output to input, in centred coordinates (torchvision's affine model).

    The forward map is ``T(translate) . C . R(angle) . Sh(shear) . S(scale) . C^-1``
    (angles in degrees, clockwise rotation of the image for positive angles as in
    torchvision); this returns its inverse, which is what sampling needs.
    """
    rot, sx, sy = (torch.deg2rad(v.double()) for v in (angle, shear_x, shear_y))
    # Rotation combined with shear, without scale (determinant 1).
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -torch.cos(rot - sy) * torch.tan(sx) / torch.cos(sy) - torch.sin(rot)
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = -torch.sin(rot - sy) * torch.tan(sx) / torch.cos(sy) + torch.cos(rot)
    scale = scale.double()
    m = torch.zeros(a.shape[0], 3, 3, dtype=torch.float64)
    m[:, 0, 0], m[:, 0, 1] = d / scale, -b / scale
    m[:, 1, 0], m[:, 1, 1] = -c / scale, a / scale
    m[:, 2, 2] = 1.0
    cx, cy, tx, ty = (v.double() for v in (center_x, center_y, translate_x, translate_y))
    # Undo the translation and the centre shift before the inverse linear part, redo the centre after.
    m[:, 0, 2] = m[:, 0, 0] * (-cx - tx) + m[:, 0, 1] * (-cy - ty) + cx
    m[:, 1, 2] = m[:, 1, 0] * (-cx - tx) + m[:, 1, 1] * (-cy - ty) + cy
    return m


def fill_values(fill, channels: int) -> list[float] | None:
    """``fill`` as one float per channel (``None`` stays ``None``: no fill, zero padding)."""
    if fill is None:
        return None
    values = [float(v) for v in fill] if isinstance(fill, Sequence) else [float(fill)]
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise ValueError(f"fill has {len(values)} values for {channels} channels")
    return values


def warp_images(x: torch.Tensor, matrix: torch.Tensor, mode: str, fill) -> torch.Tensor:
    """Sample ``x`` ``[B, C, H, W]`` (float) at ``matrix @ (j, i, 1)`` for every output pixel ``(i, j)``.

    Args:
        x: the images.
        matrix: ``[B, 3, 3]`` output pixel -> source pixel maps.
        mode: ``"nearest"`` or ``"bilinear"``.
        fill: ``None``, a number, or one value per channel (see the module docstring).

    Example:
        >>> import torch
        >>> shift = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])   # x -> x + 1
        >>> x = torch.arange(4.0).reshape(1, 1, 1, 4)
        >>> warp_images(x, shift, "nearest", None), warp_images(x, shift, "nearest", 9.0)
        (tensor([[[[1., 2., 3., 0.]]]]), tensor([[[[1., 2., 3., 9.]]]]))
    """
    n, c, h, w = x.shape
    # The grid is built where the images are (a [B, H, W, 2] host grid would have to be uploaded).
    coords = dict(dtype=torch.float64, device=x.device)
    ys, xs = torch.meshgrid(torch.arange(h, **coords), torch.arange(w, **coords), indexing="ij")
    pixels = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(1, -1, 3)         # [1, HW, 3]
    src = pixels @ matrix.to(**coords).transpose(1, 2)                                   # [B, HW, 3]
    sx, sy = src[..., 0] / src[..., 2], src[..., 1] / src[..., 2]
    grid = torch.stack([(2 * sx + 1) / w - 1, (2 * sy + 1) / h - 1], dim=-1).reshape(n, h, w, 2).to(x.dtype)
    fill = fill_values(fill, c)
    if fill is None:
        return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)
    sampled = F.grid_sample(torch.cat([x, torch.ones_like(x[:, :1])], dim=1), grid, mode=mode,
                            padding_mode="zeros", align_corners=False)
    img, coverage = sampled[:, :c], sampled[:, c:]
    fill_img = torch.tensor(fill, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    if mode == "nearest":
        return torch.where(coverage < 0.5, fill_img, img)
    return (img - fill_img) * coverage + fill_img
