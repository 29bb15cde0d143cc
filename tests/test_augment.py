"""GaussianBlur, solarize/posterize/autocontrast/equalize/invert/sharpness and RandomErasing
against torchvision.transforms.v2.functional with the parameters our make_params drew."""
from __future__ import annotations

import pytest
import torch
import torchvision.transforms as v1
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as TVF

from gpuaug import from_torchvision
from gpuaug import transforms as T
from gpuaug.rng import SampleKeys
from gpuaug.transforms import ParamContext
from gpuaug.transforms._augment import normal_noise

from conftest import check_op, photo_like


def batch(n=6, h=24, w=32, dtype=torch.uint8):
    imgs = torch.stack([photo_like(h, w, seed=k) for k in range(n)])
    return imgs if dtype == torch.uint8 else imgs.to(dtype) / 255.0


def params_of(op, images, seed=0):
    keys = SampleKeys(seed, 0, torch.arange(len(images)))
    return op.make_params(ParamContext(keys, 0, torch.tensor([list(images.shape[-2:])] * len(images))))


def max_diff(a, b):
    return (a.double() - b.double()).abs().max().item()


# (our op, torchvision functional with the op's fixed argument, max |diff| on uint8 images)
# uint8 differences: torchvision truncates (autocontrast) or rounds (sharpness) an
# intermediate; we keep float and round once at the end.
APPLY_OPS = [
    (T.RandomInvert(0.5), TVF.invert, 0),
    (T.RandomSolarize(100, 0.5), lambda x: TVF.solarize(x, 100 if x.dtype == torch.uint8 else 100 / 255), 0),
    (T.RandomPosterize(3, 0.5), lambda x: TVF.posterize(x, 3), 0),
    (T.RandomAutocontrast(0.5), TVF.autocontrast, 1),
    (T.RandomEqualize(0.5), TVF.equalize, 0),
    (T.RandomAdjustSharpness(2.5, 0.5), lambda x: TVF.adjust_sharpness(x, 2.5), 1),
]


@pytest.mark.parametrize("op,tvf,u8_tol", APPLY_OPS, ids=[type(op).__name__ for op, _, _ in APPLY_OPS])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_apply_flag_ops_match_torchvision(op, tvf, u8_tol, dtype):
    if isinstance(op, T.RandomSolarize) and dtype == torch.float32:
        op = T.RandomSolarize(100 / 255, 0.5)
    images = batch(10, dtype=dtype)
    out = check_op(op, images)
    flags = params_of(op, images).apply
    assert 0 < flags.sum() < len(images), "p=0.5 must apply to some samples only"
    tol = u8_tol if dtype == torch.uint8 else 1e-6
    for b in range(len(images)):
        expected = tvf(images[b]) if flags[b] else images[b]
        assert max_diff(out[b], expected) <= tol, b


@pytest.mark.parametrize("make", [lambda p: T.RandomInvert(p), lambda p: T.RandomEqualize(p),
                                  lambda p: T.GaussianBlur(3) if p else None,
                                  lambda p: T.RandomErasing(p, value=7)])
def test_p_zero_and_one_are_exact(make):
    images = batch(8)
    never, always = make(0.0), make(1.0)
    if never is not None:
        assert torch.equal(never(images, seed=3), images)
        assert not params_of(never, images).apply.any()
    assert not torch.equal(always(images, seed=3), images)
    if hasattr(params_of(always, images), "apply"):
        assert params_of(always, images).apply.all()


def test_solarize_threshold_checked_against_value_range():
    with pytest.raises(TypeError, match="Threshold"):
        T.RandomSolarize(128, p=1.0)(batch(2, dtype=torch.float32))


def test_posterize_rounds_working_values_to_uint8_levels_first():
    # 127.6 is what a uint8 pipeline would show as 128: posterize bins that level.
    x = torch.tensor([127.6, 127.4, 255.0]).reshape(1, 1, 1, 3)
    from gpuaug.transforms._augment import posterize
    assert posterize(x, torch.tensor([1.0]), 255.0).flatten().tolist() == [128.0, 0.0, 128.0]
    assert torch.equal(posterize(x, torch.tensor([8.0]), 255.0), x)


class TestGaussianBlur:
    @pytest.mark.parametrize("kernel_size", [3, (5, 3), 7])
    def test_matches_torchvision_with_each_samples_sigma(self, kernel_size):
        images = batch(5, 20, 24, torch.float32)
        op = T.GaussianBlur(kernel_size, sigma=(0.3, 2.5))
        out = check_op(op, images)
        sigma = params_of(op, images).sigma
        assert len(set(sigma.tolist())) == len(images)
        ks = [kernel_size] * 2 if isinstance(kernel_size, int) else list(kernel_size)
        for b in range(len(images)):
            ref = TVF.gaussian_blur(images[b], ks, [float(sigma[b])] * 2)
            assert max_diff(out[b], ref) <= 1e-5

    def test_uint8_within_one_level(self):
        images = batch(4)
        op = T.GaussianBlur(5, sigma=(0.5, 3.0))
        out = op(images, seed=2)
        sigma = params_of(op, images, seed=2).sigma
        for b in range(len(images)):
            assert max_diff(out[b], TVF.gaussian_blur(images[b], [5, 5], [float(sigma[b])] * 2)) <= 1

    def test_fixed_sigma_and_sigma_distribution(self):
        assert T.GaussianBlur(3, sigma=1.5).sigma == (1.5, 1.5)
        sigma = params_of(T.GaussianBlur(3, (0.1, 2.0)), torch.zeros(20000, 1, 4, 4)).sigma
        assert 0.1 <= sigma.min() and sigma.max() < 2.0
        assert abs(sigma.mean().item() - 1.05) < 0.01

    def test_argument_validation(self):
        with pytest.raises(ValueError):
            T.GaussianBlur(4)
        with pytest.raises(ValueError):
            T.GaussianBlur(3, sigma=(2.0, 1.0))


class TestRandomErasing:
    @pytest.mark.parametrize("value", [0, 7.5, (10, 20, 30)])
    def test_matches_torchvision_erase(self, value):
        images = batch(12, 24, 32, torch.float32) * 255
        op = T.RandomErasing(p=0.7, value=value)
        out = check_op(op, images)
        p = params_of(op, images)
        assert 0 < p.apply.sum() < len(images)
        fill = torch.tensor(value if isinstance(value, tuple) else [value], dtype=torch.float32).reshape(-1, 1, 1)
        for b in range(len(images)):
            ref = images[b]
            if p.apply[b]:
                ref = TVF.erase(images[b], int(p.top[b]), int(p.left[b]), int(p.height[b]), int(p.width[b]), fill)
            assert torch.equal(out[b], ref), b

    def test_random_value_is_standard_normal_noise_and_replays(self):
        images = torch.zeros(16, 3, 40, 40)
        op = T.RandomErasing(p=1.0, scale=(0.2, 0.3), value="random")
        out = check_op(op, images)
        assert torch.equal(out, op(images, seed=0))
        p = params_of(op, images)
        noise = normal_noise(p.noise_words, (3, 40, 40))
        values = []
        for b in range(len(images)):
            t, l, h, w = (int(v[b]) for v in (p.top, p.left, p.height, p.width))
            assert torch.equal(out[b, :, t:t + h, l:l + w], noise[b, :, t:t + h, l:l + w])
            values.append(out[b, :, t:t + h, l:l + w].flatten())
        values = torch.cat(values).double()
        assert abs(values.mean().item()) < 0.03 and abs(values.std().item() - 1) < 0.03
        assert not torch.equal(noise[0], noise[1])

    def test_box_statistics_match_torchvision(self):
        h, w, n = 60, 80, 4000
        ours = params_of(T.RandomErasing(p=1.0), torch.zeros(n, 3, h, w))
        torch.manual_seed(0)
        tv = v2.RandomErasing(p=1.0)
        ref = [tv.make_params([torch.zeros(3, h, w)]) for _ in range(n)]
        area_ours = (ours.height * ours.width).double() / (h * w)
        area_ref = torch.tensor([r["h"] * r["w"] / (h * w) for r in ref], dtype=torch.float64)
        qs = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)
        assert torch.allclose(torch.quantile(area_ours, qs), torch.quantile(area_ref, qs), atol=0.02)
        tall_ours = (ours.height > ours.width).double().mean()
        tall_ref = sum(r["h"] > r["w"] for r in ref) / n
        assert abs(tall_ours - tall_ref) < 0.04
        assert (ours.top + ours.height <= h).all() and (ours.left + ours.width <= w).all()
        assert (ours.top >= 0).all() and (ours.left >= 0).all()

    def test_no_fitting_box_leaves_sample_unchanged(self):
        images = batch(3, 20, 20)
        op = T.RandomErasing(p=1.0, scale=(1.0, 1.0), ratio=(1.0, 1.0))    # a 20x20 box never fits (h < H)
        assert not params_of(op, images).apply.any()
        assert torch.equal(op(images, seed=0), images)

    def test_identical_images_get_different_boxes(self):
        img = photo_like(32, 32)
        out = T.RandomErasing(p=1.0)(torch.stack([img, img]), seed=0)
        assert not torch.equal(out[0], out[1])

    def test_value_length_checked(self):
        with pytest.raises(ValueError, match="single value or 3"):
            T.RandomErasing(p=1.0, value=(1, 2))(batch(2))


def test_seed_reproducible_and_seed_dependent():
    images = batch(6)
    pipe = T.Compose([T.GaussianBlur(3), T.RandomSolarize(128), T.RandomErasing(value=(9, 8, 7))])
    a = pipe(images, seed=5)
    assert torch.equal(a, pipe(images, seed=5))
    assert not torch.equal(a, pipe(images, seed=6))


def test_normal_noise_moments():
    z = normal_noise(torch.tensor([[1, 2], [3, 4]]), (3, 100, 101)).double()
    assert z.shape == (2, 3, 100, 101)
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01
    assert abs((z.flatten()[1:] * z.flatten()[:-1]).mean().item()) < 0.01     # neighbours uncorrelated


@pytest.mark.parametrize("tv", [v1, v2])
def test_from_torchvision(tv):
    pipe = tv.Compose([tv.GaussianBlur((5, 3), sigma=(0.2, 1.5)), tv.RandomSolarize(99, p=0.3),
                       tv.RandomPosterize(5, p=0.4), tv.RandomAutocontrast(p=0.6), tv.RandomEqualize(p=0.7),
                       tv.RandomInvert(p=0.8), tv.RandomAdjustSharpness(1.7, p=0.9),
                       tv.RandomErasing(p=0.25, scale=(0.1, 0.2), ratio=(0.5, 2.0), value=(1, 2, 3)),
                       tv.RandomErasing(value="random")])
    ops = from_torchvision(pipe).transforms
    assert [type(o) for o in ops] == [T.GaussianBlur, T.RandomSolarize, T.RandomPosterize, T.RandomAutocontrast,
                                      T.RandomEqualize, T.RandomInvert, T.RandomAdjustSharpness, T.RandomErasing,
                                      T.RandomErasing]
    blur, solarize, posterize, autocontrast, equalize, invert, sharpness, erasing, noise = ops
    assert blur.kernel_size == (5, 3) and blur.sigma == (0.2, 1.5)
    assert solarize.threshold == 99 and solarize.p == 0.3
    assert posterize.bits == 5 and posterize.p == 0.4
    assert (autocontrast.p, equalize.p, invert.p) == (0.6, 0.7, 0.8)
    assert sharpness.sharpness_factor == 1.7 and sharpness.p == 0.9
    assert erasing.p == 0.25 and erasing.scale == (0.1, 0.2) and erasing.ratio == (0.5, 2.0)
    assert erasing.value == [1.0, 2.0, 3.0]
    assert noise.value == "random" and noise.p == 0.5
