"""Run any Kornia augmentation inside a gpuaug pipeline, reproducibly.

Kornia draws its parameters from torch's global generator. The wrapper derives one
seed per batch from gpuaug's counter-based generator and runs the module under that
seed in a forked RNG state, so the same batch (same seed, epoch, op position and first
dataset index) always gets the same augmentation and the caller's global RNG is left
exactly as it was.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..rng import random_bits
from ._augment import dense_batch
from ._base import ImageState, ParamContext, Transform


@dataclass
class KorniaParams:
    """The seed Kornia's sampling runs under for this batch.

    Example:
        >>> import kornia, torch
        >>> from gpuaug import transforms as T
        >>> op = T.Kornia(kornia.augmentation.RandomGaussianBlur((5, 5), (0.1, 2.0), p=0.5))
        >>> op.draw_params(torch.zeros(2, 3, 8, 8), seed=0) == op.draw_params(torch.zeros(2, 3, 8, 8), seed=0)
        True
    """

    seed: int


def _seed_generators(seed: int, device: torch.device) -> None:
    """Seed the CPU generator and the images' accelerator generator (only those: the
    others are not forked, so they must not be touched)."""
    torch.random.default_generator.manual_seed(seed)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        torch.cuda.default_generators[index].manual_seed(seed)


class Kornia(Transform):
    """Wrap a ``kornia.augmentation`` op or ``AugmentationSequential`` as a gpuaug op.

    The module runs on the dense batch, on the images' device, in float ``[0, 1]``:
    logically-uint8 images are divided by 255 before and multiplied by 255 after
    (values stay float32; the pipeline rounds once at the end), float images go as they are.

    Seeding: ``make_params`` draws two 32-bit words from the counter-based generator for
    (seed, epoch, this op's position, the batch's *first* dataset index) and makes a
    63-bit seed of them. ``apply`` runs the module inside
    ``torch.random.fork_rng(devices=[the images' CUDA device])`` after
    ``manual_seed(seed)`` on the CPU generator and on that device's generator (Kornia
    samples on the CPU by default, or on the device the module was moved to). So
    ``torch.manual_seed(params.seed); module(x / 255)`` reproduces the op, and the global
    RNG state is unchanged afterwards.

    Limitation: unlike gpuaug's native ops, Kornia draws the parameters of the whole
    batch in one go, so a sample's augmentation depends on the batch it is in (its
    position, the batch size, the first index), not on its dataset index alone;
    ``loader.replay(index, epoch)`` cannot reproduce it for a sample taken out of its
    batch. The module must keep the image size unless ``output_size`` says what it
    produces, and boxes/masks do not follow Kornia's geometric ops.

    Args:
        module: a Kornia augmentation (any ``torch.nn.Module`` taking and returning a
            ``[B, C, H, W]`` float tensor).
        output_size: ``(height, width)`` of the module's output if it resizes (for
            example ``kornia.augmentation.RandomResizedCrop``); default: unchanged.

    Shape:
        ``[B, C, H, W]`` -> ``[B, C, H, W]`` (or ``output_size``).

    Example:
        >>> import torch, kornia.augmentation as K
        >>> from gpuaug import transforms as T
        >>> op = T.Kornia(K.RandomGaussianBlur((5, 5), (0.1, 2.0), p=1.0))
        >>> x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
        >>> y = op(x, seed=0)
        >>> y.dtype, torch.equal(y, op(x, seed=0))
        (torch.uint8, True)
    """

    def __init__(self, module: torch.nn.Module, output_size: tuple[int, int] | None = None):
        if not callable(module):
            raise TypeError(f"Kornia expects a callable kornia module, got {type(module).__name__}")
        self.module = module
        self.output_size = None if output_size is None else (int(output_size[0]), int(output_size[1]))
        self.geometric = output_size is not None

    def extra_repr(self) -> str:
        size = "" if self.output_size is None else f", output_size={self.output_size}"
        return f"{self.module!r}{size}"

    def make_params(self, ctx: ParamContext) -> KorniaParams:
        keys = ctx.keys
        first = keys.indices[:1].cpu() if len(keys) else torch.zeros(1, dtype=torch.int64)
        low, high = random_bits(keys.seed, keys.epoch, first, ctx.position, 2)[0].tolist()
        return KorniaParams(seed=((high & 0x7FFFFFFF) << 32) | low)

    def output_sizes(self, sizes, params):
        if self.output_size is None:
            return sizes
        return torch.tensor(self.output_size, dtype=torch.int64, device=sizes.device).expand(len(sizes), 2)

    def apply(self, state, params: KorniaParams):
        x = dense_batch(state, "Kornia")
        scale = state.bound
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            _seed_generators(params.seed, x.device)
            out = self.module(x / scale if scale != 1.0 else x)
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            raise TypeError(f"the Kornia module must return a [B, C, H, W] tensor, got {type(out).__name__}")
        expected = self.output_size or tuple(x.shape[-2:])
        if tuple(out.shape[-2:]) != expected or out.shape[0] != x.shape[0]:
            raise ValueError(f"the Kornia module returned shape {tuple(out.shape)} for input {tuple(x.shape)}; "
                             "pass output_size=(h, w) for modules that resize")
        out = out.float()
        return ImageState(out * scale if scale != 1.0 else out, state.dtype)
