"""Shared fixtures and the generic transform checker."""
from __future__ import annotations

import io
import multiprocessing
import os

import pytest
import torch
from PIL import Image


def photo_like(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth, textured ``[3, h, w]`` uint8 image (not flat noise: resampling differences show)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(3, max(2, h // 8), max(2, w // 8), generator=g)
    img = torch.nn.functional.interpolate(base[None], size=(h, w), mode="bicubic", align_corners=False)[0]
    img = img + 0.08 * torch.rand(3, h, w, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def encode(img: torch.Tensor, fmt: str = "JPEG", **kwargs) -> bytes:
    """Encode a ``[3, H, W]`` uint8 tensor with PIL."""
    buf = io.BytesIO()
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture
def nan_poison():
    """Make torch.empty return NaN-filled memory, so unwritten outputs show up."""
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(old)


def rss_kb(pid: int) -> int:
    """Resident memory of process ``pid`` in KiB."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def tree_rss_kb() -> int:
    """Resident memory of this process and its worker processes, in KiB."""
    return rss_kb(os.getpid()) + sum(rss_kb(p.pid) for p in multiprocessing.active_children())


def make_image_folder(root, sizes, classes=("cat", "dog"), fmt="JPEG", seed=0):
    """Write a small ImageFolder with one photo-like image per size; returns the root."""
    for k, (h, w) in enumerate(sizes):
        cls = classes[k % len(classes)]
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        (d / f"img{k:03d}.jpg").write_bytes(encode(photo_like(h, w, seed + k), fmt, quality=92))
    return root


def check_op(op, images, seed: int = 0) -> torch.Tensor:
    """Generic checks every transform must pass; returns the batched output.

    - the input is not modified;
    - uint8 in -> uint8 out (no ToDtype), floats keep their dtype; device kept;
    - batched output == each sample run alone with the same index (per-sample keys);
    - a list input gives the same images as the dense input;
    - an empty batch and a batch of one work.
    """
    before = images.clone()
    out = op(images, seed=seed)
    assert torch.equal(images, before), "op modified its input"
    assert out.dtype == images.dtype and out.device == images.device
    for b in range(len(images)):
        alone = op(images[b:b + 1], seed=seed, indices=[b])
        assert torch.equal(alone[0], out[b]), f"sample {b} differs when run alone"
    as_list = op(list(images), seed=seed)
    assert isinstance(as_list, list) and len(as_list) == len(images)
    for b in range(len(images)):
        assert torch.equal(as_list[b], out[b])
    empty = op(images[:0], seed=seed)
    assert empty.shape[0] == 0 and empty.shape[1:] == out.shape[1:]
    assert op(images[:1], seed=seed).shape == (1, *out.shape[1:])
    return out
