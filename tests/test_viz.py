"""Notebook helpers: replay beside the originals with parameters, side-by-side comparisons."""
from __future__ import annotations

import torch
import torchvision.transforms.v2 as v2
from matplotlib.figure import Figure

import gpuaug
from gpuaug import transforms as T
from gpuaug.rng import SampleKeys
from gpuaug.viz import describe_params

from conftest import encode, photo_like


def test_show_replay_and_parameter_labels():
    data = [(encode(photo_like(40 + k, 60, seed=k)), k) for k in range(4)]
    pipe = T.Compose([T.RandomResizedCrop(24), T.RandomHorizontalFlip(1.0), T.ColorJitter(0.4, 0.4, 0.4, 0.1),
                      T.ToDtype(torch.float32, scale=True), T.Normalize((0.5,) * 3, (0.25,) * 3)])
    loader = gpuaug.DataLoader(data, batch_size=2, seed=1, transform=pipe)
    list(loader)
    fig = gpuaug.show_replay(loader, [0, 3])
    assert isinstance(fig, Figure) and fig._repr_png_()[:4] == b"\x89PNG"
    params = pipe.make_pipeline_params(SampleKeys(1, 0, torch.tensor([3])), torch.tensor([[43, 60]]))
    label = describe_params(params, 0)
    crop = params.per_op[0]
    assert label.startswith(f"crop {int(crop.top[0])},{int(crop.left[0])} {int(crop.height[0])}x{int(crop.width[0])}")
    assert "flip" in label and label.count(" ") >= 6


def test_compare_gpuaug_with_torchvision():
    images = torch.stack([photo_like(30, 40, seed=k) for k in range(3)])
    fig = gpuaug.compare(images, {"gpuaug": T.Compose([T.CenterCrop(20)]), "torchvision": v2.CenterCrop(20)})
    assert len(fig.axes) == 6
