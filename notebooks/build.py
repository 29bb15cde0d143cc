"""Build and execute the notebooks (stored with their outputs): ``python notebooks/build.py``.

The cells are written here, once, so the notebooks stay reviewable as code; the test
suite re-executes the stored notebooks (tests/test_notebooks.py).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).parent

SETUP = """\
import torch, torchvision, gpuaug
from gpuaug import transforms as T
from gpuaug.sample_data import default_dataset
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
root = default_dataset()          # ~300 real photos, generated on first use
dataset = torchvision.datasets.ImageFolder(root)
len(dataset), dataset.classes[:5]"""

NOTEBOOKS = {
    "01_quickstart.ipynb": [
        ("md", "# gpuaug quickstart\nWrap an `ImageFolder`, look at a batch, tune `ColorJitter`, replay what the model saw."),
        ("code", SETUP),
        ("md", "Workers only read bytes; decoding and augmentation run on whole batches (here on the CPU; "
               "`device='cuda'` moves them to the GPU)."),
        ("code", """\
recipe = T.Compose([T.RandomResizedCrop(160), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4, 0.1),
                    T.ToDtype(torch.float32, scale=True), T.Normalize(MEAN, STD)])
loader = gpuaug.DataLoader(dataset, batch_size=16, shuffle=True, num_workers=2, seed=0, transform=recipe)
images, labels = next(iter(loader))
print(images.shape, images.dtype, labels[:8].tolist())
print(recipe.plan())"""),
        ("code", "gpuaug.show(images[:8], mean=MEAN, std=STD, nrow=8, labels=[dataset.classes[l] for l in labels[:8]])"),
        ("md", "Every parameter is a pure function of (seed, epoch, dataset index): `show_replay` re-renders "
               "samples beside their originals, labelled with their crop box, flip and jitter factors."),
        ("code", "indices = loader.indices[:4].tolist()\ngpuaug.show_replay(loader, indices, epoch=loader.epoch)"),
        ("code", "assert torch.equal(loader.replay(indices[0], epoch=loader.epoch), images[0])\n'replay == what the loader gave'"),
        ("md", "Tuning: the same images through two jitter strengths."),
        ("code", """\
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor
raw = torch.stack([T.Resize((120, 160))(pil_to_tensor(Image.open(p).convert("RGB"))[None])[0]
                   for p, _ in dataset.samples[:6]])
gpuaug.compare(raw, {"ColorJitter(0.2)": T.ColorJitter(0.2, 0.2, 0.2, 0.02),
                     "ColorJitter(0.8)": T.ColorJitter(0.8, 0.8, 0.8, 0.3)})"""),
    ],
    "02_custom_pipelines.ipynb": [
        ("md", "# Custom pipelines\nKornia ops, RandAugment, RandomErasing, MixUp, boxes and masks, "
               "and which ops fuse into the kernels."),
        ("code", SETUP),
        ("code", """\
import kornia.augmentation as K
pipe = T.Compose([T.RandomResizedCrop(128), T.RandomHorizontalFlip(), T.RandAugment(2, 9),
                  T.Kornia(K.RandomGaussianBlur((5, 5), (0.1, 2.0), p=0.5)),
                  T.ColorJitter(0.3, 0.3, 0.3), T.ToDtype(torch.float32, scale=True), T.Normalize(MEAN, STD),
                  T.RandomErasing(0.5), T.MixUp(alpha=0.8, num_classes=len(dataset.classes))])
print(pipe.plan())"""),
        ("code", """\
loader = gpuaug.DataLoader(dataset, batch_size=8, shuffle=True, num_workers=2, seed=0, transform=pipe)
images, soft_labels = next(iter(loader))
print(images.shape, soft_labels.shape, soft_labels.sum(1))
gpuaug.show(images, mean=MEAN, std=STD, nrow=8)"""),
        ("md", "Detection targets follow their images: boxes (any format) and masks move with every geometric op."),
        ("code", """\
from torchvision import tv_tensors
img, _ = dataset[0]
w, h = img.size
boxes = tv_tensors.BoundingBoxes([[w * 0.3, h * 0.3, w * 0.6, h * 0.7]], format="XYXY", canvas_size=(h, w))
data = [(dataset.samples[0][0], {"boxes": boxes, "labels": torch.tensor([1])})] * 4
det = gpuaug.DataLoader(data, batch_size=4, seed=1, transform=T.Compose(
    [T.RandomZoomOut(side_range=(1, 1.5)), T.RandomResizedCrop(128, scale=(0.5, 1)), T.RandomRotation(20),
     T.RandomHorizontalFlip()]))
images, targets = next(iter(det))
from torchvision.utils import draw_bounding_boxes
drawn = [draw_bounding_boxes(im, b, colors="yellow", width=2) for im, b in zip(images, targets["boxes"])]
gpuaug.show(drawn, nrow=4)"""),
        ("md", "An existing torchvision pipeline converts in one call."),
        ("code", """\
import torchvision.transforms.v2 as v2
gpuaug.from_torchvision(v2.Compose([v2.RandomResizedCrop(224), v2.RandomHorizontalFlip(), v2.TrivialAugmentWide(),
                                    v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]))"""),
    ],
    "03_cpu_vs_gpu.ipynb": [
        ("md", "# CPU vs GPU preprocessing\nThe benchmark of `python -m gpuaug.bench`, run from Python "
               "(small settings so it runs in a minute; use the command line for real numbers)."),
        ("code", """\
import json, tempfile, os
from gpuaug.bench import main
out = os.path.join(tempfile.mkdtemp(), "bench.json")
main(["--quick", "--images", "64", "--pipelines", "torchvision-pil,dali-cpu,gpuaug-cpu,gpuaug-cuda",
      "--out", out, "--plot", out.replace(".json", ".png"), "--no-progress"])"""),
        ("code", """\
from IPython.display import Image
Image(out.replace(".json", ".png"))"""),
        ("md", "Where the time goes in gpuaug's own pipeline, stage by stage, with a hint at the bottleneck:"),
        ("code", """\
import torch, torchvision, gpuaug
from gpuaug import transforms as T
from gpuaug.sample_data import default_dataset
loader = gpuaug.DataLoader(torchvision.datasets.ImageFolder(default_dataset()), batch_size=32, num_workers=2,
                           transform=T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(),
                                                T.ColorJitter(0.4, 0.4, 0.4, 0.1), T.ToDtype(torch.float32, scale=True)]))
report = gpuaug.profile(loader, batches=6)
report"""),
        ("code", "report.plot()"),
    ],
}


def build(name: str, cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
                for kind, src in cells]
    return nb


def execute(nb: nbformat.NotebookNode, timeout: int = 180) -> nbformat.NotebookNode:
    # The kernel must be this interpreter (a fresh venv's kernelspec says just "python").
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    return nb


if __name__ == "__main__":
    for name, cells in NOTEBOOKS.items():
        nb = execute(build(name, cells))
        nbformat.write(nb, HERE / name)
        print(f"wrote {name} ({(HERE / name).stat().st_size / 1e3:.0f} kB)")
