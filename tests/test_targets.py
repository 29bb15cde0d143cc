"""Masks and boxes move with their image through every geometric op, per sample."""
from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TVF
from torchvision import tv_tensors

import gpuaug
from gpuaug import transforms as T

from conftest import encode


def scene(k: int, h: int = 60, w: int = 80):
    """A black image with one red rectangle; its box and mask."""
    g = torch.Generator().manual_seed(k)
    x1, y1 = int(torch.randint(5, w // 2, (), generator=g)), int(torch.randint(5, h // 2, (), generator=g))
    x2, y2 = x1 + int(torch.randint(10, w // 2 - 4, (), generator=g)), y1 + int(torch.randint(10, h // 2 - 4, (), generator=g))
    img = torch.zeros(3, h, w, dtype=torch.uint8)
    img[0, y1:y2, x1:x2] = 255
    mask = torch.zeros(1, h, w, dtype=torch.uint8)
    mask[0, y1:y2, x1:x2] = 1
    boxes = tv_tensors.BoundingBoxes([[x1, y1, x2, y2], [0, 0, 2, 2]], format="XYXY", canvas_size=(h, w))
    return encode(img, "PNG"), {"boxes": boxes, "labels": torch.tensor([7, 1]), "masks": tv_tensors.Mask(mask)}


GEOMETRY = [
    T.RandomZoomOut(side_range=(1.0, 1.6), p=0.5), T.RandomResizedCrop((48, 64), scale=(0.5, 1.0)),
    T.RandomHorizontalFlip(), T.RandomRotation(25), T.RandomVerticalFlip(),
]


@pytest.mark.parametrize("fused", [False, True])
def test_boxes_and_masks_land_where_the_rectangle_lands(fused):
    data = [scene(k) for k in range(12)]
    loader = gpuaug.DataLoader(data, batch_size=4, seed=3, fused=fused, transform=T.Compose(GEOMETRY))
    checked = 0
    for images, targets in loader:
        for img, boxes, masks in zip(images, targets["boxes"], targets["masks"]):
            red = img[0] > 127
            if red.sum() < 20:                       # the rectangle left the crop
                continue
            ys, xs = torch.nonzero(red, as_tuple=True)
            drawn = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
            assert boxes.canvas_size == (48, 64)
            big = boxes[(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) > 20]
            assert len(big) == 1
            box = big[0]
            # The box holds every red pixel (up to resampling blur)...
            assert (box[:2] <= drawn[:2] + 1.5).all() and (box[2:] >= drawn[2:] - 1.5).all(), (box, drawn)
            # ...and, where nothing was cut by a canvas edge, it is tight.
            if (box[:2] > 1).all() and box[2] < 63 and box[3] < 47:
                assert (box - drawn).abs().max() <= 2.5, (box, drawn)
            inter = (masks[0].bool() & red).sum().item()
            union = (masks[0].bool() | red).sum().item()
            assert inter / union > 0.85
            checked += 1
    assert checked >= 6


def test_dropped_boxes_take_their_labels_along():
    img, target = scene(0)
    crop = T.Compose([T.CenterCrop((20, 20))])          # the tiny corner box falls outside
    (_, out), = list(gpuaug.DataLoader([(img, target)], batch_size=1, transform=crop))
    assert len(out["boxes"][0]) == len(out["labels"][0]) <= 1
    assert 1 not in out["labels"][0].tolist()


def test_boxes_match_torchvision_for_resize_crop_and_flip():
    img, target = scene(1)
    target["boxes"] = tv_tensors.wrap(target["boxes"].float(), like=target["boxes"])   # no int rounding
    pipe = T.Compose([T.Resize((30, 100)), T.RandomHorizontalFlip(1.0), T.CenterCrop((24, 90))])
    (_, out), = list(gpuaug.DataLoader([(img, target)], batch_size=1, transform=pipe))
    ref = TVF.center_crop(TVF.horizontal_flip(TVF.resize(target["boxes"], [30, 100])), [24, 90])
    # torchvision keeps the degenerate corner box; gpuaug drops it (and its label).
    assert torch.allclose(out["boxes"][0], ref[:1], atol=1e-4)
    assert out["boxes"][0].canvas_size == (24, 90) and out["labels"][0].tolist() == [7]


def test_other_box_formats_round_trip():
    img, target = scene(2)
    boxes = tv_tensors.wrap(target["boxes"].float(), like=target["boxes"])
    target["boxes"] = TVF.convert_bounding_box_format(boxes, new_format="CXCYWH")
    (_, out), = list(gpuaug.DataLoader([(img, target)], batch_size=1, transform=T.RandomHorizontalFlip(1.0)))
    assert out["boxes"][0].format == tv_tensors.BoundingBoxFormat.CXCYWH
    w = target["boxes"].canvas_size[1]
    assert torch.allclose(out["boxes"][0][:, 0], w - target["boxes"][:, 0].float())
