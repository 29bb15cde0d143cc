"""``gpuaug.DataLoader``: torch's DataLoader with decoding and augmentation moved to the device stage.

Workers run :mod:`gpuaug.sources` (read bytes) and :mod:`gpuaug.pack` (one buffer per
batch); the main process runs :class:`gpuaug.stage.DeviceStage` on a background
thread (:mod:`gpuaug.prefetch`) one batch ahead of the training loop.
"""
from __future__ import annotations

import functools
import itertools
import signal
import time
import warnings
import weakref
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from .batch_decode import DECODERS, BatchDecoder, probe_applies_exif
from .decode import CpuDecoder
from .device import runtime_for
from .errors import BadSample, BadSampleError
from .fused import FusedUnavailable, HostBackend, cuda_backend
from .pack import DEFAULT_MAX_IMAGE_PIXELS, RawBatch, pack_batch
from .prefetch import Prefetcher
from .rng import random_bits
from .sampling import build_batch_sampler, distributed_world, local_device
from .sources import SampleReader
from .stage import DeviceStage
from .timeline import Timeline
from .transforms import Compose, Transform


class _RawMapDataset(Dataset):
    """The user's map-style dataset, read as raw samples (runs in workers)."""

    def __init__(self, reader: SampleReader):
        self.reader = reader

    def __len__(self) -> int:
        return len(self.reader.dataset)

    def __getitem__(self, index: int):
        return self.reader.read(index)


class _RawIterableDataset(IterableDataset):
    """The user's iterable dataset, read as raw samples and split over ranks and workers.

    See :mod:`gpuaug.sampling`: sample ``k`` of the stream goes to global worker
    ``k % (world_size * num_workers)`` and ``k`` is its identity, unless the dataset
    splits itself (``splits_itself = True``) and names its samples with ``"__index__"``.
    """

    def __init__(self, reader: SampleReader, rank: int, world_size: int):
        self.reader = reader
        self.rank, self.world_size = rank, world_size

    def __iter__(self):
        dataset = self.reader.dataset
        if getattr(dataset, "splits_itself", False):
            for position, item in enumerate(dataset):
                raw = self.reader.convert(item, _sample_identity(item, position))
                if raw.path is None and isinstance(item, dict) and "__url__" in item and "__key__" in item:
                    raw.path = f"{item['__url__']}:{item['__key__']}"   # names the sample in errors
                yield raw
            return
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        total, me = self.world_size * workers, self.rank * workers + worker
        for position, item in enumerate(dataset):
            if position % total == me:
                yield self.reader.convert(item, position)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.reader.dataset, "set_epoch"):
            self.reader.dataset.set_epoch(epoch)


def _sample_identity(item, position: int) -> int:
    """A streamed sample's identity: its ``"__index__"`` (e.g. (shard, position)), else its position."""
    index = item.get("__index__") if isinstance(item, dict) else None
    if index is None:
        return position
    if isinstance(index, (tuple, list)):
        shard, pos = (int(v) for v in index)
        if not (0 <= pos < 2**32 and 0 <= shard < 2**31):
            raise ValueError(f"__index__ {tuple(index)} out of range: shard < 2**31, position < 2**32")
        return (shard << 32) | pos
    return int(index)


def _shuffle_seed(seed: int, epoch: int) -> int:
    # A stream of the counter-based generator no transform uses (index -1) so the
    # shuffling order is a pure function of (seed, epoch) too.
    bits = random_bits(seed, epoch, torch.tensor([-1]), op_position=(1 << 16) - 2, n=2)[0]
    return int(bits[0]) << 32 | int(bits[1])


class DataLoader:
    """Wrap any image ``Dataset``: workers read bytes, the device stage decodes and augments batches.

    Takes ``torch.utils.data.DataLoader``'s arguments (passed through unchanged) plus
    the ones below. Iterating yields the dataset's own sample structure with the image
    field replaced by the batch: ``(images, labels)`` for an ``ImageFolder``, a dict for
    dict samples, or just ``images``.

    Args:
        dataset: a map-style or iterable dataset whose image field is encoded bytes, a
            path, a ``{"bytes", "path"}`` dict, or pixels (PIL / numpy / tensor);
            ``ImageFolder``/``DatasetFolder`` files are read without their loader.
        transform: a :class:`gpuaug.transforms.Compose` (or single transform); ``None``
            hands out decoded uint8 images.
        device: where augmentation runs and batches live (default: ``"cuda"`` when
            available, else ``"cpu"``).
        fused: ``None`` (default) picks the fastest path: the fused CUDA kernels on
            CUDA (falling back to the torch reference with a warning when CuPy is
            missing); on CPU, for pipelines that start with a RandomResizedCrop (train) or
            a Resize and CenterCrop (eval), the per-sample fast path of
            :mod:`gpuaug.cpu_path` (uint8 resize, one task per sample on the decoder
            threads), else the torch reference. ``True`` requires
            the fused kernels (on CPU: the same kernel sources compiled by the host C++
            compiler, slower than the reference today); ``False`` forces the reference.
        seed: seed of the counter-based generator; a sample's augmentation is a pure
            function of (seed, epoch, dataset index), as is the shuffling order when
            no ``generator``/``sampler`` is given.
        channels_last: hand out channels_last tensors.
        on_error: what to do with an unreadable/undecodable sample: ``"raise"`` a
            :class:`BadSampleError` naming it, ``"skip"`` it (smaller batch), or
            ``"resample"`` another sample in its place (same batch size). Bad samples
            are listed in :attr:`bad_samples`.
        image_key: position (tuple samples, default 0) or key (dict samples) of the
            image field. Dict samples default to ``"image"``, else the first field named
            like an image file's extension (``"jpg"``, ``"png"``...: tar shards'
            members, :func:`gpuaug.sources.find_image_field`). A sample without that
            field is a bad sample (``on_error``), named with the fields it has.
        max_image_pixels: refuse larger images from their header, before decoding.
        decoder: ``"auto"`` (nvJPEG for JPEGs on CUDA, the CPU pool otherwise),
            ``"nvjpeg"`` (require it), ``"dali"`` (DALI's decoder) or ``"cpu"``;
            :attr:`decoder_counts` tells which backend decoded how many images.
        decode_threads: threads of the CPU decoder pool.
        prefetch_depth: batches prepared ahead of the consumer.
        rank, world_size: this process's share of the data; default: from
            ``torch.distributed`` when it is initialized (torchrun), else one process.
            Map-style datasets are sharded like ``DistributedSampler`` (same shuffle on
            every rank from (seed, epoch); padded by repeating samples, or trimmed with
            ``drop_last``, so every rank gets the same number of batches).

    Example:
        >>> import io, torch, gpuaug
        >>> from PIL import Image
        >>> from gpuaug import transforms as T
        >>> buf = io.BytesIO(); Image.new("RGB", (40, 30), "red").save(buf, "JPEG")
        >>> data = [(buf.getvalue(), k) for k in range(6)]
        >>> loader = gpuaug.DataLoader(data, batch_size=4, device="cpu", seed=0,
        ...     transform=T.Compose([T.RandomResizedCrop(16), T.ToDtype(torch.float32, scale=True)]))
        >>> [(imgs.shape, labels.tolist()) for imgs, labels in loader]
        [(torch.Size([4, 3, 16, 16]), [0, 1, 2, 3]), (torch.Size([2, 3, 16, 16]), [4, 5])]
    """

    def __init__(self, dataset, batch_size: int | None = 1, shuffle: bool | None = None, sampler=None,
                 batch_sampler=None, num_workers: int = 0, collate_fn=None, pin_memory: bool = False,
                 drop_last: bool = False, timeout: float = 0, worker_init_fn=None,
                 multiprocessing_context=None, generator: torch.Generator | None = None, *,
                 prefetch_factor: int | None = None, persistent_workers: bool = False,
                 pin_memory_device: str = "", in_order: bool = True,
                 transform: Transform | Sequence[Transform] | None = None,
                 device: str | torch.device | None = None, fused: bool | None = None, seed: int = 0,
                 channels_last: bool = False, on_error: str = "raise", image_key: int | str | None = None,
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, decoder: str = "auto",
                 decode_threads: int | None = None, prefetch_depth: int = 2,
                 rank: int | None = None, world_size: int | None = None):
        if collate_fn is not None:
            raise ValueError("gpuaug.DataLoader packs batches itself; collate_fn is not supported "
                             "(other fields go through torch's default_collate)")
        if batch_size is None and batch_sampler is None:
            raise ValueError("gpuaug.DataLoader needs batches: batch_size=None is not supported")
        self.dataset = dataset
        self.device = torch.device(device) if device is not None else local_device()
        self.transform = _as_compose(transform)
        self.backend = self._choose_backend(fused)
        self.fused = self.backend is not None
        self.seed = int(seed)
        self.on_error = on_error
        self.prefetch_depth = prefetch_depth
        self.bad_samples: list[BadSample] = []
        self.epoch = 0                      # the epoch of the current (or last) iteration
        self._next_epoch = 0

        self._reader = SampleReader(dataset, image_key)
        self._iterable = isinstance(dataset, IterableDataset)
        self.rank, self.world_size = distributed_world(rank, world_size)
        if getattr(dataset, "splits_itself", False) and hasattr(dataset, "world") \
                and tuple(dataset.world()) != (self.rank, self.world_size):
            raise ValueError(f"{type(dataset).__name__} splits itself as rank/world {tuple(dataset.world())}, "
                             f"but the loader was given {(self.rank, self.world_size)}: pass rank=/world_size= "
                             "to the dataset")
        # Our own generator, reseeded per epoch, makes the shuffle order reproducible.
        self._own_generator = generator is None and sampler is None and batch_sampler is None
        if self._own_generator:
            generator = torch.Generator()
        common = dict(num_workers=num_workers, collate_fn=functools.partial(pack_batch, max_pixels=max_image_pixels),
                      pin_memory=pin_memory, timeout=timeout, worker_init_fn=worker_init_fn,
                      multiprocessing_context=multiprocessing_context, generator=generator,
                      prefetch_factor=prefetch_factor, persistent_workers=persistent_workers,
                      pin_memory_device=pin_memory_device, in_order=in_order)
        if self._iterable:
            if shuffle or sampler is not None or batch_sampler is not None:
                raise ValueError("an IterableDataset orders its own samples: shuffle, sampler and batch_sampler "
                                 "must be left unset (as with torch's DataLoader)")
            self._batch_sampler = None
            self._torch_loader = TorchDataLoader(_RawIterableDataset(self._reader, self.rank, self.world_size),
                                                 batch_size=batch_size, drop_last=drop_last, **common)
        else:
            raw_dataset = _RawMapDataset(self._reader)
            self._batch_sampler = build_batch_sampler(raw_dataset, batch_size, shuffle, sampler, batch_sampler,
                                                      drop_last, generator, self.rank, self.world_size, self.seed)
            self._torch_loader = TorchDataLoader(raw_dataset, batch_sampler=self._batch_sampler, **common)
        #: Dataset indices (sample identities) of the batch last handed out, row by row.
        self.indices = torch.zeros(0, dtype=torch.int64)
        self._resume_at = 0                  # batches of the next epoch already consumed (resume)
        self._consumed = 0                   # batches handed out in the current epoch
        self._runtime = runtime_for(self.device)
        self._cpu_decoder = CpuDecoder(decode_threads)
        self._decoder = _batch_decoder(decoder, self._cpu_decoder, self._runtime)
        fetch = None if self._iterable else self._reader.read
        self._stage = DeviceStage(self.transform, self.device, self.seed, on_error, self._decoder,
                                  channels_last, backend=self.backend, fetch=fetch,
                                  dataset_size=0 if self._iterable else len(dataset),
                                  max_pixels=max_image_pixels, fast_cpu=fused is None,
                                  # one being written, the queued ones, the consumer's and the one it just dropped
                                  keep_batches=prefetch_depth + 3)
        self._active = None                 # weak reference to the current pass
        #: Stage spans per batch, recorded while ``timeline.enabled`` (profiling).
        self.timeline = Timeline(enabled=False)
        self._stage.timeline = self.timeline

    # -- torch DataLoader surface ---------------------------------------------------------
    def __len__(self) -> int:
        return len(self._torch_loader)

    @property
    def batch_size(self):
        if self._batch_sampler is None:
            return self._torch_loader.batch_size
        return getattr(self._batch_sampler.inner, "batch_size", None)

    @property
    def num_workers(self) -> int:
        return self._torch_loader.num_workers

    @property
    def sampler(self):
        return self._torch_loader.sampler if self._batch_sampler is None else self._batch_sampler.sampler

    @property
    def decoder_counts(self) -> dict[str, int]:
        """How many images each decoder backend handled so far."""
        return dict(self._decoder.counts)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch of the next iteration (as ``DistributedSampler.set_epoch``).

        Without calls, every new iteration advances the epoch by one, starting at 0.
        """
        self._next_epoch = int(epoch)

    # -- resume (the torchdata StatefulDataLoader convention) -----------------------------
    def state_dict(self) -> dict[str, int]:
        """Where the loader is: resuming from it continues with the next batch, the same
        samples and the same augmentations as an uninterrupted run."""
        if self._consumed == 0:
            return {"epoch": self._next_epoch, "batches": self._resume_at, "seed": self.seed}
        return {"epoch": self.epoch, "batches": self._consumed, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next iteration continue from ``state`` (see :meth:`state_dict`)."""
        if state["seed"] != self.seed:
            raise ValueError(f"state was saved by a loader with seed {state['seed']}, this one has seed "
                             f"{self.seed}: the samples and augmentations would differ")
        self._next_epoch = int(state["epoch"])
        self._resume_at = int(state["batches"])

    def _choose_backend(self, fused: bool | None):
        """The fused-kernel backend for ``self.device``, or None for the torch reference."""
        if fused is False or (fused is None and self.device.type == "cpu"):
            # On CPU the torch reference (vectorized, multi-threaded ops) is faster than the
            # host-compiled kernels (scalar per emulated thread): those are opt-in.
            return None
        try:
            if self.device.type == "cuda":
                return cuda_backend(self.device)
            return HostBackend.get()
        except FusedUnavailable as e:
            if fused:
                raise
            warnings.warn(f"gpuaug: fused kernels unavailable ({e}); using the torch reference", stacklevel=3)
            return None

    # -- iteration -------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        """A new pass (a :class:`LoaderIterator`); an unfinished earlier one is closed."""
        self._close_iteration()
        epoch = self.epoch = self._next_epoch
        self._next_epoch = epoch + 1
        skip, self._resume_at = self._resume_at, 0
        self._consumed = skip
        if self._own_generator:
            self._torch_loader.generator.manual_seed(_shuffle_seed(self.seed, epoch))
        if self._batch_sampler is not None:
            self._batch_sampler.set_epoch(epoch)
            self._batch_sampler.skip = skip          # resumed: those batches are never read
        else:
            self._torch_loader.dataset.set_epoch(epoch)
        source = iter(self._torch_loader)
        batches = source if self._batch_sampler is not None else itertools.islice(source, skip, None)
        runtime = self._runtime

        timeline = self.timeline
        workers_failed: list[type] = []
        batches = _timed(batches, timeline, start=skip, failures=workers_failed)
        numbers = itertools.count(skip)

        def process(raw: RawBatch):
            with runtime.stream_context():          # CUDA: the side stream; CPU: nothing
                result = self._stage(raw, epoch, next(numbers))
                return result, runtime.record_event()

        # What this pass uses, released once its prefetch thread has stopped: its workers
        # (persistent ones belong to the loader), the decode threads, the side stream's work.
        persistent = self._torch_loader.persistent_workers
        shutdown = None if persistent else getattr(source, "_shutdown_workers", None)
        decoder = self._cpu_decoder

        def release() -> None:
            # Persistent workers that failed (one killed, a timeout) cannot serve another
            # pass: they go too, and the next pass starts new ones.
            broken = self._shutdown_persistent_workers if persistent and workers_failed else None
            _run_all(shutdown, broken, decoder.close, runtime.synchronize)

        prefetcher = Prefetcher(batches, process, self.prefetch_depth, on_close=release)
        iteration = LoaderIterator(self, prefetcher, epoch)
        self._active = weakref.ref(iteration)    # not a strong reference: dropping the iterator ends the pass
        return iteration

    def _close_iteration(self) -> None:
        active = self._active() if self._active is not None else None
        self._active = None
        if active is not None:
            active.close()

    # -- replay ----------------------------------------------------------------------------
    def replay(self, index: int, epoch: int | None = None) -> torch.Tensor:
        """Re-render sample ``index`` exactly as the loader gave it in ``epoch``.

        Args:
            index: dataset index (map-style datasets).
            epoch: default: the current/last iteration's epoch.
        Returns:
            The ``[C, H, W]`` image the model saw.
        """
        if self._iterable:
            raise TypeError("replay needs a map-style dataset (random access by index)")
        epoch = self.epoch if epoch is None else epoch
        raw = pack_batch([self._reader.read(index)], max_pixels=self._stage.max_pixels)
        return self._stage.replay(raw, epoch)

    def close(self) -> None:
        """Release everything the loader holds. Idempotent; iterating again starts afresh.

        Closes the current pass (see :class:`LoaderIterator`), shuts persistent workers
        down, stops the decode threads and waits for the side CUDA stream to be idle.
        Runs on leaving ``with gpuaug.DataLoader(...) as loader:`` and when the loader is
        garbage-collected.
        """
        _run_all(self._close_iteration, self._shutdown_persistent_workers, self._cpu_decoder.close,
                 self._runtime.close, self._stage.clear_buffers)

    def _shutdown_persistent_workers(self) -> None:
        # torch keeps persistent workers in its loader's iterator until that is collected.
        iterator, self._torch_loader._iterator = self._torch_loader._iterator, None
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()

    def __enter__(self) -> "DataLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def __repr__(self) -> str:
        return (f"gpuaug.DataLoader(batch_size={self.batch_size}, num_workers={self.num_workers}, "
                f"device={self.device}, fused={self.fused}, seed={self.seed}, on_error={self.on_error!r},\n"
                f"  transform={self.transform!r})")


class LoaderIterator:
    """One pass over a :class:`DataLoader`: what ``iter(loader)`` returns.

    The pass owns its prefetch thread, the decode threads, its worker processes (unless
    ``persistent_workers``: those belong to the loader) and the batches prepared ahead
    (pinned host buffers, device tensors). All of them are released when the pass ends,
    however it ends: exhausted; an error in a worker, the decoder, a transform or your
    loop body (released before the error reaches you); :meth:`close`; the iterator being
    dropped (``break``, ``del``, garbage collection); a new ``iter(loader)``; or
    ``loader.close()``.

    Example:
        >>> import io, threading, gpuaug
        >>> from PIL import Image
        >>> buf = io.BytesIO(); Image.new("RGB", (8, 8)).save(buf, "PNG")
        >>> it = iter(gpuaug.DataLoader([(buf.getvalue(), k) for k in range(8)], batch_size=2))
        >>> images, labels = next(it)
        >>> it.close()
        >>> [t.name for t in threading.enumerate() if t.name.startswith("gpuaug")]
        []
    """

    def __init__(self, loader: DataLoader, prefetcher: Prefetcher, epoch: int):
        self._loader = loader
        self._prefetcher = prefetcher
        self.epoch = epoch
        self._number = loader._consumed
        self._new_bad = 0
        self._closed = False

    def __iter__(self) -> "LoaderIterator":
        return self

    def __next__(self):
        if self._closed:
            raise StopIteration
        loader = self._loader
        try:
            waited = time.perf_counter()
            try:
                result, ready = next(self._prefetcher)
            except StopIteration:
                loader._consumed = 0                     # the epoch is complete
                self._close(stacklevel=4)
                raise
            loader.timeline.add("consumer wait", self._number, waited, time.perf_counter())
            self._number += 1
            if result.bad:
                loader.bad_samples.extend(result.bad)
                self._new_bad += len(result.bad)
            # The consumer's stream waits for the side stream; tensors are marked as
            # used by the consumer so their memory is not recycled under it.
            batch = loader._runtime.hand_over(ready, result.batch)
        except StopIteration:
            raise
        except BaseException as error:
            # Also KeyboardInterrupt while waiting: nothing of the pass may outlive it.
            try:
                self._close(stacklevel=4)
            except Exception as cleanup:  # noqa: BLE001 - the first error is the one to see
                error.add_note(f"gpuaug: shutting down after this error also failed: {cleanup!r}")
            raise
        loader.indices = result.indices
        loader._consumed += 1
        return batch

    def close(self) -> None:
        """End the pass now and release what it holds. Idempotent."""
        self._close(stacklevel=3)

    def _close(self, stacklevel: int) -> None:
        self._closed = True
        try:
            self._prefetcher.close()
        finally:
            if self._new_bad:
                new_bad, self._new_bad = self._new_bad, 0
                action = "skipped" if self._loader.on_error == "skip" else "replaced by other samples"
                warnings.warn(f"gpuaug: {new_bad} bad sample(s) {action} in epoch {self.epoch}; "
                              "see loader.bad_samples for index, path and reason", stacklevel=stacklevel)

    def __del__(self):
        try:
            self._close(stacklevel=2)
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass


def _run_all(*steps) -> None:
    """Run every clean-up step (``None``: nothing to do) even when one fails; then raise
    the first failure."""
    failure = None
    for step in steps:
        if step is None:
            continue
        try:
            step()
        except Exception as e:  # noqa: BLE001 - the remaining steps must still run
            failure = failure or e
    if failure is not None:
        raise failure


def _timed(batches, timeline: Timeline, start: int, failures: list | None = None):
    """The raw batches, recording how long the device stage waited for the workers (and
    in ``failures`` an error the workers raised)."""
    iterator = iter(batches)
    for number in itertools.count(start):
        waited = time.perf_counter()
        try:
            raw = next(iterator)
        except StopIteration:
            return
        except BaseException as e:
            if failures is not None:
                failures.append(type(e))
            dead = _dead_worker_error(iterator, e) if isinstance(e, (OSError, EOFError)) else None
            if dead is not None:
                raise dead from e
            raise
        timeline.add("wait for workers", number, waited, time.perf_counter())
        yield raw


def _dead_worker_error(iterator, error: BaseException, grace_s: float = 2.0) -> RuntimeError | None:
    """The error to raise when ``error`` (a broken pipe or socket while reading a batch)
    came from a worker process that died, naming it; ``None`` if every worker still lives.

    torch names a dead worker only when it sees it dead at the moment its queue read
    fails; a worker killed while the main process fetches its batch's shared memory
    breaks the socket a moment before the process can be reaped, and torch re-raises the
    bare ``ConnectionResetError``. The exit shows up within ``grace_s``.
    """
    workers = list(getattr(iterator, "_workers", ()))
    deadline = time.monotonic() + grace_s
    while workers:
        dead = [w for w in workers if w.exitcode is not None]
        if dead:
            described = ", ".join(f"pid {w.pid} {_exit_reason(w.exitcode)}" for w in dead)
            return RuntimeError(f"DataLoader worker ({described}) exited unexpectedly while a batch "
                                f"was being read: {error!r}")
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)
    return None


def _exit_reason(exitcode: int) -> str:
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def _batch_decoder(kind: str, cpu: CpuDecoder, runtime) -> BatchDecoder:
    """The decoder for ``kind`` (see :data:`gpuaug.batch_decode.DECODERS`) on the runtime's device."""
    if kind not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {kind!r}")
    on_cuda = runtime.device.type == "cuda"
    if kind == "nvjpeg" and not on_cuda:
        raise ValueError("decoder='nvjpeg' needs a CUDA device")
    if kind == "dali":
        from .dali import DaliJpegDecoder

        batched, name = DaliJpegDecoder(runtime.device), "dali"
    else:
        batched, name = (runtime.decode_jpegs if on_cuda and kind in ("auto", "nvjpeg") else None), "nvjpeg"
    # Whether the device decoder orients EXIF-rotated JPEGs itself is asked of it once.
    exif = (lambda: probe_applies_exif(batched)) if batched is not None else True
    return BatchDecoder(cpu, batched, name=name, upload=runtime.to_device, applies_exif=exif)


def _as_compose(transform) -> Compose:
    if transform is None:
        return Compose([])
    if isinstance(transform, Compose):
        return transform
    if isinstance(transform, Transform):
        return Compose([transform])
    if isinstance(transform, (list, tuple)):
        return Compose(list(transform))
    raise TypeError(f"transform must be a gpuaug transform or Compose, got {type(transform).__name__}; "
                    "use gpuaug.from_torchvision() for torchvision pipelines")
