"""``python -m gpuaug.bench``: one augmentation recipe through every input pipeline this machine has.

The pipelines, side by side on the same ImageFolder, the same recipe and batch size:

==================  ==========================================================================
``torchvision-pil`` ImageFolder + ``transforms.v2`` in torch's DataLoader, PIL decode, all per
                    sample in the worker processes (the baseline every ratio refers to)
``torchvision-io``  the same, decoding with ``torchvision.io.decode_jpeg`` (PNGs with ``decode_image``)
``kornia-cpu``      workers decode and resize to 256x256 uint8; Kornia augments the whole batch
                    in the main process (``kornia-cuda``: on the GPU)
``dali-cpu``        an NVIDIA DALI pipeline on the CPU (``device_id=None``); ``dali-gpu``: mixed
                    decode and GPU operators
``gpuaug-cpu``      ``gpuaug.DataLoader(device="cpu")`` (``fused=None``, the default): workers read
                    and pack bytes, the main process decodes and augments each sample in one task
                    on its thread pool (:mod:`gpuaug.cpu_path`)
``gpuaug-cpu-ref``  the same with ``fused=False``: decode, then the torch reference on whole batches
``gpuaug-cpu-fused`` the same with ``fused=True``: the CUDA kernel sources compiled for the CPU
``gpuaug-cuda``     ``gpuaug.DataLoader(device="cuda")``: nvJPEG and the fused CuPy kernels
==================  ==========================================================================

A pipeline that cannot run here (package missing, no CUDA, recipe not supported) is
reported as ``skipped: <reason>``, never dropped.

How it measures (see ``benchmarks/README.md`` for what the numbers mean):

* every pipeline runs in a fresh Python process of its own, so memory, caches and CPU
  counters of one pipeline never mix with another's;
* worker processes persist across epochs, and epochs run back to back as in training
  (no pause in which a prefetching pipeline could work ahead unseen); the first epoch
  is a warm-up (worker start, kernel builds, allocator growth) and is not counted;
  images/s is the median of the other epochs, CPU figures are their totals divided by
  their images;
* CPU: the measuring process's ``time.process_time()`` (all its threads) plus each live
  worker process's CPU time from ``/proc/<pid>/task/*/schedstat`` (nanoseconds: psutil
  and ``/proc/<pid>/stat`` count 10 ms ticks, too coarse for workers that only read
  bytes), read at every epoch boundary;
* memory: the peak of the summed RSS of the process tree, sampled every 0.1 s (pages
  shared by forked workers, such as torch's libraries, count once per process);
* with CUDA: peak device memory in use (``cudaMemGetInfo``, whoever allocated it) and
  GPU milliseconds per batch where the device work can be bracketed.

``--train-model resnet50`` (CUDA only) trains that model on every pipeline's batches
and reports images/s and the share of the loop's time spent waiting for data.

Examples::

    python -m gpuaug.bench                                  # embedded dataset, train recipe
    python -m gpuaug.bench --data ~/imagenet/val --recipe eval --out r.json --plot r.png
    python -m gpuaug.bench --quick --pipelines torchvision-pil,gpuaug-cpu
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PIPELINES = ("torchvision-pil", "torchvision-io", "kornia-cpu", "kornia-cuda", "dali-cpu", "dali-gpu",
             "gpuaug-cpu", "gpuaug-cpu-ref", "gpuaug-cpu-fused", "gpuaug-cuda")
CUDA_PIPELINES = ("kornia-cuda", "dali-gpu", "gpuaug-cuda")
BASELINE = "torchvision-pil"
RECIPES = ("train", "eval", "randaug")
#: The targets of ``benchmarks/README.md``.
WORKER_CPU_TARGET = 1 / 25        # gpuaug's read+pack workers vs the baseline's CPU per image
CPU_VS_DALI_TARGET = 1.2          # gpuaug on CPU vs DALI's CPU pipeline, images/s (issue 10)
CPU_VS_BASELINE_TARGET = 2.0      # gpuaug on CPU vs the torchvision baseline, images/s (issue 10)
QUICK_IMAGES = 64


class Unavailable(Exception):
    """This pipeline cannot run here; the message says why (reported as ``skipped: ...``)."""


@dataclass
class Result:
    """One pipeline's measurement (``status`` is ``measured``, ``skipped: ...`` or ``failed: ...``)."""

    pipeline: str
    status: str = "measured"
    description: str = ""
    images_per_s: float | None = None
    cpu_s_per_1000: float | None = None          # core-seconds per 1000 images, whole process tree
    worker_cpu_s_per_1000: float | None = None   # of which in DataLoader worker processes (None: none)
    peak_rss_mb: float | None = None             # peak summed RSS of the process tree
    cores_busy: float | None = None              # CPU seconds per wall second over the measured epochs
    gpu_ms_per_batch: float | None = None        # CUDA: device time per batch, where it can be bracketed
    peak_gpu_mb: float | None = None             # CUDA: peak device memory in use during the run
    data_wait_share: float | None = None         # --train-model: share of the loop waiting for data
    notes: list = field(default_factory=list)
    epochs: list = field(default_factory=list)   # per measured epoch: images, seconds, CPU seconds...

    @property
    def measured(self) -> bool:
        return self.status == "measured"


# -- recipes ------------------------------------------------------------------------------------

def gpuaug_recipe(recipe: str):
    """The recipe as a :class:`gpuaug.transforms.Compose`."""
    from . import transforms as T

    if recipe == "eval":
        ops = [T.Resize(256), T.CenterCrop(224)]
    elif recipe == "randaug":
        if not hasattr(T, "RandAugment"):
            raise Unavailable("gpuaug.transforms.RandAugment does not exist in this version of gpuaug")
        ops = [T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.RandAugment(2, 9)]
    else:
        ops = [T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4, 0.1)]
    return T.Compose(ops + [T.ToDtype(torch.float32, scale=True), T.Normalize(MEAN, STD)])


def torchvision_recipe(recipe: str):
    """The recipe as torchvision v2 transforms on one sample, from a PIL image or a uint8 tensor.

    ``ToImage`` comes first so every op runs on uint8 tensors, as torchvision's own
    performance advice says.
    """
    import torchvision.transforms.v2 as v2

    if recipe == "eval":
        ops = [v2.Resize(256), v2.CenterCrop(224)]
    elif recipe == "randaug":
        ops = [v2.RandomResizedCrop(224), v2.RandomHorizontalFlip(), v2.RandAugment(2, 9)]
    else:
        ops = [v2.RandomResizedCrop(224), v2.RandomHorizontalFlip(), v2.ColorJitter(0.4, 0.4, 0.4, 0.1)]
    return v2.Compose([v2.ToImage(), *ops, v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])


# -- CPU and memory accounting --------------------------------------------------------------------

def _descendants() -> list[int]:
    """Pids of this process's live descendants (psutil, else a scan of /proc)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return [p.pid for p in psutil.Process().children(recursive=True)]
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [os.getpid()]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:                                  # exited in between, or no /proc
        return None


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of a live process so far.

    Sums the nanosecond run times of its threads (``/proc/<pid>/task/*/schedstat``):
    ``/proc/<pid>/stat`` and psutil count in 10 ms clock ticks, too coarse for workers
    that only read bytes (a few ms per batch). Threads that already exited are not in
    that sum, which is fine for DataLoader workers (one long-lived thread). Falls back to
    psutil, then to the ticks of ``/proc/<pid>/stat``.
    """
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        times = psutil.Process(pid).cpu_times()
        return times.user + times.system
    except Exception:  # noqa: BLE001 - psutil missing, or the process is gone
        fields = _stat_fields(pid)
        return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_bytes(pid: int) -> int:
    fields = _stat_fields(pid)
    return 0 if fields is None else int(fields[21]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class CpuSnapshot:
    """CPU seconds of this process (all its threads) and of each live descendant (the workers)."""

    main: float
    workers: dict[int, float]

    @classmethod
    def take(cls) -> "CpuSnapshot":
        return cls(time.process_time(), {pid: process_cpu_seconds(pid) for pid in _descendants()})

    def since(self, earlier: "CpuSnapshot") -> tuple[float, float]:
        """(main, workers) CPU seconds between ``earlier`` and this snapshot.

        A worker started in between counts from zero. Workers persist across epochs in
        every pipeline here, so none exits in between (its time would be lost).
        """
        workers = sum(cpu - earlier.workers.get(pid, 0.0) for pid, cpu in self.workers.items())
        return self.main - earlier.main, workers


class MemorySampler:
    """Peak summed RSS of the process tree (and device memory in use on CUDA), sampled on a thread.

    The tree's pids are looked up again only on :meth:`refresh` (workers persist), so each
    sample is a few reads of ``/proc/<pid>/stat``: cheap enough not to show in the CPU figures.
    Pages shared between processes (torch's libraries in forked workers) count once per process.
    """

    def __init__(self, period: float = 0.1, cuda: bool = False):
        self.period, self.cuda = period, cuda
        self.peak_rss = 0
        self.peak_gpu = 0
        self._gpu_baseline = self._gpu_used() if cuda else 0
        self._pids = [os.getpid()]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpuaug-bench-memory", daemon=True)
        self._thread.start()

    def refresh(self) -> None:
        self._pids = [os.getpid(), *_descendants()]
        self.sample()

    def _gpu_used(self) -> int:
        free, total = torch.cuda.mem_get_info()
        return total - free

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, sum(_rss_bytes(pid) for pid in self._pids))
        if self.cuda:
            self.peak_gpu = max(self.peak_gpu, self._gpu_used() - self._gpu_baseline)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


# -- the pipelines --------------------------------------------------------------------------------

@dataclass
class Source:
    """One pipeline, ready to iterate: ``epoch()`` yields ``(images, labels)`` batches."""

    epoch: Callable[[], Iterable]
    batches: int                                     # per epoch, for the progress bar
    description: str
    gpu_ms_per_batch: Callable[[], float | None] = lambda: None
    notes: list = field(default_factory=list)
    close: Callable[[], None] = lambda: None


@dataclass
class Config:
    """What every pipeline builder needs to know."""

    root: str
    recipe: str
    batch_size: int
    workers: int
    device: str                                      # "cpu" or "cuda": where GPU pipelines may run
    images: int                                      # files in the dataset
    dali_threads: int
    train: bool = False                              # --train-model: batches go to a model on CUDA

    @property
    def batches(self) -> int:
        return -(-self.images // self.batch_size)


def _need(module: str, pip_name: str):
    """Import an optional package, or raise :class:`Unavailable` naming what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise Unavailable(f"{pip_name} is not installed (pip install {pip_name}): {e}") from e


def _need_cuda(config: Config) -> None:
    if config.device != "cuda":
        raise Unavailable("--device cpu" if torch.cuda.is_available() else "no CUDA device")


def _torch_loader(dataset, config: Config, pin: bool = False):
    return torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=True,
                                       num_workers=config.workers, persistent_workers=config.workers > 0,
                                       pin_memory=pin)


TORCHVISION_IO_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"


def decode_with_torchvision_io(path: str) -> torch.Tensor:
    """ImageFolder loader: ``torchvision.io.decode_jpeg`` for JPEG bytes, ``decode_image`` otherwise.

    The format comes from the bytes: ImageNet-like data has PNGs named ``.JPEG``.
    """
    import torchvision.io as tio

    with open(path, "rb") as f:
        data = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
    if data[:2].tolist() == [0xFF, 0xD8]:
        return tio.decode_jpeg(data, mode=tio.ImageReadMode.RGB)
    return tio.decode_image(data, mode=tio.ImageReadMode.RGB)


def build_torchvision(name: str, config: Config) -> Source:
    import torchvision

    if name == "torchvision-io":
        # torchvision 0.29 warns on every decode that torchvision.io's decoders are deprecated
        # (in favour of TorchCodec); the filter is inherited by the forked workers.
        warnings.filterwarnings("ignore", message=TORCHVISION_IO_DEPRECATION)
        dataset = torchvision.datasets.ImageFolder(config.root, transform=torchvision_recipe(config.recipe),
                                                   loader=decode_with_torchvision_io)
        description = "torchvision v2, torchvision.io.decode_jpeg in workers"
    else:
        dataset = torchvision.datasets.ImageFolder(config.root, transform=torchvision_recipe(config.recipe))
        description = "torchvision v2, PIL decode in workers"
    loader = _torch_loader(dataset, config, pin=config.train)
    return Source(lambda: loader, len(loader), description)


def build_kornia(name: str, config: Config) -> Source:
    """Workers decode (PIL) and resize to 256x256 uint8; Kornia augments the batch."""
    import torchvision
    import torchvision.transforms.v2 as v2

    K = _need("kornia.augmentation", "kornia")
    on_cuda = name == "kornia-cuda"
    if on_cuda:
        _need_cuda(config)
    if config.recipe == "eval":
        raise Unavailable("Kornia augments equal-sized batches: the workers' resize would already do all of "
                          "the eval recipe (Resize 256 + CenterCrop 224 of each image's own aspect)")
    device = torch.device("cuda" if on_cuda else "cpu")
    ops = [K.RandomResizedCrop((224, 224)), K.RandomHorizontalFlip()]
    if config.recipe == "randaug":
        ops.append(_need("kornia.augmentation.auto", "kornia").RandAugment(n=2, m=9))
    else:
        ops.append(K.ColorJitter(0.4, 0.4, 0.4, 0.1))
    augment = torch.nn.Sequential(*ops, K.Normalize(torch.tensor(MEAN), torch.tensor(STD))).to(device)
    dataset = torchvision.datasets.ImageFolder(
        config.root, transform=v2.Compose([v2.PILToTensor(), v2.Resize((256, 256), antialias=True)]))
    loader = _torch_loader(dataset, config, pin=on_cuda)
    events: list = []                                  # CUDA events around each batch's upload + augment

    def epoch() -> Iterator:
        for images, labels in loader:
            if on_cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            images = augment(images.to(device, non_blocking=True).float().div_(255))
            if on_cuda:
                end.record()
                events.append((start, end))
            yield images, labels

    def gpu_ms_per_batch() -> float | None:
        if not events:
            return None
        torch.cuda.synchronize()
        return statistics.median(start.elapsed_time(end) for start, end in events)

    where = "on the GPU" if on_cuda else "in the main process"
    return Source(epoch, len(loader), f"Kornia on the batch {where} (workers decode + resize 256)",
                  gpu_ms_per_batch=gpu_ms_per_batch)


def build_dali(name: str, config: Config) -> Source:
    on_gpu = name == "dali-gpu"
    if on_gpu:
        _need_cuda(config)
    dali = _need("nvidia.dali", "nvidia-dali-cuda130")
    from nvidia.dali import fn, types
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

    recipe = config.recipe
    normalize = dict(dtype=types.FLOAT, output_layout="CHW", mean=[m * 255 for m in MEAN],
                     std=[s * 255 for s in STD])

    @dali.pipeline_def(enable_conditionals=recipe == "randaug")
    def pipeline():
        jpegs, labels = fn.readers.file(file_root=config.root, random_shuffle=True, name="files")
        images = fn.decoders.image(jpegs, device="mixed" if on_gpu else "cpu", output_type=types.RGB)
        if recipe == "eval":
            images = fn.resize(images, resize_shorter=256)
            return fn.crop_mirror_normalize(images, crop=(224, 224), **normalize), labels
        images = fn.random_resized_crop(images, size=(224, 224))
        if recipe == "randaug":
            from nvidia.dali.auto_aug import rand_augment

            images = rand_augment.rand_augment(images, n=2, m=9)
        else:
            # ColorJitter(0.4, 0.4, 0.4, 0.1): factors in [0.6, 1.4], hue +-0.1 turn = +-36 degrees.
            images = fn.color_twist(images, brightness=fn.random.uniform(range=(0.6, 1.4)),
                                    contrast=fn.random.uniform(range=(0.6, 1.4)),
                                    saturation=fn.random.uniform(range=(0.6, 1.4)),
                                    hue=fn.random.uniform(range=(-36.0, 36.0)))
        return fn.crop_mirror_normalize(images, mirror=fn.random.coin_flip(), **normalize), labels

    with warnings.catch_warnings():        # DALI's auto_aug uses deprecated experimental aliases
        warnings.simplefilter("ignore", DeprecationWarning)
        pipe = pipeline(batch_size=config.batch_size, num_threads=config.dali_threads,
                        device_id=0 if on_gpu else None, seed=0)
        pipe.build()
    # The iterator hands out torch tensors, like every other pipeline here.
    iterator = DALIGenericIterator(pipe, ["images", "labels"], reader_name="files",
                                   last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=True)

    def epoch() -> Iterator:
        for (batch,) in iterator:
            yield batch["images"], batch["labels"].reshape(-1).long()

    where = "mixed decode + GPU operators" if on_gpu else f"CPU pipeline (device_id=None, {config.dali_threads} threads)"
    return Source(epoch, config.batches, f"DALI {where}", notes=["no worker processes: all CPU in the main process"])


def build_gpuaug(name: str, config: Config) -> Source:
    import torchvision

    from . import DataLoader, profile
    from .fused import FusedUnavailable

    device = "cuda" if name == "gpuaug-cuda" else "cpu"
    if device == "cuda":
        _need_cuda(config)
    fused = {"gpuaug-cpu": None, "gpuaug-cpu-ref": False, "gpuaug-cpu-fused": True, "gpuaug-cuda": None}[name]
    try:
        loader = DataLoader(torchvision.datasets.ImageFolder(config.root), batch_size=config.batch_size,
                            shuffle=True, num_workers=config.workers, persistent_workers=config.workers > 0,
                            pin_memory=device == "cuda",
                            transform=gpuaug_recipe(config.recipe), device=device, fused=fused, seed=0)
    except FusedUnavailable as e:
        raise Unavailable(f"fused kernels unavailable: {e}") from e
    notes = [f"plan: {line}" for line in loader.transform.plan().splitlines()] if loader.fused else []
    if device == "cuda" and not loader.fused:
        notes.append("CuPy missing: the torch reference ran on the GPU")
    kind = {"gpuaug-cpu": "CPU, per-sample fast path (default)",
            "gpuaug-cpu-ref": "CPU, torch reference (fused=False)",
            "gpuaug-cpu-fused": "CPU, host-compiled fused kernels (fused=True)",
            "gpuaug-cuda": "CUDA, nvJPEG + fused kernels" if loader.fused else "CUDA, torch reference"}[name]

    def gpu_ms_per_batch() -> float | None:
        # After the timed epochs: gpuaug.profile waits for the device after every stage, so
        # the device stage's spans hold its GPU time (serialized: a bound, not overlapped time).
        if device != "cuda":
            return None
        report = profile(loader, batches=min(20, len(loader)))
        return sum(report.ms_per_batch.get(stage, 0.0) for stage in ("decode", "parameters", "fused stage",
                                                                     "other ops"))

    return Source(lambda: loader, len(loader), f"gpuaug on {kind}", gpu_ms_per_batch=gpu_ms_per_batch,
                  notes=notes, close=loader.close)


BUILDERS = {"torchvision": build_torchvision, "kornia": build_kornia, "dali": build_dali, "gpuaug": build_gpuaug}


def build(name: str, config: Config) -> Source:
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; choose among {', '.join(PIPELINES)}")
    if name in CUDA_PIPELINES and config.device == "cuda" and not torch.cuda.is_available():
        raise Unavailable("no CUDA device")
    return BUILDERS[name.split("-")[0]](name, config)


# -- the end-to-end mode --------------------------------------------------------------------------

def train_step_for(model_name: str) -> Callable:
    """One SGD step (bf16 autocast, channels_last) of a fresh torchvision model on CUDA."""
    import torchvision

    if not torch.cuda.is_available():
        raise Unavailable("--train-model needs a CUDA device")
    torch.backends.cudnn.benchmark = True
    model = getattr(torchvision.models, model_name)(num_classes=1000).cuda().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        images = images.cuda(non_blocking=True).contiguous(memory_format=torch.channels_last)
        labels = torch.as_tensor(labels).cuda(non_blocking=True).reshape(-1).long()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


# -- measuring one pipeline (in its own process) ----------------------------------------------

def measure(name: str, config: Config, epochs: int, train_model: str | None = None,
            progress: bool = True) -> Result:
    """Build pipeline ``name`` and run ``epochs`` epochs of it back to back; the first is a warm-up.

    Epochs follow each other with no pause, as in training: a pipeline that prefetches
    across the epoch boundary (DALI) gets no head start from a gap the benchmark adds.
    An epoch's time and CPU run from the previous epoch's last batch to its own.
    """
    from tqdm import tqdm

    step = train_step_for(train_model) if train_model else None
    on_cuda = name in CUDA_PIPELINES or step is not None
    memory = MemorySampler(cuda=on_cuda and torch.cuda.is_available())   # before build: DALI allocates there
    try:
        source = build(name, config)
    except BaseException:
        memory.stop()
        raise
    result = Result(name, description=source.description, notes=list(source.notes))
    bar = tqdm(total=epochs * source.batches, desc=f"{name:17s}", unit="batch", leave=False,
               disable=not progress, file=sys.stderr)
    try:
        cpu_before, clock = CpuSnapshot.take(), time.perf_counter()
        for epoch in range(epochs):
            images, waited = 0, 0.0
            batches = iter(source.epoch())
            while True:
                before = time.perf_counter()
                try:
                    batch_images, labels = next(batches)
                except StopIteration:
                    break
                waited += time.perf_counter() - before
                if step is not None:
                    step(batch_images, labels)
                images += len(batch_images)
                bar.update()
            if on_cuda and torch.cuda.is_available():
                torch.cuda.synchronize()                   # the last batch's device work belongs here
            now, cpu_now = time.perf_counter(), CpuSnapshot.take()
            seconds, (main_cpu, worker_cpu) = now - clock, cpu_now.since(cpu_before)
            clock, cpu_before = now, cpu_now
            memory.refresh()                               # the workers exist from the first epoch on
            if epoch == 0 and epochs > 1:
                continue                                   # warm-up: worker start, kernel builds, caches
            result.epochs.append({"images": images, "seconds": seconds, "cpu_s": main_cpu + worker_cpu,
                                  "main_cpu_s": main_cpu, "worker_cpu_s": worker_cpu, "data_wait_s": waited})
        result.gpu_ms_per_batch = source.gpu_ms_per_batch() if on_cuda else None
    finally:
        bar.close()
        memory.stop()
        source.close()
    total_images = sum(e["images"] for e in result.epochs)
    result.images_per_s = statistics.median(e["images"] / e["seconds"] for e in result.epochs)
    result.cpu_s_per_1000 = 1000 * sum(e["cpu_s"] for e in result.epochs) / total_images
    result.cores_busy = sum(e["cpu_s"] for e in result.epochs) / sum(e["seconds"] for e in result.epochs)
    if config.workers > 0 and not name.startswith("dali"):
        result.worker_cpu_s_per_1000 = 1000 * sum(e["worker_cpu_s"] for e in result.epochs) / total_images
    result.peak_rss_mb = memory.peak_rss / 2**20
    if on_cuda:
        result.peak_gpu_mb = memory.peak_gpu / 2**20
    if step is not None:
        result.data_wait_share = sum(e["data_wait_s"] for e in result.epochs) / sum(
            e["seconds"] for e in result.epochs)
    return result


def measure_safely(name: str, config: Config, epochs: int, train_model: str | None, progress: bool) -> Result:
    """:func:`measure`, turning "cannot run here" into ``skipped`` and errors into ``failed``."""
    try:
        return measure(name, config, epochs, train_model, progress)
    except Unavailable as e:
        return Result(name, status=f"skipped: {e}")
    except Exception as e:  # noqa: BLE001 - a broken pipeline must not hide the others' results
        traceback.print_exc()
        return Result(name, status=f"failed: {type(e).__name__}: {e}"[:500])


# -- the report ---------------------------------------------------------------------------------

def dataset_stats(root: str) -> dict:
    """Count, classes, mean width x height (from the headers) and mean file size of an ImageFolder."""
    from PIL import Image

    files = sorted(p for p in Path(root).rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise SystemExit(f"no image files under {root}")
    sizes = []
    for path in files:
        try:
            with Image.open(path) as im:                 # reads the header only
                sizes.append(im.size)
        except OSError:
            pass
    return {"root": str(root), "images": len(files), "classes": len({p.parent for p in files}),
            "mean_width": round(statistics.fmean(w for w, _ in sizes)),
            "mean_height": round(statistics.fmean(h for _, h in sizes)),
            "mean_kb": round(statistics.fmean(p.stat().st_size for p in files) / 1024, 1)}


def _version(*distributions: str) -> str | None:
    for dist in distributions:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def settings(args, stats: dict) -> dict:
    from . import __version__

    cuda = args.device == "cuda"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "versions": {"python": platform.python_version(), "gpuaug": __version__, "torch": torch.__version__,
                     "torchvision": _version("torchvision"), "kornia": _version("kornia"),
                     "dali": _version("nvidia-dali-cuda130", "nvidia-dali-cuda120", "nvidia-dali-cuda110"),
                     "cupy": _version("cupy-cuda13x", "cupy-cuda12x"), "torchcodec": _version("torchcodec"),
                     "pillow": _version("pillow"), "psutil": _version("psutil")},
        "cpu": _cpu_model(), "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if cuda and torch.cuda.is_available() else None,
        "device": args.device, "workers": args.workers, "torch_threads": torch.get_num_threads(),
        "dali_threads": args.dali_threads, "batch_size": args.batch_size, "recipe": args.recipe,
        "epochs": args.epochs, "warmup_epochs": 1 if args.epochs > 1 else 0, "train_model": args.train_model,
        "dataset": stats,
    }


def settings_text(s: dict) -> str:
    v, d = s["versions"], s["dataset"]
    where = f"GPU {s['gpu']}" if s["gpu"] else "no GPU used"
    return "\n".join([
        f"gpuaug {v['gpuaug']}, torch {v['torch']}, torchvision {v['torchvision']}, kornia {v['kornia']}, "
        f"DALI {v['dali'] or '-'}, CuPy {v['cupy'] or '-'}, Python {v['python']}",
        f"{s['cpu']}: {s['cores']} cores ({s['usable_cores']} usable), {where}; {s['workers']} workers, "
        f"{s['torch_threads']} torch threads, DALI {s['dali_threads']} threads",
        f"recipe {s['recipe']}, batch {s['batch_size']}, {s['epochs']} epochs ({s['warmup_epochs']} warm-up)"
        + (f", training {s['train_model']}" if s["train_model"] else ""),
        f"data {d['root']}: {d['images']} images in {d['classes']} classes, mean "
        f"{d['mean_width']}x{d['mean_height']}, {d['mean_kb']} KB",
    ])


def _fraction(x: float) -> str:
    """0.0156 -> '1/64' (how the worker-CPU target is stated); >= 0.5 as a plain ratio."""
    if x <= 0:
        return "0"
    return f"1/{1 / x:.0f}" if x < 0.5 else f"{x:.2f}"


def table(results: list[Result]) -> str:
    """The terminal table; ratios refer to the torchvision (PIL) baseline of the same run."""
    base = next((r for r in results if r.pipeline == BASELINE and r.measured), None)
    gpu = any(r.peak_gpu_mb is not None for r in results)
    wait = any(r.data_wait_share is not None for r in results)
    head = (f"{'pipeline':17s} {'images/s':>9s} {'x base':>7s} {'CPU s/1k':>9s} {'x base':>7s} "
            f"{'cores':>5s} {'workers s/1k':>12s} {'of base CPU':>11s} {'RSS MB':>7s}")
    head += f" {'GPU ms/b':>8s} {'GPU MB':>7s}" if gpu else ""
    head += f" {'data wait':>9s}" if wait else ""
    lines = [head, "-" * len(head)]

    def num(value, fmt):
        return "-" if value is None else format(value, fmt)

    for r in results:
        if not r.measured:
            lines.append(f"{r.pipeline:17s} {r.status}")
            continue
        speed = f"{r.images_per_s / base.images_per_s:.2f}x" if base else ""
        cpu = f"{r.cpu_s_per_1000 / base.cpu_s_per_1000:.2f}x" if base else ""
        share = _fraction(r.worker_cpu_s_per_1000 / base.cpu_s_per_1000) if base and \
            r.worker_cpu_s_per_1000 is not None else "-"
        line = (f"{r.pipeline:17s} {r.images_per_s:9.1f} {speed:>7s} {r.cpu_s_per_1000:9.2f} {cpu:>7s} "
                f"{num(r.cores_busy, '.2f'):>5s} {num(r.worker_cpu_s_per_1000, '.3f'):>12s} {share:>11s} "
                f"{r.peak_rss_mb:7.0f}")
        line += f" {num(r.gpu_ms_per_batch, '.2f'):>8s} {num(r.peak_gpu_mb, '.0f'):>7s}" if gpu else ""
        line += f" {num(r.data_wait_share, '.0%'):>9s}" if wait else ""
        lines.append(line)
    return "\n".join(lines)


def targets(results: list[Result]) -> dict:
    """The targets of ``benchmarks/README.md``, as ratios within this run (absent: not measured)."""
    by = {r.pipeline: r for r in results if r.measured}
    out = {}
    base = by.get(BASELINE)
    gpuaug_workers = [by[n] for n in ("gpuaug-cuda", "gpuaug-cpu", "gpuaug-cpu-ref", "gpuaug-cpu-fused")
                      if n in by and by[n].worker_cpu_s_per_1000 is not None]
    if base and gpuaug_workers:
        r = gpuaug_workers[0]
        ratio = r.worker_cpu_s_per_1000 / base.cpu_s_per_1000
        out["worker_cpu"] = {"pipeline": r.pipeline, "gpuaug_worker_cpu_s_per_1000": r.worker_cpu_s_per_1000,
                             "baseline_cpu_s_per_1000": base.cpu_s_per_1000, "ratio": ratio,
                             "target": WORKER_CPU_TARGET, "met": ratio <= WORKER_CPU_TARGET}
    cpu_paths = [by[n] for n in ("gpuaug-cpu", "gpuaug-cpu-ref", "gpuaug-cpu-fused") if n in by]
    best = max(cpu_paths, key=lambda r: r.images_per_s) if cpu_paths else None
    if best and "dali-cpu" in by:
        ratio = best.images_per_s / by["dali-cpu"].images_per_s
        out["cpu_vs_dali"] = {"pipeline": best.pipeline, "gpuaug_images_per_s": best.images_per_s,
                              "dali_images_per_s": by["dali-cpu"].images_per_s, "ratio": ratio,
                              "target": CPU_VS_DALI_TARGET, "met": ratio >= CPU_VS_DALI_TARGET}
        cpu = best.cpu_s_per_1000 / by["dali-cpu"].cpu_s_per_1000
        out["cpu_time_vs_dali"] = {"pipeline": best.pipeline, "gpuaug_cpu_s_per_1000": best.cpu_s_per_1000,
                                   "dali_cpu_s_per_1000": by["dali-cpu"].cpu_s_per_1000, "ratio": cpu,
                                   "target": 1.0, "met": cpu < 1.0}
    if best and base:
        ratio = best.images_per_s / base.images_per_s
        out["cpu_vs_baseline"] = {"pipeline": best.pipeline, "gpuaug_images_per_s": best.images_per_s,
                                  "baseline_images_per_s": base.images_per_s, "ratio": ratio,
                                  "target": CPU_VS_BASELINE_TARGET, "met": ratio >= CPU_VS_BASELINE_TARGET}
    return out


#: How :func:`targets_text` words each target: (key, claim, ours and theirs with their format, unit).
_TARGET_LINES = (
    ("worker_cpu", "(i)  gpuaug workers' CPU per image <= 1/25 of the baseline's",
     ("gpuaug_worker_cpu_s_per_1000", ".3f"), ("baseline_cpu_s_per_1000", ".2f"), "core-s/1000"),
    ("cpu_vs_dali", "(ii) gpuaug on CPU >= {target:g}x DALI's CPU pipeline",
     ("gpuaug_images_per_s", ".0f"), ("dali_images_per_s", ".0f"), "images/s"),
    ("cpu_time_vs_dali", "(iii) gpuaug on CPU < DALI's CPU per image",
     ("gpuaug_cpu_s_per_1000", ".2f"), ("dali_cpu_s_per_1000", ".2f"), "core-s/1000"),
    ("cpu_vs_baseline", "(iv) gpuaug on CPU >= {target:g}x the torchvision baseline",
     ("gpuaug_images_per_s", ".0f"), ("baseline_images_per_s", ".0f"), "images/s"),
)


def targets_text(t: dict) -> str:
    lines = []
    for key, claim, (ours, ours_fmt), (theirs, theirs_fmt), unit in _TARGET_LINES:
        if key not in t:
            continue
        c = t[key]
        ratio = _fraction(c["ratio"]) if key == "worker_cpu" else f"{c['ratio']:.2f}x"
        lines.append(f"target {claim.format(**c)}: {ratio} ({c[ours]:{ours_fmt}} vs {c[theirs]:{theirs_fmt}} "
                     f"{unit}, {c['pipeline']}) -> {'met' if c['met'] else 'MISSED'}")
    return "\n".join(lines)


def plot(results: list[Result], path: str, title: str = "") -> None:
    """Two panels: images/s and CPU core-seconds per 1000 images (workers' share hatched)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    measured = [r for r in results if r.measured]
    skipped = [r for r in results if not r.measured]
    names = [r.pipeline for r in measured]
    fig = Figure(figsize=(11, 1.6 + 0.45 * max(len(measured), 1) + 0.18 * len(skipped)), dpi=90)
    speed, cpu = fig.subplots(1, 2, sharey=True)
    colors = ["#d08040" if r.pipeline.startswith("gpuaug") else "#4878a8" for r in measured]
    bars = speed.barh(names, [r.images_per_s for r in measured], color=colors)
    speed.bar_label(bars, fmt="%.0f", padding=3, fontsize=8)
    speed.set_title("images / s (higher is better)", fontsize=10)
    speed.invert_yaxis()
    main = [r.cpu_s_per_1000 - (r.worker_cpu_s_per_1000 or 0.0) for r in measured]
    workers = [r.worker_cpu_s_per_1000 or 0.0 for r in measured]
    cpu.barh(names, workers, color=colors, hatch="//", alpha=0.55, label="in worker processes")
    bars = cpu.barh(names, main, left=workers, color=colors, label="in the main process")
    cpu.bar_label(bars, labels=[f"{r.cpu_s_per_1000:.2f}" for r in measured], padding=3, fontsize=8)
    cpu.set_title("CPU core-seconds / 1000 images (lower is better)", fontsize=10)
    cpu.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=2, frameon=False)
    for ax in (speed, cpu):
        ax.margins(x=0.18)
        ax.tick_params(labelsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    if skipped:
        fig.text(0.01, 0.01, "\n".join(f"{r.pipeline}: {r.status}"[:150] for r in skipped), fontsize=7,
                 va="bottom")
    fig.tight_layout(rect=(0, 0.02 + 0.035 * len(skipped), 1, 1))
    fig.savefig(path)


# -- command line ---------------------------------------------------------------------------------

def _child(name: str, args, root: str, images: int) -> Result:
    """Measure one pipeline in a fresh interpreter; its progress bar goes to our stderr."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [sys.executable, "-m", "gpuaug.bench", "--one", name, "--data", root, "--out", out,
               "--recipe", args.recipe, "--batch-size", str(args.batch_size), "--workers", str(args.workers),
               "--epochs", str(args.epochs), "--device", args.device, "--dali-threads", str(args.dali_threads),
               "--images", str(images)]
        cmd += ["--train-model", args.train_model] if args.train_model else []
        cmd += ["--no-progress"] if args.no_progress else []
        # The child must import this very gpuaug, installed or not.
        env = dict(os.environ)
        package_parent = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
        done = subprocess.run(cmd, env=env)
        if done.returncode == 0 and os.path.exists(out):
            with open(out) as f:
                return Result(**json.load(f))
        return Result(name, status=f"failed: the measuring process exited with status {done.returncode} "
                                   "(its error is printed above)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m gpuaug.bench",
                                     description="One augmentation recipe through torchvision, Kornia, DALI and "
                                                 "gpuaug side by side: images/s, CPU, memory (and GPU).")
    parser.add_argument("--data", help="an ImageFolder root (default: gpuaug's embedded dataset)")
    parser.add_argument("--recipe", choices=RECIPES, default="train",
                        help="train: RandomResizedCrop 224, flip, ColorJitter(0.4, 0.4, 0.4, 0.1), ToDtype, "
                             "Normalize; eval: Resize 256, CenterCrop 224, ToDtype, Normalize; randaug: train "
                             "with RandAugment(2, 9) instead of ColorJitter")
    parser.add_argument("--pipelines", help=f"comma list among {', '.join(PIPELINES)} (default: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    parser.add_argument("--epochs", type=int, default=3, help="the first is a warm-up (default 3)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="cpu: skip the GPU pipelines; auto: cuda when available")
    parser.add_argument("--dali-threads", type=int, default=os.cpu_count() or 1,
                        help="DALI's CPU threads (default: all cores)")
    parser.add_argument("--images", type=int, default=0,
                        help="size of the embedded dataset (default 300; --quick: 64); ignored with --data")
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny run for CI: {QUICK_IMAGES} images (embedded data), batch 16, 2 epochs")
    parser.add_argument("--train-model", metavar="NAME",
                        help="CUDA only: train this torchvision model (e.g. resnet50) on every pipeline's batches "
                             "and report images/s and the share of time waiting for data")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--plot", help="write a PNG chart here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--one", help=argparse.SUPPRESS)     # internal: measure one pipeline into --out
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.batch_size, args.epochs = args.images or QUICK_IMAGES, 16, 2
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.epochs < 1 or args.batch_size < 1 or args.workers < 0:
        parser.error("--epochs and --batch-size must be >= 1, --workers >= 0")
    return args


def main(argv=None) -> int:
    """Run the benchmark (see the module docstring); returns 0, or 1 when a pipeline failed."""
    args = parse_args(argv)
    if args.one:                                       # inside the per-pipeline process
        config = Config(args.data, args.recipe, args.batch_size, args.workers, args.device, args.images,
                        args.dali_threads, train=bool(args.train_model))
        result = measure_safely(args.one, config, args.epochs, args.train_model, not args.no_progress)
        with open(args.out, "w") as f:
            json.dump(asdict(result), f)
        return 0

    root = args.data
    if root is None:
        from .sample_data import default_dataset
        root = str(default_dataset(num_images=args.images) if args.images else default_dataset())
    names = [n.strip() for n in args.pipelines.split(",")] if args.pipelines else list(PIPELINES)
    unknown = [n for n in names if n not in PIPELINES]
    if unknown:
        raise SystemExit(f"unknown pipeline(s) {', '.join(unknown)}; choose among {', '.join(PIPELINES)}")
    stats = dataset_stats(root)
    report = {"settings": settings(args, stats), "results": []}
    print(settings_text(report["settings"]), flush=True)
    results = []
    for name in names:
        result = _child(name, args, root, stats["images"])
        results.append(result)
        summary = (f"{result.images_per_s:.1f} images/s, {result.cpu_s_per_1000:.2f} CPU s/1000 images"
                   if result.measured else result.status)
        print(f"  {name}: {summary}", flush=True)
    report["results"] = [asdict(r) for r in results]
    report["targets"] = targets(results)
    print()
    print(table(results))
    if report["targets"]:
        print(targets_text(report["targets"]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        s = report["settings"]
        plot(results, args.plot, title=f"recipe {s['recipe']}, batch {s['batch_size']}, {s['workers']} workers, "
                                        f"{s['cores']} cores, {s['gpu'] or 'no GPU'}; {stats['images']} images "
                                        f"of mean {stats['mean_width']}x{stats['mean_height']}")
    return 1 if any(r.status.startswith("failed") for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
