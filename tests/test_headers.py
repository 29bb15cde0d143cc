"""read_header against PIL as the oracle: every format and mode, odd sizes, EXIF
orientation, input types, and the errors for empty, unknown, truncated and corrupt data."""
from __future__ import annotations

import doctest
import io
import struct
import time

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import gpuaug.headers
from gpuaug.errors import HeaderError
from gpuaug.headers import ImageInfo, read_header


def make(mode: str, size=(37, 23), seed: int = 0) -> Image.Image:
    """A small random image in ``mode``; ``size`` is PIL's (width, height)."""
    w, h = size
    rng = np.random.default_rng(seed)
    rgba = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    if mode == "P":
        return rgba.convert("RGB").quantize(16)
    return rgba.convert(mode)


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def with_orientation(img: Image.Image, k: int):
    exif = img.getexif()
    exif[0x0112] = k
    return exif


def check_against_pil(data: bytes, fmt: str, channels: int, bit_depth: int = 8, cmyk: bool = False) -> ImageInfo:
    """read_header's size and orientation equal PIL's; channels etc. equal the expected values."""
    info = read_header(data)
    im = Image.open(io.BytesIO(data))
    orientation = im.getexif().get(0x0112, 1)  # before exif_transpose, which removes it (TIFF: in place)
    w, h = ImageOps.exif_transpose(im).size
    assert info == ImageInfo(fmt, h, w, channels, orientation, bit_depth, cmyk)
    return info


# ----------------------------------------------------------------------------- formats and modes

CASES = {
    # name: (make bytes, format, channels, bit depth, cmyk)
    "jpeg-L": (lambda: encode(make("L"), "JPEG"), "jpeg", 1, 8, False),
    "jpeg-RGB": (lambda: encode(make("RGB"), "JPEG", quality=90), "jpeg", 3, 8, False),
    "jpeg-RGB-420-optimized": (lambda: encode(make("RGB"), "JPEG", subsampling=2, optimize=True), "jpeg", 3, 8, False),
    "jpeg-CMYK": (lambda: encode(make("CMYK"), "JPEG"), "jpeg", 4, 8, True),
    "jpeg-progressive": (lambda: encode(make("RGB"), "JPEG", progressive=True), "jpeg", 3, 8, False),
    "jpeg-icc": (lambda: encode(make("RGB"), "JPEG", icc_profile=b"\0" * 70000), "jpeg", 3, 8, False),
    "png-1": (lambda: encode(make("1"), "PNG"), "png", 1, 1, False),
    "png-L": (lambda: encode(make("L"), "PNG"), "png", 1, 8, False),
    "png-LA": (lambda: encode(make("LA"), "PNG"), "png", 2, 8, False),
    "png-RGB": (lambda: encode(make("RGB"), "PNG"), "png", 3, 8, False),
    "png-RGBA": (lambda: encode(make("RGBA"), "PNG"), "png", 4, 8, False),
    "png-P": (lambda: encode(make("P"), "PNG"), "png", 3, 8, False),
    "png-P-trns": (lambda: encode(make("P"), "PNG", transparency=0), "png", 3, 8, False),
    "png-I16": (lambda: encode(make("I;16"), "PNG"), "png", 1, 16, False),
    "png-interlaced": (lambda: encode(make("RGB"), "PNG", interlace=1), "png", 3, 8, False),
    "webp-lossy": (lambda: encode(make("RGB"), "WEBP", quality=80), "webp", 3, 8, False),
    "webp-lossless": (lambda: encode(make("RGB"), "WEBP", lossless=True), "webp", 3, 8, False),
    "webp-lossy-alpha": (lambda: encode(make("RGBA"), "WEBP"), "webp", 4, 8, False),
    "webp-lossless-alpha": (lambda: encode(make("RGBA"), "WEBP", lossless=True), "webp", 4, 8, False),
    "gif": (lambda: encode(make("RGB"), "GIF"), "gif", 3, 8, False),
    "gif-L": (lambda: encode(make("L"), "GIF"), "gif", 3, 8, False),
    "bmp-RGB": (lambda: encode(make("RGB"), "BMP"), "bmp", 3, 8, False),
    "bmp-L": (lambda: encode(make("L"), "BMP"), "bmp", 3, 8, False),    # 8-bit palette, expanded
    "bmp-P": (lambda: encode(make("P"), "BMP"), "bmp", 3, 8, False),
    "bmp-1": (lambda: encode(make("1"), "BMP"), "bmp", 3, 8, False),
    "bmp-RGBA": (lambda: encode(make("RGBA"), "BMP"), "bmp", 3, 8, False),  # 32-bit BI_RGB: PIL reads RGB
    "tiff-RGB": (lambda: encode(make("RGB"), "TIFF"), "tiff", 3, 8, False),
    "tiff-RGBA": (lambda: encode(make("RGBA"), "TIFF"), "tiff", 4, 8, False),
    "tiff-L": (lambda: encode(make("L"), "TIFF"), "tiff", 1, 8, False),
    "tiff-P": (lambda: encode(make("P"), "TIFF"), "tiff", 3, 8, False),
    "tiff-CMYK": (lambda: encode(make("CMYK"), "TIFF"), "tiff", 4, 8, True),
    "tiff-I16": (lambda: encode(make("I;16"), "TIFF"), "tiff", 1, 16, False),
    "tiff-lzw": (lambda: encode(make("RGB"), "TIFF", compression="tiff_lzw"), "tiff", 3, 8, False),
    "tiff-jpeg": (lambda: encode(make("RGB", (32, 16)), "TIFF", compression="jpeg"), "tiff", 3, 8, False),
}


@pytest.mark.parametrize("name", CASES)
def test_formats_and_modes(name):
    build, fmt, channels, bit_depth, cmyk = CASES[name]
    check_against_pil(build(), fmt, channels, bit_depth, cmyk)


ODD_FORMATS = {
    "JPEG": ("jpeg", {}), "PNG": ("png", {}), "WEBP": ("webp", {}), "WEBP-lossless": ("webp", {"lossless": True}),
    "GIF": ("gif", {}), "BMP": ("bmp", {}), "TIFF": ("tiff", {}),
}


@pytest.mark.parametrize("size", [(1, 1), (4000, 1), (1, 3000)], ids=lambda s: f"{s[1]}x{s[0]}")
@pytest.mark.parametrize("fmt", ODD_FORMATS)
def test_odd_sizes(fmt, size):
    name, kwargs = ODD_FORMATS[fmt]
    info = check_against_pil(encode(make("RGB", size), fmt.split("-")[0], **kwargs), name, 3)
    assert (info.width, info.height) == size


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("k", range(1, 9))
def test_exif_orientation(fmt, k):
    img = make("RGB", (37, 23))
    info = check_against_pil(encode(img, fmt, exif=with_orientation(img, k)), fmt.lower(), 3)
    assert info.orientation == k
    assert (info.width, info.height) == ((23, 37) if k >= 5 else (37, 23))


def test_tiff_orientation_tag_without_exif_param():
    img = make("L", (10, 4))
    info = check_against_pil(encode(img, "TIFF", tiffinfo={274: 8}), "tiff", 1)
    assert (info.height, info.width, info.orientation) == (10, 4, 8)


@pytest.mark.parametrize("k", [0, 9, 300])
def test_out_of_range_orientation_means_as_stored(k):
    img = make("RGB", (37, 23))
    info = read_header(encode(img, "JPEG", exif=with_orientation(img, k)))
    assert (info.orientation, info.height, info.width) == (1, 23, 37)


def test_exif_without_orientation_and_big_endian_exif():
    img = make("RGB", (37, 23))
    exif = img.getexif()
    exif[0x010F] = "camera maker"  # Make, no orientation
    assert read_header(encode(img, "JPEG", exif=exif)).orientation == 1
    # A big-endian ("MM") EXIF block, written by hand: IFD0 with one Orientation entry.
    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1) + struct.pack(">HHIHH", 274, 3, 1, 6, 0) + b"\0" * 4
    info = check_against_pil(encode(img, "JPEG", exif=b"Exif\x00\x00" + tiff), "jpeg", 3)
    assert (info.orientation, info.height, info.width) == (6, 37, 23)


@pytest.mark.parametrize("sof", [0xC1, 0xC2, 0xC3, 0xC9])
def test_other_jpeg_frame_markers(sof):
    """Extended, progressive, lossless and arithmetic frame headers (patched into a baseline file)."""
    data = bytearray(encode(make("RGB", (37, 23)), "JPEG"))
    at = data.index(b"\xff\xc0")
    data[at + 1] = sof
    assert read_header(bytes(data)) == ImageInfo("jpeg", 23, 37, 3)


def test_12_bit_jpeg_precision():
    data = bytearray(encode(make("L", (37, 23)), "JPEG"))
    data[data.index(b"\xff\xc0") + 4] = 12  # the precision byte
    assert read_header(bytes(data)).bit_depth == 12


def test_png_is_recognised_by_magic_not_name(tmp_path):
    data = encode(make("RGB", (5, 7)), "PNG")
    for name in ("noextension", "photo.jpg", "image.webp"):
        (tmp_path / name).write_bytes(data)
        assert read_header((tmp_path / name).read_bytes()).format == "png"


def test_bmp_top_down():
    data = bytearray(encode(make("RGB", (37, 23)), "BMP"))
    struct.pack_into("<i", data, 22, -23)  # negative height: rows stored top-down
    check_against_pil(bytes(data), "bmp", 3)


def test_bmp_core_header_and_rgba_bitfields():
    # OS/2 BITMAPCOREHEADER: 12 bytes, 16-bit sizes.
    row = 3 * 5 + 1  # padded to 4 bytes
    core = b"BM" + struct.pack("<IHHI", 26 + row * 3, 0, 0, 26) + struct.pack("<IHHHH", 12, 5, 3, 1, 24) + b"\0" * row * 3
    check_against_pil(core, "bmp", 3)
    # BITMAPV4HEADER, 32-bit with bit-field masks including alpha: RGBA.
    v4 = struct.pack("<IiiHHIIiiII", 108, 4, 2, 1, 32, 3, 32, 0, 0, 0, 0)
    v4 += struct.pack("<IIII", 0xFF0000, 0xFF00, 0xFF, 0xFF000000) + b"\0" * (108 - 56)
    data = b"BM" + struct.pack("<IHHI", 14 + 108 + 32, 0, 0, 14 + 108) + v4 + b"\x80" * 32
    check_against_pil(data, "bmp", 4)


def tiff_by_hand(endian: str, width: int, height: int, samples: int = 3, photometric: int = 2) -> bytes:
    """A minimal uncompressed 8-bit TIFF with BitsPerSample stored out of line."""
    entries = [(256, 4, 1, width), (257, 3, 1, height), (258, 3, samples, None), (259, 3, 1, 1),
               (262, 3, 1, photometric), (273, 4, 1, None), (277, 3, 1, samples),
               (278, 4, 1, height), (279, 4, 1, width * height * samples)]
    ifd_size = 2 + 12 * len(entries) + 4
    bits_at = 8 + ifd_size
    pixels_at = bits_at + 2 * samples
    out = bytearray((b"II*\x00" if endian == "<" else b"MM\x00*") + struct.pack(endian + "I", 8))
    out += struct.pack(endian + "H", len(entries))
    for tag, ftype, count, value in entries:
        value = {258: bits_at if samples > 2 else None, 273: pixels_at}.get(tag, value)
        if tag == 258 and samples <= 2:
            out += struct.pack(endian + "HHIHH", tag, ftype, count, 8, 8)
        elif ftype == 3 and count == 1:
            out += struct.pack(endian + "HHIHH", tag, ftype, count, value, 0)
        else:
            out += struct.pack(endian + "HHII", tag, ftype, count, value)
    out += struct.pack(endian + "I", 0)
    out += struct.pack(endian + "H" * samples, *[8] * samples)
    out += bytes(range(256)) * (width * height * samples // 256 + 1)
    return bytes(out[:pixels_at + width * height * samples])


@pytest.mark.parametrize("endian", ["<", ">"])
def test_tiff_both_byte_orders(endian):
    check_against_pil(tiff_by_hand(endian, 70000 // 100, 3), "tiff", 3)
    check_against_pil(tiff_by_hand(endian, 9, 5, samples=1, photometric=1), "tiff", 1)


def test_gif_with_zero_screen_takes_the_frame_size():
    data = bytearray(encode(make("RGB", (37, 23)), "GIF"))
    struct.pack_into("<HH", data, 6, 0, 0)
    info = check_against_pil(bytes(data), "gif", 3)  # PIL grows the screen to the frame too
    assert (info.height, info.width) == (23, 37)


def test_webp_extended_with_exif_and_alpha():
    img = make("RGBA", (37, 23))
    info = check_against_pil(encode(img, "WEBP", exif=with_orientation(img, 5)), "webp", 4)
    assert (info.height, info.width, info.orientation) == (37, 23, 5)


# ----------------------------------------------------------------------------- input types


def test_input_types_agree():
    img = make("RGB", (37, 23))
    data = encode(img, "JPEG", exif=with_orientation(img, 6))
    expected = read_header(data)
    arr = np.frombuffer(data, dtype=np.uint8)
    padded = np.zeros(len(data) + 10, dtype=np.uint8)
    padded[5:-5] = arr
    for value in (bytearray(data), memoryview(data), arr, arr.copy(), padded[5:-5],
                  torch.from_numpy(arr.copy()), torch.frombuffer(bytearray(data), dtype=torch.uint8),
                  torch.tensor(list(data), dtype=torch.uint8)[None].expand(2, -1)[0]):
        assert read_header(value) == expected, type(value)


def test_wrong_input_types():
    with pytest.raises(TypeError):
        read_header("not bytes")
    with pytest.raises(TypeError):
        read_header(np.zeros(10, dtype=np.float32))
    with pytest.raises(TypeError):
        read_header(torch.zeros(10, dtype=torch.int64))


# ----------------------------------------------------------------------------- errors


def error_of(data) -> str:
    with pytest.raises(HeaderError) as e:
        read_header(data)
    return str(e.value)


def test_empty():
    for empty in (b"", bytearray(), np.zeros(0, np.uint8), torch.zeros(0, dtype=torch.uint8)):
        assert error_of(empty) == "empty file (0 bytes)"


def test_unknown_format():
    rng = np.random.default_rng(1)
    for _ in range(20):
        junk = rng.integers(0, 256, 1000, dtype=np.uint8).tobytes()
        if junk[:1] in (b"\xff", b"\x89", b"R", b"G", b"B", b"I", b"M"):
            continue
        assert error_of(junk).startswith(f"not a recognised image format (starts with 0x{junk[:8].hex()}")
    assert "not a recognised image format" in error_of(b"hello world, this is text")
    assert "not a recognised image format" in error_of(b"RIFF\x10\x00\x00\x00WAVEfmt ")  # RIFF, but audio


@pytest.mark.parametrize("name", [n for n in CASES if not n.startswith("gif")])
def test_first_ten_bytes_are_truncated(name):
    data = CASES[name][0]()
    assert "truncated" in error_of(data[:10])


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 7])
def test_cut_inside_the_magic_is_truncated(cut):
    for fmt in ("JPEG", "PNG", "WEBP", "GIF", "TIFF"):
        assert "truncated" in error_of(encode(make("RGB", (4, 4)), fmt)[:cut])


def test_jpeg_prefix_before_sof_is_truncated():
    img = make("RGB", (37, 23))
    data = encode(img, "JPEG", exif=with_orientation(img, 3), icc_profile=b"\0" * 3000)
    assert data.index(b"\xff\xc0") > 3000  # the frame header comes after the big segments
    msg = error_of(data[:100])
    assert "truncated JPEG header" in msg
    assert "truncated" in error_of(data[:data.index(b"\xff\xc0") + 6])  # inside the SOF segment


def test_gif_prefix_without_frame():
    data = encode(make("RGB", (37, 23)), "GIF")
    assert "truncated" in error_of(data[:10])
    # The screen descriptor alone still gives the size.
    info = read_header(data[:13])
    assert (info.height, info.width) == (23, 37)


def test_corrupt_headers():
    jpeg = bytearray(encode(make("RGB", (37, 23)), "JPEG"))
    app0_end = 4 + struct.unpack_from(">H", jpeg, 4)[0]
    bad = bytearray(jpeg)
    bad[app0_end] = 0x12  # not a marker where the next segment should start
    assert "corrupt JPEG" in error_of(bytes(bad))
    bad = bytearray(jpeg)
    struct.pack_into(">H", bad, 4, 1)  # segment length below its own two bytes
    assert "corrupt JPEG" in error_of(bytes(bad))
    sos = jpeg.index(b"\xff\xda")
    assert "corrupt JPEG" in error_of(bytes(jpeg[:app0_end]) + bytes(jpeg[sos:]))  # scan before frame

    png = bytearray(encode(make("RGB", (5, 7)), "PNG"))
    bad = bytearray(png)
    bad[12:16] = b"gAMA"
    assert "corrupt PNG" in error_of(bytes(bad))
    bad = bytearray(png)
    bad[25] = 5  # colour type
    assert "corrupt PNG" in error_of(bytes(bad))
    bad = bytearray(png)
    bad[24] = 3  # bit depth 3
    assert "corrupt PNG" in error_of(bytes(bad))

    webp = bytearray(encode(make("RGB", (5, 7)), "WEBP"))
    webp[12:16] = b"ABCD"
    assert "corrupt WebP" in error_of(bytes(webp))
    tiff = bytearray(encode(make("RGB", (5, 7)), "TIFF"))
    assert "BigTIFF" in error_of(b"II+\x00" + bytes(tiff[4:]))


@pytest.mark.parametrize("fmt,offset,pack", [
    ("PNG", 16, ">I"), ("PNG", 20, ">I"), ("JPEG", None, None), ("BMP", 18, "<i"), ("BMP", 22, "<i"),
    ("GIF", 6, "<H"),
])
def test_zero_and_negative_sizes(fmt, offset, pack):
    data = bytearray(encode(make("RGB", (5, 7)), fmt))
    if fmt == "JPEG":
        sof = data.index(b"\xff\xc0")
        struct.pack_into(">H", data, sof + 7, 0)  # width 0 (after marker, length, precision, height)
    elif fmt == "GIF":  # screen and frame both 0 wide
        struct.pack_into("<H", data, 6, 0)
        struct.pack_into("<H", data, data.index(b"\x2c\x00\x00\x00\x00") + 5, 0)
    else:
        struct.pack_into(pack, data, offset, 0)
    assert "invalid size" in error_of(bytes(data))
    if fmt == "JPEG":
        struct.pack_into(">HH", data, sof + 5, 0, 7)  # height 0: only legal with a DNL marker
        assert "height of 0" in error_of(bytes(data))
    if fmt == "BMP" and offset == 18:
        struct.pack_into(pack, data, offset, -5)
        assert "invalid size" in error_of(bytes(data))


@pytest.mark.parametrize("name", CASES)
def test_damaged_data_raises_only_header_error(name):
    """Every short prefix and random byte damage: a result or a HeaderError, never another exception."""
    data = CASES[name][0]()
    rng = np.random.default_rng(2)
    variants = [data[:k] for k in range(1, min(len(data), 120))]
    for _ in range(150):
        damaged = bytearray(data[:1500])
        for i in rng.integers(0, len(damaged), 3):
            damaged[i] = int(rng.integers(0, 256))
        variants.append(bytes(damaged))
    for value in variants:
        try:
            read_header(value)
        except HeaderError:
            pass


# ----------------------------------------------------------------------------- reads only the header


def test_jpeg_header_prefix_is_enough():
    """Everything up to the end of the SOF fields parses; nothing after it is read."""
    img = make("RGB", (37, 23))
    data = encode(img, "JPEG", exif=with_orientation(img, 6), icc_profile=b"\0" * 20000)
    sof = data.index(b"\xff\xc0")
    header = data[:sof + 2 + 2 + 6]  # marker, length, precision, height, width, components
    assert read_header(header) == read_header(data) == ImageInfo("jpeg", 37, 23, 3, 6)
    # ...and what follows may be anything at all.
    assert read_header(header + b"\x00" * 1000) == read_header(data)


def test_png_header_prefix_is_enough():
    data = encode(make("RGBA", (37, 23)), "PNG")
    assert read_header(data[:33]) == ImageInfo("png", 23, 37, 4)  # signature + IHDR


def test_parse_time_does_not_grow_with_file_size():
    img = make("RGB", (37, 23))
    data = encode(img, "JPEG", exif=with_orientation(img, 6))
    huge = np.frombuffer(data + bytes(64 << 20), dtype=np.uint8)  # 64 MiB of trailing garbage
    tensor = torch.from_numpy(huge.copy())
    for value in (huge, tensor):
        read_header(value)
        start = time.perf_counter()
        for _ in range(200):
            read_header(value)
        per_call = (time.perf_counter() - start) / 200
        assert per_call < 1e-3, f"{per_call * 1e3:.2f} ms per header: copying or scanning the data?"


def test_docstring_examples():
    result = doctest.testmod(gpuaug.headers)
    assert result.attempted > 0 and result.failed == 0
