"""Modern training recipes (timm / DeiT style) in one gpuaug.DataLoader, per sample, on CPU."""
from __future__ import annotations

import pytest
import torch
import torchvision

import gpuaug
from gpuaug import transforms as T

from conftest import make_image_folder

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def deit(auto, mix):
    return T.Compose([T.RandomResizedCrop(32), T.RandomHorizontalFlip(), auto, T.ColorJitter(0.4, 0.4, 0.4),
                      T.ToDtype(torch.float32, scale=True), T.Normalize(MEAN, STD), T.RandomErasing(0.25), mix])


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("auto,mix", [(T.RandAugment(2, 9), T.MixUp(alpha=0.8, num_classes=2)),
                                      (T.TrivialAugmentWide(), T.CutMix(alpha=1.0, num_classes=2))])
def test_deit_recipe_in_one_loader(tmp_path, auto, mix, fused):
    root = make_image_folder(tmp_path / "train", [(60 + 3 * k, 80 - 2 * k) for k in range(8)])
    pipe = deit(auto, mix)
    plan = pipe.plan().splitlines()
    assert plan[0].startswith("ops 0..1 fused") and "RandomResizedCrop" in plan[0]
    assert "reference" in plan[1] and type(auto).__name__ in plan[1]
    assert "fused" in plan[2] and "ColorJitter" in plan[2]
    assert type(mix).__name__ in plan[-1]
    ds = torchvision.datasets.ImageFolder(str(root))
    runs = []
    for _ in range(2):
        loader = gpuaug.DataLoader(ds, batch_size=4, num_workers=2, seed=0, transform=pipe, fused=fused)
        runs.append([(images.clone(), labels.clone()) for images, labels in loader])
    for (images, labels), (again, labels_again) in zip(*runs):
        assert images.shape == (4, 3, 32, 32) and labels.shape == (4, 2)
        assert torch.allclose(labels.sum(1), torch.ones(4))
        assert torch.equal(images, again) and torch.equal(labels, labels_again)    # same seed, same batch
    first = runs[0][0][0]
    assert not torch.equal(first[0], first[1])
