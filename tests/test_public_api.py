"""The public API is where users look for it: ``gpuaug.__all__``, ``help(gpuaug)``, the README.

Every public object carries a runnable example (executed by ``test_docstrings.py``),
and every Python block of the README runs, in order, on the embedded dataset.
"""
from __future__ import annotations

import contextlib
import doctest
import inspect
import io
import os
import pydoc
import re
import tarfile
from pathlib import Path

import matplotlib
import pytest
import torch
from test_docstrings import MODULES

import gpuaug
from gpuaug import transforms as T
from gpuaug.sample_data import default_dataset

README = Path(__file__).resolve().parents[1] / "README.md"


def public_objects():
    for namespace, module in (("gpuaug", gpuaug), ("gpuaug.transforms", T)):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                yield f"{namespace}.{name}", obj


def test_star_import_is_all():
    namespace: dict = {}
    exec("from gpuaug import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(gpuaug.__all__)
    for name in ("DataLoader", "transforms", "TarShards", "WebDataset", "BadSampleError", "FusedUnavailable",
                 "from_torchvision", "show", "show_replay", "compare", "profile"):
        assert name in gpuaug.__all__


def test_help_lists_the_whole_public_surface():
    text = pydoc.render_doc(gpuaug, renderer=pydoc.plaintext)
    missing = [name for name in gpuaug.__all__ if name != "__version__" and name not in text]
    assert missing == []
    docstring = gpuaug.__doc__
    assert all(name in docstring for name in gpuaug.__all__ if name != "__version__")


@pytest.mark.parametrize("name, obj", list(public_objects()), ids=lambda v: v if isinstance(v, str) else "")
def test_public_object_has_a_runnable_example(name, obj):
    examples = doctest.DocTestParser().get_examples(inspect.getdoc(obj) or "")
    assert examples, f"{name} has no >>> example in its docstring"
    assert obj.__module__ in MODULES, f"{name}'s module {obj.__module__} is not doctested"


def test_webdataset_is_tar_shards_with_the_webdataset_flag(tmp_path):
    for s in range(3):
        with tarfile.open(tmp_path / f"s{s}.tar", "w") as tar:
            for k in range(2):
                info = tarfile.TarInfo(f"x{s}{k}.cls")
                info.size = 1
                tar.addfile(info, io.BytesIO(str(k).encode()))
    pattern = str(tmp_path / "s{0..2}.tar")
    for epoch in range(3):
        a, b = gpuaug.WebDataset(pattern, shardshuffle=True, seed=7), gpuaug.TarShards(pattern, shuffle_shards=True,
                                                                                       seed=7)
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        assert list(a) == list(b)
    assert [s["__key__"] for s in gpuaug.WebDataset(pattern)] == ["x00", "x01", "x10", "x11", "x20", "x21"]
    with pytest.raises(TypeError, match="shardshuffle"):
        gpuaug.WebDataset(pattern, shuffle_shards=True)


# -- the README's code, as a user would paste it ------------------------------------------------

def readme_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)


def write_shards(root: Path, shards: int = 3, per_shard: int = 6) -> str:
    """Tar shards of the embedded dataset's JPEGs (``key.jpg`` + ``key.cls``)."""
    import torchvision

    samples = torchvision.datasets.ImageFolder(default_dataset()).samples
    for s in range(shards):
        with tarfile.open(root / f"train-{s:06d}.tar", "w") as tar:
            for k in range(per_shard):
                path, label = samples[s * per_shard + k]
                for ext, data in (("jpg", Path(path).read_bytes()), ("cls", str(label).encode())):
                    info = tarfile.TarInfo(f"s{s}/{k:04d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(root / ("train-{000000..%06d}.tar" % (shards - 1)))


class TinyModel(torch.nn.Module):
    """Stands in for the user's model in the README's training loop."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        self.head = torch.nn.Linear(3, classes)

    def forward(self, x):
        return self.head(x.float().mean((2, 3)))


def test_every_readme_block_runs_on_the_embedded_data(tmp_path, monkeypatch):
    """The blocks run in order in one namespace; only what cannot exist here is swapped:
    the dataset's location, the number of epochs, the GPU and the NCCL backend."""
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    for var, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(29500 + os.getpid() % 1000)),
                       ("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(var, value)
    swaps = [
        ('"train/"', repr(str(default_dataset()))),
        ('"data/train-{000000..000146}.tar"', repr(write_shards(tmp_path))),
        ("range(90)", "range(2)"),
        ('init_process_group("nccl")', 'init_process_group("gloo")'),
    ]
    if not torch.cuda.is_available():
        swaps.append(('device="cuda"', 'device="cpu"'))
    blocks = readme_blocks()
    assert len(blocks) >= 9
    namespace = {"model": TinyModel()}          # the one name the README leaves to the user
    used = set()
    try:
        for number, block in enumerate(blocks, 1):
            for old, new in swaps:
                if old in block:
                    used.add(old)
                    block = block.replace(old, new)
            if block.lstrip().startswith(">>>"):
                test = doctest.DocTestParser().get_doctest(block, namespace, f"README block {number}", None, 0)
                runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
                output = io.StringIO()
                runner.run(test, out=output.write, clear_globs=False)
                assert runner.failures == 0, output.getvalue()
                continue
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                exec(compile(block, f"README block {number}", "exec"), namespace)
            # What a block prints is written under it as "# " comments: they must agree.
            shown = [line[2:] for line in block.splitlines() if line.startswith("# ops ") or line.startswith("# then ")]
            if shown:
                assert printed.getvalue().splitlines() == shown, f"README block {number}"
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    assert used == {old for old, _ in swaps}, "a swap no longer matches the README: update the test"
    # The last loop ran on the embedded data with the README's DeiT-style recipe (MixUp last).
    images, labels = namespace["images"], namespace["labels"]
    assert images.shape[1:] == (3, 224, 224) and images.dtype == torch.float32
    assert labels.shape == (len(images), 1000) and torch.allclose(labels.sum(1), torch.ones(len(images)))
