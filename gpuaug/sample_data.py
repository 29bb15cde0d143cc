"""The embedded default dataset: a small ImageNet-like ``ImageFolder`` made from real photos.

gpuaug needs real JPEGs to demonstrate and benchmark anything (decode cost, resize cost
and the look of an augmentation all depend on real image content), but it must not
download anything. The photos that installed packages already ship are enough:
scikit-image's ``skimage/data`` (astronaut, coffee, chelsea, motorcycles, rocket,
Hubble deep field, retina, textures, coins, camera, moon…) and matplotlib's
``grace_hopper.jpg``. They are read straight from the package directories with PIL
(never through ``skimage.data`` functions, which may download); whatever subset exists
is used, and matplotlib alone suffices (one class).

:func:`default_dataset` turns them into a torchvision ``ImageFolder`` tree::

    root/
        astronaut/astronaut_00000.JPEG
        brick/brick_00010.JPEG
        ...

- one class per source photo (up to 16 classes), images assigned round-robin;
- each image is a seeded random crop of its photo, rescaled to an ImageNet-like size
  (mean about 420x355, long side 200-620 px, mostly 4:3-ish landscape, some portrait
  and square), randomly flipped, with mild brightness/contrast changes; JPEG quality
  85-95 with 4:2:0 chroma subsampling;
- ImageNet's quirks, kept rare: a few grayscale (single-channel) JPEGs and one PNG in
  a hundred saved under a ``.JPEG`` name;
- a pure function of ``(num_images, seed)`` and the available photos: image ``i`` only
  depends on ``(seed, i)``, so the same seed gives identical bytes (with the same
  Pillow/libjpeg build);
- generated once into ``cache_dir()/default_dataset_v1`` (``$GPUAUG_CACHE`` or
  ``~/.cache/gpuaug``) or ``root``, atomically: written to a temporary sibling
  directory and renamed into place, so an interrupted run or two processes racing never
  leave a half-written dataset;
- fast: about 1-2 s for 300 images on one core.

Example:
    >>> import torchvision
    >>> from gpuaug.sample_data import default_dataset
    >>> root = default_dataset()                      # generated on first use, then cached
    >>> ds = torchvision.datasets.ImageFolder(root)
    >>> len(ds), len(ds.classes) > 1
    (300, True)

From the command line: ``python -m gpuaug.sample_data [--root DIR] [--num-images N] [--seed S]``.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ._paths import cache_dir

VERSION = 1
MARKER = ".gpuaug_dataset.json"
DEFAULT_NUM_IMAGES = 300
DEFAULT_SEED = 0

# Real photos shipped inside scikit-image's wheel (skimage/data/); no synthetic or
# diagram images (page, text, phantom, chessboards, logo, cell...).
SKIMAGE_PHOTOS = (
    "astronaut.png", "coffee.png", "chelsea.png", "motorcycle_left.png", "motorcycle_right.png",
    "rocket.jpg", "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "gravel.png", "grass.png",
    "brick.png", "coins.png", "camera.png", "moon.png",
)
MATPLOTLIB_PHOTOS = ("grace_hopper.jpg",)

# How often the rare ImageNet quirks appear.
GRAYSCALE_KEEP_P = 0.15   # a grayscale source photo stays single-channel ("L" JPEG)
PNG_EVERY = 100           # image i with i % PNG_EVERY == PNG_EVERY // 2 is a PNG named .JPEG


@dataclass(frozen=True)
class SourcePhoto:
    """One photo the dataset is made from; its class name is the file stem."""

    name: str
    path: Path


def _package_dir(package: str) -> Path | None:
    """Directory of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def available_photos() -> list[SourcePhoto]:
    """The source photos present in this environment, in a fixed order.

    Returns:
        scikit-image's photos that exist, then matplotlib's ``grace_hopper``.
    """
    photos: list[SourcePhoto] = []
    skimage_dir = _package_dir("skimage")
    if skimage_dir is not None:
        for fname in SKIMAGE_PHOTOS:
            path = skimage_dir / "data" / fname
            if path.is_file():
                photos.append(SourcePhoto(Path(fname).stem, path))
    mpl_dir = _package_dir("matplotlib")
    candidates = [mpl_dir / "mpl-data" / "sample_data"] if mpl_dir is not None else []
    for fname in MATPLOTLIB_PHOTOS:
        for folder in candidates:
            if (folder / fname).is_file():
                photos.append(SourcePhoto(Path(fname).stem, folder / fname))
                break
        else:
            try:  # a matplotlib build whose data lives outside the package
                import matplotlib

                path = Path(matplotlib.get_data_path()) / "sample_data" / fname
                if path.is_file():
                    photos.append(SourcePhoto(Path(fname).stem, path))
            except Exception:  # noqa: BLE001 - matplotlib missing or broken: skip its photo
                pass
    return photos


def _load(photo: SourcePhoto) -> Image.Image:
    """The photo as an RGB or L image, fully loaded."""
    with Image.open(photo.path) as im:
        im.load()
        if im.mode in ("RGB", "L"):
            return im.copy()
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)
            return Image.fromarray(np.clip(arr / max(arr.max(), 1) * 255, 0, 255).astype(np.uint8), "L")
        return im.convert("RGB")


def _target_size(rng: np.random.Generator) -> tuple[int, int]:
    """An ImageNet-like ``(width, height)``: mean about 420x355, long side 200-620."""
    long_side = 500.0 if rng.random() < 0.4 else rng.uniform(200, 620)
    shape = rng.random()
    if shape < 0.70:                                  # landscape, mostly around 4:3
        ratio = rng.uniform(1.2, 1.6)
        w, h = long_side, long_side / ratio
    elif shape < 0.88:                                # portrait
        ratio = rng.uniform(1.2, 1.6)
        w, h = long_side / ratio, long_side
    else:                                             # square-ish
        ratio = rng.uniform(0.9, 1.1)
        w, h = long_side * min(1.0, ratio), long_side / max(1.0, ratio)
    return max(128, int(round(w))), max(128, int(round(h)))


def _render(src: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A seeded random crop of ``src`` rescaled to an ImageNet-like size, flipped and tinted."""
    w, h = _target_size(rng)
    sw, sh = src.size
    ar = w / h
    # The largest crop of aspect ``ar`` inside the photo, scaled to 35-100 % of its area.
    cw, ch = (sh * ar, float(sh)) if sw / sh > ar else (float(sw), sw / ar)
    s = float(np.sqrt(rng.uniform(0.35, 1.0)))
    cw, ch = cw * s, ch * s
    x0 = rng.uniform(0, sw - cw)
    y0 = rng.uniform(0, sh - ch)
    im = src.resize((w, h), Image.Resampling.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    # Mild brightness and contrast through one lookup table.
    brightness = rng.uniform(0.85, 1.15)
    contrast = rng.uniform(0.85, 1.15)
    lut = np.clip((np.arange(256) * brightness - 128.0) * contrast + 128.0, 0, 255).round().astype(np.uint8)
    return im.point(lut.tolist() * len(im.getbands()))


def _encode(im: Image.Image, index: int, rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    if index % PNG_EVERY == PNG_EVERY // 2:          # ImageNet has PNGs named .JPEG
        im.save(buf, "PNG")
    else:
        im.save(buf, "JPEG", quality=int(rng.integers(85, 96)), subsampling="4:2:0")
    return buf.getvalue()


def _generate(out: Path, photos: list[SourcePhoto], num_images: int, seed: int) -> dict[str, int]:
    """Write the ImageFolder tree into ``out``; returns images per class."""
    sources = [_load(p) for p in photos]
    counts: dict[str, int] = {}
    for i in range(num_images):
        k = i % len(photos)
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        src = sources[k]
        if src.mode == "L" and rng.random() >= GRAYSCALE_KEEP_P:
            src_im = src.convert("RGB")               # most grayscale photos are stored as RGB
        else:
            src_im = src
        data = _encode(_render(src_im, rng), i, rng)
        cls = photos[k].name
        (out / cls).mkdir(exist_ok=True)
        (out / cls / f"{cls}_{i:05d}.JPEG").write_bytes(data)
        counts[cls] = counts.get(cls, 0) + 1
    return counts


def _default_root(num_images: int, seed: int) -> Path:
    name = f"default_dataset_v{VERSION}"
    if (num_images, seed) != (DEFAULT_NUM_IMAGES, DEFAULT_SEED):
        name += f"-n{num_images}-s{seed}"
    return cache_dir() / name


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _check_marker(root: Path, meta: dict, num_images: int, seed: int) -> Path:
    found = (meta.get("version"), meta.get("num_images"), meta.get("seed"))
    if found != (VERSION, num_images, seed):
        raise ValueError(
            f"{root} holds a gpuaug sample dataset made with (version, num_images, seed)={found}, "
            f"not {(VERSION, num_images, seed)}; pass another root or delete that directory")
    return root


def _remove_stale_temporaries(parent: Path, name: str, max_age_s: float = 3600.0) -> None:
    """Best effort: delete temporary trees left by crashed runs more than an hour ago."""
    now = time.time()
    for stale in parent.glob(f".{name}.tmp-*"):
        try:
            if now - stale.stat().st_mtime > max_age_s:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass


def default_dataset(root: str | os.PathLike | None = None, num_images: int = DEFAULT_NUM_IMAGES,
                    seed: int = DEFAULT_SEED) -> Path:
    """Return the root of the default ``ImageFolder`` dataset, generating it on first use.

    Args:
        root: where the tree goes; default ``cache_dir()/default_dataset_v1`` (with
            ``-n{num_images}-s{seed}`` appended for non-default arguments). It must not
            exist, be an empty directory, or hold a dataset made with the same arguments.
        num_images: number of images (>= 1), spread round-robin over the classes.
        seed: non-negative seed; image ``i`` is a pure function of ``(seed, i)``.

    Returns:
        The dataset root, ready for ``torchvision.datasets.ImageFolder(root)``.

    Raises:
        RuntimeError: no source photo is installed (install matplotlib or scikit-image).
        ValueError: ``root`` holds a dataset made with other arguments, or bad arguments.
        FileExistsError: ``root`` is a non-empty directory that is not a gpuaug dataset.

    Example:
        >>> import tempfile, torchvision
        >>> from gpuaug.sample_data import default_dataset
        >>> root = default_dataset(tempfile.mkdtemp() + "/ds", num_images=20, seed=1)
        >>> ds = torchvision.datasets.ImageFolder(root)
        >>> len(ds), ds[0][0].size[0] >= 128
        (20, True)
    """
    num_images = int(num_images)
    seed = int(seed)
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    root = Path(root).expanduser() if root is not None else _default_root(num_images, seed)
    root = root.absolute()

    meta = _read_marker(root)
    if meta is not None:
        return _check_marker(root, meta, num_images, seed)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not an empty directory nor a gpuaug sample dataset")

    photos = available_photos()
    if not photos:
        raise RuntimeError("no source photos found for the default dataset: install matplotlib "
                           "(grace_hopper.jpg) or scikit-image (skimage/data photos)")

    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root.parent, root.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        os.chmod(tmp, 0o755)
        counts = _generate(tmp, photos, num_images, seed)
        meta = {"version": VERSION, "num_images": num_images, "seed": seed, "classes": counts,
                "sources": [str(p.path) for p in photos]}
        (tmp / MARKER).write_text(json.dumps(meta, indent=1))   # written last: the tree is complete
        try:
            os.rename(tmp, root)       # atomic; replaces an empty directory on POSIX
        except OSError:
            won = _read_marker(root)
            if won is not None:        # another process finished first: use its tree
                return _check_marker(root, won, num_images, seed)
            if root.is_dir() and not any(root.iterdir()):   # empty target (Windows)
                root.rmdir()
                os.rename(tmp, root)
            else:
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def main(argv: list[str] | None = None) -> int:
    """``python -m gpuaug.sample_data``: generate (or find) the dataset and describe it."""
    parser = argparse.ArgumentParser(prog="python -m gpuaug.sample_data", description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=None, help="target directory (default: the gpuaug cache)")
    parser.add_argument("--num-images", type=int, default=DEFAULT_NUM_IMAGES)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)

    target = Path(args.root) if args.root else _default_root(args.num_images, args.seed)
    cached = _read_marker(target.absolute()) is not None
    t0 = time.perf_counter()
    root = default_dataset(args.root, args.num_images, args.seed)
    elapsed = time.perf_counter() - t0
    meta = _read_marker(root) or {}
    files = sorted(p for p in root.rglob("*.JPEG"))
    sizes = []
    for p in files:
        with Image.open(p) as im:
            sizes.append(im.size)
    w = np.array([s[0] for s in sizes], dtype=float)
    h = np.array([s[1] for s in sizes], dtype=float)
    print(f"dataset: {root}")
    print(f"{'found in cache' if cached else 'generated'} in {elapsed:.2f} s")
    print(f"images: {len(files)}  classes: {len(meta.get('classes', {}))}  "
          f"bytes: {sum(p.stat().st_size for p in files) / 1e6:.1f} MB")
    if len(files):
        print(f"size: mean {w.mean():.0f}x{h.mean():.0f}  width {w.min():.0f}-{w.max():.0f}  "
              f"height {h.min():.0f}-{h.max():.0f}  portrait {int((h > w).sum())}")
    print("classes:", ", ".join(f"{c} ({n})" for c, n in meta.get("classes", {}).items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
