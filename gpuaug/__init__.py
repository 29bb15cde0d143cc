"""gpuaug: image decoding and augmentation for PyTorch, batched on the GPU.

Workers read raw bytes; the device stage decodes and augments whole batches with
per-sample random parameters drawn from a counter-based generator.

The public surface (``gpuaug.__all__``):

* :class:`DataLoader`: wraps any map-style or iterable ``Dataset``; torch
  ``DataLoader`` arguments pass through.
* :mod:`transforms` (``from gpuaug import transforms as T``): torchvision v2 names and
  semantics, parameters drawn per sample; :func:`from_torchvision` converts a
  torchvision pipeline.
* :class:`TarShards` and its alias :class:`WebDataset`: WebDataset-style tar shards
  as an iterable dataset of raw bytes.
* :class:`BadSample`, :class:`BadSampleError`: what a bad file becomes;
  :class:`FusedUnavailable`: an accelerated path cannot run here.
* In a notebook: :func:`show`, :func:`show_replay`, :func:`compare`; where the time
  goes: :func:`profile` (a :class:`Profile`).
* Command lines: ``python -m gpuaug.bench`` (CPU vs GPU benchmark),
  ``python -m gpuaug.selftest`` (every CUDA path against the reference),
  ``python -m gpuaug.demo``.

Example:
    >>> import torch, gpuaug
    >>> from gpuaug import transforms as T
    >>> dataset = [(torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8), k % 2) for k in range(6)]
    >>> loader = gpuaug.DataLoader(dataset, batch_size=4, device="cpu", seed=0,
    ...                            transform=T.Compose([T.RandomResizedCrop(32), T.RandomHorizontalFlip()]))
    >>> [(tuple(images.shape), labels.tolist()) for images, labels in loader]
    [((4, 3, 32, 32), [0, 1, 0, 1]), ((2, 3, 32, 32), [0, 1])]
"""
from . import transforms
from .convert import from_torchvision
from .errors import BadSample, BadSampleError, FusedUnavailable
from .loader import DataLoader
from .profile import Profile, profile
from .viz import compare, show, show_replay
from .webdataset import TarShards, WebDataset

__version__ = "0.1.0"
__all__ = ["DataLoader", "transforms", "from_torchvision", "TarShards", "WebDataset", "BadSample",
           "BadSampleError", "FusedUnavailable", "show", "show_replay", "compare", "profile", "Profile",
           "__version__"]
