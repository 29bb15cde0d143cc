"""Pack: a batch of raw samples into one contiguous buffer plus a shape table.

Runs in the workers as the DataLoader's ``collate_fn``. Passing one uint8 tensor
between processes is several times cheaper than a list of tensors, and the header
table (format, size, channels, orientation per sample) lets the device stage plan the
whole batch (random parameters, output buffers) before decoding anything.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from .errors import HeaderError
from .headers import FORMATS, ImageInfo, read_header
from .sources import Layout, RawSample
from .targets import collate_targets

#: Refuse images above this many pixels from the header, before decoding (2x PIL's
#: decompression-bomb warning threshold, the size at which PIL itself refuses).
DEFAULT_MAX_IMAGE_PIXELS = 178_956_970

RAW = FORMATS.index("raw")
BAD = -1

# Columns of RawBatch.info.
FORMAT, HEIGHT, WIDTH, CHANNELS, ORIENTATION, BIT_DEPTH, CMYK = range(7)


@dataclass
class RawBatch:
    """A packed batch, as it crosses from the workers to the device stage.

    Attributes:
        data: ``[N]`` uint8, all samples' encoded bytes (or raw pixels) back to back.
        offsets: ``[B + 1]`` int64; sample ``b`` is ``data[offsets[b]:offsets[b+1]]``.
        info: ``[B, 7]`` int32 header table: format (index into ``FORMATS``, -1 bad),
            height, width, channels, EXIF orientation, bit depth, CMYK flag. Height
            and width are as displayed (after orientation).
        indices: ``[B]`` int64 dataset indices.
        paths: file path per sample, when known.
        errors: reason per sample found bad in the worker (else None).
        targets: ``default_collate`` of the samples' other fields.
        layout: where the image goes back in the sample structure.
        example_rest: one sample's other fields, uncollated (tells how to pick rows
            out of ``targets``).
    """

    data: torch.Tensor
    offsets: torch.Tensor
    info: torch.Tensor
    indices: torch.Tensor
    paths: list[str | None]
    errors: list[str | None]
    targets: Any = None
    layout: Layout = field(default_factory=lambda: Layout("image"))
    example_rest: Any = None
    #: (start, end) of reading and packing this batch in its worker (perf_counter clock).
    worker_span: tuple[float, float] = (0.0, 0.0)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def sample_bytes(self, b: int) -> torch.Tensor:
        """Sample ``b``'s bytes: a view into :attr:`data`, no copy."""
        return self.data[int(self.offsets[b]):int(self.offsets[b + 1])]

    def image_info(self, b: int) -> ImageInfo | None:
        row = self.info[b].tolist()
        if row[FORMAT] == BAD:
            return None
        return ImageInfo(FORMATS[row[FORMAT]], row[HEIGHT], row[WIDTH], row[CHANNELS],
                         row[ORIENTATION], row[BIT_DEPTH], bool(row[CMYK]))

    def pixels(self, b: int) -> torch.Tensor:
        """A pre-decoded sample as ``[C, H, W]`` uint8 (a view)."""
        _, h, w, c = self.info[b, :4].tolist()
        return self.sample_bytes(b).view(c, h, w)

    def pin_memory(self, device=None) -> "RawBatch":
        # torch's DataLoader calls this on custom batch types when pin_memory=True.
        self.data = self.data.pin_memory()
        return self


def inspect_sample(raw: RawSample, max_pixels: int) -> tuple[ImageInfo | None, str | None]:
    """Header of one sample (parsed, never decoded) or the reason it is unusable."""
    if raw.error is not None:
        return None, raw.error
    if raw.pixels is not None:
        c, h, w = raw.pixels.shape
        info = ImageInfo("raw", h, w, c)
    else:
        if len(raw.data) == 0:
            return None, "empty file (0 bytes)"
        try:
            info = read_header(raw.data)
        except HeaderError as e:
            return None, str(e)
    if info.height * info.width > max_pixels:
        return None, (f"image of {info.width}x{info.height} = {info.height * info.width / 1e6:.0f} MP is over "
                      f"the max_image_pixels limit of {max_pixels / 1e6:.0f} MP (possible decompression bomb)")
    return info, None


def _as_uint8_array(raw: RawSample) -> np.ndarray:
    if raw.pixels is not None:
        return raw.pixels.reshape(-1).numpy()
    data = raw.data
    if isinstance(data, np.ndarray):
        return data.reshape(-1)
    return np.frombuffer(data, dtype=np.uint8)


def pack_batch(samples: list[RawSample], max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> RawBatch:
    """Collate raw samples into a :class:`RawBatch` (the loader's ``collate_fn``)."""
    started = min((s.read_start for s in samples), default=time.perf_counter())
    infos, errors = zip(*(inspect_sample(s, max_pixels) for s in samples)) if samples else ((), ())
    chunks = [_as_uint8_array(s) if err is None else np.empty(0, np.uint8) for s, err in zip(samples, errors)]
    sizes = np.array([len(c) for c in chunks], dtype=np.int64)
    offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    data = torch.empty(int(offsets[-1]), dtype=torch.uint8)
    flat = data.numpy()
    for chunk, start in zip(chunks, offsets[:-1]):
        flat[start:start + len(chunk)] = chunk
    info = torch.tensor([_info_row(i) for i in infos], dtype=torch.int32).reshape(-1, 7)
    # The batch's structure comes from a good sample: a bad one may lack the image field
    # (so its layout and other fields differ). Bad rows' targets are never handed out
    # (raised, dropped or replaced), so they collate as copies of the good example.
    model = next((s for s, err in zip(samples, errors) if err is None), samples[0] if samples else None)
    return RawBatch(
        data=data,
        offsets=torch.from_numpy(offsets),
        info=info,
        indices=torch.tensor([s.index for s in samples], dtype=torch.int64),
        paths=[s.path for s in samples],
        errors=list(errors),
        targets=collate_rest([s if err is None else replace(s, rest=model.rest) for s, err in zip(samples, errors)]),
        layout=model.layout if model else Layout("image"),
        example_rest=model.rest if model else None,
        worker_span=(started, time.perf_counter()),
    )


def _info_row(info: ImageInfo | None) -> list[int]:
    if info is None:
        return [BAD, 0, 0, 0, 1, 8, 0]
    return [FORMATS.index(info.format), info.height, info.width, info.channels,
            info.orientation, info.bit_depth, int(info.cmyk)]


def collate_rest(samples: list[RawSample]) -> Any:
    """``default_collate`` of every sample's non-image fields (None if there are none);
    boxes and masks stay per-sample lists (:mod:`gpuaug.targets`)."""
    if not samples or samples[0].rest is None:
        return None
    return collate_targets([s.rest for s in samples])
