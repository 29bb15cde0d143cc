"""from_torchvision: v1 and v2 pipelines convert to equivalent gpuaug ops."""
from __future__ import annotations

import pytest
import torch
import torchvision.transforms as v1
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as TVF

from gpuaug import from_torchvision
from gpuaug import transforms as T

from conftest import photo_like

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.mark.parametrize("tv", [v1, v2])
def test_imagenet_train_recipe(tv):
    to_tensor = [tv.ToTensor()] if tv is v1 else [tv.ToImage(), tv.ToDtype(torch.float32, scale=True)]
    pipe = tv.Compose([tv.RandomResizedCrop(224, scale=(0.2, 1.0)), tv.RandomHorizontalFlip(0.3),
                       tv.ColorJitter(0.4, 0.3, 0.2, 0.1), tv.RandomGrayscale(0.2), *to_tensor,
                       tv.Normalize(MEAN, STD)])
    ours = from_torchvision(pipe).transforms
    assert [type(t) for t in ours] == [T.RandomResizedCrop, T.RandomHorizontalFlip, T.ColorJitter,
                                       T.RandomGrayscale, T.ToDtype, T.Normalize]
    rrc, flip, jitter, gray, to_dtype, norm = ours
    assert rrc.size == (224, 224) and rrc.scale == (0.2, 1.0) and rrc.mode == "bilinear"
    assert flip.p == 0.3 and gray.p == 0.2
    assert jitter.brightness == (0.6, 1.4) and jitter.contrast == (0.7, 1.3)
    assert jitter.saturation == (0.8, 1.2) and jitter.hue == (-0.1, 0.1)
    assert to_dtype.dtype == torch.float32 and to_dtype.scale
    assert norm.mean == list(MEAN) and norm.std == list(STD)


@pytest.mark.parametrize("tv", [v1, v2])
def test_deterministic_ops_give_torchvision_output(tv):
    img = photo_like(50, 70)
    pipe = tv.Compose([tv.Resize(40), tv.CenterCrop(32), tv.ConvertImageDtype(torch.float32),
                       tv.Normalize(MEAN, STD)])
    expected = pipe(img)
    ours = from_torchvision(pipe)(img[None])[0]
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max() < 1.5 / 255 / min(STD)


@pytest.mark.parametrize("tv", [v1, v2])
def test_random_crop_padding_order(tv):
    op = from_torchvision(tv.Compose([tv.RandomCrop(10, padding=(1, 2, 3, 4), fill=5, padding_mode="edge")]))
    crop = op.transforms[0]
    assert crop.padding == (1, 2, 3, 4) and crop.fill == 5 and crop.padding_mode == "edge"


def test_unsupported_ops_are_named():
    pipe = v2.Compose([v2.RandomResizedCrop(8), v2.Lambda(lambda x: x), v2.RandomChannelPermutation()])
    with pytest.raises(ValueError, match=r"Lambda \(position 1\), RandomChannelPermutation \(position 2\)"):
        from_torchvision(pipe)


def test_gpuaug_ops_pass_through_and_resize_size_forms():
    flip = T.RandomHorizontalFlip()
    assert from_torchvision([flip]).transforms == [flip]
    assert from_torchvision(v2.Resize([20])).transforms[0].size == [20]
    img = photo_like(30, 30)[None]
    out = from_torchvision(v2.Resize((10, 12)))(img)
    assert (out.int() - TVF.resize(img, [10, 12]).int()).abs().max() <= 1
