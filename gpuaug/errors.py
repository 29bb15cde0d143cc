"""Errors and records for samples that cannot be turned into an image.

A bad sample never costs the rest of its batch: every stage reports problems per
sample as a :class:`BadSample`, and the loader applies its ``on_error`` policy.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BadSample:
    """One sample that could not be read, parsed or decoded.

    Args:
        index: the sample's dataset index (or its running position for an iterable dataset).
        path: the file it came from, when known.
        reason: what went wrong, in words.

    Example:
        >>> from gpuaug import BadSample
        >>> BadSample(12, "train/cat/1.jpg", "truncated JPEG").describe()
        'sample 12 (train/cat/1.jpg): truncated JPEG'
    """

    index: int
    path: str | None
    reason: str

    def describe(self) -> str:
        where = f"sample {self.index}" + (f" ({self.path})" if self.path else "")
        return f"{where}: {self.reason}"


class BadSampleError(RuntimeError):
    """Raised with ``on_error="raise"`` when a sample is not a usable image.

    The message names the dataset index, the path when known, and the reason.
    ``err.sample`` holds the :class:`BadSample`.

    Example:
        >>> import gpuaug
        >>> loader = gpuaug.DataLoader([(b"not an image", 0)], batch_size=1, device="cpu")
        >>> try:
        ...     next(iter(loader))
        ... except gpuaug.BadSampleError as e:
        ...     print(e.sample.index, "|", e)
        0 | bad image in sample 0: ...
    """

    def __init__(self, sample: BadSample):
        super().__init__(f"bad image in {sample.describe()}")
        self.sample = sample


class HeaderError(ValueError):
    """The bytes are not an image we can parse, or the header is truncated/corrupt."""


class DecodeError(ValueError):
    """The header parsed but decoding the pixels failed (truncated or corrupt data)."""


class FusedUnavailable(RuntimeError):
    """An accelerated path cannot run here (no compiler, no CUDA device, no CuPy or DALI...).

    Raised by the fused backends and the GPU decoders; the loader falls back to the torch
    reference (or the CPU decoder) with a warning unless that path was asked for explicitly.

    Example:
        >>> import torch
        >>> from gpuaug import FusedUnavailable
        >>> from gpuaug.fused import cuda_backend
        >>> try:
        ...     backend = cuda_backend("cuda")
        ... except FusedUnavailable as e:
        ...     backend = None                    # no GPU or no CuPy here: the reference runs instead
        >>> backend is None or backend.name == "cuda"
        True
    """
