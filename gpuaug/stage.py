"""The device stage: one packed batch in, the augmented batch out.

Runs in the main process (on the prefetch thread). Steps, in data-flow order:

1. take each sample's bytes as a view into the packed buffer and decode the batch
   (pre-decoded pixels only need their channels made RGB);
2. apply the ``on_error`` policy to samples that failed in the worker or in decode;
3. draw every op's parameters for the batch from (seed, epoch, dataset index);
4. render them (reference transforms for now) into one dense batch on the device;
5. put the images back into the dataset's own sample structure.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .collate import gather_rows
from .batch_decode import BatchDecoder
from .cpu_path import BatchBuffers, FastCpuPath, pick_scale, render_sample, scaled_box
from .decode import _decode, decode_region, decode_scaled, flip_image
from .errors import BadSample, BadSampleError, DecodeError
from .pack import BAD, FORMAT, HEIGHT, RAW, WIDTH, RawBatch, inspect_sample
from .rng import SampleKeys
from .sources import Layout, RawSample
from .targets import collate_targets, has_spatial_targets, transform_targets
from .timeline import DISABLED
from .transforms import Compose
from .webdataset import decode_label

ON_ERROR = ("raise", "skip", "resample")
#: Stream of the counter-based generator reserved for choosing replacement samples.
RESAMPLE_STREAM = (1 << 16) - 1
MAX_RESAMPLE_TRIES = 16


def to_rgb(img: torch.Tensor) -> torch.Tensor:
    """``[C, H, W]`` uint8 with 1-4 channels to 3-channel RGB (gray expanded, alpha dropped)."""
    c = img.shape[0]
    if c in (1, 2):
        return img[:1].expand(3, -1, -1)
    if c in (3, 4):
        return img[:3]
    raise DecodeError(f"image has {c} channels; expected 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA)")


@dataclass
class StageResult:
    """The device stage's output for one batch."""

    batch: Any                        # images, or the dataset's structure with images in place
    indices: torch.Tensor             # [B'] dataset indices of the rows handed out
    bad: list[BadSample] = field(default_factory=list)


class DeviceStage:
    """Decode, resolve bad samples, sample parameters and augment one :class:`RawBatch`.

    Args:
        transform: the pipeline (``None``: decode only, uint8 out).
        device: where the output lives.
        seed: the loader's seed.
        on_error: ``"raise"``, ``"skip"`` or ``"resample"``.
        decoder: the batch decoder (device decoder for JPEGs, CPU pool for the rest),
            returning images on ``device``.
        channels_last: return channels_last memory format.
        backend: fused-kernel backend (``None``: torch reference only).
        fetch: ``fetch(index) -> RawSample`` for ``"resample"`` on map-style datasets
            (``None``: replacements are drawn from the good samples of the same batch).
        dataset_size: number of samples ``fetch`` can take.
        max_pixels: decompression-bomb limit for samples fetched here.
        fast_cpu: on a CPU device with the CPU decoder, render pipelines that start with a
            RandomResizedCrop, or a Resize and CenterCrop, through :mod:`gpuaug.cpu_path`
            (uint8 resize, color per sample, one task per sample) instead of
            decode-then-reference.
        keep_batches: output batches the fast CPU path keeps to write again once nobody
            holds them (:class:`gpuaug.cpu_path.BatchBuffers`; 0: a new one per batch).
    """

    def __init__(self, transform: Compose | None, device: torch.device, seed: int, on_error: str,
                 decoder: BatchDecoder, channels_last: bool = False, backend=None,
                 fetch: Callable[[int], RawSample] | None = None, dataset_size: int = 0,
                 max_pixels: int = 0, fast_cpu: bool = False, keep_batches: int = 0):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.transform = transform if transform is not None else Compose([])
        self.device = device
        self.seed = seed
        self.on_error = on_error
        self.decoder = decoder
        self.channels_last = channels_last
        self.backend = backend
        self.timeline = DISABLED
        self.fetch = fetch
        self.dataset_size = dataset_size
        self.max_pixels = max_pixels
        self._fast_allowed = fast_cpu and backend is None and device.type == "cpu"
        self._fast_plan: tuple[tuple, FastCpuPath | None] = ((), None)
        self.buffers = BatchBuffers(keep_batches) if self._fast_allowed and keep_batches else None

    @property
    def fast(self) -> FastCpuPath | None:
        """The fast CPU path's plan for the pipeline as it is now, or ``None`` (the reference
        flow: also with a batched decoder). Planned again when the pipeline's ops change: a
        notebook may edit ``loader.transform`` in place between passes."""
        if not self._fast_allowed or self.decoder.batched is not None:
            return None
        ops = tuple(map(id, self.transform.transforms))
        if self._fast_plan[0] != ops:
            self._fast_plan = (ops, FastCpuPath.for_pipeline(self.transform))
        return self._fast_plan[1]

    # -- 1. decode ---------------------------------------------------------------------
    def decode(self, raw: RawBatch) -> tuple[list[torch.Tensor | None], dict[int, str]]:
        """Decoded upright RGB images per row (None where bad) and the reasons of bad rows."""
        images, failed, flips = self.decode_oriented(raw)
        for b, (flip_y, flip_x) in flips.items():
            images[b] = flip_image(images[b], flip_y, flip_x)
        return images, failed

    def decode_oriented(self, raw: RawBatch):
        """Like :meth:`decode`, plus ``{row: (flip top-bottom, flip left-right)}`` still to
        apply to device-decoded EXIF-rotated JPEGs (the fused stage folds them in)."""
        images: list[torch.Tensor | None] = [None] * len(raw)
        failed = {b: err for b, err in enumerate(raw.errors) if err is not None}
        encoded = []
        for b in range(len(raw)):
            if b in failed:
                continue
            fmt = int(raw.info[b, FORMAT])
            if fmt == RAW:
                try:
                    images[b] = self.decoder.upload(to_rgb(raw.pixels(b)))
                except DecodeError as e:
                    failed[b] = str(e)
            elif fmt != BAD:
                encoded.append(b)
        decoded, pending = self.decoder.decode_oriented([(raw.sample_bytes(b), raw.image_info(b)) for b in encoded])
        flips = {}
        for b, result, flip in zip(encoded, decoded, pending):
            if isinstance(result, Exception):
                failed[b] = str(result)
            else:
                images[b] = result
                if any(flip):
                    flips[b] = flip
        return images, failed, flips

    # -- 2. bad samples ------------------------------------------------------------------
    def resolve_bad(self, raw: RawBatch, images, failed, epoch: int):
        """Apply ``on_error``; returns (images, indices, targets, bad records)."""
        indices = raw.indices.tolist()
        bad = [BadSample(indices[b], raw.paths[b], failed[b]) for b in sorted(failed)]
        if not bad:
            return images, raw.indices, raw.targets, bad
        if self.on_error == "raise":
            raise BadSampleError(bad[0])
        example = getattr(raw, "example_rest", None)
        if self.on_error == "skip":
            rows = [b for b in range(len(raw)) if b not in failed]
            targets = None if raw.targets is None else gather_rows(raw.targets, example, rows)
            return [images[b] for b in rows], raw.indices[rows], targets, bad
        return self._resample(raw, images, failed, epoch, bad)

    def _resample(self, raw: RawBatch, images, failed, epoch, bad):
        """Replace each bad row by another sample; the row keeps its own random key."""
        rows, extra_rests = list(range(len(raw))), []
        good = [b for b in range(len(raw)) if b not in failed]
        for k, b in enumerate(sorted(failed)):
            image, rest = self._replacement(int(raw.indices[b]), epoch, raw, images, good, bad)
            images[b] = image
            rows[b] = len(raw) + k
            extra_rests.append(rest)
        targets = raw.targets
        if targets is not None:
            targets = gather_rows(targets, raw.example_rest, rows, collate_targets(extra_rests))
        return images, raw.indices, targets, bad

    def _replacement(self, index: int, epoch: int, raw: RawBatch, images, good: list[int], bad):
        keys = SampleKeys(self.seed, epoch, torch.tensor([index]))
        draws = keys.uniform(RESAMPLE_STREAM, MAX_RESAMPLE_TRIES)[0].tolist()
        for u in draws:
            if self.fetch is None or self.dataset_size == 0:
                if not good:
                    break
                b = good[int(u * len(good))]
                return images[b], _row_rest(raw, b)
            candidate = self.fetch(int(u * self.dataset_size))
            info, error = inspect_sample(candidate, self.max_pixels)
            if error is None:
                try:
                    if candidate.pixels is not None:
                        return self.decoder.upload(to_rgb(candidate.pixels)), candidate.rest
                    data = torch.frombuffer(bytearray(candidate.data), dtype=torch.uint8)
                    result = self.decoder.decode([(data, info)])[0]
                    if not isinstance(result, Exception):
                        return result, candidate.rest
                    error = str(result)
                except DecodeError as e:
                    error = str(e)
            bad.append(BadSample(candidate.index, candidate.path, error))
        raise BadSampleError(BadSample(index, raw.paths[raw.indices.tolist().index(index)],
                                       f"no usable replacement found in {MAX_RESAMPLE_TRIES} tries"))

    def mix_labels(self, images, targets, layout: Layout, indices: torch.Tensor, epoch: int):
        """Run the label-mixing ops (MixUp, CutMix) on the batch and its labels.

        The labels are the sample's first other field (tuple samples) or its ``label``,
        ``labels``, ``target`` or ``cls`` entry (dict samples). Tar shards' ``.cls``
        members arrive as bytes: they are read as integer classes first.
        """
        if not isinstance(images, torch.Tensor):
            raise ValueError("MixUp/CutMix need images of one size: put a crop/resize before them")
        where = _label_slot(layout, targets)
        labels = targets[where]
        if isinstance(labels, (list, tuple)) and labels and isinstance(labels[0], (bytes, str)):
            labels = torch.tensor([decode_label(v) for v in labels])
        labels = labels.to(images.device)
        for mixer in self.transform.label_mixers:
            images, labels = mixer(images, labels, seed=self.seed, epoch=epoch, indices=indices)
        targets = dict(targets) if isinstance(targets, dict) else list(targets)
        targets[where] = labels
        return images, targets

    # -- 3-5. parameters, augmentation, structure ------------------------------------------
    def augment(self, images: list[torch.Tensor], indices: torch.Tensor, epoch: int, batch: int = 0,
                pre_flips: torch.Tensor | None = None):
        images = [im.to(self.device, non_blocking=True) for im in images]   # no-op once decoded there
        # Parameters are drawn on the host from sizes alone: no device round trip, and
        # the fused path packs them into one descriptor upload.
        with self.timeline.span("parameters", batch):
            sizes = torch.tensor([list(im.shape[-2:]) for im in images], dtype=torch.int64).reshape(-1, 2)
            keys = SampleKeys(self.seed, epoch, indices.cpu())
            params = self.transform.make_pipeline_params(keys, sizes, channels=3)
        out = self.transform.apply_params(images, params, stack=True, backend=self.backend,
                                          channels_last=self.channels_last, timeline=self.timeline,
                                          batch=batch, pre_flips=pre_flips)
        if isinstance(out, torch.Tensor) and self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out, params

    def __call__(self, raw: RawBatch, epoch: int, batch: int = 0) -> StageResult:
        timeline = self.timeline
        timeline.add("worker read+pack", batch, *raw.worker_span)
        if self.fast is not None:
            out, params, indices, targets, bad = self.render_fast(raw, epoch, batch)
        else:
            with timeline.span("decode", batch):
                images, failed, flips = self.decode_oriented(raw)
                row_flips = [flips.get(b, (False, False)) for b in range(len(raw))]
                images, indices, targets, bad = self.resolve_bad(raw, images, failed, epoch)
                pre_flips = _surviving_flips(row_flips, failed, self.on_error)
            out, params = self.augment(images, indices, epoch, batch, pre_flips)
        if self.transform.label_mixers:
            with self.timeline.span("other ops", batch):
                out, targets = self.mix_labels(out, targets, raw.layout, indices, epoch)
        if targets is not None and has_spatial_targets(raw.example_rest):
            # Masks and boxes follow the images through every geometric op.
            targets = transform_targets(targets, self.transform.point_maps(params))
        targets = _map_tensors(targets, self.decoder.upload)   # non_blocking on CUDA
        return StageResult(rebuild(raw.layout, out, targets), indices, bad)

    def replay(self, raw: RawBatch, epoch: int) -> torch.Tensor:
        """Render the one sample of ``raw`` as a batch of ``epoch`` rendered it."""
        if self.fast is not None:
            out, *_ = self.render_fast(raw, epoch, 0, on_error="raise", recycle=False)
            return out[0]
        images, failed = self.decode(raw)
        if failed:
            raise BadSampleError(BadSample(int(raw.indices[0]), raw.paths[0], failed[0]))
        return self.augment(images, raw.indices, epoch)[0][0]

    # -- the fast CPU path ------------------------------------------------------------------
    def clear_buffers(self) -> None:
        """Let go of the recycled output batches (those still held elsewhere live on there)."""
        if self.buffers is not None:
            self.buffers.clear()

    def render_fast(self, raw: RawBatch, epoch: int, batch: int = 0, on_error: str | None = None,
                    recycle: bool = True):
        """Decode and augment each sample in one task on the CPU pool (:mod:`gpuaug.cpu_path`).

        The parameters are drawn from the header sizes first, so only each JPEG's crop box is
        decoded (or, with ``dct_scaling``, at the DCT scale its crop allows); bad rows then
        follow ``on_error`` as in the reference flow (a replacement is decoded in full and
        drawn with the row's own key and its own size).
        With ``recycle`` the batch is written into a free buffer of :attr:`buffers`.

        Returns:
            (images ``[B', C, h, w]``, parameters of those rows, their indices, targets, bad records)
        """
        fast, n = self.fast, len(raw)
        with self.timeline.span("parameters", batch):
            sizes = raw.info[:, [HEIGHT, WIDTH]].to(torch.int64).clamp(min=1)
            keys = SampleKeys(self.seed, epoch, raw.indices.cpu())
            params = self.transform.make_pipeline_params(keys, sizes, channels=3)
        out = fast.output(n, self.channels_last, self.buffers if recycle else None)
        geometry, steps = fast.geometry(params), fast.batch_steps(params)
        failed = {b: err for b, err in enumerate(raw.errors) if err is not None}
        rows = [b for b in range(n) if b not in failed and int(raw.info[b, FORMAT]) != BAD]
        infos = {b: raw.image_info(b) for b in rows}

        def task(b: int):
            try:
                where = geometry[b]
                img, box = self._decode_for(raw, b, infos[b], where.box)
                render_sample(img, box, where.resize, fast.mode, steps[b], out[b], where.window)
            except DecodeError as e:
                return str(e)
            return None

        with self.timeline.span("decode", batch):      # decode and augment, interleaved per sample
            for b, err in zip(rows, self.decoder.cpu.map(task, rows)):
                if err is not None:
                    failed[b] = err
        indices, targets = raw.indices, raw.targets
        bad = [BadSample(int(raw.indices[b]), raw.paths[b], failed[b]) for b in sorted(failed)]
        if bad:
            policy = on_error or self.on_error
            if policy == "raise":
                raise BadSampleError(bad[0])
            if policy == "skip":
                keep = [b for b in range(n) if b not in failed]
                out, params = out[keep], params.select(torch.tensor(keep, dtype=torch.int64))
                indices = raw.indices[keep]
                targets = None if raw.targets is None else gather_rows(raw.targets, raw.example_rest, keep)
            else:
                out, params, targets = self._resample_fast(raw, out, params, failed, epoch, bad)
        with self.timeline.span("other ops", batch):
            out = fast.finish(out, params)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out, params, indices, targets, bad

    def _decode_for(self, raw: RawBatch, b: int, info, box):
        """Row ``b`` decoded as its crop needs: ``(uint8 image, crop box in its pixels)``."""
        if int(raw.info[b, FORMAT]) == RAW:
            return to_rgb(raw.pixels(b)), box
        data, fast = raw.sample_bytes(b), self.fast
        scale = 1
        if box is not None and fast.dct_scaling and info.format == "jpeg" and not info.cmyk:
            scale = pick_scale(box[2], box[3], *fast.size)
        if scale > 1:
            try:
                img = decode_scaled(data, info, scale)
            except DecodeError:
                pass        # the full decode below says what is wrong, or succeeds
            else:
                self.decoder.cpu.count("pil")
                return img, scaled_box(*box, info.height, info.width, scale, info.orientation)
        elif box is not None and fast.region_decode:
            try:
                img = decode_region(data, info, *box)
            except DecodeError:
                img = None  # the full decode below says what is wrong, or succeeds
            if img is not None:
                self.decoder.cpu.count("libjpeg-region")
                return img, (0, 0, box[2], box[3])
        img, backend = _decode(data, info, dense=False)
        self.decoder.cpu.count(backend)
        return img, box

    def _resample_fast(self, raw: RawBatch, out, params, failed, epoch, bad):
        """``on_error="resample"`` for the fast path: each bad row is re-rendered from a
        replacement, with the row's key and parameters drawn for the replacement's size."""
        good = [b for b in range(len(raw)) if b not in failed]
        images: list = [None] * len(raw)
        if self.fetch is None or self.dataset_size == 0:       # replacements come from this batch's good rows
            for g in good:
                images[g] = self._decode_for(raw, g, raw.image_info(g), None)[0]     # RAW rows: their pixels
        rows, extra_rests, sizes = list(range(len(raw))), [], params.input_sizes.clone()
        replacements = {}
        for k, b in enumerate(sorted(failed)):
            image, rest = self._replacement(int(raw.indices[b]), epoch, raw, images, good, bad)
            rows[b] = len(raw) + k
            extra_rests.append(rest)
            replacements[b] = image
            sizes[b] = torch.tensor(image.shape[-2:])
        keys = SampleKeys(self.seed, epoch, raw.indices.cpu())
        params = self.transform.make_pipeline_params(keys, sizes, channels=3)
        geometry, steps = self.fast.geometry(params), self.fast.batch_steps(params)
        for b, image in replacements.items():     # decoded in full, drawn for its own size with the row's key
            where = geometry[b]
            render_sample(image, where.box, where.resize, self.fast.mode, steps[b], out[b], where.window)
        targets = raw.targets
        if targets is not None:
            targets = gather_rows(targets, raw.example_rest, rows, collate_targets(extra_rests))
        return out, params, targets


def _row_rest(raw: RawBatch, b: int):
    """One row's uncollated-equivalent fields, as a 1-row collated batch sliced back."""
    if raw.targets is None:
        return None
    one = gather_rows(raw.targets, raw.example_rest, [b])
    return _uncollate_first(one, raw.example_rest)


def _uncollate_first(collated, example):
    if isinstance(example, dict):
        return {k: _uncollate_first(collated[k], example[k]) for k in example}
    if isinstance(example, (tuple, list)):
        cols = [_uncollate_first(c, e) for c, e in zip(collated, example)]
        return type(example)(*cols) if hasattr(example, "_fields") else type(example)(cols)
    if isinstance(collated, torch.Tensor):
        value = collated[0]
        return value if isinstance(example, torch.Tensor) else value.item() if value.dim() == 0 else value
    return collated[0]


LABEL_KEYS = ("label", "labels", "target", "cls")


def _label_slot(layout: Layout, targets):
    """Where a batch's class labels are: a position in the fields, or a dict key."""
    if layout.kind == "sequence" and targets:
        return 0
    if layout.kind == "mapping" and targets:
        for key in LABEL_KEYS:
            if key in targets:
                return key
    raise ValueError("MixUp/CutMix need class labels: the sample's first other field (tuple samples) or a "
                     f"{'/'.join(LABEL_KEYS)} entry (dict samples)")


def _surviving_flips(row_flips, failed: dict, on_error: str) -> torch.Tensor | None:
    """``[B', 2]`` pending EXIF flips of the rows that remain after ``on_error``
    (replacements come upright from the CPU path: no flip)."""
    if not any(any(f) for f in row_flips):
        return None
    if on_error == "skip":
        row_flips = [f for b, f in enumerate(row_flips) if b not in failed]
    return torch.tensor(row_flips, dtype=torch.bool).reshape(-1, 2)


def _map_tensors(value, fn):
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        mapped = [_map_tensors(v, fn) for v in value]
        return type(value)(*mapped) if hasattr(value, "_fields") else type(value)(mapped)
    return value


def rebuild(layout: Layout, images, targets):
    """Put the batch of images back where the dataset had its image field."""
    if layout.kind == "image":
        return images
    if layout.kind == "mapping":
        out = {layout.key: images}
        out.update(targets or {})
        return out
    fields = list(targets) if targets is not None else []
    fields.insert(layout.key, images)
    if layout.sample_type is not None:
        return layout.sample_type(*fields)
    return fields
