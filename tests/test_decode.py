"""The CPU decoder against PIL, the reference (what torchvision's ImageFolder loader does):
``np.asarray(ImageOps.exif_transpose(Image.open(f)).convert("RGB"))``."""
from __future__ import annotations

import dataclasses
import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile, ImageOps

from gpuaug import decode
from gpuaug.decode import CpuDecoder, apply_orientation, decode_image
from gpuaug.errors import DecodeError
from gpuaug.headers import ImageInfo, read_header

from conftest import photo_like

H, W = 40, 56  # non-square, so a missing or doubled transpose changes the shape
PIL_FORMATS = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff"}


def rgb_image(h=H, w=W, seed=0) -> Image.Image:
    return Image.fromarray(photo_like(h, w, seed).permute(1, 2, 0).numpy())


def save(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def info_of(data: bytes, **override) -> ImageInfo:
    """The header as gpuaug reads it, checked against PIL on what decoding relies on."""
    info = read_header(data)
    im = Image.open(io.BytesIO(data))
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    assert (info.format, info.height, info.width) == (PIL_FORMATS[im.format], upright.height, upright.width)
    assert (info.orientation, info.cmyk) == (im.getexif().get(0x0112, 1), im.mode == "CMYK")
    return dataclasses.replace(info, **override)


def reference(data: bytes) -> np.ndarray:
    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))


def as_tensor(data: bytes) -> torch.Tensor:
    """The bytes as a non-owning 1-D view into a larger buffer, like a packed batch."""
    buf = torch.zeros(len(data) + 16, dtype=torch.uint8)
    buf[8:8 + len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return buf[8:8 + len(data)]


def decoded(data: bytes, **override) -> np.ndarray:
    view = as_tensor(data)
    before = view.clone()
    img = decode_image(view, info_of(data, **override))
    assert torch.equal(view, before), "decode modified its input"
    assert img.dtype == torch.uint8 and img.dim() == 3 and img.shape[0] == 3 and img.is_contiguous()
    return img.permute(1, 2, 0).numpy()


def assert_jpeg_close(out: np.ndarray, ref: np.ndarray):
    # Decoders may pick different libjpeg(-turbo) IDCT / chroma upsampling code paths,
    # which differ by a few levels (more on sharp edges); a wrong image is far off.
    # (With the libjpeg-turbo builds in this venv TorchCodec and PIL agree exactly.)
    assert out.shape == ref.shape
    diff = np.abs(out.astype(int) - ref.astype(int))
    assert diff.mean() < 1.5 and diff.max() < 40, (diff.mean(), diff.max())


def png16(samples: np.ndarray) -> bytes:
    """A 16-bit PNG (gray ``[H, W]`` or RGB ``[H, W, 3]``) written by hand: PIL cannot write 16-bit RGB."""
    h, w = samples.shape[:2]
    color_type = 2 if samples.ndim == 3 else 0
    rows = samples.astype(">u2").reshape(h, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 on every row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def with_orientation(o: int) -> dict:
    exif = Image.Exif()
    exif[0x0112] = o
    return {"exif": exif.tobytes()}


# -- orientation ----------------------------------------------------------------------------

@pytest.mark.parametrize("orientation", range(1, 9))
def test_apply_orientation_matches_pil(orientation):
    arr = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = orientation
    ref = np.asarray(ImageOps.exif_transpose(im))
    out = apply_orientation(torch.from_numpy(arr).permute(2, 0, 1), orientation)
    assert out.is_contiguous()
    np.testing.assert_array_equal(out.permute(1, 2, 0).numpy(), ref)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_orientation_applied_once(fmt):
    # TorchCodec turns JPEG/PNG/WebP upright itself; we must not turn them again.
    for o in range(1, 9):
        data = save(rgb_image(), fmt, **with_orientation(o), **({"quality": 95} if fmt == "JPEG" else {}))
        assert info_of(data).orientation == o
        out, ref = decoded(data), reference(data)
        assert out.shape == ref.shape == ((W, H, 3) if o >= 5 else (H, W, 3))
        if fmt == "JPEG":
            assert_jpeg_close(out, ref)
        else:
            np.testing.assert_array_equal(out, ref)


def test_pil_orientation_applied_once():
    # PIL (>= 11) turns TIFFs upright itself while loading; CMYK JPEGs (also decoded
    # by PIL) it does not, so those we turn.
    cmyk = rgb_image().convert("CMYK")
    for o in range(1, 9):
        tiff = save(rgb_image(), "TIFF", tiffinfo={0x0112: o})
        assert info_of(tiff).orientation == o
        np.testing.assert_array_equal(decoded(tiff), reference(tiff))
        jpeg = save(cmyk, "JPEG", quality=95, **with_orientation(o))
        assert info_of(jpeg).orientation == o and info_of(jpeg).cmyk
        assert_jpeg_close(decoded(jpeg), reference(jpeg))


# -- formats vs PIL ---------------------------------------------------------------------------

def jpeg_cases():
    rgb = rgb_image()
    cmyk = Image.fromarray(np.random.default_rng(1).integers(0, 256, (H // 8, W // 8, 4), dtype=np.uint8),
                           "CMYK").resize((W, H), Image.BILINEAR)  # PIL's RGB->CMYK would leave K at 0
    return {
        "rgb": save(rgb, "JPEG", quality=90),
        "rgb-420": save(rgb, "JPEG", quality=75, subsampling=2),
        "gray": save(rgb.convert("L"), "JPEG", quality=90),
        "progressive": save(rgb, "JPEG", quality=85, progressive=True),
        "cmyk": save(cmyk, "JPEG", quality=90),
    }


@pytest.mark.parametrize("case", ["rgb", "rgb-420", "gray", "progressive", "cmyk"])
def test_jpeg(case):
    data = jpeg_cases()[case]
    before = decode.decode_calls.copy()
    assert_jpeg_close(decoded(data), reference(data))
    # CMYK goes to PIL, so it converts exactly as the ImageFolder reference does.
    assert (decode.decode_calls - before) == {"pil" if case == "cmyk" else "torchcodec": 1}


def lossless_cases():
    rgb = rgb_image()
    alpha = Image.fromarray(np.random.default_rng(2).integers(0, 256, (H, W), dtype=np.uint8))
    rgba = Image.merge("RGBA", [*rgb.split(), alpha])
    la = Image.merge("LA", [rgb.convert("L"), alpha])
    frames = [rgb_image(seed=s) for s in range(3)]
    anim_gif, anim_webp = io.BytesIO(), io.BytesIO()
    frames[0].save(anim_gif, "GIF", save_all=True, append_images=frames[1:])
    frames[0].save(anim_webp, "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    return {
        "png-rgb": save(rgb, "PNG"),
        "png-rgba": save(rgba, "PNG"),
        "png-la": save(la, "PNG"),
        "png-l": save(rgb.convert("L"), "PNG"),
        "png-p": save(rgb.convert("P"), "PNG"),
        "png-p-transparency": save(rgb.convert("P"), "PNG", transparency=3),
        "png-1bit": save(rgb.convert("1"), "PNG"),
        "webp-lossless": save(rgb, "WEBP", lossless=True),
        "webp-alpha": save(rgba, "WEBP", lossless=True),
        "webp-animated": anim_webp.getvalue(),
        "gif": save(rgb, "GIF"),
        "gif-animated": anim_gif.getvalue(),
        "bmp-rgb": save(rgb, "BMP"),
        "bmp-l": save(rgb.convert("L"), "BMP"),
        "bmp-rgba": save(rgba, "BMP"),
        "tiff-rgb": save(rgb, "TIFF"),
        "tiff-rgb-deflate": save(rgb, "TIFF", compression="tiff_adobe_deflate"),
        "tiff-rgba": save(rgba, "TIFF"),
        "tiff-cmyk": save(rgb_image(seed=3).convert("CMYK"), "TIFF"),
    }


@pytest.mark.parametrize("case", list(lossless_cases()))
def test_lossless_formats_equal_pil(case):
    data = lossless_cases()[case]
    np.testing.assert_array_equal(decoded(data), reference(data))


def test_webp_lossy():
    # Lossy WebP: libwebp decodes deterministically, but the two backends may be
    # linked against different libwebp versions; allow tiny differences.
    for im in (rgb_image(), rgb_image().convert("RGBA")):
        data = save(im, "WEBP", quality=80)
        out, ref = decoded(data), reference(data)
        assert out.shape == ref.shape
        assert np.abs(out.astype(int) - ref.astype(int)).max() <= 2


def test_16bit_gray_png_and_tiff():
    # We scale 16-bit to 8-bit as round(v * 255 / 65535), like TorchCodec. PIL's own
    # convert("RGB") of an "I;16" image clips to 255 instead, so the reference here is
    # PIL's 16-bit samples, scaled.
    samples = np.random.default_rng(4).integers(0, 65536, (H, W), dtype=np.uint16)
    for data in (save(Image.fromarray(samples), "PNG"), save(Image.fromarray(samples), "TIFF"), png16(samples)):
        info = info_of(data)
        assert info.bit_depth == 16
        raw = np.asarray(Image.open(io.BytesIO(data))).astype(np.float64)
        np.testing.assert_array_equal(raw, samples)
        out = decoded(data).astype(int)
        assert (out == out[..., :1]).all()
        assert np.abs(out[..., 0] - raw * 255 / 65535).max() <= 0.5 + 1e-9  # rounded, not truncated


def test_16bit_rgb_png():
    samples = np.random.default_rng(5).integers(0, 65536, (H, W, 3), dtype=np.uint16)
    data = png16(samples)
    assert info_of(data).bit_depth == 16
    out = decoded(data).astype(int)
    np.testing.assert_array_equal(out, np.round(samples / 257))
    # PIL opens 16-bit RGB as 8-bit by keeping the high byte: within 1 of ours.
    assert np.abs(out - reference(data).astype(int)).max() <= 1


def test_bytes_input_and_counters():
    data = save(rgb_image(), "PNG")
    before = decode.decode_calls.copy()
    img = decode_image(data, info_of(data))
    np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), reference(data))
    assert decode.decode_calls["torchcodec"] == before["torchcodec"] + 1
    decode_image(save(rgb_image(), "BMP"), info_of(save(rgb_image(), "BMP")))
    assert decode.decode_calls["pil"] == before["pil"] + 1


def test_torchvision_fallback(monkeypatch):
    monkeypatch.setattr(decode, "_torchcodec", lambda: None)
    before = decode.decode_calls.copy()
    samples = np.random.default_rng(6).integers(0, 65536, (H, W), dtype=np.uint16)
    cases = [save(rgb_image(), "JPEG", quality=90, **with_orientation(6)), save(rgb_image(), "PNG"),
             save(rgb_image().convert("P"), "GIF")]
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # its deprecation warning must not reach users
        for data in cases:
            out, ref = decoded(data), reference(data)
            assert_jpeg_close(out, ref)  # exact for PNG/GIF, close for JPEG
        out = decoded(png16(samples)).astype(int)
    np.testing.assert_array_equal(out[..., 0], np.round(samples / 257))
    assert decode.decode_calls["torchvision"] == before["torchvision"] + 4


# -- bad input ----------------------------------------------------------------------------------

def bad_cases():
    rng = np.random.default_rng(7)
    jpeg, png = save(rgb_image(), "JPEG", quality=90), save(rgb_image(), "PNG")
    sos = jpeg.find(b"\xff\xda")  # start of the entropy-coded data, after every header segment
    idat = png.find(b"IDAT") + 4
    garbage = lambda data, keep: data[:keep] + rng.integers(0, 256, len(data) - keep, dtype=np.uint8).tobytes()
    tiff = save(rgb_image(), "TIFF")
    return {
        "jpeg-half": (jpeg[: len(jpeg) // 2], info_of(jpeg), "JPEG"),
        "jpeg-garbage": (garbage(jpeg, sos + 20), info_of(jpeg), "JPEG"),
        "png-half": (png[: len(png) // 2], info_of(png), "PNG"),
        "png-garbage": (garbage(png, idat + 2), info_of(png), "PNG"),
        "webp-half": ((w := save(rgb_image(), "WEBP"))[: len(w) // 2], info_of(w), "WebP"),
        "gif-half": ((g := save(rgb_image(), "GIF"))[: len(g) // 2], info_of(g), "GIF"),
        "tiff-half": (tiff[: len(tiff) // 2], info_of(tiff), "TIFF"),
        "bmp-half": ((b := save(rgb_image(), "BMP"))[: len(b) // 2], info_of(b), "BMP"),
    }


@pytest.mark.parametrize("case", list(bad_cases()))
def test_bad_data_raises_decode_error(case):
    data, info, name = bad_cases()[case]
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    before = sum(decode.decode_calls.values())
    with pytest.raises(DecodeError, match=f"corrupt or truncated {name} data: "):
        decode_image(as_tensor(data), info)
    assert sum(decode.decode_calls.values()) == before  # only images actually decoded count


def test_size_differs_from_header():
    data = save(rgb_image(), "PNG")
    with pytest.raises(DecodeError, match=rf"decoded PNG is {H}x{W} .* header says {H + 1}x{W}"):
        decode_image(data, info_of(data, height=H + 1))
    # an orientation the header missed (TorchCodec still applies it) shows as a size mismatch
    rotated = save(rgb_image(), "JPEG", **with_orientation(6))
    with pytest.raises(DecodeError, match="header says"):
        decode_image(rotated, info_of(rotated, orientation=1, height=H, width=W))


def test_unknown_format():
    with pytest.raises(DecodeError, match="raw"):
        decode_image(b"\x00" * 12, ImageInfo("raw", 2, 2, 3))


# -- CpuDecoder ----------------------------------------------------------------------------------

def test_decode_batch_keeps_order_and_isolates_errors():
    good = [save(rgb_image(seed=s), fmt) for s, fmt in enumerate(["PNG", "JPEG", "BMP", "WEBP", "GIF"])]
    truncated = good[1][: len(good[1]) // 2]
    items = [(as_tensor(d), info_of(d)) for d in good]
    items.insert(2, (as_tensor(truncated), info_of(good[1])))
    before = decode.decode_calls.copy()
    with CpuDecoder(num_threads=3) as decoder:
        results = decoder.decode_batch(items)
        assert isinstance(results[2], DecodeError) and "JPEG" in str(results[2])
        for data, out in zip(good, results[:2] + results[3:]):
            assert isinstance(out, torch.Tensor)
            assert_jpeg_close(out.permute(1, 2, 0).numpy(), reference(data))
        assert decoder.counts == {"torchcodec": 4, "pil": 1}
        assert decoder.decode_batch([]) == []
        again = decoder.decode_batch(items[:1])  # a batch of one is decoded in the calling thread
        assert torch.equal(again[0], results[0])
        assert decoder.counts["torchcodec"] == 5
    assert decoder._pool is None  # closed by the context manager
    delta = decode.decode_calls - before
    assert delta == {"torchcodec": 5, "pil": 1}


def test_decoder_default_threads_and_close():
    decoder = CpuDecoder()
    assert 1 <= decoder.num_threads <= 8
    assert decoder._pool is None  # the pool is created lazily
    data = save(rgb_image(), "PNG")
    assert len(decoder.decode_batch([(data, info_of(data))] * 3)) == 3
    decoder.close()
    decoder.close()  # idempotent
    assert len(decoder.decode_batch([(data, info_of(data))] * 2)) == 2  # usable again
    decoder.close()
