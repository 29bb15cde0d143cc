"""The fast CPU path: each sample from its encoded bytes to its output row in one task.

``gpuaug.DataLoader(device="cpu")`` with ``fused=None`` (the default) runs this when the
pipeline starts with a :class:`~gpuaug.transforms.RandomResizedCrop` (train recipes) or a
:class:`~gpuaug.transforms.Resize` followed by a :class:`~gpuaug.transforms.CenterCrop`
(eval recipes; see :class:`FastCpuPath`); ``fused=False`` still runs the torch reference
op by op. What it does differently, and why it is faster
on a CPU:

1. **Decode only what the crop needs.** The crop boxes are drawn from the header sizes
   before any pixel is decoded, so each JPEG is decoded over its box alone (eval
   geometries resize the whole image, so they decode all of it)
   (:func:`gpuaug.decode.decode_region`: libjpeg-turbo skips the rows above the box, never
   reads those below, and decodes each row from one iMCU left of the box to one iMCU right
   of it): the very pixels of a full decode, for about 0.6 of its cost on ImageNet-like
   photos
   (``FastCpuPath.region_decode``, on). A JPEG whose box is at least twice the output size
   in both dimensions could also be decoded at 1/2, 1/4 or 1/8 scale by libjpeg's DCT
   scaling (see :func:`pick_scale`, :func:`scaled_box`, :func:`gpuaug.decode.decode_scaled`;
   ``FastCpuPath.dct_scaling = True``). That is off because it misses the tolerance of
   the tests against torchvision on a full decode (mean error <= 1 level): on the embedded
   photos, cropping whole images to 25-100 px, the mean absolute difference from
   ``resized_crop`` of the full decode is 1.5 levels at 3-10x oversampling after the DCT
   scale and 2.4-3.7 levels at 1-3x (libjpeg's scaled IDCT is a different low-pass than the
   antialiased triangle filter), and on ImageNet-like sizes (mean 417x352) a 224 crop can
   be DCT-scaled for few images only.
2. **Resample uint8.** The crop is resized by torch's antialiased uint8 kernel (the one
   ``torchvision.transforms.v2.functional.resize`` uses on uint8 tensors) on the
   channels-last layout decoders produce, and rounded to uint8 once, right after the
   resize; everything after it is float32, rounded once at the end as in the reference.
   The reference instead resizes in float32 and keeps the unrounded values.
3. **Color and normalization per sample, in cache.** Each sample runs its own
   ColorJitter order on its own ``[3, H*W]`` float32 planes (a few hundred KB, cache
   resident) as one vectorized C++ loop per op, and ToDtype and Normalize fold into one
   multiply-add that writes the output row: flips, color, dtype and layout in one call
   after the resize (:class:`gpuaug.native.CpuRender`: the per-pixel formulas of
   ``kernels/color.h`` and ``kernels/dtype.h``, which the CUDA kernels use too, compiled
   for this CPU). Where no compiler is found, the same steps run as torch ops, the jitter
   as one TorchScript call with fewer passes than the reference (:func:`adjust_hue`
   computes the hue shift without building HSV planes and without
   ``torch.where``/``remainder``, which are not vectorized on CPU).
4. **Both cores.** Every sample is one task on the CPU decoder's thread pool, whose
   threads run torch single-threaded (:class:`gpuaug.decode.CpuDecoder`): decode of one
   sample overlaps augmentation of another, and pool threads x torch threads stays at the
   core count.

Differences from the reference (``tests/test_cpu_path.py``): one uint8 rounding after the
resize (at most half a level before the color ops; the output is then exactly
torchvision's uint8 ``resized_crop`` of the full decode followed by its float color ops,
within 1e-4), and,
only with ``dct_scaling``, libjpeg's scaled IDCT in place of a full decode plus the first
part of the antialias filter, with the crop box edges rounded to the scaled pixel grid
(at most half an output pixel, see :func:`scaled_box`). Draws, replay, ``on_error`` and
EXIF handling are the loader's own.

Example:
    >>> import torch
    >>> from gpuaug import transforms as T
    >>> from gpuaug.cpu_path import FastCpuPath
    >>> pipe = T.Compose([T.RandomResizedCrop(8), T.RandomHorizontalFlip(), T.ToDtype(torch.float32, scale=True)])
    >>> FastCpuPath.for_pipeline(pipe).head
    3
"""
from __future__ import annotations

import functools
import math
import threading
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .decode import orientation_parts
from .native import OUT_DTYPES, STEP_AFFINE, CpuRender
from .transforms import (CenterCrop, ColorJitter, Compose, Normalize, RandomHorizontalFlip, RandomResizedCrop,
                         RandomVerticalFlip, Resize, ToDtype)
from .transforms._base import ImageState, PipelineParams, finalize
from .transforms._geometry import extract_region

#: DCT scale factors libjpeg offers (1/s of each dimension), largest first.
JPEG_SCALES = (8, 4, 2)
_FLOAT_OUT = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


# -- 1. which scale, which box -----------------------------------------------------------------

def pick_scale(box_h: int, box_w: int, out_h: int, out_w: int) -> int:
    """The largest DCT scale ``s`` (8, 4, 2, else 1) at which the crop box still has at
    least the output's resolution in both dimensions (``box >= s * out``).

    Example:
        >>> pick_scale(460, 900, 224, 224), pick_scale(447, 900, 224, 224)
        (2, 1)
    """
    for s in JPEG_SCALES:
        if box_h >= s * out_h and box_w >= s * out_w:
            return s
    return 1


def scaled_box(top: int, left: int, height: int, width: int, image_h: int, image_w: int,
               scale: int, orientation: int = 1) -> tuple[int, int, int, int]:
    """Map a crop box of the full-resolution upright image into its 1/``scale`` decode.

    libjpeg decodes a ``D``-pixel dimension at scale ``s`` into ``ceil(D / s)`` pixels,
    pixel ``j`` covering source pixels ``[j*s, (j+1)*s)`` *in the stored orientation*: the
    last one is partial when ``s`` does not divide ``D``. When EXIF orientation reverses an
    axis, that partial pixel comes first in the upright image, so the grid there starts at
    ``D - ceil(D/s)*s`` (a negative offset) rather than 0. Each box edge ``e`` becomes
    ``floor((e - offset) / s + 0.5)`` (round half up) clamped to the scaled image; an edge
    moves by at most ``s/2`` source pixels, which :func:`pick_scale` keeps within half an
    output pixel, and the mapped size is at least ``floor(size / s)`` (never below the
    output size for a scale from :func:`pick_scale`).

    Returns:
        (top, left, height, width) in the scaled upright image.

    Example:
        >>> scaled_box(10, 0, 300, 301, 401, 301, 2)            # 401 rows -> 201 at 1/2
        (5, 0, 150, 151)
        >>> scaled_box(10, 0, 300, 301, 401, 301, 2, orientation=3)   # rotated 180: grid starts at -1
        (6, 1, 150, 150)
    """
    _, flip_y, flip_x = orientation_parts(orientation)

    def axis(start: int, length: int, dim: int, reversed_: bool) -> tuple[int, int]:
        n = -(-dim // scale)
        offset = dim - n * scale if reversed_ else 0
        lo = min(max(math.floor((start - offset) / scale + 0.5), 0), n - 1)
        hi = min(max(math.floor((start + length - offset) / scale + 0.5), lo + 1), n)
        return lo, hi - lo

    t, h = axis(top, height, image_h, flip_y)
    l, w = axis(left, width, image_w, flip_x)
    return t, l, h, w


# -- 2-3. one sample ---------------------------------------------------------------------------

# The color ops below are written in the subset of Python that TorchScript compiles: the
# per-sample chain runs as one scripted call (:func:`jitter_chain`), which releases the GIL
# for the whole chain instead of taking it back between some thirty small ops. With two
# pool threads the Python version scales 1.2-1.3x, the scripted one 1.9x.

def _luma(x: torch.Tensor) -> torch.Tensor:
    """``[3, N]`` -> ``[N]`` BT.601 luma, as the reference's ``luma``."""
    return (x[0] * 0.2989).add_(x[1] * 0.587).add_(x[2] * 0.114)


def adjust_brightness(x: torch.Tensor, f: float, bound: float) -> None:
    x.mul_(f).clamp_(0.0, bound)


def adjust_contrast(x: torch.Tensor, f: float, bound: float) -> None:
    # mean(luma) = luma of the channel means: one reduction pass instead of a luma plane.
    m = x.mean(1)
    mean = 0.2989 * float(m[0]) + 0.587 * float(m[1]) + 0.114 * float(m[2])
    x.mul_(f).add_(mean * (1.0 - f)).clamp_(0.0, bound)


def adjust_saturation(x: torch.Tensor, f: float, bound: float) -> None:
    x.lerp_(_luma(x), 1.0 - f).clamp_(0.0, bound)                # f * x + (1 - f) * luma


def adjust_hue(x: torch.Tensor, shift: float, bound: float) -> None:
    """Rotate the HSV hue of ``[3, N]`` RGB planes by ``shift`` turns, in place.

    The same hexcone model as the reference (``rgb_to_hsv``/``hsv_to_rgb``, and
    torchvision's ``adjust_hue``): value (max) and chroma (max - min) are kept, and channel
    ``n`` (R 5, G 3, B 1) becomes ``max - chroma * clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + 6 * hue) mod 6``. The hue sector is selected with 0/1 masks made by
    ``1 - sign(max - channel)`` and ``mod`` is ``k - 6 * floor(k / 6)``: all vectorize on
    CPU, where ``torch.where``, comparisons to bool and ``remainder`` cost 3-20x more per
    element. Ties between channels give the same hue either way.
    """
    r, g, b = x[0], x[1], x[2]
    vmax = x.amax(0)
    chroma = vmax - x.amin(0)
    red_max = torch.rsub((vmax - r).sign_(), 1.0)                # 1 where red is the max, else 0
    green_max = torch.rsub((vmax - g).sign_(), 1.0).mul_(1.0 - red_max)
    # 6 * hue before the division by chroma: (g-b) if red is max, (b-r) + 2c if green, (r-g) + 4c if blue.
    h6 = (r - g).add_(chroma, alpha=4.0)
    h6.add_(red_max * (g - b).sub_(h6))
    h6.add_(green_max.mul_(torch.sub(b + g, r + chroma, alpha=2.0)))     # (b-r+2c) - (r-g+4c)
    h6.div_(chroma.clamp(min=1e-12)).add_(6.0 * shift)        # gray: 0 / tiny = 0, and chroma 0 below
    k = h6 + torch.tensor([[5.0], [3.0], [1.0]])               # channel phases n: [3, N]
    k.sub_(torch.floor(k * (1.0 / 6.0)), alpha=6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    torch.sub(vmax, ramp.mul_(chroma), out=x)


def _jitter_chain(x: torch.Tensor, ops: list[int], factors: list[float], bound: float) -> None:
    """Apply ColorJitter ops ``ops`` (0 brightness, 1 contrast, 2 saturation, 3 hue) in order."""
    for op, f in zip(ops, factors):
        if op == 0:
            adjust_brightness(x, f, bound)
        elif op == 1:
            adjust_contrast(x, f, bound)
        elif op == 2:
            adjust_saturation(x, f, bound)
        else:
            adjust_hue(x, f, bound)


_ADJUST = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


@functools.cache
def _scripted_chain():
    """:func:`_jitter_chain` compiled by TorchScript (once, on first use), or the Python
    function itself where TorchScript is unavailable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # TorchScript's deprecation notice
            return torch.jit.script(_jitter_chain)
    except Exception:  # noqa: BLE001 - no sources (frozen app), or a TorchScript without these ops
        return _jitter_chain


def jitter_chain(x: torch.Tensor, ops: list[int], factors: list[float], bound: float) -> None:
    """:func:`_jitter_chain` through TorchScript: the same ops, one call, the GIL released
    (the fallback of :func:`render_sample` where :class:`gpuaug.native.CpuRender` cannot be built)."""
    _scripted_chain()(x, ops, factors, bound)


@dataclass
class SampleSteps:
    """What one sample does after its crop, in order: ``("flip", dim)``,
    ``("jitter", [(op, factor), ...], bound)``, ``("scale", mul, add)`` (in place, before a
    jitter) and last ``("affine", mul, add)``, which writes the output row."""

    steps: list
    out_dtype: torch.dtype

    def program(self) -> tuple[bool, bool, list]:
        """The steps as :meth:`gpuaug.native.CpuRender.render` takes them: (flip top-bottom,
        flip left-right, steps). Flips commute with the per-pixel color ops and contrast's
        mean, so they all move to the load; two flips of one axis cancel."""
        flips = {-2: False, -1: False}
        steps = []
        for step in self.steps:
            if step[0] == "flip":
                flips[step[1]] ^= True
            elif step[0] == "jitter":
                steps.extend((op, factor, step[2]) for op, factor in step[1])
            else:                                           # "scale" or "affine": x * mul + add
                steps.append((STEP_AFFINE, step[1].flatten().tolist(), step[2].flatten().tolist()))
        return flips[-2], flips[-1], steps


def render_sample(img: torch.Tensor, box: tuple[int, int, int, int] | None, size: tuple[int, int], mode: str,
                  sample: SampleSteps, out: torch.Tensor, window: tuple[int, int, int, int] | None = None) -> None:
    """Crop ``box`` of ``img`` (``[3, H, W]`` uint8, any strides; ``None``: all of it),
    resize it to ``size`` in uint8, take ``window`` (top, left, height, width) of that
    (zeros where it reaches outside, as CenterCrop pads), run ``sample``'s steps and write
    the result into ``out`` (``[3, h, w]``): after the resize, in one call to
    :class:`gpuaug.native.CpuRender` where it builds, else step by step in torch."""
    top, left, h, w = box if box is not None else (0, 0, *img.shape[-2:])
    region = img[None, :, top:top + h, left:left + w]
    if (h, w) != tuple(size):
        if not region.is_contiguous(memory_format=torch.channels_last):
            region = region.contiguous(memory_format=torch.channels_last)   # the vectorized layout
        region = F.interpolate(region, size=size, mode=mode, antialias=True, align_corners=False)
    x8 = region[0]
    if window is not None:
        # CenterCrop's own window (zero padding outside); a padded window comes back as
        # float32 holding whole numbers, so uint8 again is exact
        x8 = extract_region(x8, *window).to(torch.uint8)
        size = window[2:]
    native = CpuRender.get()
    if native is not None and out.dtype in OUT_DTYPES:
        native.render(x8, *sample.program(), out)
        return
    x = None                                   # float32 [3, N] once a step computes
    for step in sample.steps:
        kind = step[0]
        if kind == "flip":
            if x is None:
                x8 = x8.flip(step[1])
            else:
                x = x.view(3, *size).flip(step[1]).reshape(3, -1)
        elif kind in ("jitter", "scale"):
            if x is None:
                x = torch.empty((3, size[0] * size[1]), dtype=torch.float32)
                x.view(3, *size).copy_(x8)
            if kind == "scale":
                x.mul_(step[1]).add_(step[2])
                continue
            jitter_chain(x, [op for op, _ in step[1]], [f for _, f in step[1]], step[2])
        elif kind == "affine":
            src = x.view(3, *size) if x is not None else x8
            if out.dtype == torch.float32:
                torch.mul(src, step[1], out=out).add_(step[2])     # 3x faster than a broadcast addcmul
            else:
                out.copy_(torch.mul(src, step[1]).add_(step[2]))
            return
    if x is None:
        out.copy_(x8)
    elif out.dtype == torch.uint8:
        out.copy_(x.view(3, *size).round().clamp_(0, 255))
    else:
        out.copy_(x.view(3, *size))


# -- the plan for a pipeline --------------------------------------------------------------------

@dataclass
class SampleGeometry:
    """Where one sample's output comes from: ``box`` of the upright source (``None``: the
    whole image) resized to ``resize``, then ``window`` (top, left, height, width) of that
    (``None``: all of it)."""

    box: tuple[int, int, int, int] | None
    resize: tuple[int, int]
    window: tuple[int, int, int, int] | None = None


class FastCpuPath:
    """How the fast path runs a pipeline: the geometry it starts with (the first ``first``
    ops), the ops it renders per sample (``head``) and the logical dtype after them; the
    ops after ``head`` run through the reference.

    The geometry is a bilinear or bicubic antialiased :class:`RandomResizedCrop` (train
    recipes), or a :class:`Resize` followed by a :class:`CenterCrop` or to a fixed
    ``(h, w)`` (eval recipes). ``for_pipeline`` returns ``None`` for any other start (the
    loader then runs the reference).
    """

    #: Decode JPEGs at a DCT scale when the crop allows it (see the module docstring: off
    #: because it misses the full-decode tolerance).
    dct_scaling: bool = False
    #: Decode only each JPEG's crop box (:func:`gpuaug.decode.decode_region`): the same
    #: pixels as a full decode, so on by default.
    region_decode: bool = True

    def __init__(self, transforms: list, first: int, head: int, dtype: torch.dtype):
        self.transforms = transforms
        self.first = first          # geometry ops at the start
        self.head = head
        self.dtype = dtype          # logical dtype after the head

    @property
    def mode(self) -> str:
        """The resize's interpolation."""
        return self.transforms[0].mode

    @property
    def size(self) -> tuple[int, int]:
        """The output's ``(h, w)``."""
        return tuple(self.transforms[self.first - 1].size)

    @staticmethod
    def _geometry_ops(ops: list) -> int:
        """How many leading ops form a geometry the fast path takes (0: none)."""
        if not ops or type(ops[0]) not in (RandomResizedCrop, Resize) or ops[0].mode not in ("bilinear", "bicubic") \
                or not ops[0].antialias:
            return 0
        if type(ops[0]) is RandomResizedCrop:
            return 1
        if len(ops) > 1 and type(ops[1]) is CenterCrop:
            return 2
        fixed = isinstance(ops[0].size, (list, tuple)) and len(ops[0].size) == 2
        return 1 if fixed else 0                # a shorter-side Resize alone leaves sizes ragged

    @classmethod
    def for_pipeline(cls, pipe: Compose) -> "FastCpuPath | None":
        ops = pipe.transforms
        first = cls._geometry_ops(ops)
        if not first:
            return None
        dtype, head = torch.uint8, first
        for op in ops[first:]:
            if isinstance(op, (RandomHorizontalFlip, RandomVerticalFlip)):
                pass
            elif isinstance(op, ColorJitter):
                pass
            elif isinstance(op, ToDtype):
                to_float = op.dtype != torch.uint8
                if dtype == torch.uint8 and to_float and not op.scale:
                    break                      # unscaled: 0..255 values as floats, left to the reference
                if dtype != torch.uint8 and not to_float:
                    break                      # float -> uint8 truncates: the reference does it
                dtype = op.dtype
            elif isinstance(op, Normalize):
                if dtype == torch.uint8 or len(op.mean) not in (1, 3) or len(op.std) not in (1, 3):
                    break
            else:
                break
            head += 1
        return cls(ops, first, head, dtype)

    def geometry(self, params: PipelineParams) -> list[SampleGeometry]:
        """Each row's :class:`SampleGeometry`, from the batch's parameters."""
        geometry = params.per_op[0]
        if type(self.transforms[0]) is RandomResizedCrop:
            return [SampleGeometry(tuple(box), self.size) for box in geometry.boxes()]
        sizes = torch.stack([geometry.height, geometry.width], 1).tolist()
        if self.first == 1:
            return [SampleGeometry(None, tuple(size)) for size in sizes]
        windows = params.per_op[1].boxes()
        return [SampleGeometry(None, tuple(size), tuple(window)) for size, window in zip(sizes, windows)]

    @property
    def whole(self) -> bool:
        return self.head == len(self.transforms)

    def output(self, n: int, channels_last: bool, buffers: "BatchBuffers | None" = None) -> torch.Tensor:
        """The batch the tasks write into: final dtype when the head is the whole pipeline,
        else float32 working values for the reference ops after it; taken from ``buffers``
        when given."""
        h, w = self.size
        dtype = self.dtype if self.whole else torch.float32
        memory_format = torch.channels_last if channels_last and self.whole else torch.contiguous_format
        if buffers is not None:
            return buffers.take((n, 3, h, w), dtype, memory_format)
        return torch.empty((n, 3, h, w), dtype=dtype, memory_format=memory_format)

    def batch_steps(self, params: PipelineParams) -> list[SampleSteps]:
        """Each row's steps after the crop, from the batch's parameters (read out of the
        parameter tensors once per batch: per-row tensor indexing would cost more than a
        row's color ops)."""
        n = len(params.input_sizes)
        steps: list[list] = [[] for _ in range(n)]
        bound = 255.0
        mul = add = None                    # pending per-channel affine (ToDtype scale, Normalize)
        for op, p in zip(self.transforms[self.first:self.head], params.per_op[self.first:self.head]):
            if isinstance(op, (RandomHorizontalFlip, RandomVerticalFlip)):
                for row, flip in zip(steps, p.apply.tolist()):
                    if flip:
                        row.append(("flip", op.dim))
            elif isinstance(op, ColorJitter):
                factors = [None if f is None else f.tolist() for f in p.factors()]
                if all(f is None for f in factors):
                    continue
                if mul is not None:            # a ToDtype/Normalize before the jitter: apply it first
                    for row in steps:
                        row.append(("scale", mul.reshape(3, 1), add.reshape(3, 1)))
                    mul = add = None
                for b, (row, order) in enumerate(zip(steps, p.order.tolist())):
                    row.append(("jitter", [(k, factors[k][b]) for k in order if factors[k] is not None], bound))
            elif isinstance(op, ToDtype):
                if op.scale and op.dtype != torch.uint8 and bound == 255.0:
                    mul, add = _compose(mul, add, torch.full((3,), 1.0 / 255.0), torch.zeros(3))
                    bound = 1.0
            elif isinstance(op, Normalize):
                mean = torch.tensor(op.mean, dtype=torch.float32).expand(3)
                std = torch.tensor(op.std, dtype=torch.float32).expand(3)
                mul, add = _compose(mul, add, 1.0 / std, -mean / std)
        if mul is not None:
            final = ("affine", mul.reshape(3, 1, 1), add.reshape(3, 1, 1))
            for row in steps:
                row.append(final)
        dtype = self.dtype if self.whole else torch.float32
        return [SampleSteps(row, dtype) for row in steps]

    def finish(self, out: torch.Tensor, params: PipelineParams) -> torch.Tensor:
        """Run the ops after the head (reference) on the rendered batch."""
        if self.whole:
            return out
        state = ImageState(out, self.dtype)
        for op, p in zip(self.transforms[self.head:], params.per_op[self.head:]):
            state = op.apply(state, p)
        return finalize(state, True)


def _compose(mul, add, mul2, add2):
    """The affine ``x * mul2 + add2`` applied after ``x * mul + add``."""
    if mul is None:
        return mul2.float(), add2.float()
    return mul * mul2, add * mul2 + add2


# -- recycled output batches --------------------------------------------------------------------

def _storage_users(t: torch.Tensor) -> int:
    """How many tensors and storage objects hold ``t``'s memory, less the one this call
    makes; a large number where torch does not say (then nothing is reused)."""
    use_count = getattr(torch._C, "_storage_Use_Count", None)
    return 1 << 30 if use_count is None else use_count(t.untyped_storage()._cdata) - 1


class BatchBuffers:
    """Output batches that are written again once nobody holds them.

    A train batch of 64 x 3 x 224 x 224 float32 is 38.5 MB: above glibc's largest mmap
    threshold (32 MB), so a fresh one is mapped for every batch and unmapped when freed, and
    the first write to each of its 9,400 pages faults into the kernel. On the 2-core bench
    that was 0.3 ms of the 2.7 ms of CPU per image. The pool keeps up to ``keep`` buffers of
    each of the last two shapes asked for (an epoch's full batches and its shorter last
    one) and hands out a *view* of one: the view is the caller's, and a buffer is reused
    only when no tensor but the pool's own refers to its memory any more (a user who keeps
    a batch, a row of it or a view of it keeps its memory from being overwritten). When
    every kept buffer is held, a new one takes the place of the one held longest, so
    batches a user keeps leave the pool and never block reuse. Every row of a reused
    buffer is written again before it is handed out.

    Example:
        >>> pool = BatchBuffers(keep=2)
        >>> a = pool.take((2, 3), torch.float32)
        >>> ptr = a.data_ptr(); del a
        >>> pool.take((2, 3), torch.float32).data_ptr() == ptr          # free again: reused
        True
        >>> b = pool.take((2, 3), torch.float32); row = b[0]; del b
        >>> pool.take((2, 3), torch.float32).data_ptr() == row.data_ptr()   # a row is still held
        False
    """

    SHAPES = 2

    def __init__(self, keep: int):
        self.keep = keep
        self._buffers: dict[tuple, list[torch.Tensor]] = {}     # by (shape, dtype, format), oldest first
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype: torch.dtype,
             memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        key = (tuple(shape), dtype, memory_format)
        with self._lock:
            kept = self._buffers.pop(key, [])
            self._buffers[key] = kept                             # the newest shape now
            while len(self._buffers) > self.SHAPES:
                del self._buffers[next(iter(self._buffers))]
            for buf in kept:
                if _storage_users(buf) == 1:
                    return buf[:]
            buf = torch.empty(shape, dtype=dtype, memory_format=memory_format)
            kept.append(buf)
            if len(kept) > self.keep:
                del kept[0]             # held elsewhere for longest: its holder keeps it, the pool lets go
            return buf[:]

    def clear(self) -> None:
        with self._lock:
            self._buffers.clear()
