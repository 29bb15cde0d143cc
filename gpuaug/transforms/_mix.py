"""MixUp and CutMix on a batch, with a per-sample partner and mixing weight.

These ops mix *pairs of samples* and change the labels, so they run on the batch the
loader hands out, not inside the per-sample pipeline::

    mix = T.MixUp(alpha=0.2, num_classes=1000)
    for images, labels in loader:
        images, labels = mix(images, labels, seed=seed, epoch=epoch, indices=batch_indices)

Differences from ``torchvision.transforms.v2.MixUp`` / ``CutMix``, which draw ONE
weight (and one CutMix box) per batch and mix every sample with its neighbour
(``batch.roll(1, 0)``):

* every sample draws its own weight ``lam ~ Beta(alpha, alpha)`` (and its own box);
* sample ``b`` is mixed with ``partner[b]``, a random cyclic permutation of the batch
  (no sample is its own partner when B > 1, and every sample is used once as a partner);
* both come from the counter-based generator keyed by ``(seed, epoch, indices)``, so a
  batch is mixed the same way every time it is replayed;
* uint8 images are accepted: MixUp rounds its blend back to uint8.

The Beta variates are made from counter-based uniforms: ``Beta(a, b) = G_a / (G_a + G_b)``
with Gamma variates from Marsaglia & Tsang's method ("A simple method for generating
gamma variables", 2000), vectorized by drawing a fixed number of candidates per sample
and keeping the first accepted one (the way RandomResizedCrop picks its first valid
attempt). Shapes below 1 use the boost ``G_a = G_{a+1} * U**(1/a)``, done in log space
so tiny ``alpha`` cannot underflow to 0/0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..rng import SampleKeys
from ._augment import box_muller

# -- random variates from counter-based uniforms ------------------------------------------

#: Marsaglia–Tsang candidates per Gamma variate. Each is accepted with probability > 0.95
#: (shape >= 1), so all 8 fail with probability < 1e-10; then the variate falls back to d.
GAMMA_CANDIDATES = 8
#: Uniforms one Gamma variate consumes: a normal and an acceptance test per candidate, plus the boost.
GAMMA_DRAWS = 2 * GAMMA_CANDIDATES + 1
BETA_DRAWS = 2 * GAMMA_DRAWS


def _open_unit(u: torch.Tensor) -> torch.Tensor:
    """float32 uniforms on the 2**-24 grid of [0, 1) -> float64 midpoints, inside (0, 1)."""
    return u.double() + 2.0 ** -25


def sample_log_gamma(u: torch.Tensor, shape: float) -> torch.Tensor:
    """``[B]`` float64 logs of Gamma(shape, 1) variates from ``[B, GAMMA_DRAWS]`` uniforms."""
    if shape <= 0:
        raise ValueError(f"Gamma shape must be positive, got {shape}")
    k = GAMMA_CANDIDATES
    u = _open_unit(u)
    boosted = shape < 1.0
    a = shape + 1.0 if boosted else shape
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    z = torch.cat(box_muller(u[:, :k // 2], u[:, k // 2:k]), dim=1)                 # [B, k] normals
    v = (1.0 + c * z) ** 3
    positive = v > 0
    log_v = torch.log(torch.where(positive, v, torch.ones_like(v)))
    accept = positive & (torch.log(u[:, k:2 * k]) < 0.5 * z * z + d - d * v + d * log_v)
    first = accept.to(torch.uint8).argmax(dim=1, keepdim=True)
    log_g = math.log(d) + torch.where(accept.any(dim=1), log_v.gather(1, first).squeeze(1), 0.0)
    if boosted:
        log_g = log_g + torch.log(u[:, 2 * k]) / shape
    return log_g


def sample_beta(u: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """``[B]`` float64 Beta(a, b) variates from ``[B, BETA_DRAWS]`` uniforms."""
    log_ga = sample_log_gamma(u[:, :GAMMA_DRAWS], a)
    log_gb = sample_log_gamma(u[:, GAMMA_DRAWS:BETA_DRAWS], b)
    return torch.sigmoid(log_ga - log_gb)          # G_a / (G_a + G_b)


def sample_dirichlet(u: torch.Tensor, alphas: list[float]) -> torch.Tensor:
    """``[B, k]`` float64 Dirichlet(alphas) variates from ``[B, k * GAMMA_DRAWS]`` uniforms."""
    log_g = torch.stack([sample_log_gamma(u[:, i * GAMMA_DRAWS:(i + 1) * GAMMA_DRAWS], a)
                         for i, a in enumerate(alphas)], dim=1)
    return torch.softmax(log_g, dim=1)             # G_i / sum(G)


# -- the ops ----------------------------------------------------------------------------------

@dataclass
class MixParams:
    """How each sample of a batch is mixed.

    ``partner[b]`` is the row whose image and label sample ``b`` takes in; ``lam[b]`` is
    the weight of the sample's own label (for CutMix, the exact fraction of its own
    pixels kept). ``box`` holds CutMix's pasted region ``(x1, y1, x2, y2)``.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> from gpuaug.rng import SampleKeys
        >>> params = T.CutMix(alpha=1.0).make_params(SampleKeys(0, 0, torch.arange(4)), height=32, width=32)
        >>> sorted(params.partner.tolist()), params.box.shape     # a random cycle over the batch
        ([0, 1, 2, 3], torch.Size([4, 4]))
    """

    partner: torch.Tensor            # [B] int64
    lam: torch.Tensor                # [B] float64
    box: torch.Tensor | None = None  # [B, 4] int64


def random_cycle(u: torch.Tensor) -> torch.Tensor:
    """Partners from a random cyclic order: the samples sorted by ``u`` each take the next one."""
    order = torch.argsort(u, stable=True)
    partner = torch.empty_like(order)
    partner[order] = order.roll(-1)
    return partner


class _MixBase:
    #: Counter position of the op's draws (past the pipeline's op positions).
    stream: int = (1 << 16) - 2
    #: Put last in a Compose, gpuaug.DataLoader runs it on (images, labels) of each batch.
    mixes_labels = True

    def __init__(self, *, alpha: float = 1.0, num_classes: int | None = None, labels_getter="default"):
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        if labels_getter != "default":
            raise NotImplementedError(f"{type(self).__name__} takes (images, labels) directly; "
                                      "labels_getter other than 'default' is not supported")
        self.alpha = float(alpha)
        self.num_classes = num_classes

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alpha={self.alpha}, num_classes={self.num_classes})"

    def make_params(self, keys: SampleKeys, height: int, width: int) -> MixParams:
        raise NotImplementedError

    def mix_images(self, images: torch.Tensor, params: MixParams) -> torch.Tensor:
        raise NotImplementedError

    def mix_labels(self, labels: torch.Tensor, params: MixParams) -> torch.Tensor:
        """Soft targets ``lam * y + (1 - lam) * y[partner]`` (int labels are one-hot first)."""
        if labels.ndim == 1:
            labels = F.one_hot(labels.long(), num_classes=self.num_classes)
        labels = labels if labels.is_floating_point() else labels.float()
        lam = params.lam.to(device=labels.device, dtype=labels.dtype).reshape(-1, 1)
        return lam * labels + (1 - lam) * labels[params.partner.to(labels.device)]

    def apply(self, images: torch.Tensor, labels: torch.Tensor, params: MixParams):
        """Mix a batch with given parameters; returns ``(images, soft_labels)``."""
        return self.mix_images(images, params), self.mix_labels(labels, params)

    def _check(self, images, labels) -> None:
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects a [B, C, H, W] batch of images")
        if not isinstance(labels, torch.Tensor):
            raise ValueError(f"The labels must be a tensor, but got {type(labels)} instead.")
        if labels.ndim not in (1, 2):
            raise ValueError(f"labels should be index based with shape (batch_size,) or probability based "
                             f"with shape (batch_size, num_classes), but got shape {tuple(labels.shape)}")
        if labels.ndim == 2 and self.num_classes is not None and labels.shape[-1] != self.num_classes:
            raise ValueError(f"When passing 2D labels, the number of elements in last dimension must match "
                             f"num_classes: {labels.shape[-1]} != {self.num_classes}.")
        if labels.ndim == 1 and self.num_classes is None:
            raise ValueError("num_classes must be passed if the labels are index-based (1D)")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"The batch size of the images does not match the batch size of the labels: "
                             f"{images.shape[0]} != {labels.shape[0]}.")

    def __call__(self, images, labels=None, *, seed: int | None = None, epoch: int = 0, indices=None):
        """Mix a batch: ``images, labels = mix(images, labels)``.

        Args:
            images: ``[B, C, H, W]`` (uint8 or float); ``(images, labels)`` as one tuple also works.
            labels: ``[B]`` class indices (needs ``num_classes``) or ``[B, num_classes]`` soft labels.
            seed: generator seed; ``None`` draws one from torch's global generator.
            epoch, indices: the rest of the random key (default indices ``0..B-1``); pass the
                loader's seed, epoch and the batch's dataset indices to make mixing replayable.
        Returns:
            ``(mixed images, [B, num_classes] float soft labels)``.
        """
        if labels is None and isinstance(images, (tuple, list)) and len(images) == 2:
            images, labels = images
        self._check(images, labels)
        n = images.shape[0]
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        idx = torch.arange(n) if indices is None else torch.as_tensor(indices, dtype=torch.int64)
        if idx.shape != (n,):
            raise ValueError(f"indices must have one entry per image ({n}), got shape {tuple(idx.shape)}")
        params = self.make_params(SampleKeys(seed, epoch, idx.to(images.device)), *images.shape[-2:])
        return self.apply(images, labels, params)


class MixUp(_MixBase):
    """Blend each sample with a partner: ``x = lam * x + (1 - lam) * x[partner]``, labels alike.

    ``lam ~ Beta(alpha, alpha)`` is drawn per sample and the partners form a random
    cycle over the batch (see the module docstring for how this differs from
    torchvision, which draws one ``lam`` per batch and pairs neighbours).

    Args:
        alpha: Beta distribution parameter (> 0).
        num_classes: number of classes, to one-hot index labels.
        labels_getter: only ``"default"``: call as ``mix(images, labels)``.

    Shape:
        images ``[B, C, H, W]`` -> same; labels ``[B]`` or ``[B, K]`` -> ``[B, K]`` float.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
        >>> out, soft = T.MixUp(alpha=1.0, num_classes=5)(images, labels, seed=0)
        >>> out.shape, soft.shape, torch.allclose(soft.sum(1), torch.ones(4))
        (torch.Size([4, 3, 8, 8]), torch.Size([4, 5]), True)
    """

    stream = (1 << 16) - 2

    def make_params(self, keys: SampleKeys, height: int, width: int) -> MixParams:
        u = keys.uniform(self.stream, 1 + BETA_DRAWS)
        return MixParams(partner=random_cycle(u[:, 0]), lam=sample_beta(u[:, 1:], self.alpha, self.alpha))

    def mix_images(self, images, params):
        x = images.float()
        lam = params.lam.to(device=x.device, dtype=torch.float32).reshape(-1, 1, 1, 1)
        out = lam * x + (1 - lam) * x[params.partner.to(x.device)]
        if images.dtype == torch.uint8:
            return out.round_().clamp_(0, 255).to(torch.uint8)
        return out.to(images.dtype)


class CutMix(_MixBase):
    """Paste a box of a partner sample into each sample; labels weighted by the box area.

    Per sample: ``lam ~ Beta(alpha, alpha)``, a box centre uniform over the image and
    half-sides ``int(0.5 * sqrt(1 - lam) * W)`` / ``... * H`` clipped to the image
    (torchvision's rule); the label weight is then corrected to the pixels actually kept,
    ``lam = 1 - box_area / (H * W)``. Partners form a random cycle over the batch.

    Args:
        alpha: Beta distribution parameter (> 0).
        num_classes: number of classes, to one-hot index labels.
        labels_getter: only ``"default"``: call as ``mix(images, labels)``.

    Shape:
        images ``[B, C, H, W]`` -> same; labels ``[B]`` or ``[B, K]`` -> ``[B, K]`` float.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> images = torch.arange(4.).reshape(4, 1, 1, 1).expand(4, 3, 16, 16)
        >>> out, soft = T.CutMix(num_classes=4)(images, torch.arange(4), seed=1)
        >>> kept = (out[:, 0] == images[:, 0]).double().mean((1, 2))   # own pixels per sample
        >>> torch.allclose(kept, soft.max(1).values.double())
        True
    """

    stream = (1 << 16) - 3

    def make_params(self, keys: SampleKeys, height: int, width: int) -> MixParams:
        u = keys.uniform(self.stream, 3 + BETA_DRAWS)
        lam = sample_beta(u[:, 3:], self.alpha, self.alpha)
        centre_x = torch.floor(u[:, 1].double() * width).clamp(max=width - 1)
        centre_y = torch.floor(u[:, 2].double() * height).clamp(max=height - 1)
        half = 0.5 * torch.sqrt(1.0 - lam)
        half_w, half_h = torch.floor(half * width), torch.floor(half * height)
        x1, y1 = (centre_x - half_w).clamp(min=0), (centre_y - half_h).clamp(min=0)
        x2, y2 = (centre_x + half_w).clamp(max=width), (centre_y + half_h).clamp(max=height)
        kept = 1.0 - (x2 - x1) * (y2 - y1) / (width * height)
        box = torch.stack([x1, y1, x2, y2], dim=1).to(torch.int64)
        return MixParams(partner=random_cycle(u[:, 0]), lam=kept, box=box)

    def mix_images(self, images, params):
        dev = images.device
        x1, y1, x2, y2 = (v.to(dev).reshape(-1, 1, 1) for v in params.box.unbind(1))
        ys = torch.arange(images.shape[-2], device=dev).reshape(1, -1, 1)
        xs = torch.arange(images.shape[-1], device=dev).reshape(1, 1, -1)
        pasted = ((ys >= y1) & (ys < y2) & (xs >= x1) & (xs < x2)).unsqueeze(1)    # [B, 1, H, W]
        return torch.where(pasted, images[params.partner.to(dev)], images)
