"""Warps and zoom-out against torchvision.transforms.v2.functional, reference and fused."""
from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as TVF

from gpuaug import from_torchvision
from gpuaug import transforms as T
from gpuaug.fused import HostBackend, plan_segments
from gpuaug.rng import SampleKeys
from gpuaug.selftest import compare

from conftest import check_op, photo_like

MODES = {"nearest": v2.InterpolationMode.NEAREST, "bilinear": v2.InterpolationMode.BILINEAR}


def batch(n=4, h=40, w=56):
    return torch.stack([photo_like(h, w, seed=k) for k in range(n)]).float() / 255


def uniforms(seed, n, draws):
    return SampleKeys(seed, 0, torch.arange(n)).uniform(0, draws).double()


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_rotation_matches_torchvision(mode):
    images = batch()
    out = check_op(T.RandomRotation(30, interpolation=mode, fill=0.3), images)
    u = uniforms(0, 4, 1)
    for b in range(4):
        ref = TVF.rotate(images[b], float(-30 + 60 * u[b, 0]), interpolation=MODES[mode], fill=0.3)
        assert (out[b] - ref).abs().max() < 1e-4


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_affine_matches_torchvision(mode):
    images = batch()
    op = T.RandomAffine(20, translate=(0.1, 0.2), scale=(0.8, 1.2), shear=(-10, 10, -5, 5), interpolation=mode,
                        fill=(0.1, 0.2, 0.3))
    out = check_op(op, images, seed=1)
    u = uniforms(1, 4, 6)
    for b in range(4):
        angle = float(-20 + 40 * u[b, 0])
        tx, ty = round(float(-5.6 + 11.2 * u[b, 1])), round(float(-8 + 16 * u[b, 2]))
        scale, shx, shy = float(0.8 + 0.4 * u[b, 3]), float(-10 + 20 * u[b, 4]), float(-5 + 10 * u[b, 5])
        ref = TVF.affine(images[b], angle, [tx, ty], scale, [shx, shy], interpolation=MODES[mode],
                         fill=[0.1, 0.2, 0.3])
        assert (out[b] - ref).abs().max() < 1e-4


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_perspective_matches_torchvision(mode):
    images, (h, w) = batch(), (40, 56)
    out = check_op(T.RandomPerspective(0.6, p=1.0, interpolation=mode, fill=0.5), images, seed=2)
    u = uniforms(2, 4, 9)
    bh, bw = int(0.6 * (h // 2)) + 1, int(0.6 * (w // 2)) + 1

    def randint(b, k, lo, hi):
        return int(min(lo + (u[b, k] * (hi - lo)).floor(), hi - 1))

    for b in range(4):
        ends = [[randint(b, 0, 0, bw), randint(b, 1, 0, bh)], [randint(b, 2, w - bw, w), randint(b, 3, 0, bh)],
                [randint(b, 4, w - bw, w), randint(b, 5, h - bh, h)], [randint(b, 6, 0, bw), randint(b, 7, h - bh, h)]]
        ref = TVF.perspective(images[b], [[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], ends,
                              interpolation=MODES[mode], fill=0.5)
        diff = (out[b] - ref).abs()
        assert (diff > 1e-4).float().mean() < 0.002      # nearest may round one boundary pixel differently


def test_perspective_p0_is_identity_and_zoom_out():
    images = batch()
    assert torch.allclose(T.RandomPerspective(0.5, p=0.0)(images), images, atol=1e-5)
    u8 = (images * 255).round().to(torch.uint8)
    out = T.RandomZoomOut(fill=(10, 20, 30), side_range=(2.0, 2.0), p=1.0)(list(u8), seed=0)
    u = uniforms(0, 4, 4)
    for b, img in enumerate(out):
        left, top = int((112 - 56) * u[b, 1]), int((80 - 40) * u[b, 2])
        ref = TVF.pad(u8[b], [left, top, 112 - 56 - left, 80 - 40 - top], fill=[10, 20, 30])
        assert torch.equal(img, ref)


def test_from_torchvision_converts_warps():
    pipe = from_torchvision(v2.Compose([v2.RandomRotation(15), v2.RandomAffine(10, translate=(0.1, 0.1)),
                                        v2.RandomPerspective(0.3, p=0.2), v2.RandomZoomOut(side_range=(1, 2))]))
    assert [type(t) for t in pipe.transforms] == [T.RandomRotation, T.RandomAffine, T.RandomPerspective,
                                                  T.RandomZoomOut]
    assert pipe.transforms[0].degrees == (-15.0, 15.0) and pipe.transforms[2].p == 0.2


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_warps_fuse_and_match_reference(dtype):
    host = HostBackend.get()
    images = [photo_like(60 + 7 * k, 90 - 5 * k, seed=k) for k in range(5)]
    tail = [T.ToDtype(dtype, scale=True), T.Normalize((0.5,) * 3, (0.25,) * 3)] if dtype != torch.uint8 else []
    for warp in (T.RandomRotation(30, interpolation="bilinear", fill=20), T.RandomAffine(20, (0.1, 0.1), (0.8, 1.2), 10),
                 T.RandomPerspective(0.5, p=0.7, fill=(10, 20, 30))):
        pipe = T.Compose([T.RandomZoomOut(fill=5, side_range=(1, 1.5)), T.RandomResizedCrop(32),
                          T.RandomHorizontalFlip(), warp, T.RandomVerticalFlip(), T.ColorJitter(0.4, 0.4, 0.4, 0.1),
                          *tail])
        assert [s.fused for s in plan_segments(pipe.transforms)] == [True]
        before = host.launches
        worst, mean, _ = compare(pipe, images, host)
        assert host.launches - before == 4       # hpass, vpass, warp, color (contrast needs a sum)
        assert worst <= (2.0 if dtype == torch.uint8 else 0.02) and mean <= 0.05, (warp, worst, mean)


@pytest.mark.parametrize("fill", [None, 0, 0.3, (0.1, 0.2, 0.3)])
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_fill_semantics_match_torchvision(fill, mode):
    """None is plain zero padding; a number or a tuple is blended by coverage (so 0 != None)."""
    images = batch()
    out = check_op(T.RandomRotation(40, interpolation=mode, fill=fill), images, seed=3)
    u = uniforms(3, 4, 1)
    for b in range(4):
        tv_fill = list(fill) if isinstance(fill, tuple) else fill
        ref = TVF.rotate(images[b], float(-40 + 80 * u[b, 0]), interpolation=MODES[mode], fill=tv_fill)
        assert (out[b] - ref).abs().max() < 1e-4


def test_fill_none_and_zero_differ_on_the_border_like_torchvision():
    images = batch(n=1)
    none, zero = (T.RandomRotation((30, 30), interpolation="bilinear", fill=f)(images, seed=0) for f in (None, 0))
    tv_none, tv_zero = (TVF.rotate(images[0], 30.0, interpolation=MODES["bilinear"], fill=f) for f in (None, 0))
    assert (tv_none - tv_zero).abs().max() > 0.05                      # the oracle itself tells them apart
    assert (none[0] - tv_none).abs().max() < 1e-4 and (zero[0] - tv_zero).abs().max() < 1e-4


def test_fill_none_warp_takes_the_reference_in_a_fused_pipeline():
    pipe = T.Compose([T.RandomResizedCrop(24), T.RandomRotation(30, interpolation="bilinear", fill=None),
                      T.ToDtype(torch.float32, scale=True)])
    assert [s.fused for s in plan_segments(pipe.transforms)] == [True, False, True]
    u8 = (batch() * 255).round().to(torch.uint8)
    host = HostBackend.get()
    fused, reference = pipe(u8, seed=4, backend=host), pipe(u8, seed=4)
    assert (fused - reference).abs().max() < 1e-4
