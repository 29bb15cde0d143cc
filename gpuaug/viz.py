"""Look at a batch: an image grid as a PNG file (:func:`save_grid`) or in a notebook (:func:`show`).

Both take what the loader hands out: a ``[B, C, H, W]`` tensor (uint8, or float that
was normalized with ``mean``/``std``) on any device, or a list of ``[C, H, W]`` tensors
of different sizes (padded into equal cells). Floats are de-normalized with ``mean`` and
``std`` when given and clamped to ``[0, 1]``; one-channel images are shown in gray.
Drawing uses matplotlib's object API with the Agg canvas, so it needs no display.

Example:
    >>> import torch, tempfile, os
    >>> from gpuaug.viz import save_grid
    >>> batch = torch.randint(0, 256, (6, 3, 32, 48), dtype=torch.uint8)
    >>> path = save_grid(batch, os.path.join(tempfile.mkdtemp(), "grid.png"), nrow=3, labels=list("abcdef"))
    >>> path.is_file()
    True
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

__all__ = ["save_grid", "show", "make_grid", "show_replay", "compare", "describe_params"]


def _to_unit_float(img: torch.Tensor, mean, std) -> torch.Tensor:
    """One ``[C, H, W]`` image as float32 in ``[0, 1]`` on the CPU, 3 or 1 channels."""
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3:
        raise ValueError(f"expected [C, H, W] images, got shape {tuple(img.shape)}")
    img = img.detach().to("cpu")
    if img.dtype == torch.uint8:
        x = img.float() / 255.0
        if mean is not None or std is not None:   # uint8 is never normalized: ignore them
            pass
    elif img.dtype.is_floating_point:
        x = img.float()
        c = x.shape[0]
        if std is not None:
            x = x * torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)[:c]
        if mean is not None:
            x = x + torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)[:c]
    elif img.dtype == torch.bool:
        x = img.float()
    else:  # other integer types (uint16 images...): scale by their range
        x = img.double() / float(torch.iinfo(img.dtype).max)
        x = x.float()
    x = torch.nan_to_num(x, nan=0.0).clamp_(0.0, 1.0)
    if x.shape[0] == 4:      # RGBA: drop alpha
        x = x[:3]
    elif x.shape[0] not in (1, 3):
        x = x[:1]            # arbitrary channels: show the first one
    return x


def make_grid(images, nrow: int = 8, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None, padding: int = 2) -> np.ndarray:
    """Tile images into one ``[H, W, 3]`` float array in ``[0, 1]`` (cells padded to the largest image).

    Args:
        images: ``[B, C, H, W]`` tensor or a list of ``[C, H, W]`` tensors (any sizes, dtypes, devices).
        nrow: images per row.
        mean, std: per-channel normalization to undo for float images.
        padding: pixels of white between cells.

    Example:
        >>> import torch
        >>> from gpuaug.viz import make_grid
        >>> make_grid([torch.zeros(3, 4, 6), torch.ones(1, 8, 2)], nrow=2, padding=1).shape
        (10, 15, 3)
    """
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4:
            raise ValueError(f"expected a [B, C, H, W] batch, got shape {tuple(images.shape)}")
    imgs = [_to_unit_float(im, mean, std) for im in images]
    if not imgs:
        raise ValueError("no images to show")
    nrow = max(1, min(int(nrow), len(imgs)))
    ncol_rows = math.ceil(len(imgs) / nrow)
    cell_h = max(im.shape[1] for im in imgs)
    cell_w = max(im.shape[2] for im in imgs)
    grid = np.ones((ncol_rows * (cell_h + padding) + padding, nrow * (cell_w + padding) + padding, 3),
                   dtype=np.float32)
    for k, im in enumerate(imgs):
        r, c = divmod(k, nrow)
        arr = im.permute(1, 2, 0).numpy()
        if arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        h, w = arr.shape[:2]
        y = padding + r * (cell_h + padding) + (cell_h - h) // 2
        x = padding + c * (cell_w + padding) + (cell_w - w) // 2
        grid[y:y + h, x:x + w] = arr
    return grid


def _figure(images, nrow, mean, std, labels, title=None, scale: float = 1.0):
    """Build the matplotlib Figure of the grid (Agg canvas, no pyplot state)."""
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    n = len(images)
    if labels is not None:
        labels = [str(x) for x in (labels.tolist() if isinstance(labels, torch.Tensor) else labels)]
        if len(labels) != n:
            raise ValueError(f"{len(labels)} labels for {n} images")
    imgs = [_to_unit_float(im, mean, std) for im in images]
    nrow = max(1, min(int(nrow), n))
    rows = math.ceil(n / nrow)
    cell_h = max(im.shape[1] for im in imgs)
    cell_w = max(im.shape[2] for im in imgs)
    # About 1.6 inches per cell, more height when labelled.
    cell_in = 1.6 * scale
    aspect = cell_h / cell_w
    label_in = 0.25 if labels is not None else 0.0
    fig = Figure(figsize=(nrow * cell_in, rows * (cell_in * aspect + label_in) + (0.3 if title else 0.0)),
                 dpi=100, layout="constrained")
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.01, hspace=0.01)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, nrow, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= n:
            continue
        arr = imgs[k].permute(1, 2, 0).numpy()
        h, w = arr.shape[:2]
        # Pad to the cell so every cell has the same scale.
        cell = np.ones((cell_h, cell_w, 3), dtype=np.float32)
        y, x = (cell_h - h) // 2, (cell_w - w) // 2
        cell[y:y + h, x:x + w] = arr if arr.shape[2] == 3 else np.repeat(arr, 3, axis=2)
        ax.imshow(cell, interpolation="nearest")
        if labels is not None:
            ax.set_title(labels[k], fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def save_grid(images, path: str | os.PathLike, nrow: int = 8, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None, labels: Sequence | None = None,
              title: str | None = None) -> Path:
    """Write a PNG grid of a batch.

    Args:
        images: ``[B, C, H, W]`` tensor (uint8 or float, any device) or a list of
            ``[C, H, W]`` tensors of different sizes (padded into equal cells).
        path: the PNG file to write (parent directories are created).
        nrow: images per row.
        mean, std: per-channel ``Normalize`` parameters to undo for float images; the
            result is clamped to ``[0, 1]``.
        labels: one caption per image (class names, label tensor...).
        title: a title over the grid.

    Returns:
        The path written.

    Example:
        >>> import torch, tempfile, os
        >>> from gpuaug.viz import save_grid
        >>> mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        >>> x = (torch.rand(4, 3, 24, 24) - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
        >>> save_grid(x, os.path.join(tempfile.mkdtemp(), "g.png"), nrow=2, mean=mean, std=std).suffix
        '.png'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = _figure(images, nrow, mean, std, labels, title)
    fig.savefig(path, format="png")
    return path


def show(images, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
         nrow: int = 8, labels: Sequence | None = None, title: str | None = None):
    """Show a batch as a grid in a notebook; returns the matplotlib ``Figure``.

    In Jupyter the returned Figure displays itself as the cell's output; elsewhere save
    it with ``fig.savefig(...)`` or use :func:`save_grid`. Arguments as in :func:`save_grid`.

    Example:
        >>> import torch
        >>> from gpuaug.viz import show
        >>> fig = show([torch.zeros(3, 20, 30, dtype=torch.uint8), torch.full((3, 10, 10), 0.5)], labels=["a", "b"])
        >>> len(fig.axes)
        2
    """
    return displayable(_figure(images, nrow, mean, std, labels, title))


def _normalize_of(transform):
    """(mean, std) of the last Normalize in a pipeline, or (None, None)."""
    from .transforms import Normalize

    norms = [t for t in getattr(transform, "transforms", []) if isinstance(t, Normalize)]
    return (norms[-1].mean, norms[-1].std) if norms else (None, None)


def describe_params(params, b: int) -> str:
    """A compact label of sample ``b``'s parameters (crop box, flips, jitter factors and order)."""
    from .transforms import ColorJitterParams, CropParams, FlipParams

    parts = []
    for p in params.per_op:
        if isinstance(p, CropParams):
            parts.append(f"crop {int(p.top[b])},{int(p.left[b])} {int(p.height[b])}x{int(p.width[b])}")
        elif isinstance(p, FlipParams) and bool(p.apply[b]):
            parts.append("flip")
        elif isinstance(p, ColorJitterParams):
            names = "bcsh"
            factors = p.factors()
            parts.append(" ".join(f"{names[k]}{float(factors[k][b]):+.2f}" if k == 3 else f"{names[k]}{float(factors[k][b]):.2f}"
                                  for k in p.order[b].tolist() if factors[k] is not None))
    return " · ".join(parts)


def show_replay(loader, indices: Sequence[int], epoch: int | None = None):
    """The originals beside what the model saw for ``indices`` in ``epoch``, labelled with parameters.

    Uses ``loader.replay`` (the counter-based generator makes it exact) and the loader's
    own reader and decoder for the originals. Returns the Figure (2 rows).

    Example:
        >>> import torch, gpuaug
        >>> from gpuaug import transforms as T
        >>> dataset = [(torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8), 0) for _ in range(4)]
        >>> loader = gpuaug.DataLoader(dataset, batch_size=2, device="cpu", seed=0,
        ...                            transform=T.Compose([T.RandomResizedCrop(32), T.ColorJitter(0.4)]))
        >>> fig = gpuaug.show_replay(loader, [0, 3], epoch=0)       # fig.savefig("replay.png") outside Jupyter
        >>> len(fig.axes)                                       # one picture: originals above, replays below
        1
    """
    from .pack import pack_batch
    from .rng import SampleKeys

    epoch = loader.epoch if epoch is None else epoch
    originals, augmented, labels = [], [], []
    for index in indices:
        raw = pack_batch([loader._reader.read(index)])
        images, failed = loader._stage.decode(raw)
        if failed:
            raise ValueError(f"sample {index} is bad: {failed[0]}")
        originals.append(images[0].cpu())
        augmented.append(loader.replay(index, epoch).cpu())
        sizes = torch.tensor([list(images[0].shape[-2:])])
        params = loader.transform.make_pipeline_params(SampleKeys(loader.seed, epoch, torch.tensor([index])), sizes)
        labels.append(describe_params(params, 0))
    mean, std = _normalize_of(loader.transform)
    top = _figure(originals, len(indices), None, None, [f"#{i} original" for i in indices], scale=0.8)
    bottom = _figure(augmented, len(indices), mean, std, labels, scale=0.8)
    return _stack_figures(top, bottom)


def _stack_figures(top, bottom):
    """Two figures' images one above the other in a new Figure (via their rendered pixels)."""
    import io

    from matplotlib.figure import Figure
    from PIL import Image

    pictures = []
    for fig in (top, bottom):
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        pictures.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    width = max(p.shape[1] for p in pictures)
    canvas = np.full((sum(p.shape[0] for p in pictures), width, 3), 255, np.uint8)
    row = 0
    for p in pictures:
        canvas[row:row + p.shape[0], :p.shape[1]] = p
        row += p.shape[0]
    fig = Figure(figsize=(width / 80, canvas.shape[0] / 80), dpi=80)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(canvas)
    ax.axis("off")
    return displayable(fig)


def displayable(fig):
    """Let a matplotlib ``Figure`` show itself as a cell's output in Jupyter, once, without
    pyplot's global state (figures made with ``matplotlib.figure.Figure`` lack this)."""
    def _repr_png_() -> bytes:
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()

    fig._repr_png_ = _repr_png_
    return fig


def compare(images, pipelines: dict, seed: int = 0, mean=None, std=None):
    """The same images through several pipelines, one row per pipeline; returns the Figure.

    Args:
        images: ``[B, C, H, W]`` or a list of ``[C, H, W]`` uint8 tensors.
        pipelines: ``{name: callable}``; gpuaug pipelines get ``seed=``, other callables
            (e.g. a torchvision v2 ``Compose``) are called per image.
        mean, std: to de-normalize float outputs for display.

    Example:
        >>> import torch, gpuaug
        >>> from gpuaug import transforms as T
        >>> images = torch.randint(0, 256, (2, 3, 24, 24), dtype=torch.uint8)
        >>> fig = gpuaug.compare(images, {"weak": T.ColorJitter(0.2), "strong": T.ColorJitter(0.8)})
        >>> len(fig.axes)                                           # 2 pipelines x 2 images
        4
    """
    from .transforms import Compose, Transform

    rows, labels = [], []
    for name, pipe in pipelines.items():
        if isinstance(pipe, (Compose, Transform)):
            out = pipe(list(images), seed=seed)
        else:
            out = [pipe(img) for img in images]
        rows.extend(list(out))
        labels.extend([name] + [""] * (len(out) - 1))
    return show(rows, mean=mean, std=std, nrow=len(images), labels=labels)
