"""The embedded default dataset (gpuaug.sample_data), its paths, its grid viewer and packaging."""
from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from gpuaug import sample_data
from gpuaug._paths import cache_dir, kernels_dir
from gpuaug.sample_data import MARKER, available_photos, default_dataset

REPO = Path(__file__).resolve().parents[1]
SEED = 3


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.JPEG"))}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return default_dataset(tmp_path_factory.mktemp("sample") / "ds", num_images=120, seed=SEED)


def test_is_an_image_folder_with_the_requested_count(dataset):
    ds = torchvision.datasets.ImageFolder(dataset)
    assert len(ds) == 120
    photos = available_photos()
    assert len(ds.classes) == min(len(photos), 120)
    assert set(ds.classes) <= {p.name for p in photos}
    # scikit-image (dev dependency) ships 15 photos, matplotlib one more.
    if sample_data._package_dir("skimage") is not None:
        assert len(ds.classes) >= 10
    counts = np.bincount(ds.targets)
    assert counts.max() - counts.min() <= 1          # round-robin: balanced classes
    img, target = ds[0]
    assert img.mode == "RGB" and 0 <= target < len(ds.classes)


def test_files_are_images_mostly_jpeg(dataset):
    files = sorted(dataset.rglob("*"))
    images = [p for p in files if p.is_file() and p.name != MARKER]
    assert len(images) == 120 and all(p.suffix == ".JPEG" for p in images)
    jpeg = 0
    for p in images:
        data = p.read_bytes()
        jpeg += data[:3] == b"\xff\xd8\xff"
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            assert im.mode in ("RGB", "L")
    assert jpeg >= 0.95 * len(images)
    assert jpeg < len(images)                          # ImageNet's quirk: a PNG named .JPEG


def test_sizes_look_like_imagenet(dataset):
    sizes = []
    for p in dataset.rglob("*.JPEG"):
        with Image.open(p) as im:
            sizes.append(im.size)
    w = np.array([s[0] for s in sizes], dtype=float)
    h = np.array([s[1] for s in sizes], dtype=float)
    assert 340 <= w.mean() <= 500 and 290 <= h.mean() <= 420, (w.mean(), h.mean())
    assert w.min() >= 128 and h.min() >= 128 and w.max() <= 700 and h.max() <= 700
    assert (h > w).sum() >= 0.08 * len(sizes)        # some portrait images
    assert (w > h).sum() >= 0.5 * len(sizes)         # mostly landscape
    assert len(set(sizes)) >= 0.5 * len(sizes)       # varied sizes (ragged batches)


def test_deterministic_from_the_seed(tmp_path, dataset):
    a = _files(default_dataset(tmp_path / "a", num_images=12, seed=SEED))
    b = _files(default_dataset(tmp_path / "b", num_images=12, seed=SEED))
    assert len(a) == 12 and a == b
    # Image i depends on (seed, i) only: a smaller dataset is a prefix of a larger one.
    big = _files(dataset)
    assert all(big[name] == data for name, data in a.items())
    c = _files(default_dataset(tmp_path / "c", num_images=12, seed=SEED + 1))
    assert c.keys() == a.keys() and all(c[k] != a[k] for k in a)


def test_generated_once_then_reused(tmp_path):
    root = default_dataset(tmp_path / "ds", num_images=6, seed=0)
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert default_dataset(tmp_path / "ds", num_images=6, seed=0) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == mtimes
    with pytest.raises(ValueError, match="num_images"):
        default_dataset(tmp_path / "ds", num_images=7, seed=0)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        default_dataset(tmp_path / "other", num_images=6)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(_files(default_dataset(empty, num_images=3))) == 3
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name], "temporary tree left behind"


def test_concurrent_generation_is_atomic(tmp_path):
    root = tmp_path / "race"
    results, errors = [], []

    def make():
        try:
            results.append(default_dataset(root, num_images=10, seed=1))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=make) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [root.absolute()] * 3
    assert len(_files(root)) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race"]


def test_default_location_is_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUAUG_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    root = default_dataset(num_images=4, seed=2)
    assert root == tmp_path / "cache" / "default_dataset_v1-n4-s2"
    assert len(_files(root)) == 4
    monkeypatch.delenv("GPUAUG_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "gpuaug"


def test_matplotlib_alone_suffices(tmp_path, monkeypatch):
    real = sample_data._package_dir
    monkeypatch.setattr(sample_data, "_package_dir", lambda name: None if name == "skimage" else real(name))
    photos = available_photos()
    assert [p.name for p in photos] == ["grace_hopper"]
    ds = torchvision.datasets.ImageFolder(default_dataset(tmp_path / "mpl", num_images=5))
    assert len(ds) == 5 and ds.classes == ["grace_hopper"]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        default_dataset(tmp_path / "x", num_images=0)
    with pytest.raises(ValueError):
        default_dataset(tmp_path / "x", seed=-1)


def test_grid_of_the_dataset(tmp_path, dataset):
    from gpuaug.viz import make_grid, save_grid, show

    ds = torchvision.datasets.ImageFolder(dataset)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    m, s = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    raw = [torchvision.transforms.functional.pil_to_tensor(ds[i][0]) for i in range(5)]   # ragged uint8
    normalized = [(r.float() / 255 - m) / s for r in raw]
    names = [ds.classes[ds.targets[i]] for i in range(5)]
    path = save_grid(normalized, tmp_path / "out" / "grid.png", nrow=3, mean=mean, std=std, labels=names)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100
    # De-normalizing gives back the uint8 pixels.
    assert np.allclose(make_grid(normalized, nrow=3, mean=mean, std=std),
                       make_grid(raw, nrow=3), atol=1e-5)
    fig = show(torch.stack([r[:, :64, :64] for r in raw]), labels=torch.arange(5))
    assert len(fig.axes) == 5 and fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"


def test_kernels_dir_is_the_checkout():
    assert kernels_dir() == REPO / "kernels"
    assert (kernels_dir() / "README.md").is_file()


def test_pyproject_lists_every_package():
    """pyproject.toml lists packages by hand (to map kernels/ to gpuaug.kernels): keep it complete."""
    tomllib = pytest.importorskip("tomllib")
    setuptools = pytest.importorskip("setuptools")
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set(setuptools.find_packages(str(REPO), include=["gpuaug", "gpuaug.*"]))
    missing = found - set(config["packages"])
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
    assert "gpuaug.kernels" in config["packages"] and config["package-dir"]["gpuaug.kernels"] == "kernels"
