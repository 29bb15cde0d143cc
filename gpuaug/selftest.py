"""``python -m gpuaug.selftest``: check every fused path against the torch reference.

On a machine with a CUDA GPU it runs the CuPy kernels, the host emulation and the
reference on random batches (sizes from 1x1 to 4000 px wide, every output dtype, both
layouts, gray and color pipelines), prints max/mean errors and timings, then checks the
GPU runtime (nvJPEG vs libjpeg-turbo, the loader on GPU vs CPU, overlap of the device
stage with a model step, flat GPU memory over 500 batches, no leaked streams or
threads), and exits non-zero on a mismatch. Without a GPU it says so and runs what can run: the static
kernel checks (NVRTC + ptxas) and the host-emulated kernels. ``--static`` runs only
the static checks.

Example (CPU):
    >>> from gpuaug.selftest import random_cases
    >>> pipe, images = next(random_cases(seed=0, count=1))
    >>> len(images) > 0
    True
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from typing import Iterator

import torch

from . import transforms as T
from .rng import SampleKeys

DTYPES = (torch.uint8, torch.float32, torch.float16, torch.bfloat16)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _image(h: int, w: int, gen: torch.Generator, device="cpu") -> torch.Tensor:
    base = torch.rand(3, max(1, h // 16), max(1, w // 16), generator=gen)
    img = torch.nn.functional.interpolate(base[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    noise = torch.rand(3, h, w, generator=gen) * 0.1
    return ((img * 0.9 + noise) * 255).round().clamp(0, 255).to(torch.uint8).to(device)


def random_pipeline(rng: random.Random, dtype: torch.dtype) -> T.Compose:
    """A random fusable pipeline ending in ``dtype``."""
    size = rng.choice([1, 7, 32, (24, 40), 96])
    geometry = rng.choice([
        [T.RandomResizedCrop(size, antialias=rng.random() < 0.8)],
        [T.Resize(rng.choice([20, 64])), T.CenterCrop(size)],
        [T.RandomCrop(size, pad_if_needed=True, fill=rng.choice([0, 17]))],
        [T.CenterCrop(rng.choice([16, 300])), T.Resize(size if isinstance(size, tuple) else (size, size))],
    ])
    ops = geometry + [T.RandomHorizontalFlip(rng.choice([0.0, 0.5, 1.0]))]
    if rng.random() < 0.4:
        ops.append(rng.choice([
            T.RandomRotation(rng.choice([10, 45]), interpolation=rng.choice(["nearest", "bilinear"]),
                             fill=rng.choice([0, 60])),
            T.RandomAffine(20, translate=(0.1, 0.2), scale=(0.8, 1.2), shear=10, interpolation="bilinear"),
            T.RandomPerspective(0.5, p=0.7, fill=(10, 200, 30)),
        ]))
    ops.append(T.RandomVerticalFlip(rng.choice([0.0, 0.5, 1.0])))
    if rng.random() < 0.8:
        ops.append(T.ColorJitter(*(rng.choice([None, 0.4, (0.2, 1.8)]) for _ in range(3)),
                                 hue=rng.choice([None, 0.1, 0.5])))
    if rng.random() < 0.4:
        ops.append(rng.choice([T.RandomSolarize(rng.choice([64, 200]), 0.5), T.RandomInvert(0.5),
                               T.RandomPosterize(rng.choice([2, 5, 8]), 0.7)]))
    if rng.random() < 0.3:
        ops.append(T.RandomGrayscale(rng.choice([0.0, 0.5, 1.0])))
    if dtype != torch.uint8:
        ops.append(T.ToDtype(dtype, scale=True))
        if rng.random() < 0.7:
            ops.append(T.Normalize(MEAN, STD))
    return T.Compose(ops)


def random_cases(seed: int = 0, count: int = 20, max_width: int = 4000,
                 device="cpu") -> Iterator[tuple[T.Compose, list[torch.Tensor]]]:
    """Random (pipeline, ragged uint8 batch) pairs covering edge sizes and every dtype."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    shapes = [(1, 1), (1, 37), (53, 1), (2, 3), (480, 640), (31, max_width), (333, 222)]
    for k in range(count):
        batch = [rng.choice(shapes) if rng.random() < 0.3 else (rng.randint(8, 300), rng.randint(8, 300))
                 for _ in range(rng.randint(1, 6))]
        yield random_pipeline(rng, DTYPES[k % len(DTYPES)]), [_image(h, w, gen, device) for h, w in batch]


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(max abs, mean abs) allowed between a fused output and the reference."""
    if dtype == torch.uint8:
        return 2.0, 0.05          # rounding at .5 and clamp edges may move a level
    if dtype == torch.bfloat16:
        return 0.07, 2e-3         # bf16 keeps 8 bits: one ulp at |x| ~ 2.6 is 0.016
    if dtype == torch.float16:
        return 0.03, 1e-3
    return 0.02, 1e-3             # ~1 uint8 level after Normalize


def compare(pipe: T.Compose, images: list[torch.Tensor], backend, seed: int = 0,
            channels_last: bool = False) -> tuple[float, float, torch.dtype]:
    """Max and mean abs error of ``backend`` against the reference on one batch."""
    keys = SampleKeys(seed, 0, torch.arange(len(images)))
    sizes = torch.tensor([list(im.shape[-2:]) for im in images])
    params = pipe.make_pipeline_params(keys, sizes)
    ref = pipe.apply_params([im.cpu() for im in images], params, stack=True)
    out = pipe.apply_params(images, params, stack=True, backend=backend, channels_last=channels_last)
    diff = (out.cpu().double() - ref.double()).abs()
    return diff.max().item(), diff.mean().item(), ref.dtype


def check_backend(backend, device="cpu", count: int = 24, max_width: int = 4000) -> bool:
    ok = True
    for k, (pipe, images) in enumerate(random_cases(seed=k_seed(backend), count=count, max_width=max_width,
                                                    device=device)):
        worst, mean, dtype = compare(pipe, images, backend, channels_last=k % 2 == 1)
        max_tol, mean_tol = tolerance(dtype)
        good = worst <= max_tol and mean <= mean_tol
        ok &= good
        print(f"  case {k:2d} {str(dtype):15s} batch {len(images)} max {worst:.2e} mean {mean:.2e} "
              f"{'ok' if good else 'MISMATCH'}")
    return ok


def k_seed(backend) -> int:
    return 1234 if backend.name == "cuda" else 42


def run_static() -> bool:
    from .fused.static import MAX_REGISTERS, resource_table

    print(f"static checks (NVRTC -> PTX -> ptxas -v; limits: <= {MAX_REGISTERS} registers, no stack, no spills)")
    print(f"  {'kernel':14s} {'arch':6s} {'regs':>4s} {'stack':>5s} {'spill st':>8s} {'spill ld':>8s}")
    ok = True
    for r in resource_table():
        ok &= r.ok
        print(f"  {r.kernel:14s} {r.arch:6s} {r.registers:4d} {r.stack_bytes:5d} {r.spill_stores:8d} "
              f"{r.spill_loads:8d}  {'ok' if r.ok else 'FAIL'}")
    return ok


def run_emulated(quick: bool = False) -> bool:
    from .fused import HostBackend

    print("host-emulated kernels vs torch reference")
    return check_backend(HostBackend.get(), "cpu", **(dict(count=6, max_width=600) if quick else {}))


def run_cuda() -> bool:
    from .fused import cuda_backend

    backend = cuda_backend("cuda")
    print(f"CUDA kernels on {torch.cuda.get_device_name()} vs torch reference")
    ok = check_backend(backend, "cuda")
    pipe = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4, 0.1),
                      T.ToDtype(torch.float16, scale=True), T.Normalize(MEAN, STD)])
    gen = torch.Generator().manual_seed(0)
    images = [_image(375, 500, gen, "cuda") for _ in range(256)]
    keys = SampleKeys(0, 0, torch.arange(256))
    params = pipe.make_pipeline_params(keys, torch.tensor([[375, 500]] * 256))
    for name, be in (("fused", backend), ("reference", None)):
        pipe.apply_params(images, params, stack=True, backend=be)   # warm-up
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(5):
            pipe.apply_params(images, params, stack=True, backend=be)
        end.record()
        torch.cuda.synchronize()
        print(f"  ImageNet train recipe, batch 256 of 500x375 -> 224 fp16: {name} "
              f"{start.elapsed_time(end) / 5:.2f} ms/batch")
    return ok


def _encoded_dataset(n: int, fmt: str, seed: int = 0) -> list:
    import io

    from PIL import Image

    gen = torch.Generator().manual_seed(seed)
    items = []
    for k in range(n):
        img = _image(200 + (k * 37) % 300, 250 + (k * 53) % 300, gen)
        buf = io.BytesIO()
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        items.append((buf.getvalue(), k))
    return items


# -- GPU runtime checks: one function a check, each returning (ok, what it measured) ------------

def check_nvjpeg() -> tuple[bool, dict]:
    """nvJPEG vs libjpeg-turbo (TorchCodec's CPU decoder). IDCT implementations differ:
    allowed mean |diff| <= 1 level and 99.9th percentile <= 8 levels."""
    from .decode import CpuDecoder
    from .device import CudaRuntime
    from .headers import read_header

    items = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b, _ in _encoded_dataset(32, "JPEG")]
    gpu = CudaRuntime(torch.device("cuda")).decode_jpegs(items)
    with CpuDecoder(2) as decoder:
        cpu = decoder.decode_batch([(d, read_header(d)) for d in items])
    diffs = torch.cat([(g.cpu().float() - c.float()).abs().flatten() for g, c in zip(gpu, cpu)])
    mean, p999 = diffs.mean().item(), torch.quantile(diffs[::7], 0.999).item()
    print(f"  nvJPEG vs libjpeg-turbo: mean |diff| {mean:.3f}, 99.9% {p999:.0f} levels")
    return mean <= 1.0 and p999 <= 8, {"mean_abs_diff": mean, "p999_abs_diff": p999}


def check_loader_parity() -> tuple[bool, dict]:
    """The whole loader on GPU vs on CPU, same seed (PNG: both decode on the CPU, so any
    difference is the kernels'), within the fused-kernel tolerance."""
    from . import DataLoader

    data = _encoded_dataset(24, "PNG")
    outs = {}
    for device in ("cuda", "cpu"):
        loader = DataLoader(data, batch_size=8, seed=3, device=device, transform=_loader_recipe(), num_workers=2)
        outs[device] = torch.cat([images.float().cpu() for images, _ in loader])
    worst = (outs["cuda"] - outs["cpu"]).abs().max().item()
    print(f"  loader cuda vs cpu, same seed: max |diff| {worst:.2e}")
    return worst <= tolerance(torch.float32)[0], {"max_abs_diff": worst}


def check_overlap() -> tuple[bool, dict]:
    """A model step of known length on the consumer's stream hides the preprocessing."""
    from . import DataLoader

    loader = DataLoader(_encoded_dataset(64, "JPEG"), batch_size=16, device="cuda", transform=_loader_recipe(),
                        num_workers=2)
    for _ in loader:     # warm-up: compile kernels, start workers
        pass

    def timed(step_cycles: int | None) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        n = 0
        for _ in loader:
            if step_cycles:
                torch.cuda._sleep(step_cycles)
            n += 1
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / n

    prep = timed(None)
    cycles = int(2e6)
    step_start, step_end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    step_start.record()
    torch.cuda._sleep(cycles)
    step_end.record()
    torch.cuda.synchronize()
    step = step_start.elapsed_time(step_end)
    both = timed(cycles)
    print(f"  overlap: step {step:.1f} ms, preprocessing {prep:.1f} ms, loop {both:.1f} ms/batch "
          f"(sum would be {step + prep:.1f})")
    return both <= 1.25 * max(step, prep) + 1.0, {"step_ms": step, "preprocessing_ms": prep, "loop_ms": both}


def check_memory() -> tuple[bool, dict]:
    """Flat GPU memory over 500 batches."""
    from . import DataLoader

    small = T.Compose([T.RandomResizedCrop(32), T.ToDtype(torch.float16, scale=True)])
    loader = DataLoader(_encoded_dataset(50, "JPEG"), batch_size=10, device="cuda", transform=small)
    samples = []
    for _ in range(100):
        for _ in loader:
            pass
        samples.append(torch.cuda.memory_allocated())
    growth = (samples[-1] - samples[5]) / max(samples[5], 1)
    print(f"  GPU memory over 500 batches: {samples[5] / 2**20:.1f} -> {samples[-1] / 2**20:.1f} MiB")
    return growth <= 0.05, {"mib_after_25_batches": samples[5] / 2**20, "mib_after_500": samples[-1] / 2**20}


def check_cleanup() -> tuple[bool, dict]:
    """Nothing leaks: the side stream and gpuaug's threads go with the loader."""
    import gc
    import threading
    import weakref

    from . import DataLoader

    loader = DataLoader(_encoded_dataset(16, "JPEG"), batch_size=4, device="cuda", transform=_loader_recipe())
    for _ in loader:
        pass
    stream = weakref.ref(loader._runtime.stream)
    del loader
    gc.collect()
    left = [t.name for t in threading.enumerate() if t.name.startswith("gpuaug")]
    print(f"  side stream released: {stream() is None}; gpuaug threads left: {left or 'none'}")
    return stream() is None and not left, {"stream_released": stream() is None, "threads_left": left}


def _loader_recipe() -> T.Compose:
    return T.Compose([T.RandomResizedCrop(96), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4, 0.1),
                      T.ToDtype(torch.float32, scale=True), T.Normalize(MEAN, STD)])


RUNTIME_CHECKS = {"nvjpeg": check_nvjpeg, "loader_gpu_vs_cpu": check_loader_parity, "overlap": check_overlap,
                  "memory_500_batches": check_memory, "cleanup": check_cleanup}


def run_runtime() -> bool:
    """Every GPU runtime check in this process (the plain ``selftest`` run)."""
    ok = True
    for name, check in RUNTIME_CHECKS.items():
        good, _ = check()
        print(f"  {name}: {'ok' if good else 'FAILED'}")
        ok &= good
    return ok


def run_step(name: str, out: str, quick: bool = False) -> int:
    """One check of the report (in its own process): writes ``{"ok", "details"}`` to ``out``."""
    import json

    steps = {"static": lambda: (run_static(), {}), "emulated": lambda: (run_emulated(quick), {}),
             "cuda_kernels": lambda: (run_cuda(), {}), **RUNTIME_CHECKS}
    ok, details = steps[name]()
    with open(out, "w") as f:
        json.dump({"ok": bool(ok), "details": details}, f)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpuaug.selftest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--static", action="store_true", help="only the static kernel checks (no GPU needed)")
    parser.add_argument("--report", metavar="JSON", help="run every check in its own process under a timeout "
                        "and write one report (gpuaug.gpu_report; make gpu-check)")
    parser.add_argument("--plot", metavar="PNG", help="with --report: also a chart")
    parser.add_argument("--timeout", type=float, default=240.0, help="with --report: seconds per check")
    parser.add_argument("--quick", action="store_true", help="fewer and smaller emulated-kernel cases")
    parser.add_argument("--step", help=argparse.SUPPRESS)        # internal: one check of --report
    parser.add_argument("--step-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        return run_step(args.step, args.step_out, args.quick)
    if args.report:
        from .gpu_report import run_report

        return run_report(args.report, list(RUNTIME_CHECKS), args.plot, quick=args.quick, timeout=args.timeout)
    t0 = time.perf_counter()
    results = {"static": run_static()}
    if not args.static:
        results["emulated"] = run_emulated(args.quick)
        if torch.cuda.is_available():
            results["cuda"] = run_cuda()
            print("GPU runtime")
            results["runtime"] = run_runtime()
        else:
            print("no CUDA GPU on this machine: the CUDA kernels were not run "
                  "(static checks and host emulation above cover the kernel code)")
    summary = ", ".join(f"{name} {'ok' if good else 'FAILED'}" for name, good in results.items())
    print(f"selftest: {summary} ({time.perf_counter() - t0:.1f} s)")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
