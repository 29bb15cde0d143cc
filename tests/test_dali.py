"""decoder="dali": DALI's decoder (CPU here: device_id=None) behind the same batch interface."""
from __future__ import annotations

import pytest

import gpuaug
from gpuaug import transforms as T

from conftest import encode, photo_like

pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is in the dev extra; install gpuaug[dali]")


def test_dali_decodes_jpegs_like_the_cpu_pool():
    data = [(encode(photo_like(30 + k, 40 - k, seed=k)), k) for k in range(5)]
    data.append((encode(photo_like(20, 20, seed=9), "PNG"), 5))          # not a JPEG: the CPU pool
    outs = {}
    for decoder in ("dali", "cpu"):
        loader = gpuaug.DataLoader(data, batch_size=6, decoder=decoder, transform=T.Resize((16, 16)))
        (images, labels), = list(loader)
        outs[decoder] = images
        counts = loader.decoder_counts
    assert labels.tolist() == list(range(6))
    assert (outs["dali"].float() - outs["cpu"].float()).abs().mean() < 1.0   # both libjpeg-turbo based
    dali_loader = gpuaug.DataLoader(data, batch_size=6, decoder="dali")
    list(dali_loader)
    assert dali_loader.decoder_counts["dali"] == 5 and sum(dali_loader.decoder_counts.values()) == 6
    assert counts.get("dali", 0) == 0


def test_dali_corrupt_jpeg_follows_on_error():
    good = encode(photo_like(24, 24))
    corrupt = good[:100] + b"\x00" * 50 + good[-2:]
    loader = gpuaug.DataLoader([(good, 0), (corrupt, 1), (good, 2)], batch_size=3, decoder="dali", on_error="skip")
    with pytest.warns(UserWarning, match="1 bad sample"):
        (images, labels), = list(loader)
    assert labels.tolist() == [0, 2]


def test_dali_takes_exif_rotated_jpegs():
    from test_runtime import _exif_jpeg

    data = [(_exif_jpeg(photo_like(20, 36, seed=k), k), k) for k in range(1, 9)]
    outs = {}
    for decoder in ("dali", "cpu"):
        loader = gpuaug.DataLoader(data, batch_size=8, decoder=decoder)
        (images, _), = list(loader)
        outs[decoder] = images
    assert loader.decoder_counts.get("dali", 0) == 0
    assert all(a.shape == b.shape for a, b in zip(outs["dali"], outs["cpu"]))
    assert all((a.float() - b.float()).abs().mean() < 1.0 for a, b in zip(outs["dali"], outs["cpu"]))
