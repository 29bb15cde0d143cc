"""The transform protocol and the pipeline that runs it on a batch.

Every transform splits into two steps, as in torchvision v2 and Kornia:

* ``make_params(ctx)`` draws the per-sample parameters of the whole batch in one
  vectorized call and returns a typed dataclass of ``[B]``-shaped tensors;
* ``apply(state, params)`` renders them: this pure-torch code is the **reference**
  that defines the op's semantics (the fused kernels reproduce it).

Parameters are drawn before any pixel is decoded: ``make_params`` only needs the
per-sample sizes, which come from the image headers. ``output_sizes`` says how each op
changes them, so the whole pipeline can be planned ahead of decode.

Pixels travel through the pipeline as float32 in the value range of their *logical*
dtype (0..255 while the images are logically uint8, 0..1 once ``ToDtype`` made them
float) and are rounded to the output dtype once, at the end. Intermediate results are
therefore never re-quantized to uint8 between ops (torchvision truncates after each
color op on uint8 input); this is the single-rounding semantics the fused kernel has.

The loader's CPU fast path (:mod:`gpuaug.cpu_path`, ``fused=None`` on CPU) rounds once
more, on purpose: it resizes the crop with torch's antialiased uint8 kernel, as
torchvision does for uint8 tensors, so its values are uint8 right after the resize
(at most half a level from the reference there) and float32 from then on, rounded once
at the end. ``fused=False`` and standalone calls keep the single rounding described
above.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch

from ..rng import SampleKeys
from ..timeline import DISABLED

Images = torch.Tensor | list[torch.Tensor]

#: ``ops -> lines`` describing how a pipeline splits into fused and reference segments, for
#: :meth:`Compose.plan`. The fused layer registers it when imported (``import gpuaug`` does):
#: this reference layer never imports the kernels' code.
_segment_describer: Callable[[list], list[str]] | None = None


def register_segment_describer(describe: Callable[[list], list[str]]) -> None:
    """Install the function behind :meth:`Compose.plan` (called by :mod:`gpuaug.fused`)."""
    global _segment_describer
    _segment_describer = describe


@dataclass
class ParamContext:
    """What an op may look at when it draws its parameters.

    Attributes:
        keys: seed, epoch and dataset indices of the batch.
        position: this op's position in the flattened pipeline (part of the RNG counter).
        sizes: ``[B, 2]`` int64 (height, width) of each sample at this op's input.
        channels: number of channels at this op's input.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> class RandomDim(T.Transform):            # scales each image by its own factor in [0.5, 1)
        ...     def make_params(self, ctx: T.ParamContext) -> torch.Tensor:
        ...         return 0.5 + 0.5 * ctx.uniform(1)[:, 0]      # [B]: this op's own draws
        ...     def apply(self, state: T.ImageState, factors: torch.Tensor) -> T.ImageState:
        ...         return T.ImageState([im.float() * f for im, f in zip(state.as_list(), factors)], state.dtype)
        >>> images = torch.full((3, 3, 4, 4), 200, dtype=torch.uint8)
        >>> out = RandomDim()(images, seed=0)
        >>> out.dtype, bool((out[:, :, 0, 0] <= 200).all()), torch.equal(out, RandomDim()(images, seed=0))
        (torch.uint8, True, True)
    """

    keys: SampleKeys
    position: int
    sizes: torch.Tensor
    channels: int = 3

    @property
    def batch_size(self) -> int:
        return len(self.keys)

    def uniform(self, n: int) -> torch.Tensor:
        """``[B, n]`` float32 uniforms in [0, 1) reserved for this op."""
        return self.keys.uniform(self.position, n).to(self.sizes.device)


@dataclass
class ImageState:
    """Images between two ops of the reference pipeline.

    Attributes:
        images: a dense ``[B, C, H, W]`` tensor or a list of ``[C, H, W]`` tensors
            (ragged sizes). uint8 straight from the decoder, float32 after the first
            op that computes.
        dtype: the logical dtype the user would see now (``torch.uint8`` until a
            ``ToDtype``); it fixes the value range (255 for uint8, 1.0 for floats)
            and the dtype of the final output.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> state = T.ImageState([torch.zeros(3, 4, 6, dtype=torch.uint8), torch.zeros(3, 5, 5, dtype=torch.uint8)])
        >>> state.batch_size, state.bound, state.dense() is None     # ragged: no dense view
        (2, 255.0, True)
    """

    images: Images
    dtype: torch.dtype = torch.uint8
    #: False while ``images`` may still be the caller's own tensor (never write into it).
    owned: bool = True

    @property
    def bound(self) -> float:
        return 255.0 if self.dtype == torch.uint8 else 1.0

    @property
    def batch_size(self) -> int:
        return len(self.images)

    def dense(self) -> torch.Tensor | None:
        """The images as one ``[B, C, H, W]`` float32 tensor, or None if sizes differ."""
        imgs = self.images
        if isinstance(imgs, torch.Tensor):
            return imgs.float()
        if not imgs:
            return None
        first = imgs[0].shape
        if any(im.shape != first for im in imgs):
            return None
        return torch.stack([im.float() for im in imgs])

    def writable_dense(self) -> torch.Tensor | None:
        """Like :meth:`dense`, but safe to modify in place (the input is never written)."""
        x = self.dense()
        if x is not None and x is self.images and not self.owned:
            x = x.clone()
        return x

    def as_list(self) -> list[torch.Tensor]:
        return list(self.images.unbind(0)) if isinstance(self.images, torch.Tensor) else list(self.images)


def rows_where(mask: torch.Tensor) -> torch.Tensor:
    """Indices of the True entries of a ``[B]`` mask (the samples an op applies to)."""
    return mask.nonzero().flatten()


class Transform:
    """Base class of every gpuaug transform.

    Subclasses override ``make_params`` (if random), ``output_sizes`` (if geometric)
    and ``apply``. Calling a transform runs it alone as a one-op :class:`Compose`,
    which works on a ``[B, C, H, W]`` tensor or a list of ``[C, H, W]`` tensors,
    uint8 or float, on any device.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> class Halve(T.Transform):                # no random parameters, sizes unchanged
        ...     def apply(self, state: T.ImageState, params) -> T.ImageState:
        ...         return T.ImageState([im.float() * 0.5 for im in state.as_list()], state.dtype)
        >>> Halve()(torch.full((1, 3, 2, 2), 201, dtype=torch.uint8))[0, 0]    # rounded once, at the end
        tensor([[100, 100],
                [100, 100]], dtype=torch.uint8)
    """

    #: True for ops that change per-sample sizes (they need ``output_sizes``).
    geometric: bool = False
    #: Channels after the op for a given input channel count (``None``: unchanged).
    def output_channels(self, channels: int) -> int:
        return channels

    def make_params(self, ctx: ParamContext) -> Any:
        return None

    def output_sizes(self, sizes: torch.Tensor, params: Any) -> torch.Tensor:
        return sizes

    def forward_matrix(self, params: Any, sizes: torch.Tensor) -> torch.Tensor | None:
        """``[B, 3, 3]`` map of points from this op's input to its output (None: unchanged).

        In edge coordinates (the image spans ``[0, W] x [0, H]``), the convention of
        bounding boxes; masks and boxes follow the images through it.
        """
        return None

    def apply(self, state: ImageState, params: Any) -> ImageState:
        raise NotImplementedError

    def __call__(self, images: Images, *, seed: int | None = None, epoch: int = 0,
                 indices: torch.Tensor | Sequence[int] | None = None, backend=None) -> Images:
        return Compose([self])(images, seed=seed, epoch=epoch, indices=indices, backend=backend)

    def draw_params(self, images: Images, *, seed: int | None = None, epoch: int = 0,
                    indices: torch.Tensor | Sequence[int] | None = None) -> Any:
        """This op's parameters for ``images`` when run alone (see :meth:`Compose.draw_params`)."""
        return Compose([self]).draw_params(images, seed=seed, epoch=epoch, indices=indices).per_op[0]

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


@dataclass
class PipelineParams:
    """Everything a batch's augmentation depends on: replaying these replays it.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> pipe = T.Compose([T.RandomResizedCrop(8), T.RandomHorizontalFlip()])
        >>> params = pipe.draw_params(torch.zeros(4, 3, 20, 30, dtype=torch.uint8), seed=0)
        >>> params.input_sizes[0].tolist(), params.output_sizes[0].tolist(), len(params.per_op)
        ([20, 30], [8, 8], 2)
        >>> flips = params.per_op[1].apply
        >>> params.select(torch.tensor([0, 2])).per_op[1].apply.tolist() == [flips[0], flips[2]]
        True
    """

    keys: SampleKeys
    input_sizes: torch.Tensor                       # [B, 2] sizes before the first op
    per_op: list[Any] = field(default_factory=list)  # params of each flattened op, in order
    output_sizes: torch.Tensor | None = None        # [B, 2] sizes after the last op
    op_input_sizes: list[torch.Tensor] = field(default_factory=list)   # [B, 2] at each op's input

    def select(self, rows: torch.Tensor) -> "PipelineParams":
        """The parameters of a subset of the batch (for dropping bad samples)."""
        return replace(
            self,
            keys=self.keys.select(rows),
            input_sizes=self.input_sizes[rows],
            per_op=[select_params(p, rows) for p in self.per_op],
            output_sizes=None if self.output_sizes is None else self.output_sizes[rows],
            op_input_sizes=[s[rows] for s in self.op_input_sizes],
        )


def select_params(params: Any, rows: torch.Tensor) -> Any:
    """Index every per-sample tensor field of a params dataclass by ``rows``."""
    if params is None:
        return None
    changes = {}
    for name, value in vars(params).items():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            changes[name] = value[rows.to(value.device)]
    return replace(params, **changes)


class Compose(Transform):
    """Chain transforms; nested ``Compose`` objects are flattened.

    The position of each op in the flattened list is part of its random key, so
    adding an op changes the draws of the ops after it, never of the ops before.

    Args:
        transforms: the ops, applied in order.

    Example:
        >>> import torch
        >>> from gpuaug import transforms as T
        >>> pipe = T.Compose([T.RandomResizedCrop(32), T.RandomHorizontalFlip(),
        ...                   T.ToDtype(torch.float32, scale=True)])
        >>> out = pipe(torch.randint(0, 256, (4, 3, 48, 64), dtype=torch.uint8), seed=0)
        >>> out.shape, out.dtype
        (torch.Size([4, 3, 32, 32]), torch.float32)
    """

    def __init__(self, transforms: Sequence[Transform]):
        flat: list[Transform] = []
        #: Batch ops that mix images *and labels* (MixUp, CutMix: ``mixes_labels = True``).
        #: They end the pipeline; the loader hands them the batch's labels.
        self.label_mixers: list = []
        for t in transforms:
            if isinstance(t, Compose):
                if self.label_mixers and t.transforms:
                    raise ValueError("ops that mix labels (MixUp, CutMix) must come last in the pipeline")
                flat.extend(t.transforms)
                self.label_mixers.extend(t.label_mixers)
            elif getattr(t, "mixes_labels", False):
                self.label_mixers.append(t)
            elif isinstance(t, Transform):
                if self.label_mixers:
                    raise ValueError("ops that mix labels (MixUp, CutMix) must come last in the pipeline")
                flat.append(t)
            else:
                raise TypeError(f"Compose takes gpuaug transforms, got {type(t).__name__}; "
                                "use gpuaug.from_torchvision() to convert torchvision ones")
        self.transforms = flat

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in [*self.transforms, *self.label_mixers])
        return f"Compose([{inner}\n])"

    def output_channels(self, channels: int) -> int:
        for t in self.transforms:
            channels = t.output_channels(channels)
        return channels

    # -- planning -------------------------------------------------------------------
    def make_pipeline_params(self, keys: SampleKeys, sizes: torch.Tensor, channels: int = 3) -> PipelineParams:
        """Draw every op's parameters for the batch, op by op, from sizes alone."""
        sizes = sizes.to(torch.int64).reshape(-1, 2)
        result = PipelineParams(keys=keys, input_sizes=sizes)
        for position, t in enumerate(self.transforms):
            params = t.make_params(ParamContext(keys, position, sizes, channels))
            result.per_op.append(params)
            result.op_input_sizes.append(sizes)
            sizes = t.output_sizes(sizes, params)
            channels = t.output_channels(channels)
        result.output_sizes = sizes
        return result

    def point_maps(self, params: PipelineParams) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each geometric op's ``([B, 3, 3] point map, [B, 2] output size)``, in order.

        Targets go through them one op at a time, clipped to every op's canvas as
        torchvision clamps boxes after every op.
        """
        steps = []
        for k, (t, p, sizes) in enumerate(zip(self.transforms, params.per_op, params.op_input_sizes)):
            m = t.forward_matrix(p, sizes.cpu())
            if m is not None:
                after = params.op_input_sizes[k + 1] if k + 1 < len(params.op_input_sizes) else params.output_sizes
                steps.append((m.double(), after.cpu()))
        return steps

    # -- reference execution ----------------------------------------------------------
    def apply_params(self, images: Images, params: PipelineParams, stack: bool | None = None,
                     backend=None, channels_last: bool = False, timeline=None, batch: int = 0,
                     pre_flips: torch.Tensor | None = None) -> Images:
        """Render ``params`` on ``images`` (uint8 or float, dense or list).

        Args:
            images: ``[B, C, H, W]`` tensor or list of ``[C, H, W]`` tensors.
            params: from :meth:`make_pipeline_params` for the same samples.
            stack: return one ``[B, C, H, W]`` tensor when all outputs share a size
                (default: only if ``images`` was a tensor); otherwise a list.
            backend: a fused-kernel backend (``gpuaug.fused.HostBackend.get()``,
                ``gpuaug.fused.cuda_backend()``); ``None`` runs the torch reference only.
                The backend decides which ops fuse (its ``render``); ops the kernels
                cannot take still run the reference.
            channels_last: let a final fused segment write channels_last directly.
            timeline, batch: where to record the time of fused and other ops (profiling).
            pre_flips: ``[B, 2]`` bool (top-bottom, left-right) flips to apply first (EXIF
                orientation left over by the decoder); a fused first segment folds them
                into its map, otherwise they are applied with torch.
        Returns:
            The augmented images in the pipeline's final dtype.
        """
        if backend is not None:
            # The reference layer knows nothing of the kernels: the backend plans the
            # segments and calls back into ``apply`` for the ops it cannot fuse.
            return backend.render(self, images, params, stack=stack, channels_last=channels_last,
                                  timeline=timeline, batch=batch, pre_flips=pre_flips)
        if stack is None:
            stack = isinstance(images, torch.Tensor)
        input_dtype = images.dtype if isinstance(images, torch.Tensor) else (
            images[0].dtype if images else torch.uint8)
        check_input_dtype(input_dtype)
        if len(images) == 0 and isinstance(images, torch.Tensor):
            return self._empty_output(images)
        state = ImageState(images, dtype=input_dtype, owned=False)
        if pre_flips is not None:
            state = ImageState(flip_each(state.as_list(), pre_flips), state.dtype)
        with (timeline if timeline is not None else DISABLED).span("other ops", batch):
            for t, p in zip(self.transforms, params.per_op):
                state = t.apply(state, p)
        return finalize(state, stack)

    def plan(self) -> str:
        """Which ops run fused and which through the reference, one line per segment."""
        if _segment_describer is None:       # gpuaug.fused not loaded: nothing can fuse
            lines = [f"ops 0..{len(self.transforms) - 1} reference (torch ops): "
                     + ", ".join(type(op).__name__ for op in self.transforms)] if self.transforms else []
        else:
            lines = _segment_describer(self.transforms)
        if self.label_mixers:
            names = ", ".join(type(m).__name__ for m in self.label_mixers)
            lines.append(f"then on (images, labels), batched torch ops: {names}")
        return "\n".join(lines)

    def _empty_output(self, images: torch.Tensor) -> torch.Tensor:
        # An empty batch has no sizes to plan from: render one blank image of the same
        # shape (the output size of every op follows from the input size) and drop it.
        blank = images.new_zeros((1, *images.shape[1:]))
        keys = SampleKeys(0, 0, torch.zeros(1, dtype=torch.int64, device=images.device))
        sizes = torch.tensor([list(images.shape[-2:])], device=images.device)
        return self.apply_params(blank, self.make_pipeline_params(keys, sizes, images.shape[1]))[:0]

    def apply(self, state: ImageState, params: Any) -> ImageState:
        raise TypeError("Compose is flattened into its parent; call it instead")

    def draw_params(self, images: Images, *, seed: int | None = None, epoch: int = 0,
                    indices: torch.Tensor | Sequence[int] | None = None) -> PipelineParams:
        """Draw the parameters the pipeline would render on ``images`` (no pixel is touched).

        The arguments are those of :meth:`__call__`; ``apply_params(images, params)``
        then renders exactly what ``self(images, ...)`` returns. Only the images' sizes,
        channels and device are read.

        Example:
            >>> import torch
            >>> from gpuaug import transforms as T
            >>> pipe = T.Compose([T.RandomResizedCrop(16), T.RandomHorizontalFlip()])
            >>> images = torch.zeros(3, 3, 40, 60, dtype=torch.uint8)
            >>> params = pipe.draw_params(images, seed=0)
            >>> [type(p).__name__ for p in params.per_op], params.output_sizes.tolist()
            (['CropParams', 'FlipParams'], [[16, 16], [16, 16], [16, 16]])
            >>> torch.equal(pipe.apply_params(images, params), pipe(images, seed=0))
            True
        """
        device = images.device if isinstance(images, torch.Tensor) else (
            images[0].device if images else torch.device("cpu"))
        n = len(images)
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        idx = torch.arange(n) if indices is None else torch.as_tensor(indices, dtype=torch.int64)
        if idx.shape != (n,):
            raise ValueError(f"indices must have one entry per image ({n}), got shape {tuple(idx.shape)}")
        sizes = torch.tensor([list(im.shape[-2:]) for im in images], dtype=torch.int64).reshape(n, 2)
        channels = images.shape[1] if isinstance(images, torch.Tensor) else (images[0].shape[0] if n else 3)
        return self.make_pipeline_params(SampleKeys(seed, epoch, idx.to(device)), sizes.to(device), channels)

    def __call__(self, images: Images, *, seed: int | None = None, epoch: int = 0,
                 indices: torch.Tensor | Sequence[int] | None = None, backend=None) -> Images:
        """Augment a batch standalone.

        Args:
            images: ``[B, C, H, W]`` tensor or list of ``[C, H, W]`` tensors (uint8 or float).
            seed: the generator seed; ``None`` draws one from torch's global generator
                (so ``torch.manual_seed`` makes standalone calls repeatable).
            epoch: part of the random key, as in the loader.
            indices: the samples' identities for the random key (default ``0..B-1``).
            backend: run fusable ops through fused kernels (see :meth:`apply_params`).
        """
        if self.label_mixers:
            raise TypeError("this pipeline mixes labels (MixUp/CutMix): call those ops on (images, labels), "
                            "or let gpuaug.DataLoader apply them")
        if isinstance(images, torch.Tensor) and images.dim() == 3:
            return self(images[None], seed=seed, epoch=epoch, indices=indices, backend=backend)[0]
        params = self.draw_params(images, seed=seed, epoch=epoch, indices=indices)
        return self.apply_params(images, params, backend=backend)


def flip_each(images: list[torch.Tensor], flips: torch.Tensor) -> list[torch.Tensor]:
    """Flip each image as its row of ``flips`` (top-bottom, left-right) says."""
    from ..decode import flip_image

    return [flip_image(img, flip_y, flip_x) for img, (flip_y, flip_x) in zip(images, flips.tolist())]


def check_input_dtype(dtype: torch.dtype) -> None:
    if dtype != torch.uint8 and not dtype.is_floating_point:
        raise TypeError(f"images must be uint8 or floating point, got {dtype}")


def finalize(state: ImageState, stack: bool) -> Images:
    """Cast the working float32 values to the logical dtype, once."""
    def cast(x: torch.Tensor) -> torch.Tensor:
        if x.dtype == state.dtype:
            return x
        if state.dtype == torch.uint8:
            return x.round().clamp_(0, 255).to(torch.uint8)
        return x.to(state.dtype)

    if not stack:
        return [cast(im) for im in state.as_list()]
    dense = state.images if isinstance(state.images, torch.Tensor) else state.dense()
    if dense is not None:
        return cast(dense)
    return [cast(im) for im in state.images]
