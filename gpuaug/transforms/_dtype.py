"""Dtype conversion and normalization (torchvision v2 semantics).

Both only change how the working float32 values are interpreted or scaled; the
actual cast to the output dtype happens once, at the end of the pipeline.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ._base import ImageState, Transform

_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _image_dtype(dtype) -> torch.dtype:
    """Accept a dtype or torchvision's ``{tv_tensors.Image: dtype, "others": ...}`` dict."""
    if isinstance(dtype, dict):
        for key, value in dtype.items():
            if getattr(key, "__name__", key) in ("Image", "others") and isinstance(value, torch.dtype):
                return value
        raise ValueError(f"cannot find an image dtype in {dtype}")
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {dtype!r}")
    if dtype != torch.uint8 and dtype not in _FLOATS:
        raise ValueError(f"ToDtype supports uint8, float32, float16, bfloat16 and float64, got {dtype}")
    return dtype


class ToDtype(Transform):
    """Convert the images to ``dtype``, rescaling values when ``scale=True``.

    uint8 -> float with ``scale`` divides by 255; float -> uint8 with ``scale``
    multiplies by 255.999 and truncates (torchvision's rule). Computation stays in
    float32 and the output is cast once at the end, so float16/bfloat16 outputs are
    rounded once rather than after every op.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.ToDtype(torch.float32, scale=True)(torch.tensor([[[[0, 255]]]], dtype=torch.uint8))
        tensor([[[[0., 1.]]]])
    """

    def __init__(self, dtype=torch.float32, scale: bool = False):
        self.dtype = _image_dtype(dtype)
        self.scale = scale

    def extra_repr(self) -> str:
        return f"dtype={self.dtype}, scale={self.scale}"

    def apply(self, state, params):
        old_int, new_int = state.dtype == torch.uint8, self.dtype == torch.uint8
        if not self.scale or old_int == new_int:
            return ImageState(state.images, self.dtype, state.owned)
        x = state.dense()
        imgs = [x] if x is not None else state.as_list()
        if new_int:   # float [0, 1] -> uint8 values, truncated like torchvision
            out = [(im.float() * (255.0 + 1.0 - 1e-3)).trunc_() for im in imgs]
        else:         # uint8 values -> [0, 1]
            out = [im.float() * (1.0 / 255.0) for im in imgs]
        return ImageState(out[0] if x is not None else out, self.dtype)


class Normalize(Transform):
    """Subtract a per-channel ``mean`` and divide by ``std`` (float images only).

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> T.Normalize([0.5], [0.25])(torch.ones(1, 1, 1, 2))
        tensor([[[[2., 2.]]]])
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], inplace: bool = False):
        self.mean = [float(m) for m in (mean if isinstance(mean, Sequence) else [mean])]
        self.std = [float(s) for s in (std if isinstance(std, Sequence) else [std])]
        if any(s == 0 for s in self.std):
            raise ValueError(f"std evaluated to zero after conversion to float32, leading to division by zero: {self.std}")

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"

    def apply(self, state, params):
        if state.dtype == torch.uint8:
            raise TypeError("Normalize expects float images; put ToDtype(torch.float32, scale=True) before it")
        x = state.dense()
        imgs = [x] if x is not None else state.as_list()
        out = []
        for im in imgs:
            channels = im.shape[-3]
            if len(self.mean) not in (1, channels) or len(self.std) not in (1, channels):
                raise ValueError(f"Normalize has {len(self.mean)} means / {len(self.std)} stds for {channels}-channel images")
            mean = torch.tensor(self.mean, dtype=torch.float32, device=im.device).reshape(-1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32, device=im.device).reshape(-1, 1, 1)
            out.append(im.float().sub(mean).div_(std))
        return ImageState(out[0] if x is not None else out, state.dtype)
