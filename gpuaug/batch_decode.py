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

from .decode import CpuDecoder
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
    """

    def __init__(self, cpu: CpuDecoder, batched: BatchedJpegDecoder | None = None, name: str = "nvjpeg",
                 upload: Callable[[torch.Tensor], torch.Tensor] = lambda t: t):
        self.cpu = cpu
        self.batched = batched
        self.name = name
        self.upload = upload
        self.batched_counts: Counter = Counter()

    @property
    def counts(self) -> Counter:
        """How many images each backend decoded (batched device decoder and CPU backends)."""
        return self.batched_counts + self.cpu.counts

    def takes(self, info: ImageInfo) -> bool:
        """Whether the batched decoder gets this sample (plain JPEG, stored upright)."""
        return self.batched is not None and info.format == "jpeg" and not info.cmyk and info.orientation == 1

    def decode(self, items: list[tuple[torch.Tensor, ImageInfo]]) -> list[torch.Tensor | DecodeError]:
        results: list[torch.Tensor | DecodeError | None] = [None] * len(items)
        batched_rows = [i for i, (_, info) in enumerate(items) if self.takes(info)]
        cpu_rows = [i for i in range(len(items)) if i not in set(batched_rows)]
        cpu_rows += self._decode_batched(items, batched_rows, results)
        cpu_results = self.cpu.decode_batch([items[i] for i in cpu_rows])
        for i, result in zip(cpu_rows, cpu_results):
            if isinstance(result, torch.Tensor):
                result = self.upload(result)
            results[i] = result
        return results

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
            if tuple(image.shape) != (3, info.height, info.width):
                results[i] = DecodeError(f"{self.name} decoded a {tuple(image.shape[1:])} image but the header "
                                         f"says {(info.height, info.width)}")
            else:
                results[i] = image
                self.batched_counts[self.name] += 1
        return retry
