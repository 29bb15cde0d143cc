"""Fused-kernel benchmark: the training recipe on one pre-decoded ragged uint8 batch.

No reading, no decoding, no loader: only the augmentation, so the implementations are
compared on exactly the same input and the very same per-sample random parameters
(drawn once with ``make_pipeline_params``, rendered with ``apply_params``, as
``gpuaug.selftest`` does). The batch is real photos from gpuaug's embedded dataset,
each rescaled to its own ImageNet-like size around 500x375 (landscape, some portrait
and square). The recipe: RandomResizedCrop 224, RandomHorizontalFlip,
ColorJitter(0.4, 0.4, 0.4, 0.1), ToDtype float32 (scaled), Normalize (ImageNet).

On CPU, side by side in one process:

* ``fused, host-emulated``: the CUDA kernel sources compiled for the CPU
  (``gpuaug.fused.HostBackend``, what ``fused=True`` runs on a CPU);
* ``torch reference``: gpuaug's pure-torch implementation (``fused=False``);
* ``torchvision v2 per-op``: ``torchvision.transforms.v2.functional`` op by op, sample
  by sample, with the same parameters (the outside oracle).

On CUDA it adds the CuPy kernels and the reference on the GPU, timed with CUDA events,
and the achieved bandwidth against the bytes that must move: every source pixel inside
a crop box read once (3 bytes) plus every output element written once. Each row also
shows its largest difference from the reference output (a benchmark of a wrong result
is worth nothing).

Usage::

    python benchmarks/kernel_bench.py                          # 64 images, median of 5
    python benchmarks/kernel_bench.py --profile                # + ms per op / per kernel
    python benchmarks/kernel_bench.py --batch 256 --repeats 20 --out benchmarks/results/kernel_h100.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # run from a checkout without installing

import torchvision.transforms.v2.functional as TVF  # noqa: E402

from gpuaug import transforms as T  # noqa: E402
from gpuaug.rng import SampleKeys  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def recipe(size: int = 224) -> T.Compose:
    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4, 0.1),
                      T.ToDtype(torch.float32, scale=True), T.Normalize(MEAN, STD)])


def batch_of_photos(n: int, seed: int = 0) -> list[torch.Tensor]:
    """``n`` decoded photos of the embedded dataset, each resized to its own size near 500x375.

    Sizes: long side 420-580 px, mostly 4:3 landscape, every fifth portrait, every
    seventh square; the content is real (resampling and color costs depend on it).
    """
    import torchvision

    from gpuaug.decode import CpuDecoder
    from gpuaug.headers import read_header
    from gpuaug.sample_data import default_dataset

    paths = [p for p, _ in torchvision.datasets.ImageFolder(default_dataset()).samples]
    items = []
    for k in range(n):
        with open(paths[k % len(paths)], "rb") as f:
            data = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
        items.append((data, read_header(data)))
    with CpuDecoder() as decoder:
        photos = decoder.decode_batch(items)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for k, img in enumerate(photos):
        long_side = int(torch.randint(420, 581, (), generator=gen))
        short_side = long_side if k % 7 == 6 else round(long_side * 3 / 4)
        h, w = (long_side, short_side) if k % 5 == 4 else (short_side, long_side)
        out.append(TVF.resize(img, [h, w], antialias=True).contiguous())
    return out


def torchvision_chain(images: list[torch.Tensor], params, pipe: T.Compose) -> torch.Tensor:
    """torchvision v2 functional ops, sample by sample, with the very same parameters."""
    crop, flip, jitter = params.per_op[:3]
    adjust = (TVF.adjust_brightness, TVF.adjust_contrast, TVF.adjust_saturation, TVF.adjust_hue)
    factors = jitter.factors()
    size = list(pipe.transforms[0].size)
    out = []
    for b, img in enumerate(images):
        x = TVF.resized_crop(img, int(crop.top[b]), int(crop.left[b]), int(crop.height[b]), int(crop.width[b]),
                             size, antialias=True)
        if flip.apply[b]:
            x = TVF.horizontal_flip(x)
        for op in jitter.order[b].tolist():
            x = adjust[op](x, float(factors[op][b]))
        out.append(TVF.normalize(TVF.to_dtype(x, torch.float32, scale=True), MEAN, STD))
    return torch.stack(out)


def time_cpu(fn, repeats: int) -> tuple[float, torch.Tensor]:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after one warm-up; and its output."""
    out = fn()                                       # warm-up: builds the host kernels once, caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def time_cuda(fn, repeats: int) -> tuple[float, torch.Tensor]:
    """Median seconds per ``fn()`` between CUDA events (host overhead included where it stalls the GPU)."""
    out = fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times), out


def bytes_moved(params, out: torch.Tensor) -> int:
    """The minimum traffic: each source pixel inside a crop box read once (3 uint8), each output written once."""
    crop = params.per_op[0]
    return int((crop.height * crop.width).sum()) * 3 + out.numel() * out.element_size()


def run(batch: int, repeats: int, with_profile: bool = False) -> dict:
    from gpuaug.fused import FusedUnavailable, HostBackend

    pipe = recipe()
    images = batch_of_photos(batch)
    sizes = torch.tensor([list(im.shape[-2:]) for im in images])
    params = pipe.make_pipeline_params(SampleKeys(0, 0, torch.arange(len(images))), sizes)
    reference = pipe.apply_params(images, params, stack=True)
    rows = {}
    where = profile(pipe, images, params) if with_profile else None

    def record(name, seconds, out, **extra):
        rows[name] = {"ms_per_batch": seconds * 1000, "images_per_s": len(images) / seconds,
                      "max_abs_diff_vs_reference": float((out.float().cpu() - reference).abs().max()), **extra}

    candidates = [("torch reference (CPU)", lambda: pipe.apply_params(images, params, stack=True)),
                  ("torchvision v2 per-op (CPU)", lambda: torchvision_chain(images, params, pipe))]
    try:
        host = HostBackend.get()
        candidates.insert(0, ("fused, host-emulated (CPU)",
                              lambda: pipe.apply_params(images, params, stack=True, backend=host)))
    except FusedUnavailable as e:
        rows["fused, host-emulated (CPU)"] = {"skipped": str(e)}
    for name, fn in candidates:
        record(name, *time_cpu(fn, repeats))
    if torch.cuda.is_available():
        from gpuaug.fused import cuda_backend

        gpu_images = [im.cuda() for im in images]
        gpu_candidates = [("torch reference (CUDA)", lambda: pipe.apply_params(gpu_images, params, stack=True))]
        try:
            backend = cuda_backend("cuda")
            gpu_candidates.insert(0, ("fused kernels (CUDA)",
                                      lambda: pipe.apply_params(gpu_images, params, stack=True, backend=backend)))
        except FusedUnavailable as e:
            rows["fused kernels (CUDA)"] = {"skipped": str(e)}
        moved = bytes_moved(params, reference)
        for name, fn in gpu_candidates:
            seconds, out = time_cuda(fn, repeats)
            record(name, seconds, out, GB_per_s=moved / seconds / 1e9, bytes_per_batch=moved)
    return {
        "settings": {"date": time.strftime("%Y-%m-%d %H:%M"), "batch": len(images), "repeats": repeats,
                     "recipe": repr(pipe), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                     "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cores": os.cpu_count(),
                     "cpu": platform.processor() or platform.machine(),
                     "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                     "mean_source_hw": [round(float(v)) for v in sizes.double().mean(0)],
                     "min_source_hw": sizes.min(0).values.tolist(), "max_source_hw": sizes.max(0).values.tolist()},
        "results": rows,
        **({"profile": where} if where else {}),
    }


def profile(pipe: T.Compose, images: list[torch.Tensor], params, repeats: int = 3) -> dict:
    """Where a batch's time goes: per op of the torch reference (cProfile), per kernel of the host emulation.

    Returns ``{"reference_ms": {op: ms}, "color_ms": {adjustment: ms}, "host_kernel_ms": {kernel: ms}}``
    per batch, averaged over ``repeats`` runs (cProfile adds a little overhead to each call).
    """
    import cProfile
    import pstats

    from gpuaug.fused import FusedUnavailable, HostBackend
    from gpuaug.transforms import _color

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(repeats):
        pipe.apply_params(images, params, stack=True)
    prof.disable()
    stats = pstats.Stats(prof).stats                 # {(file, line, name): (cc, nc, tottime, cumtime, callers)}

    def cumulative_ms(fn) -> float:
        code = fn.__code__
        entry = stats.get((code.co_filename, code.co_firstlineno, code.co_name))
        return 1000 * entry[3] / repeats if entry else 0.0

    report = {"reference_ms": {type(op).__name__: cumulative_ms(type(op).apply) for op in pipe.transforms},
              "color_ms": {fn.__name__: cumulative_ms(fn) for fn in getattr(_color, "_ADJUST", ())},
              "host_kernel_ms": {}}
    try:
        host = HostBackend.get()
    except FusedUnavailable:
        return report
    launch = host.launch
    totals: dict[str, float] = {}

    def timed_launch(kernel, *args):
        start = time.perf_counter()
        launch(kernel, *args)
        totals[kernel] = totals.get(kernel, 0.0) + time.perf_counter() - start

    host.launch = timed_launch                       # the shared backend: restored below
    try:
        for _ in range(repeats):
            pipe.apply_params(images, params, stack=True, backend=host)
    finally:
        del host.launch
    report["host_kernel_ms"] = {k: 1000 * v / repeats for k, v in totals.items()}
    return report


def table(report: dict) -> str:
    rows = report["results"]
    base = rows.get("torchvision v2 per-op (CPU)", {}).get("images_per_s")
    lines = [f"{'implementation':30s} {'ms/batch':>9s} {'images/s':>9s} {'vs torchvision':>14s} "
             f"{'max |diff|':>10s} {'GB/s':>6s}"]
    for name, row in rows.items():
        if "skipped" in row:
            lines.append(f"{name:30s} skipped: {row['skipped']}")
            continue
        ratio = f"{row['images_per_s'] / base:.2f}x" if base else "-"
        gbs = f"{row['GB_per_s']:.1f}" if "GB_per_s" in row else "-"
        lines.append(f"{name:30s} {row['ms_per_batch']:9.1f} {row['images_per_s']:9.0f} {ratio:>14s} "
                     f"{row['max_abs_diff_vs_reference']:10.2g} {gbs:>6s}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64, help="images in the batch (default 64)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per implementation (median)")
    parser.add_argument("--profile", action="store_true",
                        help="also show per-op (reference) and per-kernel (host emulation) milliseconds")
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args(argv)
    report = run(args.batch, args.repeats, args.profile)
    s = report["settings"]
    print(f"{s['batch']} images, mean {s['mean_source_hw'][1]}x{s['mean_source_hw'][0]} (from "
          f"{s['min_source_hw'][1]}x{s['min_source_hw'][0]} to {s['max_source_hw'][1]}x{s['max_source_hw'][0]}) "
          f"-> float32 [B, 3, 224, 224]; torch {s['torch']}, {s['torch_threads']} threads, {s['cores']} cores, "
          f"{s['cuda'] or 'no GPU'}; median of {s['repeats']}")
    print(table(report))
    for part, times in report.get("profile", {}).items():
        print(f"{part}: " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
