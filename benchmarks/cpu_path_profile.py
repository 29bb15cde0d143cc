"""Where one sample's time goes on the fast CPU path, stage by stage, on one thread.

The fast CPU path (``gpuaug/cpu_path.py``, what ``gpuaug.DataLoader(device="cpu")`` runs
for a pipeline that starts with RandomResizedCrop) does four things per sample: decode
the JPEG's crop box, resize it in uint8, then flips, ColorJitter, ToDtype and Normalize
in one compiled call. This script times each stage alone on the embedded dataset's
JPEGs with the ImageNet training recipe's parameters, next to what each stage replaced,
in one process and interleaved (every round times every variant once; the minimum over
rounds is reported, the least disturbed by other load on the machine):

* decode: TorchCodec's full decode vs libjpeg-turbo over the crop box alone
  (``gpuaug.decode.decode_region``), and the whole image through the same call;
* after the resize: the compiled render (``gpuaug.native.CpuRender``) vs the torch steps
  it replaced (TorchScript ColorJitter chain, then the folded ToDtype+Normalize).

Usage::

    python benchmarks/cpu_path_profile.py --out benchmarks/results/cpu_path_profile.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from gpuaug import cpu_path
from gpuaug import transforms as T
from gpuaug.bench import MEAN, STD
from gpuaug.decode import _decode, decode_region
from gpuaug.headers import read_header
from gpuaug.native import CpuRender, JpegRegion
from gpuaug.rng import SampleKeys
from gpuaug.sample_data import default_dataset


def load_jpegs(images: int):
    """The embedded dataset's JPEGs: bytes and headers."""
    root = default_dataset(num_images=images)
    files = sorted(p for p in root.glob("*/*") if p.is_file())         # class folders, as ImageFolder reads them
    data = [p.read_bytes() for p in files]
    infos = [read_header(torch.frombuffer(bytearray(d), dtype=torch.uint8)) for d in data]
    keep = [k for k, info in enumerate(infos) if info.format == "jpeg" and not info.cmyk]
    return [data[k] for k in keep], [infos[k] for k in keep]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300, help="size of the embedded dataset")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)                      # as on the decoder pool's threads
    if CpuRender.get() is None or JpegRegion.get() is None:
        raise SystemExit(f"the compiled helpers did not build: {CpuRender._failed or JpegRegion._failed}")

    data, infos = load_jpegs(args.images)
    n = len(data)
    recipe = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4, 0.1),
                        T.ToDtype(torch.float32, scale=True), T.Normalize(MEAN, STD)])
    fast = cpu_path.FastCpuPath.for_pipeline(recipe)
    params = recipe.make_pipeline_params(SampleKeys(0, 0, torch.arange(n)),
                                         torch.tensor([[i.height, i.width] for i in infos]), channels=3)
    crop = params.per_op[0]
    boxes = torch.stack([crop.top, crop.left, crop.height, crop.width], 1).tolist()
    steps = fast.batch_steps(params)
    crops = [decode_region(d, i, *b) for d, i, b in zip(data, infos, boxes)]
    resized = [F.interpolate(c[None], size=(224, 224), mode="bilinear", antialias=True)[0] for c in crops]
    out = torch.empty(3, 224, 224)
    native = CpuRender.get()

    def torch_render(b):
        get = CpuRender.get
        CpuRender.get = classmethod(lambda cls: None)         # render_sample's torch steps
        try:
            cpu_path.render_sample(resized[b], (0, 0, 224, 224), (224, 224), "bilinear", steps[b], out)
        finally:
            CpuRender.get = get

    variants = {
        "decode: full image, TorchCodec": lambda b: _decode(data[b], infos[b], dense=False),
        "decode: full image, libjpeg-turbo (decode_region)":
            lambda b: decode_region(data[b], infos[b], 0, 0, infos[b].height, infos[b].width),
        "decode: crop box only, libjpeg-turbo (decode_region)": lambda b: decode_region(data[b], infos[b], *boxes[b]),
        "resize: crop box to 224x224, uint8 antialiased":
            lambda b: F.interpolate(crops[b][None], size=(224, 224), mode="bilinear", antialias=True),
        "after the resize: compiled render (flip, jitter, dtype, normalize)":
            lambda b: native.render(resized[b], *steps[b].program(), out),
        "after the resize: torch steps (TorchScript jitter, folded normalize)": torch_render,
    }
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            for b in range(n):
                run(b)
            times[name].append((time.perf_counter() - start) / n * 1e3)
    area = statistics.fmean(b[2] * b[3] / (i.height * i.width) for b, i in zip(boxes, infos))
    result = {"images": n, "mean_box_share_of_image": area, "rounds": args.rounds,
              "ms_per_image_min": {k: min(v) for k, v in times.items()},
              "ms_per_image_median": {k: statistics.median(v) for k, v in times.items()}}
    print(f"{n} JPEGs, crop boxes cover {area:.0%} of their image on average; ms per image, one thread "
          f"(min / median of {args.rounds} rounds):")
    for name in variants:
        print(f"  {name:72s} {result['ms_per_image_min'][name]:6.3f} / {result['ms_per_image_median'][name]:6.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
