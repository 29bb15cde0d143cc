"""The main job: train-style loading of an ImageFolder with GPU augmentation, timed and shown.

Runs ``gpuaug.DataLoader`` over an ``ImageFolder`` (by default the embedded dataset of
:mod:`gpuaug.sample_data`, generated on first use from photos that installed packages
ship) with the standard ImageNet training pipeline, for a few epochs with a progress
bar, prints images/s per epoch (steady state = the epochs after the first, which also
starts the workers) and writes the first augmented batch, de-normalized and labelled
with class names, to ``<out>/augmented_grid.png``.

Usage::

    python -m gpuaug.demo [--data PATH] [--batch-size 64] [--num-workers 2] [--epochs 2]
                          [--out demo_output/] [--device cuda|cpu] [--seed 0]

or ``make demo``. On a machine without a GPU it runs on the CPU (same semantics, same
images for the same seed).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torchvision
from tqdm import tqdm

import gpuaug
from gpuaug import transforms as T
from gpuaug.sample_data import default_dataset
from gpuaug.viz import save_grid

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
GRID_MAX_IMAGES = 64


def build_pipeline() -> T.Compose:
    """The ImageNet training augmentation, in gpuaug's torchvision-v2 names."""
    return T.Compose([
        T.RandomResizedCrop(224),
        T.RandomHorizontalFlip(),
        T.ColorJitter(0.4, 0.4, 0.4, 0.1),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(MEAN, STD),
    ])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gpuaug.demo",
        description="Load an ImageFolder through gpuaug.DataLoader with ImageNet augmentation; "
                    "report images/s and save a grid of the first augmented batch.")
    parser.add_argument("--data", type=Path, default=None,
                        help="ImageFolder root (default: the embedded sample dataset, generated on first use)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--device", default=None,
                        help="cuda or cpu (default: cuda when available, else cpu)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.epochs < 1 or args.num_workers < 0:
        parser.error("--batch-size and --epochs must be >= 1, --num-workers >= 0")
    return args


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_epoch(loader, epoch: int, epochs: int, device: torch.device, keep_first: bool):
    """Iterate one epoch; returns (images, seconds, first batch or None)."""
    first = None
    n = 0
    t0 = time.perf_counter()
    bar = tqdm(loader, total=len(loader), desc=f"epoch {epoch + 1}/{epochs}", unit="batch",
               dynamic_ncols=True, file=sys.stderr)
    for images, labels in bar:
        n += len(images)
        if keep_first and first is None:
            first = (images[:GRID_MAX_IMAGES].detach().to("cpu"), labels[:GRID_MAX_IMAGES].to("cpu"))
        elapsed = time.perf_counter() - t0
        bar.set_postfix_str(f"{n / max(elapsed, 1e-9):.0f} img/s")
    _sync(device)
    return n, time.perf_counter() - t0, first


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    root = args.data if args.data is not None else default_dataset()
    dataset = torchvision.datasets.ImageFolder(root)
    loader = gpuaug.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers,
        seed=args.seed, device=device, transform=build_pipeline())

    print("gpuaug demo")
    print(f"  dataset     : {root} ({len(dataset)} images, {len(dataset.classes)} classes)")
    print(f"  device      : {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print(f"  backend     : {'fused kernels' if getattr(loader, 'fused', False) else 'torch reference'}")
    print(f"  workers     : {args.num_workers}")
    print(f"  batch size  : {args.batch_size} ({len(loader)} batches/epoch)")
    print(f"  epochs      : {args.epochs}  seed: {args.seed}  torch threads: {torch.get_num_threads()}")
    print(f"  pipeline    : {loader.transform!r}" if hasattr(loader, "transform") else "")

    rates: list[float] = []
    first = None
    try:
        for epoch in range(args.epochs):
            n, secs, batch = run_epoch(loader, epoch, args.epochs, device, keep_first=first is None)
            first = first if first is not None else batch
            rate = n / secs if secs > 0 else float("nan")
            rates.append(rate)
            note = " (includes worker start-up)" if epoch == 0 else ""
            print(f"epoch {epoch + 1}: {n} images in {secs:.2f} s = {rate:.1f} images/s{note}")
    finally:
        close = getattr(loader, "close", None)
        if close is not None:
            close()

    if len(rates) > 1:
        steady = sum(rates[1:]) / len(rates[1:])
        print(f"steady state (epochs 2-{len(rates)}): {steady:.1f} images/s on {device}")
    else:
        print(f"one epoch: {rates[0]:.1f} images/s on {device} (run --epochs 2 or more for the steady state)")

    bad = getattr(loader, "bad_samples", [])
    if bad:
        print(f"bad samples: {len(bad)} (first: {bad[0]})")

    if first is not None:
        images, labels = first
        print(f"batch: {tuple(images.shape)} {images.dtype}, "
              f"mean {images.float().mean():.3f}, std {images.float().std():.3f} (normalized)")
        names = [dataset.classes[int(k)] for k in labels]
        path = save_grid(images, args.out / "augmented_grid.png", nrow=8, mean=MEAN, std=STD,
                         labels=names, title=f"gpuaug: first augmented batch (seed {args.seed}, {device})")
        print(f"augmented grid: {os.path.abspath(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
