"""Fused-kernel benchmark: the standard training recipe on one pre-decoded ragged batch.

On CPU it compares, side by side in one process on the same batch and parameters:

* the fused kernels compiled for the CPU (host emulation, ``fused=True`` on CPU);
* the torch reference (``fused=False``);
* torchvision.transforms.v2.functional's per-op chain, one sample at a time.

On CUDA it also times the CuPy kernels with CUDA events and reports the achieved
bandwidth against the bytes that must move (each needed source pixel once, each output
element once), next to the same reference on the GPU.

Usage::

    python benchmarks/kernel_bench.py                 # 64 images, 3 repeats, CPU (+ CUDA if present)
    python benchmarks/kernel_bench.py --batch 256 --out results/kernel.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torchvision.transforms.v2.functional as TVF

from gpuaug import transforms as T
from gpuaug.rng import SampleKeys

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def recipe(size: int = 224) -> T.Compose:
    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4, 0.1),
                      T.ToDtype(torch.float32, scale=True), T.Normalize(MEAN, STD)])


def batch_of_photos(n: int, device: str = "cpu") -> list[torch.Tensor]:
    """Decoded images of the embedded dataset (real photos, ImageNet-like sizes)."""
    import torchvision

    from gpuaug.decode import CpuDecoder
    from gpuaug.headers import read_header
    from gpuaug.sample_data import default_dataset

    paths = [p for p, _ in torchvision.datasets.ImageFolder(default_dataset()).samples][:n]
    items = []
    for path in paths:
        data = torch.frombuffer(bytearray(open(path, "rb").read()), dtype=torch.uint8)
        items.append((data, read_header(data)))
    with CpuDecoder() as decoder:
        return [im.to(device) for im in decoder.decode_batch(items)]


def torchvision_chain(images, params, pipe):
    """torchvision v2 functional ops, sample by sample, with the very same parameters."""
    crop, flip, jitter = params.per_op[:3]
    adjust = (TVF.adjust_brightness, TVF.adjust_contrast, TVF.adjust_saturation, TVF.adjust_hue)
    out = []
    for b, img in enumerate(images):
        x = TVF.resized_crop(img, int(crop.top[b]), int(crop.left[b]), int(crop.height[b]), int(crop.width[b]),
                             list(pipe.transforms[0].size), antialias=True)
        if flip.apply[b]:
            x = TVF.horizontal_flip(x)
        for op in jitter.order[b].tolist():
            x = adjust[op](x, float(jitter.factors()[op][b]))
        out.append(TVF.normalize(TVF.to_dtype(x, torch.float32, scale=True), MEAN, STD))
    return torch.stack(out)


def time_cpu(fn, repeats: int) -> float:
    fn()                                            # warm-up (compiles the host kernels once)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_cuda(fn, repeats: int) -> float:
    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000 / repeats


def bytes_moved(params, out_shape) -> int:
    """Each needed source pixel read once (3 uint8 channels) and each output float written once."""
    crop = params.per_op[0]
    source = int((crop.height * crop.width).sum()) * 3
    return source + int(torch.tensor(out_shape).prod()) * 4


def run(batch: int, repeats: int) -> dict:
    from gpuaug.fused import HostBackend

    pipe = recipe()
    images = batch_of_photos(batch)
    sizes = torch.tensor([list(im.shape[-2:]) for im in images])
    params = pipe.make_pipeline_params(SampleKeys(0, 0, torch.arange(len(images))), sizes)
    host = HostBackend.get()
    rows = {}
    for name, fn in (
        ("fused kernels, host-emulated (CPU)", lambda: pipe.apply_params(images, params, stack=True, backend=host)),
        ("torch reference (CPU)", lambda: pipe.apply_params(images, params, stack=True)),
        ("torchvision v2 per-op chain (CPU)", lambda: torchvision_chain(images, params, pipe)),
    ):
        seconds = time_cpu(fn, repeats)
        rows[name] = {"ms_per_batch": seconds * 1000, "images_per_s": len(images) / seconds}
    if torch.cuda.is_available():
        from gpuaug.fused import cuda_backend

        gpu_images = [im.cuda() for im in images]
        backend = cuda_backend("cuda")
        moved = bytes_moved(params, (len(images), 3, 224, 224))
        for name, fn in (
            ("fused kernels (CUDA)", lambda: pipe.apply_params(gpu_images, params, stack=True, backend=backend)),
            ("torch reference (CUDA)", lambda: pipe.apply_params(gpu_images, params, stack=True)),
        ):
            seconds = time_cuda(fn, repeats)
            rows[name] = {"ms_per_batch": seconds * 1000, "images_per_s": len(images) / seconds,
                          "GB_per_s": moved / seconds / 1e9}
    return {
        "settings": {"batch": len(images), "repeats": repeats, "recipe": repr(pipe), "torch": torch.__version__,
                     "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
                     "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                     "mean_source_size": [float(v) for v in sizes.double().mean(0)]},
        "results": rows,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args(argv)
    report = run(args.batch, args.repeats)
    settings = report["settings"]
    print(f"batch {settings['batch']} (mean source {settings['mean_source_size'][1]:.0f}x"
          f"{settings['mean_source_size'][0]:.0f}) -> 224x224 float32, torch {settings['torch']}, "
          f"{settings['threads']} threads, median of {settings['repeats']}")
    base = report["results"]["torchvision v2 per-op chain (CPU)"]["images_per_s"]
    print(f"{'pipeline':40s} {'ms/batch':>9s} {'images/s':>9s} {'vs torchvision':>15s} {'GB/s':>6s}")
    for name, row in report["results"].items():
        gbs = f"{row['GB_per_s']:6.1f}" if "GB_per_s" in row else ""
        print(f"{name:40s} {row['ms_per_batch']:9.1f} {row['images_per_s']:9.0f} "
              f"{row['images_per_s'] / base:14.2f}x {gbs}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
