"""``from_torchvision``: turn an existing torchvision pipeline into a gpuaug one.

Accepts ``torchvision.transforms`` (v1) and ``torchvision.transforms.v2`` objects. Ops
that only convert containers (``ToImage``, ``PILToTensor``) disappear: gpuaug already
works on uint8 tensors. ``ToTensor`` and ``ConvertImageDtype`` become
``ToDtype(..., scale=True)``. Anything else is named in a clear error.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from . import transforms as T

_DROPPED = {"ToImage", "PILToTensor", "ToPureTensor"}


def _padding_ltrb(op) -> Any:
    padding = op.padding
    if padding is not None and type(op).__module__.startswith("torchvision.transforms.v2") and len(padding) == 4:
        left, right, top, bottom = padding       # v2 stores the parsed (l, r, t, b) form
        return (left, top, right, bottom)
    return padding


def _size(size):
    return list(size) if isinstance(size, (list, tuple)) else size


_CONVERTERS: dict[str, Callable[[Any], T.Transform]] = {
    "RandomResizedCrop": lambda op: T.RandomResizedCrop(_size(op.size), tuple(op.scale), tuple(op.ratio),
                                                        op.interpolation, op.antialias),
    "Resize": lambda op: T.Resize(_size(op.size), op.interpolation, op.max_size, op.antialias),
    "CenterCrop": lambda op: T.CenterCrop(_size(op.size)),
    "RandomCrop": lambda op: T.RandomCrop(_size(op.size), _padding_ltrb(op), op.pad_if_needed, op.fill,
                                          op.padding_mode),
    "RandomHorizontalFlip": lambda op: T.RandomHorizontalFlip(op.p),
    "RandomVerticalFlip": lambda op: T.RandomVerticalFlip(op.p),
    "ColorJitter": lambda op: T.ColorJitter(*(None if v is None else tuple(v)
                                              for v in (op.brightness, op.contrast, op.saturation, op.hue))),
    "Grayscale": lambda op: T.Grayscale(op.num_output_channels),
    "RandomGrayscale": lambda op: T.RandomGrayscale(op.p),
    "Normalize": lambda op: T.Normalize(list(op.mean), list(op.std)),
    "ToDtype": lambda op: T.ToDtype(op.dtype, op.scale),
    "ConvertImageDtype": lambda op: T.ToDtype(op.dtype, scale=True),
    "ToTensor": lambda op: T.ToDtype(torch.float32, scale=True),
    "RandomRotation": lambda op: T.RandomRotation(tuple(op.degrees), op.interpolation, op.expand, op.center,
                                                  _fill(op)),
    "RandomAffine": lambda op: T.RandomAffine(tuple(op.degrees), op.translate, op.scale, op.shear,
                                              op.interpolation, _fill(op), op.center),
    "RandomPerspective": lambda op: T.RandomPerspective(op.distortion_scale, op.p, op.interpolation, _fill(op)),
    "RandomZoomOut": lambda op: T.RandomZoomOut(_fill(op), tuple(op.side_range), op.p),
    "GaussianBlur": lambda op: T.GaussianBlur(tuple(op.kernel_size), tuple(op.sigma)),
    "RandomSolarize": lambda op: T.RandomSolarize(op.threshold, op.p),
    "RandomPosterize": lambda op: T.RandomPosterize(op.bits, op.p),
    "RandomAutocontrast": lambda op: T.RandomAutocontrast(op.p),
    "RandomEqualize": lambda op: T.RandomEqualize(op.p),
    "RandomInvert": lambda op: T.RandomInvert(op.p),
    "RandomAdjustSharpness": lambda op: T.RandomAdjustSharpness(op.sharpness_factor, op.p),
    # v2 keeps value="random" as None (v1 keeps the string) and a number as a 1-list.
    "RandomErasing": lambda op: T.RandomErasing(op.p, tuple(op.scale), tuple(op.ratio),
                                                "random" if op.value is None else op.value, op.inplace),
    "RandAugment": lambda op: T.RandAugment(op.num_ops, op.magnitude, op.num_magnitude_bins, op.interpolation,
                                            op.fill),
    "TrivialAugmentWide": lambda op: T.TrivialAugmentWide(op.num_magnitude_bins, op.interpolation, op.fill),
    "AutoAugment": lambda op: T.AutoAugment(op.policy, op.interpolation, op.fill),
    "AugMix": lambda op: T.AugMix(op.severity, op.mixture_width, op.chain_depth, op.alpha, op.all_ops,
                                  op.interpolation, op.fill),
}


def _fill(op):
    """The user's fill: v2 keeps it as ``fill``; v1 too (v2 also has a parsed ``_fill``)."""
    fill = getattr(op, "fill", 0)
    return 0 if fill is None else fill


def _flatten(pipeline) -> list:
    if type(pipeline).__name__ == "Compose" and hasattr(pipeline, "transforms"):
        ops = []
        for t in pipeline.transforms:
            ops.extend(_flatten(t))
        return ops
    if isinstance(pipeline, (list, tuple)):
        return [op for t in pipeline for op in _flatten(t)]
    return [pipeline]


def from_torchvision(pipeline) -> T.Compose:
    """Convert a torchvision v1 or v2 ``Compose`` (or single op) to :class:`gpuaug.transforms.Compose`.

    Args:
        pipeline: ``torchvision.transforms.Compose``, ``torchvision.transforms.v2.Compose``,
            a list of ops, or a single op.
    Raises:
        ValueError: naming every op that has no gpuaug equivalent and its position.

    Example:
        >>> import torch, gpuaug
        >>> import torchvision.transforms.v2 as v2
        >>> gpuaug.from_torchvision(v2.Compose([v2.ToImage(), v2.RandomResizedCrop(224),
        ...     v2.ToDtype(torch.float32, scale=True)])).transforms[0]
        RandomResizedCrop(size=(224, 224), scale=(0.08, 1.0), ratio=(0.75, 1.3333333333333333), interpolation='bilinear')
    """
    converted, unsupported = [], []
    for position, op in enumerate(_flatten(pipeline)):
        name = type(op).__name__
        if isinstance(op, T.Transform):
            converted.append(op)
        elif name in _DROPPED:
            continue
        elif name in _CONVERTERS:
            converted.append(_CONVERTERS[name](op))
        else:
            unsupported.append(f"{name} (position {position})")
    if unsupported:
        raise ValueError("cannot convert to gpuaug: " + ", ".join(unsupported) +
                         f". Supported: {', '.join(sorted(_CONVERTERS))} (and {', '.join(sorted(_DROPPED))}, "
                         "which are dropped)")
    return T.Compose(converted)
