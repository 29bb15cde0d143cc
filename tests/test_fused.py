"""The fused kernels, run on CPU through host emulation, against the reference and torchvision;
plus the static checks of the CUDA build (NVRTC + ptxas), which need no GPU."""
from __future__ import annotations

import random
import shutil

import pytest
import torch
import torchvision.transforms.v2.functional as TVF

import gpuaug
from gpuaug import transforms as T
from gpuaug.fused import HostBackend, plan_segments
from gpuaug import native
from gpuaug.fused.descriptor import descriptor_layout
from gpuaug.rng import SampleKeys
from gpuaug.selftest import compare, random_cases, tolerance

from conftest import photo_like

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def host():
    return HostBackend.get()


def recipe(size=32, dtype=torch.float32):
    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4, 0.1),
                      T.ToDtype(dtype, scale=True), T.Normalize(MEAN, STD)])


def ragged(n=6, seed=0):
    rng = random.Random(seed)
    return [photo_like(rng.randint(20, 160), rng.randint(20, 160), seed=seed + k) for k in range(n)]


def run(pipe, images, backend, seed=0, channels_last=False):
    keys = SampleKeys(seed, 0, torch.arange(len(images)))
    params = pipe.make_pipeline_params(keys, torch.tensor([list(im.shape[-2:]) for im in images]))
    return pipe.apply_params(images, params, stack=True, backend=backend, channels_last=channels_last), params


def test_descriptor_layout_matches_the_header(host):
    assert host.descriptor_layout() == descriptor_layout()
    assert descriptor_layout()[0] == 256     # kernels/descriptor.h: 2 x 8 + 60 x 4 bytes


@pytest.mark.parametrize("case", range(32))
def test_random_batches_match_reference(host, case):
    pipe, images = list(random_cases(seed=100 + case // 8, count=8, max_width=4000))[case % 8]
    before = host.launches
    worst, mean, dtype = compare(pipe, images, host, channels_last=case % 2 == 0)
    assert host.launches > before, "the batch did not take the fused path"
    max_tol, mean_tol = tolerance(dtype)
    assert worst <= max_tol and mean <= mean_tol, (worst, mean, dtype, pipe)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_every_dtype_and_layout_against_torchvision(host, dtype, channels_last):
    images = ragged(5)
    ops = [T.RandomResizedCrop((24, 40)), T.RandomHorizontalFlip(), T.RandomVerticalFlip(),
           T.ColorJitter(0.4, 0.4, 0.4, 0.1), T.RandomGrayscale(0.4)]
    if dtype != torch.uint8:
        ops += [T.ToDtype(dtype, scale=True), T.Normalize(MEAN, STD)]
    pipe = T.Compose(ops)
    out, params = run(pipe, images, host, channels_last=channels_last)
    assert out.dtype == dtype and out.shape == (5, 3, 24, 40)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    crop, hflip, vflip, jitter, gray = params.per_op[:5]
    for b, img in enumerate(images):
        x = TVF.resized_crop(img.float() / 255, int(crop.top[b]), int(crop.left[b]), int(crop.height[b]),
                             int(crop.width[b]), [24, 40], antialias=True)
        x = TVF.horizontal_flip(x) if hflip.apply[b] else x
        x = TVF.vertical_flip(x) if vflip.apply[b] else x
        for op in jitter.order[b].tolist():
            x = (TVF.adjust_brightness, TVF.adjust_contrast, TVF.adjust_saturation, TVF.adjust_hue)[op](
                x, float(jitter.factors()[op][b]))
        x = TVF.rgb_to_grayscale(x, 3) if gray.apply[b] else x
        if dtype == torch.uint8:
            assert (out[b].float() - x * 255).abs().mean() <= 2.0        # 2/255 on the uint8 scale
        else:
            expected = TVF.normalize(x, MEAN, STD)
            tol = 4 / 255 / min(STD) + (0.05 if dtype == torch.bfloat16 else 0.01)
            assert (out[b].float() - expected).abs().max() <= tol


def test_one_pixel_and_huge_images(host):
    images = [photo_like(1, 1), photo_like(1, 4000), photo_like(4000, 1), photo_like(7, 4000)]
    pipe = T.Compose([T.RandomResizedCrop(16), T.ColorJitter(0.3, 0.3, 0.3, 0.05), T.ToDtype(torch.float32, True)])
    worst, mean, _ = compare(pipe, images, host)
    assert worst < 1e-4 and mean < 1e-5


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_probability_zero_and_one_are_exact(host, p):
    images = ragged(4)
    pipe = T.Compose([T.CenterCrop(16), T.RandomHorizontalFlip(p), T.RandomGrayscale(p)])
    out, _ = run(pipe, images, host)
    expected = torch.stack([TVF.center_crop(im, [16]) for im in images])
    if p == 1.0:
        expected = TVF.rgb_to_grayscale(TVF.horizontal_flip(expected.float()), 3).round().to(torch.uint8)
    assert (out.int() - expected.int()).abs().max() <= (1 if p else 0)


def test_nan_poisoned_outputs_are_fully_written(host, nan_poison):
    images = ragged(4)
    for pipe in (recipe(), T.Compose([T.Resize(30), T.CenterCrop(48), T.ToDtype(torch.float32, True)]),
                 T.Compose([T.RandomCrop(200, pad_if_needed=True), T.ToDtype(torch.float32, True)])):
        out, _ = run(pipe, images, host)
        assert not out.isnan().any(), pipe


def test_standard_recipe_takes_at_most_three_launches(host):
    images = ragged(8)
    for pipe, expected in ((recipe(), 3), (T.Compose([T.Resize(40), T.CenterCrop(32), T.ToDtype(torch.float32, True),
                                                      T.Normalize(MEAN, STD)]), 2)):
        before = host.launches
        run(pipe, images, host)
        assert host.launches - before == expected


def test_planner_splits_around_unfusable_ops():
    pipe = T.Compose([T.RandomResizedCrop(32), T.RandomHorizontalFlip(), T.Resize(16, interpolation="nearest"),
                      T.ColorJitter(0.2), T.ToDtype(torch.float32, True), T.Normalize(MEAN, STD),
                      T.RandomCrop(8, padding=2, padding_mode="reflect")])
    segments = plan_segments(pipe.transforms)
    assert [(s.start, len(s.ops), s.fused) for s in segments] == [(0, 2, True), (2, 1, False), (3, 3, True),
                                                                  (6, 1, False)]
    assert "fused" in pipe.plan() and "reference" in pipe.plan()


def test_mixed_pipeline_matches_reference(host):
    images = ragged(5)
    pipe = T.Compose([T.RandomResizedCrop(40), T.Resize(24, interpolation="nearest"), T.ColorJitter(0.4, 0.4, 0.4),
                      T.RandomCrop(20, padding=3, padding_mode="reflect"), T.ToDtype(torch.float16, True)])
    worst, mean, _ = compare(pipe, images, host)
    assert worst <= 2e-3 and mean <= 1e-4


def test_loader_fused_true_matches_reference(tmp_path):
    from conftest import encode
    data = [(encode(photo_like(40 + 7 * k, 90 - 5 * k, seed=k)), k) for k in range(7)]
    outs = {}
    for fused in (True, False):
        loader = gpuaug.DataLoader(data, batch_size=3, seed=4, device="cpu", fused=fused, transform=recipe())
        assert loader.fused is fused
        outs[fused] = torch.cat([images for images, _ in loader])
    assert (outs[True] - outs[False]).abs().max() < 1e-4


def test_cache_key_changes_when_a_kernel_file_changes(tmp_path, monkeypatch):
    copy = tmp_path / "kernels"
    shutil.copytree(native.kernels_dir(), copy)
    monkeypatch.setattr(native, "kernels_dir", lambda: copy)
    before = native.kernel_sources_hash()
    (copy / "descriptor.h").write_text((copy / "descriptor.h").read_text() + "\n// edited\n")
    assert native.kernel_sources_hash() != before
    from gpuaug.fused import cuda
    monkeypatch.setattr(cuda, "kernels_dir", lambda: copy)
    assert native.kernel_sources_hash() in cuda.cuda_source()


def test_missing_compiler_is_reported_and_falls_back(monkeypatch):
    monkeypatch.setattr(native, "find_compiler", lambda: None)
    monkeypatch.setattr(HostBackend, "_instance", None)
    with pytest.raises(native.FusedUnavailable, match="no C\\+\\+ compiler"):
        gpuaug.DataLoader([], device="cpu", fused=True)
    assert gpuaug.DataLoader([], device="cpu").fused is False     # the reference is the CPU default


# -- static checks of the CUDA build -----------------------------------------------------

def test_kernels_compile_with_nvrtc_and_fit_register_budget():
    from gpuaug.fused.static import MAX_REGISTERS, resource_table

    table = resource_table()
    kernels = ("gpuaug_hpass", "gpuaug_vpass", "gpuaug_warp", "gpuaug_color")
    assert {(r.kernel, r.arch) for r in table} == {(k, a) for k in kernels for a in ("sm_80", "sm_90")}
    for r in table:
        assert r.registers <= MAX_REGISTERS and r.stack_bytes == 0, r
        assert r.spill_stores == 0 and r.spill_loads == 0, r


def test_selftest_static_prints_the_table(capsys):
    from gpuaug.selftest import main

    assert main(["--static"]) == 0
    out = capsys.readouterr().out
    assert "gpuaug_vpass" in out and "sm_90" in out and "FAIL" not in out


def test_kernel_signatures_match_the_cuda_source():
    """Both backends marshal arguments from KERNEL_SIGNATURES: it must match fused.cu."""
    import re

    from gpuaug._paths import kernels_dir
    from gpuaug.fused.run import KERNEL_SIGNATURES

    source = (kernels_dir() / "fused.cu").read_text()
    found = {}
    for name, params in re.findall(r'extern "C" __global__ void (\w+)\(([^)]*)\)', source):
        codes = ""
        for param in params.split(","):
            param = " ".join(param.split())
            codes += ("p" if "*" in param else "q" if "long long" in param else "f" if param.startswith("float")
                      else "i")
        found[name] = codes
    assert found == KERNEL_SIGNATURES


def test_cuda_launch_glue_marshals_by_signature(monkeypatch):
    """The CuPy launch path, run against a stand-in CuPy (no GPU here): argument types and stream."""
    import sys
    import types

    import numpy as np

    from gpuaug.fused.cuda import CudaBackend

    calls = []

    class Function:
        def __init__(self, name):
            self.name = name

        def __call__(self, grid, block, args, stream=None):
            calls.append((self.name, grid, block, args, stream))

    class Module:
        def __init__(self, code, options):
            assert "gpuaug kernels sha256" in code and options == ("-std=c++17",)

        def get_function(self, name):
            return Function(name)

    fake = types.SimpleNamespace(RawModule=Module, cuda=types.SimpleNamespace(
        Device=lambda index: __import__("contextlib").nullcontext(),
        ExternalStream=lambda ptr: ("stream", ptr)))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda index=None: types.SimpleNamespace(cuda_stream=1234))
    backend = CudaBackend(0)
    t = torch.zeros(4)
    backend.launch("gpuaug_color", (1, 2, 3), (32, 8), t, t, t, t, 255.0, 4, 5, 3, 1, 10, 11, 12, 13)
    name, grid, block, args, stream = calls[0]
    assert name == "gpuaug_color" and block == (32, 8, 1) and stream == ("stream", 1234)
    assert [type(a) for a in args] == [np.uint64] * 4 + [np.float32] + [np.int32] * 4 + [np.int64] * 4
    assert int(args[0]) == t.data_ptr()
    with pytest.raises(ValueError):
        backend.launch("gpuaug_color", (1, 1, 1), (32, 8), t)     # wrong argument count


@pytest.mark.parametrize("tail", [
    [T.RandomSolarize(128, 0.5), T.RandomPosterize(3, 0.5), T.RandomInvert(0.5)],
    [T.RandomInvert(0.5), T.RandomSolarize(100, 0.7), T.ToDtype(torch.float32, True), T.Normalize(MEAN, STD)],
    [T.ToDtype(torch.float32, True), T.RandomSolarize(0.5, 0.6), T.RandomInvert(1.0), T.Normalize(MEAN, STD)],
])
def test_pixel_ops_fuse_into_the_color_pass(host, tail):
    pipe = T.Compose([T.RandomResizedCrop(32), T.ColorJitter(0.4, 0.4, 0.4, 0.1), *tail])
    assert [s.fused for s in plan_segments(pipe.transforms)] == [True]
    before = host.launches
    worst, mean, dtype = compare(pipe, ragged(6), host)
    assert host.launches > before
    max_tol, mean_tol = tolerance(dtype)
    assert worst <= max_tol and mean <= mean_tol


def test_float_posterize_takes_the_reference(host):
    pipe = T.Compose([T.RandomResizedCrop(32), T.ToDtype(torch.float32, True), T.RandomPosterize(3, 1.0)])
    before = host.launches
    worst, _, _ = compare(pipe, ragged(3), host)
    assert host.launches == before and worst == 0.0
