"""Batched, per-sample transforms with the names and arguments of torchvision.transforms.v2.

Every random op draws its parameters for the whole batch in one vectorized call from
the counter-based generator (:mod:`gpuaug.rng`), so each sample gets its own draw and
the draw is the same however the batch was formed. The pure-torch ``apply`` of each op
is the reference semantics.

Example:
    >>> import torch
    >>> from gpuaug import transforms as T
    >>> pipe = T.Compose([T.RandomResizedCrop(8), T.ToDtype(torch.float32, scale=True),
    ...                   T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    >>> pipe([torch.zeros(3, 20, 30, dtype=torch.uint8), torch.zeros(3, 9, 9, dtype=torch.uint8)], seed=0)[1].shape
    torch.Size([3, 8, 8])
"""
from ._affine import RandomAffine, RandomPerspective, RandomRotation, RandomZoomOut, WarpParams
from ._base import Compose, ImageState, ParamContext, PipelineParams, Transform
from ._color import ColorJitter, ColorJitterParams, Grayscale, GrayscaleParams, RandomGrayscale
from ._dtype import Normalize, ToDtype
from ._geometry import (CenterCrop, CropParams, FlipParams, RandomCrop, RandomHorizontalFlip,
                        RandomResizedCrop, RandomVerticalFlip, Resize, SizeParams)

__all__ = [
    "Compose", "Transform", "ImageState", "ParamContext", "PipelineParams",
    "RandomResizedCrop", "Resize", "CenterCrop", "RandomCrop", "RandomHorizontalFlip", "RandomVerticalFlip",
    "ColorJitter", "Grayscale", "RandomGrayscale", "Normalize", "ToDtype",
    "CropParams", "FlipParams", "SizeParams", "ColorJitterParams", "GrayscaleParams",
    "RandomAffine", "RandomRotation", "RandomPerspective", "RandomZoomOut", "WarpParams",
]

# Pixel-value augmentations, automatic policies, batch mixing and the Kornia wrapper.
from ._augment import (ApplyParams, BlurParams, EraseParams, GaussianBlur, RandomAdjustSharpness,  # noqa: E402
                       RandomAutocontrast, RandomEqualize, RandomErasing, RandomInvert, RandomPosterize,
                       RandomSolarize)
from ._auto import AugMix, AugMixParams, AutoAugment, AutoAugmentParams, RandAugment, TrivialAugmentWide  # noqa: E402
from ._kornia import Kornia, KorniaParams  # noqa: E402
from ._mix import CutMix, MixParams, MixUp  # noqa: E402

__all__ += [
    "GaussianBlur", "RandomSolarize", "RandomPosterize", "RandomAutocontrast", "RandomEqualize", "RandomInvert",
    "RandomAdjustSharpness", "RandomErasing", "ApplyParams", "BlurParams", "EraseParams",
    "RandAugment", "TrivialAugmentWide", "AutoAugment", "AugMix", "AutoAugmentParams", "AugMixParams",
    "MixUp", "CutMix", "MixParams", "Kornia", "KorniaParams",
]
