"""Decode a packed batch onto the loader's device.

JPEGs that a batched device decoder can take (nvJPEG on CUDA, or DALI) go through it in
one call, fed with views into the packed buffer; everything else (PNG, WebP, GIF, BMP,
TIFF, CMYK JPEG, EXIF-rotated JPEG) is decoded by the CPU thread pool and uploaded.

One corrupt file never costs the batch: if the batched call fails, each of its samples
is retried alone, and a sample the device decoder refuses is retried on the CPU before
it is declared bad (the loader's ``on_error`` then decides).

Example:
    >>> import io, torch
    >>> from PIL import Image
    >>> from gpuaug.batch_decode import BatchDecoder
    >>> from gpuaug.decode import CpuDecoder
    >>> from gpuaug.headers import read_header
    >>> buf = io.BytesIO(); Image.new("RGB", (4, 2), "blue").save(buf, "PNG")
    >>> data = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
    >>> decoder = BatchDecoder(CpuDecoder(1))
    >>> decoder.decode([(data, read_header(data))])[0].shape, dict(decoder.counts)
    (torch.Size([3, 2, 4]), {'torchcodec': 1})
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

import torch

from .decode import CpuDecoder, flip_image, orientation_parts
from .errors import DecodeError
from .headers import ImageInfo

DECODERS = ("auto", "nvjpeg", "dali", "cpu")

BatchedJpegDecoder = Callable[[list[torch.Tensor]], list[torch.Tensor]]


class BatchDecoder:
    """Routes each sample of a batch to the batched device decoder or the CPU pool.

    Args:
        cpu: the CPU decoder pool.
        batched: decodes a list of JPEG byte tensors in one call, returning ``[3, H, W]``
            uint8 RGB tensors on the device (``None``: CPU only).
        name: what to call ``batched`` in :attr:`counts`.
        upload: moves CPU-decoded images to the device.
        applies_exif: whether ``batched`` applies EXIF orientation itself (a bool, or a
            function asked once, when the first rotated JPEG comes: e.g.
            :func:`probe_applies_exif`). If it does not, rotated JPEGs are oriented
            without a copy (see :meth:`decode_oriented`).
    """

    def __init__(self, cpu: CpuDecoder, batched: BatchedJpegDecoder | None = None, name: str = "nvjpeg",
                 upload: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
                 applies_exif: bool | Callable[[], bool] = True):
        self.cpu = cpu
        self.batched = batched
        self.name = name
        self.upload = upload
        self._applies_exif = applies_exif
        self.batched_counts: Counter = Counter()

    @property
    def counts(self) -> Counter:
        """How many images each backend decoded (batched device decoder and CPU backends)."""
        return self.batched_counts + self.cpu.counts

    @property
    def applies_exif(self) -> bool:
        if callable(self._applies_exif):
            self._applies_exif = bool(self._applies_exif())    # asked once
        return self._applies_exif

    def takes(self, info: ImageInfo) -> bool:
        """Whether the batched decoder gets this sample (any non-CMYK JPEG)."""
        return self.batched is not None and info.format == "jpeg" and not info.cmyk

    def _left_to_orient(self, info: ImageInfo) -> bool:
        """A device-decoded image still stored as in the file (the probe runs only when it matters)."""
        return info.orientation != 1 and not self.applies_exif

    def decode(self, items: list[tuple[torch.Tensor, ImageInfo]]) -> list[torch.Tensor | DecodeError]:
        """Decode to upright ``[3, H, W]`` images (pending flips applied with torch)."""
        results, flips = self.decode_oriented(items)
        return [flip_image(r, *flip) if isinstance(r, torch.Tensor) else r for r, flip in zip(results, flips)]

    def decode_oriented(self, items: list[tuple[torch.Tensor, ImageInfo]]):
        """Decode, leaving EXIF flips of device-decoded images to the caller.

        Returns:
            (images or DecodeError per item, (flip top-bottom, flip left-right) per item);
            each image, flipped as said, is upright. The transposes of orientations 5-8 are
            already applied as views.
        """
        results: list[torch.Tensor | DecodeError | None] = [None] * len(items)
        flips = [(False, False)] * len(items)
        batched_rows = [i for i, (_, info) in enumerate(items) if self.takes(info)]
        cpu_rows = [i for i in range(len(items)) if i not in set(batched_rows)]
        retried = self._decode_batched(items, batched_rows, results)
        cpu_rows += retried
        on_device = [i for i in batched_rows if i not in set(retried)]
        cpu_results = self.cpu.decode_batch([items[i] for i in cpu_rows])
        for i, result in zip(cpu_rows, cpu_results):
            if isinstance(result, torch.Tensor):
                result = self.upload(result)
            results[i] = result
        for i in on_device:      # stored as in the file: orient them (CPU results already are)
            if isinstance(results[i], torch.Tensor) and self._left_to_orient(items[i][1]):
                transpose, flip_y, flip_x = orientation_parts(items[i][1].orientation)
                if transpose:
                    results[i] = results[i].transpose(-2, -1)
                flips[i] = (flip_y, flip_x)
        return results, flips

    def _decode_batched(self, items, rows: list[int], results: list) -> list[int]:
        """Fill ``results`` for ``rows``; returns the rows left for the CPU."""
        if not rows:
            return []
        try:
            outs = self.batched([items[i][0] for i in rows])
        except Exception:  # noqa: BLE001 - one bad file must not cost the batch: retry one by one
            outs = None
        retry = []
        for k, i in enumerate(rows):
            if outs is not None:
                image = outs[k]
            else:
                try:
                    image = self.batched([items[i][0]])[0]
                except Exception:  # noqa: BLE001 - the CPU gets a go before the sample is bad
                    retry.append(i)
                    continue
            info = items[i][1]
            transposed = self._left_to_orient(info) and orientation_parts(info.orientation)[0]
            stored = (info.width, info.height) if transposed else (info.height, info.width)
            if tuple(image.shape) != (3, *stored):
                results[i] = DecodeError(f"{self.name} decoded a {tuple(image.shape[1:])} image but the header "
                                         f"says {stored}")
            else:
                results[i] = image
                self.batched_counts[self.name] += 1
        return retry


def probe_applies_exif(batched: BatchedJpegDecoder) -> bool:
    """Whether a batched decoder applies EXIF orientation: decode a 2x1 JPEG tagged
    "rotated 90 degrees" and look at the output's shape (asked once per loader)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (2, 1), "white").save(buf, "JPEG", exif=exif)
    out = batched([torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)])[0]
    return tuple(out.shape[-2:]) == (2, 1)
