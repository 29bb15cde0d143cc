"""CPU decoding of encoded images into ``[3, H, W]`` uint8 RGB tensors.

Worker processes only read bytes; the main process decodes whole batches here, on
a thread pool (the backends below release the GIL while decoding).

Which backend decodes what, and why:

=====================  ============================================================
format                 backend
=====================  ============================================================
JPEG (not CMYK), PNG,  TorchCodec (``torchcodec.decoders.decode_*``): torchvision's
WebP, GIF              recommended successor for image decoding (``torchvision.io``
                       decoding is deprecated since torchvision 0.29). It reads
                       straight from a tensor view of the packed batch buffer.
CMYK/YCCK JPEG         PIL: exactly what torchvision's ``ImageFolder`` loader
                       (``Image.open(f).convert("RGB")``) gives for these rare
                       files, Adobe-inversion quirks included.
BMP, TIFF              PIL: TorchCodec does not decode them.
anything TorchCodec    PIL, as a second opinion; if PIL fails too the image is bad.
refuses
=====================  ============================================================

Without TorchCodec, ``torchvision.io`` takes its place (its deprecation warning is
silenced once, not per image).

What TorchCodec 0.17 does, checked against PIL (see ``tests/test_decode.py``):

- it applies the EXIF orientation itself for JPEG, PNG (``eXIf``) and WebP, with
  the same result as ``PIL.ImageOps.exif_transpose``, so those images are not
  turned again here. Recent PIL (13 here) does the same for TIFF while loading,
  which we detect per image rather than per PIL version. Everything
  else is turned upright by :func:`apply_orientation` from ``info.orientation``;
- ``mode="RGB"`` expands gray, drops alpha and expands palettes exactly like
  ``PIL.Image.convert("RGB")``, and converts CMYK JPEGs to RGB (we still send
  those to PIL, see above);
- 16-bit PNGs come out as ``round(v / 257)`` (= ``round(v * 255 / 65535)``).
  We scale 16-bit images the same way on the other backends. PIL itself takes the
  high byte of 16-bit RGB (within 1 of ours) but *clips* 16-bit gray to 255 when
  converting to RGB, which we deliberately do not copy;
- animated GIF/WebP decode to ``[N, 3, H, W]``; we keep the first frame, as PIL does.

Truncated or corrupt data raises :class:`~gpuaug.errors.DecodeError`; PIL's
``ImageFile.LOAD_TRUNCATED_IMAGES`` is left off so PIL refuses truncated files too.

Example:
    >>> import io, torch
    >>> from PIL import Image
    >>> from gpuaug.decode import CpuDecoder, decode_image
    >>> from gpuaug.headers import ImageInfo
    >>> buf = io.BytesIO(); Image.new("RGB", (5, 4), (255, 0, 0)).save(buf, "PNG")
    >>> data = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
    >>> info = ImageInfo("png", height=4, width=5, channels=3)
    >>> decode_image(data, info).shape
    torch.Size([3, 4, 5])
    >>> with CpuDecoder(num_threads=2) as decoder:
    ...     images = decoder.decode_batch([(data, info), (data[:20], info)])
    >>> images[0][:, 0, 0].tolist(), type(images[1]).__name__
    ([255, 0, 0], 'DecodeError')
"""
from __future__ import annotations

import io
import os
import re
import threading
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np
import torch
from PIL import Image

from .errors import DecodeError
from .headers import ImageInfo
from .native import JpegRegion

#: Images decoded in this process, per backend ("torchcodec", "pil", "torchvision").
#: Worker processes must never decode, so theirs stays empty.
decode_calls: Counter = Counter()
_calls_lock = threading.Lock()  # ``Counter[k] += 1`` is not atomic across threads

_FORMAT_NAMES = {"jpeg": "JPEG", "png": "PNG", "webp": "WebP", "gif": "GIF", "bmp": "BMP", "tiff": "TIFF"}
# Formats whose EXIF orientation TorchCodec applies while decoding (verified in the tests).
_TORCHCODEC_ORIENTS = frozenset({"jpeg", "png", "webp"})
_EXIF_ORIENTATION = 0x0112
# PIL modes holding 16-bit samples, scaled to 8 bits by us (``convert`` would clip them).
_PIL_16BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})

# orientation -> (swap H and W, dims to flip afterwards), as PIL.ImageOps.exif_transpose.
_ORIENTATIONS = {
    1: (False, ()),
    2: (False, (-1,)),        # mirrored left-right
    3: (False, (-2, -1)),     # rotated 180
    4: (False, (-2,)),        # mirrored top-bottom
    5: (True, ()),            # transposed
    6: (True, (-1,)),         # rotated 90 clockwise
    7: (True, (-2, -1)),      # transversed
    8: (True, (-2,)),         # rotated 90 counter-clockwise
}


def orientation_parts(orientation: int) -> tuple[bool, bool, bool]:
    """EXIF ``orientation`` as (transpose, flip top-bottom, flip left-right), applied in that order.

    A transpose is a free view; the flips can be folded into the fused stage's map.

    Example:
        >>> orientation_parts(6)     # rotated 90 clockwise: transpose, then mirror left-right
        (True, False, True)
    """
    swap, flips = _ORIENTATIONS.get(int(orientation), (False, ()))
    return swap, -2 in flips, -1 in flips


def flip_image(img: torch.Tensor, flip_y: bool, flip_x: bool) -> torch.Tensor:
    """``img`` mirrored top-bottom and/or left-right (itself when neither)."""
    dims = [d for d, f in ((-2, flip_y), (-1, flip_x)) if f]
    return img.flip(dims) if dims else img


def apply_orientation(img: torch.Tensor, orientation: int) -> torch.Tensor:
    """Turn ``[..., H, W]`` stored pixels upright for an EXIF ``orientation`` (1-8).

    Same result as ``PIL.ImageOps.exif_transpose``; unknown values count as 1.
    Returns a contiguous tensor (``img`` itself if already upright and contiguous).

    Example:
        >>> import torch
        >>> img = torch.arange(6).reshape(1, 2, 3)
        >>> apply_orientation(img, 6).tolist()  # 90 degrees clockwise
        [[[3, 0], [4, 1], [5, 2]]]
    """
    swap, flips = _ORIENTATIONS.get(int(orientation), (False, ()))
    if swap:
        img = img.transpose(-2, -1)
    if flips:
        img = img.flip(flips)
    return img.contiguous()


# -- backends ------------------------------------------------------------------------------
# Each returns ``(image [3, H, W] uint8, orientation already applied?)`` or raises.

@cache
def _torchcodec():
    """``torchcodec.decoders``, or None if it cannot be imported (imported lazily:
    worker processes never decode, so they never pay for it)."""
    try:
        from torchcodec import decoders
    except Exception:  # ImportError, or its native libraries failing to load
        return None
    return decoders


@cache
def _torchvision_io():
    """``torchvision.io`` as the fallback, its deprecation warning silenced once here
    (a per-call ``warnings.catch_warnings`` is not thread-safe)."""
    try:
        from torchvision import io as tvio
    except Exception:
        return None
    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                            category=DeprecationWarning)
    return tvio


def _as_tensor(data) -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        return data.contiguous()
    # A copy: torch.frombuffer on read-only bytes warns, and we must not alias them.
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _as_bytes(data) -> bytes:
    if isinstance(data, torch.Tensor):
        return data.contiguous().numpy().tobytes()
    return bytes(data)


def _to_uint8(img: torch.Tensor) -> torch.Tensor:
    """16-bit -> 8-bit as TorchCodec does it: round(v * 255 / 65535)."""
    if img.dtype == torch.uint8:
        return img
    return (img.to(torch.float32) / 257).round_().clamp_(0, 255).to(torch.uint8)


def _first_frame(img: torch.Tensor) -> torch.Tensor:
    # Animated images come as [N, C, H, W]; clone so the other frames can be freed.
    return img[0].clone() if img.dim() == 4 else img


def _decode_torchcodec(data, info: ImageInfo):
    tc = _torchcodec()
    fn = {"jpeg": tc.decode_jpeg, "png": tc.decode_png, "webp": tc.decode_webp, "gif": tc.decode_gif}[info.format]
    img = _first_frame(fn(_as_tensor(data), mode="RGB"))
    return img, info.format in _TORCHCODEC_ORIENTS


def _decode_torchvision(data, info: ImageInfo):
    tvio = _torchvision_io()
    img = tvio.decode_image(_as_tensor(data), mode=tvio.ImageReadMode.RGB, apply_exif_orientation=False)
    return _to_uint8(_first_frame(img)), False


def _decode_pil(data, info: ImageInfo):
    with Image.open(io.BytesIO(_as_bytes(data)), formats=[info.format.upper()]) as im:
        stored = im.getexif().get(_EXIF_ORIENTATION, 1)
        im.load()  # decodes the first frame/page; raises on truncated data
        # Recent PIL turns a TIFF upright while loading and then drops the tag (JPEG,
        # PNG, WebP it leaves alone): a tag gone missing means it is already applied.
        oriented = stored != 1 and im.getexif().get(_EXIF_ORIENTATION, 1) != stored
        if im.mode in _PIL_16BIT_MODES or (im.mode == "I" and info.bit_depth == 16):
            gray = _to_uint8(torch.from_numpy(np.array(im, dtype=np.uint16)))
            return gray.expand(3, -1, -1).contiguous(), oriented
        rgb = np.array(im if im.mode == "RGB" else im.convert("RGB"))
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous(), oriented


_BACKENDS = {"torchcodec": _decode_torchcodec, "torchvision": _decode_torchvision, "pil": _decode_pil}


def _backends_for(info: ImageInfo) -> list[str]:
    """Backends to try, in order; PIL is always the last resort."""
    if info.format in ("bmp", "tiff") or (info.format == "jpeg" and info.cmyk):
        return ["pil"]
    if _torchcodec() is not None:
        return ["torchcodec", "pil"]
    if _torchvision_io() is not None:
        return ["torchvision", "pil"]
    return ["pil"]


def _short(err: Exception) -> str:
    msg = (str(err).strip().splitlines() or [""])[0]
    msg = re.sub(r"^.*\.cpp:\d+,\s*", "", msg)  # TorchCodec's "function, /path/File.cpp:123, " prefix
    msg = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", msg)  # PIL's "cannot identify image file <...>"
    return msg or type(err).__name__


def _decode(data, info: ImageInfo, dense: bool = True) -> tuple[torch.Tensor, str]:
    """Decode one image; returns it with the name of the backend that did it.

    ``dense=False`` keeps the decoder's own memory layout (TorchCodec's is channels-last,
    which is what a uint8 resize wants) instead of copying to a contiguous ``[3, H, W]``.
    """
    name = _FORMAT_NAMES.get(info.format)
    if name is None:
        raise DecodeError(f"cannot decode format {info.format!r}")
    errors = []
    for backend in _backends_for(info):
        try:
            img, oriented = _BACKENDS[backend](data, info)
            break
        except Exception as e:  # each backend has its own exception types for bad data
            errors.append(f"{backend}: {_short(e)}")
    else:
        raise DecodeError(f"corrupt or truncated {name} data: {'; '.join(errors)}")
    if not oriented and (dense or int(info.orientation) != 1):
        img = apply_orientation(img, info.orientation)
    if tuple(img.shape[-2:]) != (info.height, info.width):
        raise DecodeError(f"decoded {name} is {img.shape[-2]}x{img.shape[-1]} (HxW) but its header says "
                          f"{info.height}x{info.width}")
    # TorchCodec's oriented output can be a strided view; the loader wants dense images.
    return (img.contiguous() if dense else img), backend


def decode_scaled(data, info: ImageInfo, scale: int) -> torch.Tensor:
    """Decode a JPEG at ``1/scale`` of its size (2, 4 or 8) with libjpeg's DCT scaling.

    PIL's ``Image.draft`` makes libjpeg-turbo run its scaled inverse DCT, which costs a
    fraction of a full decode and yields ``ceil(D / scale)`` pixels per dimension ``D``
    (pixel ``j`` covering source pixels ``[j*scale, (j+1)*scale)`` of the stored image).
    EXIF orientation is applied afterwards, to the small image; so the result is
    ``[3, ceil(info.height / scale), ceil(info.width / scale)]`` upright RGB.

    Raises:
        DecodeError: anything that went wrong (callers fall back to :func:`decode_image`,
            which names the problem); also when libjpeg did not scale as asked.

    Example:
        >>> import io
        >>> from PIL import Image
        >>> buf = io.BytesIO(); Image.new("RGB", (33, 16), "red").save(buf, "JPEG")
        >>> decode_scaled(buf.getvalue(), ImageInfo("jpeg", 16, 33, 3), 4).shape
        torch.Size([3, 4, 9])
    """
    if info.format != "jpeg" or info.cmyk:
        raise DecodeError("only YCbCr/gray JPEGs are decoded at a DCT scale")
    try:
        with Image.open(io.BytesIO(_as_bytes(data)), formats=["JPEG"]) as im:
            # draft picks the largest scale whose result is at least the requested size:
            # asking for floor(D / scale) gets exactly `scale` (ceil(D / scale) pixels).
            im.draft("RGB", (max(im.width // scale, 1), max(im.height // scale, 1)))
            rgb = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    except Exception as e:  # PIL's own error types for bad data
        raise DecodeError(f"scaled JPEG decode failed: {_short(e)}") from e
    img = apply_orientation(torch.from_numpy(rgb.copy() if not rgb.flags.writeable else rgb).permute(2, 0, 1),
                            info.orientation)
    expected = (-(-info.height // scale), -(-info.width // scale))
    if tuple(img.shape[-2:]) != expected:
        raise DecodeError(f"JPEG decoded at 1/{scale} is {tuple(img.shape[-2:])}, expected {expected}")
    return img


def stored_box(top: int, left: int, height: int, width: int, info: ImageInfo) -> tuple[int, int, int, int]:
    """The box of the *stored* image that EXIF orientation turns into the upright box
    ``(top, left, height, width)`` of ``info``'s ``(height, width)`` image.

    Example:
        >>> stored_box(0, 0, 2, 3, ImageInfo("jpeg", 10, 20, 3, 6))   # rotated 90 clockwise: top-left
        (17, 0, 3, 2)
    """
    swap, flip_y, flip_x = orientation_parts(info.orientation)
    if flip_y:
        top = info.height - top - height
    if flip_x:
        left = info.width - left - width
    return (left, top, width, height) if swap else (top, left, height, width)


def decode_region(data, info: ImageInfo, top: int, left: int, height: int, width: int) -> torch.Tensor | None:
    """Decode only the upright box ``(top, left, height, width)`` of a JPEG.

    libjpeg-turbo skips the rows above the box, never reads those below it and decodes
    each row from one iMCU left of the box to one iMCU right of it
    (:class:`gpuaug.native.JpegRegion`): the box's pixels of a full decode, bit for bit, for
    roughly the box's share of the work. Damaged data only below the box goes unseen.
    EXIF orientation is applied to the box. Returns ``[3, height, width]`` uint8 (a
    channels-last view for upright files), or ``None`` where the caller should decode in
    full: no libjpeg build, not a YCbCr/gray JPEG, or a file that does not end with the
    EOI marker (truncated: a box above the cut would decode, the full image would not).

    Raises:
        DecodeError: libjpeg's error or corrupt-data warning in the rows it decoded.

    Example:
        >>> import io, numpy as np
        >>> from PIL import Image
        >>> buf = io.BytesIO(); Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(buf, "JPEG")
        >>> decode_region(buf.getvalue(), ImageInfo("jpeg", 40, 60, 3), 8, 16, 10, 12).shape
        torch.Size([3, 10, 12])
    """
    if info.format != "jpeg" or info.cmyk:
        return None
    decoder = JpegRegion.get()
    if decoder is None:
        return None
    if not isinstance(data, torch.Tensor):
        data = _as_bytes(data)
    if len(data) < 4 or int(data[-2]) != 0xFF or int(data[-1]) != 0xD9:
        return None
    region = decoder.decode(data, *stored_box(top, left, height, width, info))
    if region is None:
        return None
    img = region.permute(2, 0, 1)
    return img if int(info.orientation) == 1 else apply_orientation(img, info.orientation)


def decode_image(data, info: ImageInfo) -> torch.Tensor:
    """Decode one encoded image to a contiguous ``[3, H, W]`` uint8 RGB tensor.

    Args:
        data: the encoded file, as a 1-D uint8 tensor (may be a view into a larger
            buffer; it is never modified) or ``bytes``.
        info: its header (:func:`gpuaug.headers.read_header`); picks the backend and
            gives the orientation and the expected (post-orientation) size.

    Returns:
        The image, EXIF orientation applied, ``(H, W) == (info.height, info.width)``.

    Raises:
        DecodeError: truncated/corrupt data, or a size that differs from the header's.

    Example:
        >>> import io
        >>> from PIL import Image
        >>> from gpuaug.headers import ImageInfo
        >>> buf = io.BytesIO(); Image.new("L", (3, 2), 7).save(buf, "BMP")
        >>> decode_image(buf.getvalue(), ImageInfo("bmp", 2, 3, 1)).tolist()[0]
        [[7, 7, 7], [7, 7, 7]]
    """
    img, backend = _decode(data, info)
    with _calls_lock:
        decode_calls[backend] += 1
    return img


def _one_torch_thread() -> None:
    # The pool's threads are the parallelism: torch ops inside them run single-threaded,
    # so pool threads x torch threads stays at the core count. With torch's OpenMP
    # backend this setting is per thread; the caller's threads keep theirs.
    torch.set_num_threads(1)


class CpuDecoder:
    """Decodes batches of encoded images on a thread pool, one result per item.

    Args:
        num_threads: decoding threads (default ``min(8, os.cpu_count())``).

    ``counts`` tells how many images each backend decoded through this decoder.

    Example:
        >>> import io
        >>> from PIL import Image
        >>> from gpuaug.headers import ImageInfo
        >>> buf = io.BytesIO(); Image.new("RGB", (4, 4)).save(buf, "JPEG")
        >>> item = (buf.getvalue(), ImageInfo("jpeg", 4, 4, 3))
        >>> with CpuDecoder(num_threads=2) as decoder:
        ...     [img.shape for img in decoder.decode_batch([item, item])]
        [torch.Size([3, 4, 4]), torch.Size([3, 4, 4])]
    """

    def __init__(self, num_threads: int | None = None):
        self.num_threads = max(1, num_threads or min(8, os.cpu_count() or 1))
        self.counts: Counter = Counter()
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:  # created on first use, so an unused decoder costs no threads
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="gpuaug-decode",
                                                initializer=_one_torch_thread)
            return self._pool

    def count(self, backend: str) -> None:
        """Record one image decoded by ``backend`` outside :meth:`decode_batch` (thread-safe)."""
        with _calls_lock:
            decode_calls[backend] += 1
            self.counts[backend] += 1

    def map(self, fn, items: list) -> list:
        """``[fn(item) for item in items]`` on the pool (in order); ``fn`` must not raise."""
        if len(items) <= 1:
            return [fn(item) for item in items]
        return list(self._executor().map(fn, items))

    def decode_batch(self, items: list[tuple]) -> list[torch.Tensor | DecodeError]:
        """Decode ``[(data, info), ...]``; per item, in order, the image or its DecodeError.

        A bad item never raises here: it gets its error in its place, and the rest
        of the batch is decoded as usual.
        """
        def one(item):
            try:
                img, backend = _decode(*item)
            except DecodeError as e:
                return e, None
            with _calls_lock:
                decode_calls[backend] += 1
            return img, backend

        if len(items) <= 1:  # not worth a hop to another thread
            results = [one(item) for item in items]
        else:
            results = list(self._executor().map(one, items))
        for _, backend in results:
            if backend is not None:
                self.counts[backend] += 1
        return [result for result, _ in results]

    def close(self) -> None:
        """Stop the threads (a later ``decode_batch`` starts new ones)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self) -> "CpuDecoder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
