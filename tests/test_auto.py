"""RandAugment, TrivialAugmentWide, AutoAugment and AugMix against torchvision v2.

Each op kind is checked by forcing every sample to choose it (params built by hand)
and comparing each sample with torchvision's own op dispatcher at that magnitude.
"""
from __future__ import annotations

import pytest
import torch
import torchvision.transforms as v1
import torchvision.transforms.v2 as v2

from gpuaug import from_torchvision
from gpuaug import transforms as T
from gpuaug.rng import SampleKeys
from gpuaug.transforms import AugMixParams, AutoAugmentParams, ImageState, ParamContext
from gpuaug.transforms._auto import (AUGMIX_SPACE, AUTOAUGMENT_SPACE, IDENTITY, IMAGENET_POLICY, OP_INDEX, OPS,
                                     RANDAUGMENT_SPACE, TRIVIALAUGMENT_SPACE, op_matrices)
from gpuaug.transforms._base import finalize

from conftest import check_op, photo_like

H, W = 26, 34
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
COLOR = ("Brightness", "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
         "Invert")


def batch(n=6, dtype=torch.uint8, channels=3):
    imgs = torch.stack([photo_like(H, W, seed=k) for k in range(n)])[:, :channels]
    return imgs if dtype == torch.uint8 else imgs.to(dtype) / 255.0


def params_of(op, images, seed=0):
    keys = SampleKeys(seed, 0, torch.arange(len(images)))
    return op.make_params(ParamContext(keys, 0, torch.tensor([list(images.shape[-2:])] * len(images))))


def run(op, images, params):
    return finalize(op.apply(ImageState(images, images.dtype, owned=False), params), True)


def forced(name, n=6, bins=(3, 9, 15, 20, 27, 30)):
    """Every sample on op ``name``, each with its own RandAugment magnitude and alternating signs."""
    magnitudes_of, signed = RANDAUGMENT_SPACE.get(name) or AUTOAUGMENT_SPACE[name]
    m = torch.zeros(n) if magnitudes_of is None else magnitudes_of(31, H, W)[list(bins[:n])].float()
    if signed:
        m = m * torch.tensor([1.0, -1.0] * (n // 2))
    return AutoAugmentParams(ops=torch.full((n, 1), OP_INDEX[name]), magnitudes=m.reshape(n, 1))


def torchvision_op(image, name, magnitude, interpolation="nearest", fill=None):
    tv = v2.RandAugment(interpolation=v2.InterpolationMode(interpolation), fill=fill)
    return tv._apply_image_or_video_transform(image, name, magnitude, interpolation=tv.interpolation,
                                              fill=tv._fill)


def diff(a, b):
    return (a.double() - b.double()).abs()


def ties(name, magnitude):
    """``[H, W]`` output pixels whose source point lies exactly between two pixels, where
    nearest sampling may round either way (float64 here, float32 in torchvision)."""
    matrix = op_matrices(name, torch.tensor([magnitude]), H, W)[0]
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                            indexing="ij")
    src = torch.stack([xs, ys, torch.ones_like(xs)], -1) @ matrix.T
    on_half = lambda v: ((v - v.floor()) - 0.5).abs() < 1e-6  # noqa: E731
    return on_half(src[..., 0]) | on_half(src[..., 1])


# -- every op kind against torchvision ---------------------------------------------------------

@pytest.mark.parametrize("name", COLOR)
def test_color_ops_match_torchvision(name):
    params = forced(name)
    op = T.RandAugment()
    for dtype, tol in ((torch.float32, 1e-5), (torch.uint8, 2)):
        images = batch(dtype=dtype)
        out = run(op, images, params)
        for b in range(len(images)):
            ref = torchvision_op(images[b], name, float(params.magnitudes[b, 0]))
            # uint8: torchvision truncates blends to uint8 after each op; we round once at the end.
            assert diff(out[b], ref).max() <= tol, (dtype, b)


@pytest.mark.parametrize("name", GEOMETRIC)
@pytest.mark.parametrize("interpolation,fill", [("nearest", None), ("bilinear", None),
                                                 ("nearest", (0.1, 0.5, 0.9)), ("bilinear", 0.7)])
def test_geometric_ops_match_torchvision_affine(name, interpolation, fill):
    images = batch(dtype=torch.float32)
    params = forced(name)
    out = run(T.RandAugment(interpolation=interpolation, fill=fill), images, params)
    for b in range(len(images)):
        ref = torchvision_op(images[b], name, float(params.magnitudes[b, 0]), interpolation, fill)
        d = diff(out[b], ref)
        if interpolation == "bilinear":
            assert d.max() <= 1e-4, b
        else:
            # Nearest sampling: only exact ties (a shear of 0.2 puts every fifth row on half
            # pixels) may differ; everywhere else the output is torchvision's, bit for bit.
            differs = (d > 0).any(dim=0)
            assert not (differs & ~ties(name, float(params.magnitudes[b, 0]))).any(), b


def test_geometric_uint8_with_fill_matches_torchvision():
    images = batch()
    for name in GEOMETRIC:
        params = forced(name)
        out = run(T.RandAugment(fill=[10, 128, 250]), images, params)
        for b in range(len(images)):
            ref = torchvision_op(images[b], name, float(params.magnitudes[b, 0]), fill=[10, 128, 250])
            differs = (diff(out[b], ref) > 0).any(dim=0)
            assert not (differs & ~ties(name, float(params.magnitudes[b, 0]))).any(), (name, b)


def test_one_channel_images():
    images = batch(channels=1)
    for name in ("Color", "Contrast", "Equalize", "Rotate"):
        params = forced(name)
        out = run(T.RandAugment(), images, params)
        for b in range(len(images)):
            ref = torchvision_op(images[b], name, float(params.magnitudes[b, 0]))
            if name == "Rotate":
                assert not (diff(out[b], ref)[0].bool() & ~ties(name, float(params.magnitudes[b, 0]))).any()
            else:
                assert diff(out[b], ref).max() <= 1, (name, b)     # uint8 blends: within one level


# -- tables --------------------------------------------------------------------------------------

@pytest.mark.parametrize("ours,theirs", [(RANDAUGMENT_SPACE, v2.RandAugment),
                                         (TRIVIALAUGMENT_SPACE, v2.TrivialAugmentWide),
                                         (AUTOAUGMENT_SPACE, v2.AutoAugment), (AUGMIX_SPACE, v2.AugMix)])
def test_magnitude_tables_equal_torchvisions(ours, theirs):
    space = theirs._AUGMENTATION_SPACE
    assert list(ours) == list(space)
    for name, (magnitudes_of, signed) in space.items():
        assert ours[name][1] == signed, name
        for bins, h, w in ((10, 224, 224), (31, 331, 500), (31, 37, 53), (7, 5, 3)):
            expected = magnitudes_of(bins, h, w)
            got = ours[name][0] and ours[name][0](bins, h, w)
            if expected is None:
                assert got is None, name
            else:
                assert torch.equal(got.float(), expected.float()), (name, bins, h, w)


def test_imagenet_policy_equals_torchvisions():
    assert [tuple(sub) for sub in v2.AutoAugment()._policies] == list(IMAGENET_POLICY)


# -- sampling ------------------------------------------------------------------------------------

def test_randaugment_draws_uniform_ops_signs_and_fixed_magnitude():
    n = 14000
    sizes = torch.zeros(n, 3, H, W)
    p = params_of(T.RandAugment(num_ops=2, magnitude=9), sizes)
    names = list(RANDAUGMENT_SPACE)
    counts = torch.bincount(p.ops.flatten(), minlength=len(OPS)).double() / p.ops.numel()
    for name in names:
        assert abs(counts[OP_INDEX[name]] - 1 / len(names)) < 0.01, name
    assert counts[OP_INDEX["Invert"]] == 0
    rotate = p.ops == OP_INDEX["Rotate"]
    assert set(p.magnitudes[rotate].abs().tolist()) == {9.0}
    assert abs((p.magnitudes[rotate] < 0).double().mean() - 0.5) < 0.03
    assert (p.ops[:, 0] != p.ops[:, 1]).any()


def test_trivialaugment_draws_bins_per_sample():
    p = params_of(T.TrivialAugmentWide(), torch.zeros(20000, 3, H, W))
    assert p.ops.shape == (20000, 1)
    brightness = p.ops[:, 0] == OP_INDEX["Brightness"]
    steps = (p.magnitudes[brightness, 0].abs() / (0.99 / 30)).round()
    assert steps.min() == 0 and steps.max() == 30 and abs(steps.mean() - 15) < 0.6


def test_autoaugment_sub_policies_and_step_probabilities():
    n = 25000
    p = params_of(T.AutoAugment(v2.AutoAugmentPolicy.IMAGENET), torch.zeros(n, 3, H, W))
    probs = torch.tensor([[step[1] for step in sub] for sub in IMAGENET_POLICY])
    applied = (p.ops != IDENTITY).double().mean(0)
    assert torch.allclose(applied, probs.mean(0).double(), atol=0.015)
    assert (p.magnitudes[p.ops == IDENTITY] == 0).all()
    rotate = p.ops == OP_INDEX["Rotate"]           # the policy rotates with bins 3, 8 and 9 of 10
    assert set(p.magnitudes[rotate].abs().tolist()) == {float(torch.linspace(0, 30, 10)[k]) for k in (3, 8, 9)}


def test_autoaugment_rejects_other_policies():
    with pytest.raises(ValueError, match="ImageNet"):
        T.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)


@pytest.mark.parametrize("op", [T.RandAugment(), T.TrivialAugmentWide(), T.AutoAugment(), T.AugMix()],
                         ids=lambda op: type(op).__name__)
def test_generic_properties(op):
    images = batch(5)
    check_op(op, images)
    out = op(batch(5, torch.float32), seed=1)
    assert torch.equal(out, op(batch(5, torch.float32), seed=1))
    img = photo_like(H, W)
    twins = op(torch.stack([img] * 4), seed=0)
    assert any(not torch.equal(twins[0], twins[k]) for k in range(1, 4)), "samples must draw their own ops"


def test_randaugment_zero_ops_is_identity():
    images = batch(3)
    assert torch.equal(T.RandAugment(num_ops=0)(images, seed=0), images)


# -- AugMix --------------------------------------------------------------------------------------

def test_augmix_mixes_chains_like_torchvision():
    images = batch(4, torch.float32)
    names = [["Rotate", "Equalize", "Identity"], ["Posterize", "Identity", "Identity"],
             ["ShearY", "TranslateX", "Contrast"]]
    ops = torch.tensor([[[OP_INDEX[n] for n in chain] for chain in names]] * 4)
    # Per-sample scales of the signed magnitudes; the Posterize bits stay 3.
    magnitudes = torch.tensor([[[12.0, 0, 0], [3.0, 0, 0], [-0.2, 5.0, 0.4]]] * 4)
    magnitudes[:, 0] *= torch.tensor([1.0, -1.0, 0.5, -0.5]).reshape(4, 1)
    magnitudes[:, 2] *= torch.tensor([1.0, -1.0, 0.5, -0.5]).reshape(4, 1)
    weights = torch.softmax(torch.randn(4, 4, generator=torch.Generator().manual_seed(0)), 1).double()
    op = T.AugMix()
    out = run(op, images, AugMixParams(ops=ops, magnitudes=magnitudes, weights=weights))
    for b in range(4):
        expected = weights[b, 0].float() * images[b]
        for chain in range(3):
            aug = images[b]
            for step in range(3):
                aug = torchvision_op(aug, names[chain][step], float(magnitudes[b, chain, step]), "bilinear")
            expected = expected + weights[b, chain + 1].float() * aug
        assert diff(out[b], expected).max() <= 1e-4, b


def test_augmix_parameters():
    n = 6000
    p = params_of(T.AugMix(severity=3, mixture_width=3), torch.zeros(n, 3, H, W))
    assert torch.allclose(p.weights.sum(1), torch.ones(n, dtype=torch.float64))
    depths = (p.ops != IDENTITY).sum(-1)
    for d in (1, 2, 3):
        assert abs((depths == d).double().mean() - 1 / 3) < 0.02
    rotate = p.ops == OP_INDEX["Rotate"]
    allowed = {float(v) for v in torch.linspace(0.0, 30.0, 10)[:3]}
    assert set(p.magnitudes[rotate].abs().tolist()) <= allowed
    partial = params_of(T.AugMix(all_ops=False, chain_depth=2), torch.zeros(500, 3, H, W))
    assert ((partial.ops != IDENTITY).sum(-1) == 2).all()
    assert not torch.isin(partial.ops, torch.tensor([OP_INDEX[n] for n in ("Brightness", "Color")])).any()


# -- conversion ----------------------------------------------------------------------------------

@pytest.mark.parametrize("tv", [v1, v2])
def test_from_torchvision(tv):
    pipe = tv.Compose([
        tv.RandAugment(num_ops=3, magnitude=5, num_magnitude_bins=11, interpolation=tv.InterpolationMode.BILINEAR,
                       fill=[1, 2, 3]),
        tv.TrivialAugmentWide(num_magnitude_bins=15, fill=4),
        tv.AutoAugment(tv.AutoAugmentPolicy.IMAGENET),
        tv.AugMix(severity=4, mixture_width=2, chain_depth=2, alpha=0.5, all_ops=False),
    ])
    rand, trivial, auto, augmix = from_torchvision(pipe).transforms
    assert isinstance(rand, T.RandAugment) and (rand.num_ops, rand.magnitude, rand.num_magnitude_bins) == (3, 5, 11)
    assert rand.mode == "bilinear" and list(rand.fill) == [1, 2, 3]
    assert isinstance(trivial, T.TrivialAugmentWide) and trivial.num_magnitude_bins == 15 and trivial.fill == 4
    assert trivial.mode == "nearest"
    assert isinstance(auto, T.AutoAugment) and auto.fill is None
    assert isinstance(augmix, T.AugMix) and (augmix.severity, augmix.mixture_width, augmix.chain_depth) == (4, 2, 2)
    assert augmix.alpha == 0.5 and not augmix.all_ops and augmix.mode == "bilinear"
    with pytest.raises(ValueError, match="ImageNet"):
        from_torchvision(tv.AutoAugment(tv.AutoAugmentPolicy.SVHN))
