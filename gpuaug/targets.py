"""Segmentation masks and bounding boxes that follow the images' geometry.

A sample's targets may hold ``torchvision.tv_tensors.Mask`` (an image-like target) and
``torchvision.tv_tensors.BoundingBoxes`` (any format, with their canvas size). They are
collated as per-sample lists (each sample has its own number of boxes and its own mask
size), and after augmentation every geometric op's point map is applied to them:
masks are resampled with nearest neighbour (outside the image: 0), boxes have their
corners mapped, are clipped to the output canvas, and boxes left empty are dropped,
together with the entries of the same length next to them in the same dict (e.g.
``"labels"``), like torchvision's ``SanitizeBoundingBoxes``.

Example:
    >>> import torch
    >>> from torchvision import tv_tensors
    >>> from gpuaug.targets import transform_boxes
    >>> boxes = tv_tensors.BoundingBoxes([[10, 10, 20, 30]], format="XYXY", canvas_size=(40, 40))
    >>> flip = torch.tensor([[-1.0, 0, 40], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    >>> out, keep = transform_boxes(boxes, [(flip, (40, 40))])
    >>> out.tolist(), out.canvas_size
    ([[20.0, 10.0, 30.0, 30.0]], (40, 40))
"""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.data._utils.collate import collate, default_collate_fn_map

try:
    from torchvision import tv_tensors
    from torchvision.transforms.v2.functional import convert_bounding_box_format
except ImportError:  # pragma: no cover - torchvision is a dependency
    tv_tensors = None


def _keep_list(batch, *, collate_fn_map=None):
    return list(batch)


def _is_box(value) -> bool:
    return tv_tensors is not None and isinstance(value, tv_tensors.BoundingBoxes)


def _per_box(value, boxes) -> bool:
    """A tensor with one row per box (labels, scores, ids...)."""
    return isinstance(value, torch.Tensor) and not _is_box(value) and value.dim() >= 1 \
        and value.shape[0] == boxes.shape[0]


def _collate_dict(batch, *, collate_fn_map=None):
    """Dicts with boxes keep boxes and their per-box entries as per-sample lists."""
    elem = batch[0]
    box_keys = [k for k, v in elem.items() if _is_box(v)]
    out = {}
    for key in elem:
        values = [d[key] for d in batch]
        per_box = key in box_keys or any(_per_box(elem[key], elem[b]) and all(
            _per_box(d[key], d[b]) for d in batch) for b in box_keys)
        out[key] = list(values) if per_box else collate(values, collate_fn_map=collate_fn_map)
    return out


COLLATE_FN_MAP = dict(default_collate_fn_map)
COLLATE_FN_MAP[dict] = _collate_dict
if tv_tensors is not None:
    COLLATE_FN_MAP[tv_tensors.BoundingBoxes] = _keep_list
    COLLATE_FN_MAP[tv_tensors.Mask] = _keep_list


def collate_targets(batch: list) -> Any:
    """``default_collate``, except that boxes, masks and per-box entries stay per-sample lists."""
    return collate(batch, collate_fn_map=COLLATE_FN_MAP)


def has_spatial_targets(example: Any) -> bool:
    if tv_tensors is None:
        return False
    if isinstance(example, (tv_tensors.BoundingBoxes, tv_tensors.Mask)):
        return True
    if isinstance(example, dict):
        return any(has_spatial_targets(v) for v in example.values())
    if isinstance(example, (list, tuple)):
        return any(has_spatial_targets(v) for v in example)
    return False


def transform_boxes(boxes, steps: list[tuple[torch.Tensor, tuple[int, int]]]):
    """Map one sample's boxes through ``steps`` (point map, canvas size), clipping after each.

    Returns the boxes (same format, canvas of the last step) and the mask of kept rows.
    """
    fmt = boxes.format
    xyxy = convert_bounding_box_format(boxes.as_subclass(torch.Tensor), old_format=fmt,
                                       new_format=tv_tensors.BoundingBoxFormat.XYXY).double()
    canvas = tuple(boxes.canvas_size)
    for matrix, (h, w) in steps:
        x1, y1, x2, y2 = xyxy.unbind(-1)
        corners = torch.stack([torch.stack([x1, y1], -1), torch.stack([x2, y1], -1),
                               torch.stack([x1, y2], -1), torch.stack([x2, y2], -1)], -2)     # [N, 4, 2]
        homogeneous = torch.cat([corners, torch.ones_like(corners[..., :1])], -1) @ matrix.T
        points = homogeneous[..., :2] / homogeneous[..., 2:]
        lo, hi = points.amin(-2), points.amax(-2)
        xyxy = torch.stack([lo[:, 0].clamp(0, w), lo[:, 1].clamp(0, h), hi[:, 0].clamp(0, w),
                            hi[:, 1].clamp(0, h)], -1)
        canvas = (int(h), int(w))
    keep = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    kept = xyxy[keep].to(boxes.dtype if boxes.dtype.is_floating_point else torch.float32)
    out = convert_bounding_box_format(kept, old_format=tv_tensors.BoundingBoxFormat.XYXY, new_format=fmt)
    return tv_tensors.BoundingBoxes(out, format=fmt, canvas_size=canvas), keep


def transform_mask(mask, steps: list[tuple[torch.Tensor, tuple[int, int]]]):
    """Resample one ``[..., H, W]`` mask through ``steps``, nearest neighbour.

    Each output pixel centre is mapped back op by op; a point outside any intermediate
    canvas was filled there, so it is 0 in the mask.
    """
    h, w = steps[-1][1] if steps else mask.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                            indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], -1)
    inside = torch.ones((int(h), int(w)), dtype=torch.bool)
    canvases = [tuple(mask.shape[-2:])] + [tuple(size) for _, size in steps[:-1]]
    for (matrix, _), (ch, cw) in zip(reversed(steps), reversed(canvases)):
        points = points @ torch.linalg.inv(matrix).T
        points = points / points[..., 2:]
        inside &= (points[..., 0] >= 0) & (points[..., 0] < cw) & (points[..., 1] >= 0) & (points[..., 1] < ch)
    in_h, in_w = mask.shape[-2:]
    ix = torch.floor(points[..., 0]).long().clamp(0, in_w - 1)     # the source pixel holding the point
    iy = torch.floor(points[..., 1]).long().clamp(0, in_h - 1)
    data = mask.as_subclass(torch.Tensor)
    out = torch.where(inside, data[..., iy, ix], torch.zeros((), dtype=data.dtype))
    return tv_tensors.Mask(out)


def transform_targets(collated: Any, steps: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    """Move every mask and box list of a collated target structure with its image.

    Args:
        collated: targets collated by :func:`collate_targets`.
        steps: ``Compose.point_maps(params)``: per geometric op, the ``[B, 3, 3]`` point
            maps and ``[B, 2]`` output sizes.
    """
    if tv_tensors is None:
        return collated
    if isinstance(collated, dict):
        return _transform_dict(collated, steps)
    if _is_list_of(collated, tv_tensors.BoundingBoxes):
        return [transform_boxes(b, _sample_steps(steps, k))[0] for k, b in enumerate(collated)]
    if _is_list_of(collated, tv_tensors.Mask):
        return [transform_mask(m, _sample_steps(steps, k)) for k, m in enumerate(collated)]
    if isinstance(collated, (list, tuple)):
        mapped = [transform_targets(v, steps) for v in collated]
        return type(collated)(*mapped) if hasattr(collated, "_fields") else type(collated)(mapped)
    return collated


def _sample_steps(steps, k: int) -> list[tuple[torch.Tensor, tuple[int, int]]]:
    return [(matrices[k], tuple(int(v) for v in sizes[k])) for matrices, sizes in steps]


def _is_list_of(value, kind) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and isinstance(value[0], kind)


def _transform_dict(collated: dict, steps) -> dict:
    out, keeps, counts = {}, None, None
    for key, value in collated.items():
        if _is_list_of(value, tv_tensors.BoundingBoxes):
            results = [transform_boxes(b, _sample_steps(steps, k)) for k, b in enumerate(value)]
            out[key] = [boxes for boxes, _ in results]
            keeps, counts = [keep for _, keep in results], [b.shape[0] for b in value]
    for key, value in collated.items():
        if key in out:
            continue
        if keeps is not None and isinstance(value, list) and len(value) == len(keeps) and all(
                isinstance(e, torch.Tensor) and e.dim() >= 1 and e.shape[0] == n for e, n in zip(value, counts)):
            out[key] = [e[keep] for e, keep in zip(value, keeps)]    # labels etc. of dropped boxes go too
        else:
            out[key] = transform_targets(value, steps)
    return out
