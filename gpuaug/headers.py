"""Image headers: format and size read from the first bytes, without decoding.

:func:`read_header` runs in the DataLoader workers for every sample, before any
pixel is decoded: the device stage needs every image's size to plan the batch
(output buffers, random crop boxes) ahead of decoding. So it is pure Python on
``struct``, reads only the header structures of each format and jumps over
everything else by its stored length: it never scans the file, and it never
copies the encoded bytes.

Formats are told apart by their magic bytes only (a file's name or extension
means nothing here):

========  =====================================================================
jpeg      markers up to the frame header (SOF); orientation from APP1 Exif
png       IHDR; orientation from an eXIf chunk before the image data
webp      VP8 (lossy), VP8L (lossless) or VP8X (extended: alpha, EXIF)
gif       logical screen, grown to the first frame like PIL does
bmp       BITMAPCOREHEADER (OS/2) and BITMAPINFOHEADER and its successors
tiff      first IFD (classic TIFF, both byte orders; not BigTIFF)
========  =====================================================================

Every problem is a :class:`~gpuaug.errors.HeaderError` whose message says what is
wrong ("truncated JPEG header ...", "corrupt PNG: ..."), for the loader's
per-sample error report.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import torch

from .errors import HeaderError

FORMATS = ("raw", "jpeg", "png", "webp", "gif", "bmp", "tiff")


@dataclass(frozen=True)
class ImageInfo:
    """What the header says about an encoded image.

    ``height``/``width`` are the size as displayed, i.e. after EXIF orientation
    (orientations 5-8 swap them), so shapes known before decoding equal the
    decoded shapes.
    """

    format: str            # one of FORMATS
    height: int
    width: int
    channels: int          # channels stored in the file: 1 gray, 2 gray+alpha, 3 RGB/YCbCr, 4 RGBA/CMYK
    orientation: int = 1   # EXIF orientation tag, 1..8 (1 = as stored)
    bit_depth: int = 8     # bits per channel sample (16 for 16-bit PNG/TIFF)
    cmyk: bool = False     # JPEG/TIFF stored as CMYK/YCCK (nvJPEG cannot take these)


def read_header(data) -> ImageInfo:
    """Read format, displayed size, channels, orientation, bit depth and CMYK flag.

    Only the header structures are read, so a prefix of the file that holds them
    is enough (for a JPEG: everything up to the SOF segment).

    Args:
        data: the encoded file as ``bytes``, ``bytearray``, ``memoryview``, a 1-D
            ``uint8`` numpy array or a 1-D ``uint8`` torch tensor. Not copied
            (except a tensor on the GPU, which is brought to the host first).

    Raises:
        HeaderError: empty data, an unknown format, a truncated or corrupt header,
            or a size that is zero or negative.
        TypeError: ``data`` is not one of the types above, or not ``uint8``.

    Example:
        >>> import io
        >>> from PIL import Image
        >>> buf = io.BytesIO()
        >>> Image.new("RGBA", (640, 480)).save(buf, "PNG")
        >>> read_header(buf.getvalue())
        ImageInfo(format='png', height=480, width=640, channels=4, orientation=1, bit_depth=8, cmyk=False)

        An EXIF orientation of 6 (rotate 90 degrees) swaps the displayed size:

        >>> img = Image.new("RGB", (640, 480))
        >>> exif = img.getexif()
        >>> exif[0x0112] = 6
        >>> buf = io.BytesIO()
        >>> img.save(buf, "JPEG", exif=exif)
        >>> info = read_header(buf.getvalue())
        >>> (info.height, info.width, info.orientation)
        (640, 480, 6)
    """
    buf = _as_memoryview(data)
    if len(buf) == 0:
        raise HeaderError("empty file (0 bytes)")
    parser = _PARSERS[_sniff(buf)]
    fmt, height, width, channels, orientation, bit_depth, cmyk = parser(buf)
    if width <= 0 or height <= 0:
        raise HeaderError(f"{fmt.upper()} header gives an invalid size of {width}x{height}")
    if orientation not in range(1, 9):
        # An out-of-range tag means "as stored" for PIL's exif_transpose and for
        # the decoders; passing it on would only make the device stage guess.
        orientation = 1
    if orientation >= 5:  # 5..8 are transposes/rotations by 90 degrees
        height, width = width, height
    return ImageInfo(fmt, height, width, channels, orientation, bit_depth, cmyk)


# ----------------------------------------------------------------------------- input


def _as_memoryview(data) -> memoryview:
    """A flat byte view of ``data`` without copying it (where the input allows)."""
    if isinstance(data, torch.Tensor):
        if data.dtype != torch.uint8:
            raise TypeError(f"read_header needs a uint8 tensor, got {data.dtype}")
        # .cpu() is free on the host; a device tensor has to come over whole, as
        # the header length is not known in advance (EXIF can be 64 KiB).
        data = data.detach().cpu().reshape(-1).numpy()
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise TypeError(f"read_header needs a uint8 array, got {data.dtype}")
        data = np.ascontiguousarray(data).reshape(-1)  # no copy for the usual 1-D array
    if isinstance(data, (bytes, bytearray, memoryview, np.ndarray)):
        view = memoryview(data)
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")
    raise TypeError(f"read_header needs bytes, bytearray, memoryview, a numpy array or a tensor, "
                    f"got {type(data).__name__}")


def _unpack(fmt: str, buf: memoryview, pos: int, what: str) -> tuple:
    """``struct.unpack_from``, with running off the end reported as a truncated header."""
    try:
        return struct.unpack_from(fmt, buf, pos)
    except struct.error:
        raise HeaderError(f"truncated {what} header ({len(buf)} bytes; needed "
                          f"{pos + struct.calcsize(fmt)})") from None


# ----------------------------------------------------------------------------- dispatch

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # the last two: BigTIFF

_MAGICS = (
    (b"\xff\xd8", "jpeg"),  # SOI
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    *((magic, "tiff") for magic in _TIFF_MAGICS),
)


def _sniff(buf: memoryview) -> str:
    """The format, from the magic bytes at the start."""
    head = bytes(buf[:12])
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    for magic, fmt in _MAGICS:
        if head.startswith(magic):
            return fmt
    # A file cut inside its magic is a truncated file, not an unknown format.
    if len(head) < 12 and (any(magic.startswith(head) for magic, _ in _MAGICS)
                           or b"RIFF".startswith(head[:4])):
        raise HeaderError(f"truncated header ({len(head)} bytes: 0x{head.hex()})")
    raise HeaderError(f"not a recognised image format (starts with 0x{head[:8].hex()})")


# ----------------------------------------------------------------------------- JPEG

# Start-of-frame markers: C0 baseline, C1 extended, C2 progressive, C3 lossless,
# C5-C7 hierarchical, C9-CB and CD-CF their arithmetic-coded twins. C4 (DHT), C8
# (reserved) and CC (DAC) sit in the same range but are not frame headers.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM and the restart markers.
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})


def _jpeg(buf: memoryview):
    """Walk the marker segments from SOI to the frame header (SOF), by their lengths.

    APP1 "Exif" segments come before the frame header, so the orientation is
    read on the way. CMYK needs no Adobe APP14 lookup: a 4-component frame is
    CMYK or YCCK (APP14's transform only tells which), and both are CMYK to us.
    """
    n = len(buf)
    pos = 2  # after SOI
    orientation = 1
    seen_exif = False
    while True:
        if pos >= n:
            raise HeaderError(f"truncated JPEG header: no frame header (SOF) in the first {n} bytes")
        if buf[pos] != 0xFF:
            raise HeaderError(f"corrupt JPEG: expected a marker at byte {pos}, found 0x{buf[pos]:02x}")
        while pos < n and buf[pos] == 0xFF:  # a marker may be padded with any number of 0xFF
            pos += 1
        if pos >= n:
            raise HeaderError(f"truncated JPEG header: no frame header (SOF) in the first {n} bytes")
        marker = buf[pos]
        pos += 1
        if marker in _STANDALONE_MARKERS:
            continue
        if marker in (0x00, 0xD8, 0xD9, 0xDA):
            # 00 is a stuffed byte (only valid inside scan data), D8 a second SOI,
            # D9 the end, DA a scan: none may come before the frame header.
            raise HeaderError(f"corrupt JPEG: marker 0xff{marker:02x} at byte {pos - 2} before the frame header (SOF)")
        (length,) = _unpack(">H", buf, pos, "JPEG")
        if length < 2:  # the length counts its own two bytes
            raise HeaderError(f"corrupt JPEG: segment 0xff{marker:02x} at byte {pos - 2} has length {length}")
        body, end = pos + 2, pos + length
        if marker in _SOF_MARKERS:
            precision, height, width, components = _unpack(">BHHB", buf, body, "JPEG frame")
            if height == 0:
                # Allowed by the standard (the height then comes in a DNL marker after
                # the first scan), but no decoder we use supports it.
                raise HeaderError("JPEG header gives a height of 0 (DNL-defined height is not supported)")
            if components not in (1, 3, 4):
                raise HeaderError(f"unsupported JPEG with {components} colour components")
            return "jpeg", height, width, components, orientation, precision, components == 4
        if marker == 0xE1 and not seen_exif and end <= n and bytes(buf[body:body + 6]) == b"Exif\x00\x00":
            # Only the first Exif segment counts (a second APP1 is usually XMP).
            seen_exif = True
            orientation = _exif_orientation(buf[body + 6:end])
        pos = end


# ----------------------------------------------------------------------------- PNG

# Colour type -> (channels after palette expansion, allowed bit depths).
_PNG_COLOR_TYPES = {
    0: (1, (1, 2, 4, 8, 16)),  # gray
    2: (3, (8, 16)),           # RGB
    3: (3, (1, 2, 4, 8)),      # palette: expanded to 8-bit RGB (tRNS alpha is not counted)
    4: (2, (8, 16)),           # gray + alpha
    6: (4, (8, 16)),           # RGBA
}


def _png(buf: memoryview):
    """IHDR (always the first chunk), then the chunks before IDAT for an eXIf."""
    length, ctype = _unpack(">I4s", buf, 8, "PNG")
    if ctype != b"IHDR" or length != 13:
        raise HeaderError(f"corrupt PNG: first chunk is {ctype!r} of {length} bytes, not a 13-byte IHDR")
    width, height, depth, color = _unpack(">IIBB", buf, 16, "PNG IHDR")
    if color not in _PNG_COLOR_TYPES:
        raise HeaderError(f"corrupt PNG: colour type {color}")
    channels, depths = _PNG_COLOR_TYPES[color]
    if depth not in depths:
        raise HeaderError(f"corrupt PNG: bit depth {depth} with colour type {color}")
    if color == 3:
        depth = 8  # the palette's entries are 8-bit RGB, whatever the index width
    if width > 0x7FFFFFFF or height > 0x7FFFFFFF:  # the PNG spec's limit; sizes are unsigned
        raise HeaderError(f"PNG header gives an invalid size of {width}x{height}")

    # eXIf must come before IDAT. Hop over the chunks by their lengths (a handful,
    # usually) and stop at the image data; a short read only means no orientation.
    orientation = 1
    pos = 8 + 12 + 13
    while pos + 8 <= len(buf):
        length, ctype = struct.unpack_from(">I4s", buf, pos)
        if ctype in (b"IDAT", b"IEND"):
            break
        if ctype == b"eXIf":
            if pos + 8 + length <= len(buf):
                orientation = _exif_orientation(buf[pos + 8:pos + 8 + length])
            break
        pos += 12 + length  # length, type, data, CRC
    return "png", height, width, channels, orientation, depth, False


# ----------------------------------------------------------------------------- WebP


def _webp(buf: memoryview):
    """RIFF container; the first chunk says which kind of WebP and holds its size."""
    kind, size = _unpack("<4sI", buf, 12, "WebP")
    body = 20
    if kind == b"VP8 ":
        # Lossy: a 3-byte frame tag, the start code 9d 01 2a, then 14-bit width and
        # height (the top 2 bits of each are an upscaling hint, not part of the size).
        tag, start, width, height = _unpack("<3s3sHH", buf, body, "WebP VP8")
        if tag[0] & 1 or start != b"\x9d\x01\x2a":
            raise HeaderError("corrupt WebP: VP8 data does not start with a key frame")
        return "webp", height & 0x3FFF, width & 0x3FFF, 3, 1, 8, False
    if kind == b"VP8L":
        # Lossless: signature 0x2f, then 14 bits width-1, 14 bits height-1,
        # 1 bit "alpha is used", 3 bits version (must be 0).
        signature, bits = _unpack("<BI", buf, body, "WebP VP8L")
        if signature != 0x2F or bits >> 29:
            raise HeaderError("corrupt WebP: bad VP8L signature or version")
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        return "webp", height, width, 4 if bits >> 28 & 1 else 3, 1, 8, False
    if kind == b"VP8X":
        # Extended: flags, 3 reserved bytes, 24-bit canvas width-1 and height-1.
        flags, w0, w1, w2, h0, h1, h2 = _unpack("<B3x6B", buf, body, "WebP VP8X")
        width = 1 + (w0 | w1 << 8 | w2 << 16)
        height = 1 + (h0 | h1 << 8 | h2 << 16)
        channels = 4 if flags & 0x10 else 3
        orientation = _webp_exif_orientation(buf) if flags & 0x08 else 1
        return "webp", height, width, channels, orientation, 8, False
    raise HeaderError(f"corrupt WebP: first chunk is {kind!r}, not VP8, VP8L or VP8X")


def _webp_exif_orientation(buf: memoryview) -> int:
    """Orientation from the EXIF chunk, which follows the image data in an extended WebP.

    Reaching it costs one hop per chunk (the image data is skipped by its length,
    not read); a file cut before it just has no orientation.
    """
    pos = 12
    while pos + 8 <= len(buf):
        kind, size = struct.unpack_from("<4sI", buf, pos)
        if kind == b"EXIF":
            end = pos + 8 + size
            return _exif_orientation(buf[pos + 8:end]) if end <= len(buf) else 1
        pos += 8 + size + (size & 1)  # chunks are padded to an even length
    return 1


# ----------------------------------------------------------------------------- GIF


def _gif(buf: memoryview):
    """Logical screen size, grown to the first frame's extent as PIL does.

    Palette images: 3 channels once expanded.
    """
    screen_w, screen_h, flags = _unpack("<HHB", buf, 6, "GIF")
    pos = 13
    if flags & 0x80:  # a global colour table of 2**(N+1) RGB entries follows
        pos += 3 << ((flags & 7) + 1)
    frame = _gif_first_frame(buf, pos)
    if frame is None:
        if not (screen_w and screen_h):
            raise HeaderError(f"truncated GIF header: no image descriptor in the first {len(buf)} bytes")
        # A prefix without the first frame: the screen size is right for all but
        # odd files whose frame overhangs the screen.
        return "gif", screen_h, screen_w, 3, 1, 8, False
    left, top, width, height = frame
    return "gif", max(screen_h, top + height), max(screen_w, left + width), 3, 1, 8, False


def _gif_first_frame(buf: memoryview, pos: int) -> tuple[int, int, int, int] | None:
    """Left, top, width, height of the first image descriptor; None if the data ends first.

    Some writers leave the screen 0x0 and only the frame says the size, and PIL
    grows the screen to a frame that overhangs it. Extension blocks before the
    frame are chains of <=255-byte sub-blocks, hopped over by their lengths.
    """
    n = len(buf)
    while pos < n:
        block = buf[pos]
        if block == 0x2C:  # image descriptor: left, top, width, height
            return struct.unpack_from("<HHHH", buf, pos + 1) if pos + 9 <= n else None
        if block == 0x3B:
            raise HeaderError("corrupt GIF: trailer before any image")
        if block != 0x21:
            raise HeaderError(f"corrupt GIF: unknown block 0x{block:02x} at byte {pos}")
        pos += 2  # extension introducer and label
        while pos < n and buf[pos]:  # sub-blocks until a zero length
            pos += 1 + buf[pos]
        pos += 1
    return None


# ----------------------------------------------------------------------------- BMP

_BMP_COMPRESSIONS = {0: "none", 1: "RLE8", 2: "RLE4", 3: "bitfields", 4: "JPEG", 5: "PNG", 6: "alpha bitfields"}


def _bmp(buf: memoryview):
    """File header, then the DIB header whose own first field gives its version (size)."""
    (dib_size,) = _unpack("<I", buf, 14, "BMP")
    if dib_size == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit sizes, no compression
        width, height, _planes, bits = _unpack("<HHHH", buf, 18, "BMP")
        compression = 0
    elif dib_size >= 40:  # BITMAPINFOHEADER and V2..V5, OS/2 v2: same first 40 bytes
        width, height, _planes, bits, compression = _unpack("<iiHHI", buf, 18, "BMP")
    else:
        raise HeaderError(f"unsupported BMP header size {dib_size}")
    if compression not in (0, 1, 2, 3, 6):
        name = _BMP_COMPRESSIONS.get(compression)
        raise HeaderError(f"unsupported BMP compression {name or compression}")
    if bits not in (1, 4, 8, 16, 24, 32):
        raise HeaderError(f"unsupported BMP bit count {bits}")
    # A negative height means rows are stored top-down; the size is the same.
    height = abs(height)
    channels = 3  # 1/4/8 bits: palette expanded to RGB; 16/24: RGB; 32: RGB + padding byte
    if bits == 32 and compression in (3, 6):
        # Bit-field masks: in the header from V3 (56 bytes) on, else right after it.
        # A non-zero alpha mask makes the fourth byte real alpha.
        alpha_at = 14 + 52 if dib_size >= 56 else (14 + 40 + 12 if compression == 6 else None)
        if alpha_at is not None and _unpack("<I", buf, alpha_at, "BMP")[0]:
            channels = 4
    return "bmp", height, width, channels, 1, 8, False


# ----------------------------------------------------------------------------- TIFF and EXIF

# TIFF field type -> struct code, for the integer types a size or count may use.
_TIFF_INT_TYPES = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i"}

_WIDTH, _LENGTH, _BITS, _PHOTOMETRIC, _ORIENTATION, _SAMPLES = 256, 257, 258, 262, 274, 277


def _tiff_start(buf: memoryview, what: str) -> tuple[str, int]:
    """Byte order ('<' or '>') and offset of the first IFD."""
    head = bytes(buf[:4])
    if head in (b"II+\x00", b"MM\x00+"):
        raise HeaderError("unsupported TIFF: BigTIFF")
    if head not in (b"II*\x00", b"MM\x00*"):
        if len(head) < 4:
            raise HeaderError(f"truncated {what} header ({len(buf)} bytes)")
        raise HeaderError(f"corrupt {what}: bad TIFF byte-order mark 0x{head.hex()}")
    endian = "<" if head[0] == 0x49 else ">"
    return endian, _unpack(endian + "I", buf, 4, what)[0]


def _tiff_tags(buf: memoryview, endian: str, ifd: int, wanted: frozenset, what: str) -> dict[int, int]:
    """First value of each wanted integer tag of the IFD at ``ifd``.

    Offsets in a TIFF structure are from its start, i.e. from ``buf[0]``. A value
    that fits in 4 bytes is stored in the entry itself, else the entry holds its
    offset; only the first value is needed (e.g. BitsPerSample is one per sample).
    """
    (count,) = _unpack(endian + "H", buf, ifd, what)
    entries = ifd + 2
    _unpack(f"{12 * count}x", buf, entries, what)  # all entries present, or truncated
    values = {}
    for e in range(entries, entries + 12 * count, 12):
        tag, ftype, n = struct.unpack_from(endian + "HHI", buf, e)
        code = _TIFF_INT_TYPES.get(ftype)
        if tag not in wanted or code is None or n == 0:
            continue
        where = e + 8
        if n * struct.calcsize(code) > 4:
            (where,) = struct.unpack_from(endian + "I", buf, e + 8)
        values[tag] = _unpack(endian + code, buf, where, what)[0]
    return values


def _exif_orientation(exif: memoryview) -> int:
    """Orientation (tag 274 of IFD0) from an EXIF block, which is a TIFF structure.

    1 when absent or unreadable: a damaged EXIF block must not cost an otherwise
    good image (the decoders and PIL ignore it too).
    """
    if bytes(exif[:6]) == b"Exif\x00\x00":  # some writers keep JPEG's prefix in PNG/WebP
        exif = exif[6:]
    try:
        endian, ifd = _tiff_start(exif, "EXIF")
        return _tiff_tags(exif, endian, ifd, frozenset({_ORIENTATION}), "EXIF").get(_ORIENTATION, 1)
    except HeaderError:
        return 1


def _tiff(buf: memoryview):
    """The first IFD's image tags (a multi-page TIFF is read as its first page)."""
    endian, ifd = _tiff_start(buf, "TIFF")
    tags = _tiff_tags(buf, endian, ifd,
                      frozenset({_WIDTH, _LENGTH, _BITS, _PHOTOMETRIC, _ORIENTATION, _SAMPLES}), "TIFF")
    if _WIDTH not in tags or _LENGTH not in tags:
        raise HeaderError("corrupt TIFF: first IFD has no ImageWidth/ImageLength")
    samples = tags.get(_SAMPLES, 1)
    bits = tags.get(_BITS, 1)  # the TIFF defaults: one 1-bit sample
    photometric = tags.get(_PHOTOMETRIC)
    cmyk = photometric == 5  # "separated", i.e. inks: CMYK in practice
    if photometric == 3:  # palette: expanded to RGB; the colour map is 16-bit, read as 8
        channels, bits = 3, 8
    elif photometric == 6:  # YCbCr: RGB once converted
        channels = 3
    else:
        channels = samples
    if not 1 <= channels <= 4:
        raise HeaderError(f"unsupported TIFF with {samples} samples per pixel")
    return "tiff", tags[_LENGTH], tags[_WIDTH], channels, tags.get(_ORIENTATION, 1), bits, cmyk


_PARSERS = {"jpeg": _jpeg, "png": _png, "webp": _webp, "gif": _gif, "bmp": _bmp, "tiff": _tiff}
