"""``python -m gpuaug.bench``: the same recipe through every input pipeline this machine has.

Pipelines (each skipped with its reason when its package or device is missing):

* ``torchvision-pil``: ImageFolder + transforms.v2 in torch's DataLoader (PIL decode in workers);
* ``torchvision-io``: the same, decoding with TorchCodec (torchvision.io's successor);
* ``kornia``: workers decode and resize to 256x256, Kornia augments the batch in the main process;
* ``dali-cpu`` / ``dali-gpu``: an NVIDIA DALI pipeline on the CPU (``device_id=None``) / mixed on the GPU;
* ``gpuaug-cpu`` (reference), ``gpuaug-cpu-fused`` (host-compiled kernels), ``gpuaug-cuda``.

Workers persist across epochs in every pipeline (start-up is paid once, in the warm-up).
Metrics per pipeline, after a warm-up epoch, median over the measured epochs: images/s,
CPU core-seconds per 1000 images for the whole process tree (workers included), the
workers' share of it, and peak RSS of the tree; on CUDA also peak GPU memory. Output: a
table, JSON (``--out``) and a PNG chart (``--plot``). ``benchmarks/cpu_vs_gpu.py`` is the
same entry point. Example (CPU, tiny)::

    python -m gpuaug.bench --quick --out /tmp/bench.json --plot /tmp/bench.png
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PIPELINES = ("torchvision-pil", "torchvision-io", "kornia", "dali-cpu", "dali-gpu", "gpuaug-cpu",
             "gpuaug-cpu-fused", "gpuaug-cuda")


@dataclass
class Result:
    pipeline: str
    status: str = "measured"                # or "skipped: <reason>"
    images_per_s: float = 0.0
    cpu_s_per_1000: float = 0.0             # core-seconds per 1000 images, whole process tree
    worker_cpu_s_per_1000: float = 0.0      # of which in worker processes
    peak_rss_mb: float = 0.0
    peak_gpu_mb: float = 0.0
    gpu_ms_per_batch: float = 0.0           # CUDA events on the consumer's stream, epoch time / batches
    data_wait_share: float = 0.0            # end-to-end mode: share of the loop spent waiting for data
    epochs: list = field(default_factory=list)


# -- recipes ----------------------------------------------------------------------------------

def gpuaug_recipe(name: str):
    from . import transforms as T

    if name == "eval":
        ops = [T.Resize(256), T.CenterCrop(224)]
    elif name == "randaug":
        if not hasattr(T, "RandAugment"):
            raise RuntimeError("gpuaug.transforms.RandAugment is not available in this build")
        ops = [T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.RandAugment()]
    else:
        ops = [T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4, 0.1)]
    return T.Compose(ops + [T.ToDtype(torch.float32, scale=True), T.Normalize(MEAN, STD)])


def torchvision_recipe(name: str, decode_to_tensor):
    import torchvision.transforms.v2 as v2

    if name == "eval":
        ops = [v2.Resize(256), v2.CenterCrop(224)]
    elif name == "randaug":
        ops = [v2.RandomResizedCrop(224), v2.RandomHorizontalFlip(), v2.RandAugment()]
    else:
        ops = [v2.RandomResizedCrop(224), v2.RandomHorizontalFlip(), v2.ColorJitter(0.4, 0.4, 0.4, 0.1)]
    return v2.Compose([decode_to_tensor, *ops, v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])


# -- process-tree accounting ------------------------------------------------------------------

def _cpu_seconds():
    """(this process, its worker processes) CPU seconds: live workers (psutil) and exited ones (os.times)."""
    t = os.times()
    own, children = t.user + t.system, t.children_user + t.children_system
    try:
        import psutil
    except ImportError:
        return own, children
    for child in psutil.Process().children(recursive=True):
        try:
            c = child.cpu_times()
            children += c.user + c.system
        except psutil.Error:      # exited in between: os.times counts it next time
            pass
    return own, children


def _tree_rss_mb() -> float:
    try:
        import psutil
    except ImportError:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    me = psutil.Process()
    return sum(p.memory_info().rss for p in [me, *me.children(recursive=True)]) / 2**20


def measure(name: str, make_epoch: Callable[[], Callable[[], int]], epochs: int, on_cuda: bool = False,
            batch_size: int = 1) -> Result:
    """Run ``epochs`` epochs (the first is warm-up) of ``make_epoch()()``, which returns images seen."""
    result = Result(name)
    run_epoch = make_epoch()
    peak_rss = 0.0
    for epoch in range(epochs):
        if on_cuda:
            torch.cuda.reset_peak_memory_stats()
            gpu_start, gpu_end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            gpu_start.record()
        own0, children0 = _cpu_seconds()
        DATA_WAIT["seconds"] = 0.0
        start = time.perf_counter()
        images = run_epoch()
        gpu_ms = 0.0
        if on_cuda:
            gpu_end.record()
            torch.cuda.synchronize()
            gpu_ms = gpu_start.elapsed_time(gpu_end)
        wall = time.perf_counter() - start
        own1, children1 = _cpu_seconds()
        peak_rss = max(peak_rss, _tree_rss_mb())
        if epoch == 0 and epochs > 1:
            continue                                   # warm-up: worker start, kernel builds, caches
        cpu = (own1 - own0) + (children1 - children0)
        result.epochs.append({"images": images, "seconds": wall, "cpu_s": cpu, "worker_cpu_s": children1 - children0,
                              "data_wait_s": DATA_WAIT["seconds"], "gpu_ms": gpu_ms,
                              "batches": -(-images // batch_size)})
    rates = [e["images"] / e["seconds"] for e in result.epochs]
    result.images_per_s = statistics.median(rates)
    result.cpu_s_per_1000 = statistics.median(1000 * e["cpu_s"] / e["images"] for e in result.epochs)
    result.worker_cpu_s_per_1000 = statistics.median(1000 * e["worker_cpu_s"] / e["images"] for e in result.epochs)
    result.peak_rss_mb = peak_rss
    result.data_wait_share = statistics.median(e["data_wait_s"] / e["seconds"] for e in result.epochs)
    if on_cuda:
        result.peak_gpu_mb = torch.cuda.max_memory_allocated() / 2**20
        result.gpu_ms_per_batch = statistics.median(e["gpu_ms"] / max(e["batches"], 1) for e in result.epochs)
    return result


# -- the pipelines ----------------------------------------------------------------------------

#: Set by ``--train-model``: ``step(images, labels)`` trains one step on CUDA (end-to-end mode).
TRAIN_STEP: Callable | None = None
DATA_WAIT = {"seconds": 0.0}


def _loop(loader) -> Callable[[], int]:
    def run_epoch() -> int:
        n = 0
        batches = iter(loader)
        while True:
            waited = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return n
            DATA_WAIT["seconds"] += time.perf_counter() - waited
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            if TRAIN_STEP is not None:
                TRAIN_STEP(images, batch[1])
            n += len(images)
    return run_epoch


def train_step_for(model_name: str) -> Callable:
    """One SGD step of a randomly initialised torchvision model on CUDA (the end-to-end mode)."""
    import torchvision

    model = getattr(torchvision.models, model_name)(num_classes=1000).cuda().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(images, labels):
        images = images.cuda(non_blocking=True).float().contiguous(memory_format=torch.channels_last)
        labels = torch.as_tensor(labels).cuda(non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def make_pipeline(name: str, root: str, recipe: str, batch_size: int, workers: int):
    """A factory of one epoch's run for pipeline ``name`` (raises with a reason if unavailable)."""
    import torchvision

    if name.startswith("torchvision"):
        if name == "torchvision-pil":
            import torchvision.transforms.v2 as v2
            first = v2.PILToTensor()
            loader_fn = None
        else:
            from torchcodec.decoders import decode_image
            first = torchvision.transforms.v2.Lambda(lambda x: x)
            loader_fn = lambda path: decode_image(path)  # noqa: E731
        ds = torchvision.datasets.ImageFolder(root, transform=torchvision_recipe(recipe, first),
                                              **({"loader": loader_fn} if loader_fn else {}))
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                             persistent_workers=workers > 0)
        return lambda: _loop(loader)
    if name == "kornia":
        if recipe != "train":
            raise RuntimeError("the Kornia comparison implements the train recipe only")
        import kornia.augmentation as K
        import torchvision.transforms.v2 as v2
        ds = torchvision.datasets.ImageFolder(root, transform=v2.Compose([v2.PILToTensor(), v2.Resize((256, 256))]))
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                             persistent_workers=workers > 0)
        aug = K.AugmentationSequential(K.RandomResizedCrop((224, 224)), K.RandomHorizontalFlip(),
                                       K.ColorJitter(0.4, 0.4, 0.4, 0.1),
                                       K.Normalize(torch.tensor(MEAN), torch.tensor(STD)))

        def factory():
            def run_epoch() -> int:
                n = 0
                for images, _ in loader:
                    aug(images.float() / 255)
                    n += len(images)
                return n
            return run_epoch
        return factory
    if name.startswith("dali"):
        return _dali_pipeline(name, root, recipe, batch_size, workers)
    if name.startswith("gpuaug"):
        from . import DataLoader
        device = "cuda" if name == "gpuaug-cuda" else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("no CUDA device")
        loader = DataLoader(torchvision.datasets.ImageFolder(root), batch_size=batch_size, shuffle=True,
                            num_workers=workers, persistent_workers=workers > 0,
                            transform=gpuaug_recipe(recipe), device=device,
                            fused=True if name == "gpuaug-cpu-fused" else None, pin_memory=device == "cuda")
        return lambda: _loop(loader)
    raise ValueError(f"unknown pipeline {name!r}")


def _dali_pipeline(name: str, root: str, recipe: str, batch_size: int, workers: int):
    if recipe == "randaug":
        raise RuntimeError("no RandAugment in the DALI comparison")
    on_gpu = name == "dali-gpu"
    if on_gpu and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device")
    from nvidia.dali import fn, pipeline, types

    count = sum(1 for _, _, files in os.walk(root) for f in files if not f.startswith("."))
    pipe = pipeline.Pipeline(batch_size=batch_size, num_threads=max(1, workers), device_id=0 if on_gpu else None)
    with pipe:
        jpegs, labels = fn.readers.file(file_root=root, random_shuffle=True, name="files")
        images = fn.decoders.image(jpegs, device="mixed" if on_gpu else "cpu", output_type=types.RGB)
        if recipe == "eval":
            images = fn.resize(images, resize_shorter=256)
            images = fn.crop_mirror_normalize(images, crop=(224, 224), dtype=types.FLOAT, output_layout="CHW",
                                              mean=[m * 255 for m in MEAN], std=[s * 255 for s in STD])
        else:
            images = fn.random_resized_crop(images, size=(224, 224))
            images = fn.color_twist(images, brightness=fn.random.uniform(range=(0.6, 1.4)),
                                    contrast=fn.random.uniform(range=(0.6, 1.4)),
                                    saturation=fn.random.uniform(range=(0.6, 1.4)),
                                    hue=fn.random.uniform(range=(-36.0, 36.0)))   # degrees: 0.1 turn
            images = fn.crop_mirror_normalize(images, mirror=fn.random.coin_flip(), dtype=types.FLOAT,
                                              output_layout="CHW", mean=[m * 255 for m in MEAN],
                                              std=[s * 255 for s in STD])
        pipe.set_outputs(images, labels)
    pipe.build()
    batches = (count + batch_size - 1) // batch_size

    def factory():
        def run_epoch() -> int:
            n = 0
            for _ in range(batches):
                images, _ = pipe.run()
                n += len(images)
            return n
        return run_epoch
    return factory


# -- report -----------------------------------------------------------------------------------

def settings(root: str, args) -> dict:
    import torchvision
    from PIL import Image

    files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if not f.startswith(".")]
    sizes = []
    for path in files[:200]:
        with Image.open(path) as im:
            sizes.append(im.size)
    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version(),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu only",
            "cores": os.cpu_count(), "workers": args.workers, "torch_threads": torch.get_num_threads(),
            "batch_size": args.batch_size, "recipe": args.recipe, "epochs": args.epochs, "images": len(files),
            "mean_size": [round(sum(s[0] for s in sizes) / len(sizes)), round(sum(s[1] for s in sizes) / len(sizes))]}


def table(results: list[Result]) -> str:
    base = next((r for r in results if r.pipeline == "torchvision-pil" and r.status == "measured"), None)
    lines = [f"{'pipeline':18s} {'images/s':>9s} {'vs tv-pil':>9s} {'CPU s/1000':>10s} {'workers':>8s} "
             f"{'RSS MB':>7s} {'GPU MB':>7s} {'GPU ms/b':>8s} {'data wait':>9s}  status"]
    for r in results:
        if r.status != "measured":
            lines.append(f"{r.pipeline:18s} {'':>9s} {'':>9s} {'':>10s} {'':>8s} {'':>7s} {'':>7s} {'':>8s} {'':>9s}  "
                         f"{r.status}")
            continue
        ratio = f"{r.images_per_s / base.images_per_s:8.2f}x" if base else ""
        lines.append(f"{r.pipeline:18s} {r.images_per_s:9.1f} {ratio:>9s} {r.cpu_s_per_1000:10.2f} "
                     f"{r.worker_cpu_s_per_1000:8.2f} {r.peak_rss_mb:7.0f} {r.peak_gpu_mb:7.0f} "
                     f"{r.gpu_ms_per_batch:8.1f} {r.data_wait_share:9.0%}  measured")
    return "\n".join(lines)


def plot(results: list[Result], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    measured = [r for r in results if r.status == "measured"]
    fig = Figure(figsize=(10, 4), dpi=80)
    for k, (attr, title) in enumerate((("images_per_s", "images / s (higher is better)"),
                                       ("cpu_s_per_1000", "CPU core-seconds / 1000 images (lower is better)"))):
        ax = fig.add_subplot(1, 2, k + 1)
        ax.barh([r.pipeline for r in measured], [getattr(r, attr) for r in measured], color="#4878a8")
        ax.set_title(title, fontsize=10)
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path)


def measure_one(name: str, root: str, args) -> Result:
    global TRAIN_STEP
    try:
        if args.train_model:
            if not torch.cuda.is_available():
                raise RuntimeError("--train-model needs a CUDA device")
            if name.startswith("dali") or name == "kornia":
                raise RuntimeError("the end-to-end mode covers the DataLoader pipelines")
            TRAIN_STEP = train_step_for(args.train_model)
        factory = make_pipeline(name, root, args.recipe, args.batch_size, args.workers)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return measure(name, factory, args.epochs, on_cuda=name in ("gpuaug-cuda", "dali-gpu"),
                           batch_size=args.batch_size)
    except (ImportError, RuntimeError, ValueError) as e:
        return Result(name, status=f"skipped: {e}")


def run(args) -> dict:
    """Every pipeline in a fresh process of its own, so memory and CPU counts do not mix."""
    import subprocess
    import sys
    import tempfile

    from tqdm import tqdm

    root = args.data
    if root is None:
        from .sample_data import default_dataset
        root = str(default_dataset(num_images=args.images) if args.images else default_dataset())
    names = args.pipelines.split(",") if args.pipelines else list(PIPELINES)
    report = {"settings": settings(root, args), "results": []}
    for name in tqdm(names, desc="pipelines", disable=args.no_progress):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "one.json")
            cmd = [sys.executable, "-m", "gpuaug.bench", "--one", name, "--data", root, "--recipe", args.recipe,
                   "--batch-size", str(args.batch_size), "--workers", str(args.workers),
                   "--epochs", str(args.epochs), "--out", out] + (
                      ["--train-model", args.train_model] if args.train_model else [])
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode == 0:
                with open(out) as f:
                    report["results"].append(json.load(f))
            else:
                report["results"].append(asdict(Result(name, status=f"failed: {done.stderr.strip()[-300:]}")))
        tqdm.write(table([Result(**r) for r in report["results"]]).splitlines()[-1])
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpuaug.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="an ImageFolder root (default: the embedded dataset)")
    parser.add_argument("--recipe", choices=("train", "eval", "randaug"), default="train")
    parser.add_argument("--pipelines", help=f"comma list among {', '.join(PIPELINES)}")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="the first is a warm-up")
    parser.add_argument("--images", type=int, default=0, help="size of the embedded dataset (default 300)")
    parser.add_argument("--quick", action="store_true", help="tiny run for CI: 48 images, batch 16, 2 epochs")
    parser.add_argument("--out", help="write JSON here")
    parser.add_argument("--plot", help="write a PNG chart here")
    parser.add_argument("--train-model", help="CUDA only: train this torchvision model (e.g. resnet50) on each "
                        "loader and report images/s and the share of time spent waiting for data")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)     # internal: measure one pipeline, write JSON
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.batch_size, args.epochs = args.images or 48, 16, 2
    if args.one:
        with open(args.out, "w") as f:
            json.dump(asdict(measure_one(args.one, args.data, args)), f)
        return 0
    report = run(args)
    s = report["settings"]
    print(f"torch {s['torch']}, torchvision {s['torchvision']}, {s['device']}, {s['cores']} cores, "
          f"{s['workers']} workers, {s['torch_threads']} torch threads, batch {s['batch_size']}, recipe "
          f"{s['recipe']}, {s['images']} images of mean {s['mean_size'][0]}x{s['mean_size'][1]}")
    results = [Result(**r) for r in report["results"]]
    print(table(results))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
