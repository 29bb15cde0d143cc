"""Sources: turn ``dataset[i]`` into a :class:`RawSample` without decoding anything.

Runs in the DataLoader worker processes. Whatever the dataset returns, the image field
becomes either the file's encoded bytes (read, never decoded) or, when the dataset
already produced pixels (PIL image, numpy array, uint8 tensor), those pixels as a
``[C, H, W]`` uint8 tensor. All other fields of the sample are kept untouched for
torch's ``default_collate``.

Recognised image fields:

=====================================================  ====================================
dataset gives                                          read as
=====================================================  ====================================
``torchvision.datasets.ImageFolder`` / ``DatasetFolder`` the file at ``samples[i]`` (loader not called)
``bytes``, ``bytearray``, ``memoryview``                 encoded bytes
1-D uint8 numpy array or tensor                         encoded bytes
``str`` / ``os.PathLike``                               the file's bytes
``{"bytes": ..., "path": ...}`` (Hugging Face, decode=False) the bytes, else the file at path
``PIL.Image.Image``                                     pixels (converted to RGB)
2-D / 3-D uint8 numpy array (HWC)                       pixels
2-D / 3-D uint8 tensor (CHW)                            pixels
=====================================================  ====================================
"""
from __future__ import annotations

import os
import warnings
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class Layout:
    """Where the image sits in a dataset's sample, so the batch can be rebuilt.

    ``kind`` is ``"image"`` (the sample is the image), ``"sequence"`` (tuple/list,
    image at position ``key``) or ``"mapping"`` (dict, image under ``key``).
    """

    kind: str
    key: Any = None
    sample_type: type | None = None   # namedtuple class to rebuild, if any


@dataclass
class RawSample:
    """One sample as a worker hands it over: bytes or pixels, plus the other fields.

    Exactly one of ``data`` (encoded bytes) and ``pixels`` (``[C, H, W]`` uint8) is
    set, unless ``error`` says why neither could be had.
    """

    index: int
    data: bytes | memoryview | np.ndarray | None = None
    pixels: torch.Tensor | None = None
    path: str | None = None
    rest: Any = None          # the sample without its image field (None for kind "image")
    layout: Layout | None = None
    error: str | None = None
    read_start: float = field(default_factory=time.perf_counter)   # for the profiler's timeline


def _is_folder_dataset(dataset) -> bool:
    return hasattr(dataset, "samples") and hasattr(dataset, "loader") and hasattr(dataset, "target_transform")


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class SampleReader:
    """Reads ``dataset[index]`` as a :class:`RawSample`.

    Args:
        dataset: any map-style dataset (or the samples an iterable dataset yields,
            through :meth:`convert`).
        image_key: which element (int, for tuple samples; default 0) or key (for
            dict samples; default: see :func:`find_image_field`) holds the image.

    Example:
        >>> from gpuaug.sources import SampleReader
        >>> raw = SampleReader([(b"\\xff\\xd8...", 3)]).read(0)
        >>> raw.data[:2], raw.rest, raw.layout.kind
        (b'\\xff\\xd8', (3,), 'sequence')
    """

    def __init__(self, dataset, image_key: int | str | None = None):
        self.dataset = dataset
        self.image_key = image_key
        self.folder = _is_folder_dataset(dataset)
        if self.folder and getattr(dataset, "transform", None) is not None:
            warnings.warn(f"{type(dataset).__name__}.transform is ignored: gpuaug reads the raw file and "
                          "applies the DataLoader's transform on the batch instead", stacklevel=3)

    def read(self, index: int) -> RawSample:
        if self.folder:
            return self._read_folder(index)
        return self.convert(self.dataset[index], index)

    def _read_folder(self, index: int) -> RawSample:
        path, target = self.dataset.samples[index]
        if self.dataset.target_transform is not None:
            target = self.dataset.target_transform(target)
        raw = RawSample(index, path=str(path), rest=(target,), layout=Layout("sequence", 0))
        return _load_path(raw)

    def convert(self, item: Any, index: int) -> RawSample:
        """Split one sample into its image field and the rest."""
        if isinstance(item, dict):
            key = find_image_field(item) if self.image_key is None else self.image_key
            if key not in item:
                # A bad sample like an unreadable file (named, then raised, skipped or
                # replaced by ``on_error``), not a bare KeyError out of a worker.
                return RawSample(index, rest=item, layout=Layout("mapping", key), error=_missing_field(item, key))
            rest = {k: v for k, v in item.items() if k != key}
            layout = Layout("mapping", key)
            value = item[key]
        elif isinstance(item, (tuple, list)):
            key = 0 if self.image_key is None else self.image_key
            if not isinstance(key, int) or not -len(item) <= key < len(item):
                raise IndexError(f"sample {index} is a {type(item).__name__} of length {len(item)}; "
                                 f"image_key={key!r} is not a valid position")
            key %= len(item)
            rest = tuple(v for k, v in enumerate(item) if k != key)
            namedtuple_type = type(item) if hasattr(item, "_fields") else None
            layout = Layout("sequence", key, namedtuple_type)
            value = item[key]
        else:
            rest, layout, value = None, Layout("image"), item
        raw = RawSample(index, rest=rest, layout=layout)
        return _fill_image(raw, value)


#: Field names taken as the image of a dict sample when no ``image_key`` is given, in
#: this order of preference: ``"image"`` (Hugging Face), then the file extensions under
#: which WebDataset-style tar shards store images (``"jpg"`` for ``key.jpg``...).
IMAGE_FIELDS = ("image", "img", "jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "ppm", "pgm", "pnm")


def find_image_field(item: dict) -> str:
    """The image field of a dict sample: the first of :data:`IMAGE_FIELDS` it has.

    Only whole field names count (``"seg.png"``, a mask, is not the image). Returns
    ``"image"`` when none is present, so the error names the usual key.

    Example:
        >>> from gpuaug.sources import find_image_field
        >>> find_image_field({"__key__": "a/x", "jpg": b"...", "seg.png": b"...", "cls": b"3"})
        'jpg'
    """
    return next((name for name in IMAGE_FIELDS if name in item), "image")


def _missing_field(item: dict, key) -> str:
    fields = sorted((k for k in item if not str(k).startswith("__")), key=str)
    if not fields:
        have = "no fields at all"
    else:
        have = "its fields: " + ", ".join(repr(k) for k in fields)
    guessed = " (none of the image fields looked for by extension: " + ", ".join(IMAGE_FIELDS) + ")"
    return (f"no image field {key!r}{guessed if key == 'image' else ''}; {have}; "
            "pass image_key= to gpuaug.DataLoader to name the image field")


def _load_path(raw: RawSample) -> RawSample:
    try:
        raw.data = read_file(raw.path)
    except OSError as e:
        raw.error = f"cannot read file: {e.strerror or e}"
    return raw


def _fill_image(raw: RawSample, value: Any) -> RawSample:
    """Classify the image field (see the module table) and fill ``raw``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw.data = bytes(value) if isinstance(value, bytearray) else value
    elif isinstance(value, (str, os.PathLike)):
        raw.path = os.fspath(value)
        _load_path(raw)
    elif isinstance(value, dict):
        raw.path = value.get("path")
        if value.get("bytes") is not None:
            raw.data = value["bytes"]
        elif raw.path is not None:
            _load_path(raw)
        else:
            raw.error = "image dict has neither 'bytes' nor 'path'"
    elif isinstance(value, np.ndarray):
        _from_array(raw, value, hwc=True)
    elif isinstance(value, torch.Tensor):
        _from_array(raw, value, hwc=False)
    elif _is_pil_image(value):
        rgb = value if value.mode == "RGB" else value.convert("RGB")
        raw.pixels = torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).contiguous()
    elif value is None:
        raw.error = "the image field is None"
    else:
        raw.error = f"unsupported image type {type(value).__name__}"
    return raw


def _is_pil_image(value) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - PIL is a dependency of torchvision
        return False
    return isinstance(value, Image.Image)


def _from_array(raw: RawSample, value, hwc: bool) -> None:
    if value.dtype not in (np.uint8, torch.uint8):
        raw.error = f"image array must be uint8, got {value.dtype}"
        return
    if value.ndim == 1:                  # an encoded file held in an array
        raw.data = value.numpy() if isinstance(value, torch.Tensor) else value
        return
    if isinstance(value, np.ndarray) and not value.flags.writeable:
        value = value.copy()   # e.g. np.asarray(PIL image); torch refuses to wrap read-only memory
    t = torch.as_tensor(value)
    if t.ndim == 2:
        t = t.unsqueeze(-1 if hwc else 0)
    if t.ndim != 3:
        raw.error = f"image array must have 1, 2 or 3 dims, got shape {tuple(value.shape)}"
        return
    if hwc:
        t = t.permute(2, 0, 1)
    raw.pixels = t.contiguous()
