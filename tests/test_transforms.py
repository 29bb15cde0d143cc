"""Each transform against torchvision.transforms.v2.functional with the same parameters."""
from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as TVF

from gpuaug import transforms as T
from gpuaug.rng import SampleKeys
from gpuaug.transforms import ParamContext

from conftest import check_op, photo_like


def batch(n=6, h=48, w=64, dtype=torch.uint8):
    imgs = torch.stack([photo_like(h, w, seed=k) for k in range(n)])
    return imgs if dtype == torch.uint8 else imgs.to(dtype) / 255.0


def params_of(op, images, seed=0, indices=None):
    n = len(images)
    keys = SampleKeys(seed, 0, torch.arange(n) if indices is None else torch.as_tensor(indices))
    sizes = torch.tensor([list(im.shape[-2:]) for im in images])
    return op.make_params(ParamContext(keys, 0, sizes))


def mae255(a, b):
    """Mean absolute error on the 0..255 scale."""
    scale = 255.0 if a.is_floating_point() else 1.0
    return (a.double() - b.double()).abs().mean().item() * scale


# -- geometry -------------------------------------------------------------------------------

class TestRandomResizedCrop:
    def test_matches_torchvision_resized_crop(self):
        images = batch(8, 90, 70)
        op = T.RandomResizedCrop((32, 40))
        out = check_op(op, images)
        p = params_of(op, images)
        for b in range(len(images)):
            box = [int(v[b]) for v in (p.top, p.left, p.height, p.width)]
            ref_f = TVF.resized_crop(images[b].float() / 255, *box, size=[32, 40], antialias=True)
            ours_f = op(images[b:b + 1].float() / 255, seed=0, indices=[b])[0]
            assert torch.allclose(ours_f, ref_f, atol=1e-5), "float path must match torchvision exactly"
            ref_u8 = TVF.resized_crop(images[b], *box, size=[32, 40], antialias=True)
            assert mae255(out[b], ref_u8) <= 1.0

    @pytest.mark.parametrize("shape", [(1, 1), (1, 300), (300, 1), (7, 5), (500, 20)])
    def test_degenerate_sizes(self, shape):
        img = photo_like(*shape)[None]
        out = T.RandomResizedCrop(16)(img, seed=3)
        assert out.shape == (1, 3, 16, 16)
        p = params_of(T.RandomResizedCrop(16), img, seed=3)
        assert 0 <= int(p.top) and int(p.top) + int(p.height) <= shape[0]
        assert 0 <= int(p.left) and int(p.left) + int(p.width) <= shape[1]

    def test_scale_and_ratio_statistics_match_torchvision(self):
        h, w, n = 300, 400, 4000
        ours = params_of(T.RandomResizedCrop(8), torch.zeros(n, 1, h, w, dtype=torch.uint8)[:, :, :, :])
        torch.manual_seed(0)
        tv = v2.RandomResizedCrop(8)
        ref = [tv.make_params([torch.zeros(3, h, w)]) for _ in range(n)]
        area_ours = (ours.height * ours.width).double() / (h * w)
        area_ref = torch.tensor([r["height"] * r["width"] / (h * w) for r in ref], dtype=torch.float64)
        lr_ours = torch.log(ours.width.double() / ours.height.double())
        lr_ref = torch.tensor([math.log(r["width"] / r["height"]) for r in ref], dtype=torch.float64)
        for a, b in ((area_ours, area_ref), (lr_ours, lr_ref)):
            qs = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)
            assert torch.allclose(torch.quantile(a, qs), torch.quantile(b, qs), atol=0.04)
            assert abs(a.mean() - b.mean()) < 0.02
        top_frac = ours.top.double() / (h - ours.height + 1).double()
        assert 0.45 < top_frac.mean() < 0.55

    def test_fallback_is_center_crop_with_clamped_ratio(self):
        # scale > 1 can never fit: every sample takes torchvision's fallback.
        op = T.RandomResizedCrop(8, scale=(2.0, 3.0), ratio=(1.0, 1.0))
        p = params_of(op, torch.zeros(3, 3, 40, 100))
        assert p.height.tolist() == [40] * 3 and p.width.tolist() == [40] * 3
        assert p.top.tolist() == [0] * 3 and p.left.tolist() == [30] * 3


class TestResize:
    @pytest.mark.parametrize("size,max_size", [(20, None), ([20], None), ((17, 33), None), (20, 25), (None, 30)])
    def test_output_size_matches_torchvision(self, size, max_size):
        for h, w in [(48, 64), (64, 48), (33, 100), (1, 7), (50, 50)]:
            img = torch.zeros(3, h, w)
            ref = TVF.resize(img, size, max_size=max_size)
            ours = T.Resize(size, max_size=max_size)(img[None])
            assert ours.shape[-2:] == ref.shape[-2:], (h, w)

    @pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest"])
    def test_pixels_match_torchvision(self, mode):
        images = batch(4, 50, 70)
        op = T.Resize((23, 31), interpolation=mode)
        out = check_op(op, images)
        interp = {"bilinear": v2.InterpolationMode.BILINEAR, "bicubic": v2.InterpolationMode.BICUBIC,
                  "nearest": v2.InterpolationMode.NEAREST}[mode]
        ref = TVF.resize(images, [23, 31], interpolation=interp, antialias=True)
        assert mae255(out, ref) <= 1.0
        ref_f = TVF.resize(images.float() / 255, [23, 31], interpolation=interp, antialias=True)
        assert torch.allclose(op(images.float() / 255), ref_f, atol=1e-5)

    def test_ragged_list_keeps_aspect(self):
        out = T.Resize(10)([photo_like(20, 40), photo_like(30, 15)])
        assert [tuple(o.shape) for o in out] == [(3, 10, 20), (3, 20, 10)]

    def test_upscale_upsamples(self):
        out = T.Resize(64)(batch(2, 16, 16))
        ref = TVF.resize(batch(2, 16, 16), [64], antialias=True)
        assert mae255(out, ref) <= 1.0


class TestCenterCrop:
    @pytest.mark.parametrize("size", [(20, 30), (48, 64), (60, 70), (10, 80), 1])
    def test_matches_torchvision(self, size):
        images = batch(3, 48, 64)
        out = check_op(T.CenterCrop(size), images)
        assert torch.equal(out, TVF.center_crop(images, list(size) if isinstance(size, tuple) else [size]))

    def test_padding_writes_every_element(self, nan_poison):
        out = T.CenterCrop((70, 90))(batch(2, 48, 64, torch.float32))
        assert not out.isnan().any()


class TestRandomCrop:
    @pytest.mark.parametrize("padding,pad_if_needed,mode", [
        (None, False, "constant"), (4, False, "constant"), ((1, 2, 3, 4), False, "edge"),
        ((3, 5), False, "reflect"), (2, True, "symmetric"), (None, True, "constant")])
    def test_matches_torchvision_pad_then_crop(self, padding, pad_if_needed, mode):
        images = batch(4, 30, 40)
        size = (36, 44) if pad_if_needed else (20, 24)
        op = T.RandomCrop(size, padding=padding, pad_if_needed=pad_if_needed, fill=7, padding_mode=mode)
        out = check_op(op, images)
        tv = v2.RandomCrop(size, padding=padding, pad_if_needed=pad_if_needed, fill=7, padding_mode=mode)
        tv_params = tv.make_params([images[0]])
        p = params_of(op, images)
        l, t, r, b = tv_params["padding"] if tv_params["needs_pad"] else (0, 0, 0, 0)
        for i in range(len(images)):
            padded = TVF.pad(images[i], [l, t, r, b], fill=7, padding_mode=mode)
            ref = TVF.crop(padded, int(p.top[i]) + t, int(p.left[i]) + l, *size)
            assert torch.equal(out[i], ref), i

    def test_too_small_names_sample(self):
        with pytest.raises(ValueError, match="larger than"):
            T.RandomCrop(50)(batch(2, 30, 40))


@pytest.mark.parametrize("cls,tvf", [(T.RandomHorizontalFlip, TVF.horizontal_flip),
                                     (T.RandomVerticalFlip, TVF.vertical_flip)])
def test_flips(cls, tvf):
    images = batch(16, 8, 12)
    out = check_op(cls(0.5), images)
    flags = params_of(cls(0.5), images).apply
    assert 0 < flags.sum() < 16
    for b in range(16):
        assert torch.equal(out[b], tvf(images[b]) if flags[b] else images[b])
    assert torch.equal(cls(0.0)(images), images)
    assert torch.equal(cls(1.0)(images), tvf(images))


def test_flip_probability():
    flags = params_of(T.RandomHorizontalFlip(0.3), torch.zeros(20000, 1, 1, 1)).apply.double()
    assert abs(flags.mean().item() - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 20000)


# -- color ----------------------------------------------------------------------------------

_TV_ADJUST = (TVF.adjust_brightness, TVF.adjust_contrast, TVF.adjust_saturation, TVF.adjust_hue)


class TestColorJitter:
    def test_matches_torchvision_in_each_samples_order(self):
        images = batch(12, 24, 20, torch.float32)
        op = T.ColorJitter(0.4, 0.4, 0.4, 0.1)
        out = check_op(op, images)
        p = params_of(op, images)
        factors = p.factors()
        assert len({tuple(o) for o in p.order.tolist()}) > 1, "orders must differ per sample"
        for b in range(len(images)):
            ref = images[b]
            for op_id in p.order[b].tolist():
                ref = _TV_ADJUST[op_id](ref, float(factors[op_id][b]))
            assert (out[b] - ref).abs().max() <= 2 / 255, b

    def test_uint8_within_tolerance(self):
        images = batch(6, 24, 20)
        op = T.ColorJitter(0.4, 0.4, 0.4, 0.1)
        out = op(images, seed=1)
        p = params_of(op, images, seed=1)
        for b in range(len(images)):
            ref = images[b].float() / 255
            for op_id in p.order[b].tolist():
                ref = _TV_ADJUST[op_id](ref, float(p.factors()[op_id][b]))
            assert mae255(out[b].float() / 255, ref) <= 2.0

    def test_factor_ranges(self):
        op = T.ColorJitter(brightness=0.4, contrast=(0.5, 0.9), saturation=0.0, hue=0.2)
        p = params_of(op, torch.zeros(5000, 3, 1, 1))
        assert p.saturation is None
        for f, lo, hi in ((p.brightness, 0.6, 1.4), (p.contrast, 0.5, 0.9), (p.hue, -0.2, 0.2)):
            assert lo <= f.min() and f.max() <= hi
            assert f.min() < lo + 0.01 and f.max() > hi - 0.01
            assert abs(f.mean().item() - (lo + hi) / 2) < 0.01

    def test_argument_validation_like_torchvision(self):
        with pytest.raises(ValueError):
            T.ColorJitter(hue=0.6)
        with pytest.raises(ValueError):
            T.ColorJitter(brightness=-1)

    def test_identical_images_get_different_parameters(self):
        img = photo_like(16, 16)
        out = T.ColorJitter(0.5, 0.5, 0.5, 0.2)(torch.stack([img, img]), seed=0)
        assert not torch.equal(out[0], out[1])


class TestGrayscale:
    @pytest.mark.parametrize("channels", [1, 3])
    def test_matches_torchvision(self, channels):
        images = batch(3, 10, 12, torch.float32)
        out = check_op(T.Grayscale(channels), images)
        assert torch.allclose(out, TVF.rgb_to_grayscale(images, channels), atol=1e-6)

    def test_random_grayscale(self):
        images = batch(20, 6, 6, torch.float32)
        op = T.RandomGrayscale(0.5)
        out = check_op(op, images)
        flags = params_of(op, images).apply
        assert 0 < flags.sum() < 20
        gray = TVF.rgb_to_grayscale(images, 3)
        for b in range(20):
            assert torch.allclose(out[b], gray[b] if flags[b] else images[b], atol=1e-6)
        assert torch.equal(T.RandomGrayscale(0.0)(images), images)


# -- dtype / normalize -------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_to_dtype_matches_torchvision(dtype):
    images = batch(2, 5, 7)
    ours = T.ToDtype(dtype, scale=True)(images)
    assert ours.dtype == dtype
    assert torch.equal(ours, TVF.to_dtype(images, dtype, scale=True))
    back = T.ToDtype(torch.uint8, scale=True)(ours.float())
    assert torch.equal(back, TVF.to_dtype(ours.float(), torch.uint8, scale=True))


def test_normalize_matches_torchvision():
    images = batch(3, 9, 9, torch.float32)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = check_op(T.Normalize(mean, std), images)
    assert torch.allclose(out, TVF.normalize(images, mean, std), rtol=0, atol=1e-6)
    with pytest.raises(TypeError, match="ToDtype"):
        T.Normalize(mean, std)(batch(1, 2, 2))


def test_full_recipe_against_torchvision_chain():
    images = batch(5, 80, 60)
    pipe = T.Compose([T.RandomResizedCrop(32), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4, 0.1),
                      T.ToDtype(torch.float16, scale=True), T.Normalize((0.5,) * 3, (0.25,) * 3)])
    out = pipe(images, seed=11)
    assert out.shape == (5, 3, 32, 32) and out.dtype == torch.float16
    keys = SampleKeys(11, 0, torch.arange(5))
    pp = pipe.make_pipeline_params(keys, torch.tensor([[80, 60]] * 5))
    crop, flip, jitter = pp.per_op[:3]
    for b in range(5):
        x = TVF.resized_crop(images[b].float() / 255, int(crop.top[b]), int(crop.left[b]),
                             int(crop.height[b]), int(crop.width[b]), [32, 32], antialias=True)
        if flip.apply[b]:
            x = TVF.horizontal_flip(x)
        for op_id in jitter.order[b].tolist():
            x = _TV_ADJUST[op_id](x, float(jitter.factors()[op_id][b]))
        x = TVF.normalize(x, (0.5,) * 3, (0.25,) * 3)
        assert (out[b].float() - x).abs().max() <= 4 * (2 / 255) + 1e-2


def test_seed_and_epoch_change_draws_but_are_reproducible():
    images = batch(4, 40, 40)
    op = T.Compose([T.RandomResizedCrop(16), T.ColorJitter(0.4, 0.4, 0.4)])
    a = op(images, seed=1)
    assert torch.equal(a, op(images, seed=1))
    assert not torch.equal(a, op(images, seed=2))
    assert not torch.equal(a, op(images, seed=1, epoch=1))


def test_standalone_seed_follows_torch_manual_seed():
    images = batch(2, 20, 20)
    torch.manual_seed(5)
    a = T.RandomResizedCrop(8)(images)
    torch.manual_seed(5)
    assert torch.equal(a, T.RandomResizedCrop(8)(images))


def test_compose_rejects_torchvision_ops():
    with pytest.raises(TypeError, match="from_torchvision"):
        T.Compose([v2.RandomHorizontalFlip()])
