"""Host-compiled kernels: ``kernels/fused.cu`` compiled as C++ and called through ctypes
(the host emulation backend), and the CPU path's color loops (:class:`CpuColor`).

The kernel sources are built with ``kernels/emulation.h`` into a shared library
cached under ``gpuaug._paths.cache_dir()``, keyed by a hash of every file in
``kernels/`` and the compiler command, so an edited kernel is rebuilt. OpenMP runs the
blocks of a launch in parallel when the compiler supports it.

Example:
    >>> import torch
    >>> from gpuaug import transforms as T
    >>> from gpuaug.fused import HostBackend
    >>> pipe = T.Compose([T.RandomResizedCrop(8), T.ToDtype(torch.float32, scale=True)])
    >>> x = torch.randint(0, 256, (2, 3, 20, 30), dtype=torch.uint8)
    >>> keys_out = pipe(x, seed=0)
    >>> fused_out = pipe(x, seed=0, backend=HostBackend.get())
    >>> bool((keys_out - fused_out).abs().max() < 1e-4)
    True
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch

from .._paths import cache_dir, kernels_dir
from ..errors import FusedUnavailable
from .run import KERNEL_SIGNATURES, KernelBackend


def kernel_sources_hash() -> str:
    """sha256 over every file in ``kernels/`` (names and contents)."""
    digest = hashlib.sha256()
    root = kernels_dir()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".h", ".cu", ".cpp", ".cuh")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def find_compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


_BASE_FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-fno-strict-aliasing"]
# The CPU path's color loops: vectorized for this machine's CPU (floor and min/max need
# SSE4.1 at least; AVX2/AVX-512 where present). errno and FP traps are never used there.
_NATIVE_FLAGS = ["-march=native", "-fno-math-errno", "-fno-trapping-math"]


def _cpu_identity() -> str:
    """What ``-march=native`` compiles for: a library built for one CPU must not be loaded
    on another that shares the cache directory."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags"))][:2]
        return "".join(lines)
    except OSError:
        import platform
        return f"{platform.machine()} {platform.processor()}"


def build_library(source: str = "host_emulation.cpp", flag_sets: list[list[str]] | None = None) -> Path:
    """Compile (or find in the cache) ``kernels/<source>`` into a shared library; returns its path.

    ``flag_sets`` are tried in order (the first that compiles wins); by default the host
    emulation's: with OpenMP, then without.
    """
    compiler = find_compiler()
    if compiler is None:
        raise FusedUnavailable("no C++ compiler found ($CXX, c++, g++ or clang++): the host-compiled "
                               "kernels need one; using the torch implementation instead")
    path = kernels_dir() / source
    if flag_sets is None:
        flag_sets = [_BASE_FLAGS + ["-fopenmp"], _BASE_FLAGS]
    for flags in flag_sets:
        native = "-march=native" in flags
        identity = f"{kernel_sources_hash()} {compiler} {' '.join(flags)} {_cpu_identity() if native else ''}"
        key = hashlib.sha256(identity.encode()).hexdigest()[:20]
        target = cache_dir() / "host" / f"gpuaug_{path.stem}_{key}.so"
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        cmd = [compiler, *flags, "-I", str(kernels_dir()), str(path), "-o", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode == 0:
            os.replace(tmp, target)   # atomic: concurrent builders never see a partial file
            return target
        os.unlink(tmp)
        error = result.stderr.strip()
    raise FusedUnavailable(f"compiling kernels/{source} failed:\n{error}")


class CpuColor:
    """The CPU path's ColorJitter loops (``kernels/cpu_color.cpp``, the per-pixel formulas of
    ``kernels/color.h`` that the CUDA kernels use), compiled for this CPU on first use.

    :meth:`jitter` runs a sample's ops in place on its ``[3, N]`` float32 planes in one
    call that releases the GIL. :meth:`get` returns ``None`` where no compiler works (the
    CPU path then runs its TorchScript chain).

    Example:
        >>> import torch
        >>> from gpuaug.fused.host import CpuColor
        >>> x = torch.tensor([[200.0, 10.0], [100.0, 10.0], [50.0, 10.0]])
        >>> CpuColor.get().jitter(x, [0, 3], [1.2, 0.5], 255.0)      # brightness x1.2, then hue + 180 deg
        >>> x.round()
        tensor([[ 60.,  12.],
                [180.,  12.],
                [240.,  12.]])
    """

    _instance: "CpuColor | None" = None
    _failed: str | None = None
    _lock = threading.Lock()

    def __init__(self, library: Path | None = None):
        self.path = library or build_library(
            "cpu_color.cpp", [_BASE_FLAGS + _NATIVE_FLAGS, _BASE_FLAGS + ["-fno-math-errno"]])
        self._fn = ctypes.CDLL(str(self.path)).gpuaug_cpu_jitter
        self._fn.argtypes = [ctypes.c_void_p, ctypes.c_longlong, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                             ctypes.c_float]
        self._fn.restype = ctypes.c_int

    @classmethod
    def get(cls) -> "CpuColor | None":
        """The process-wide instance, or ``None`` when it cannot be built (:attr:`_failed` says why)."""
        with cls._lock:
            if cls._instance is None and cls._failed is None:
                try:
                    cls._instance = cls()
                except (FusedUnavailable, OSError) as exc:
                    cls._failed = str(exc)
            return cls._instance

    def jitter(self, x: torch.Tensor, ops: list[int], factors: list[float], bound: float) -> None:
        """ColorJitter ops (0 brightness, 1 contrast, 2 saturation, 3 hue) in order on ``x``
        (``[3, N]`` contiguous float32), in place, clamped to ``[0, bound]`` after each."""
        if x.dtype != torch.float32 or x.dim() != 2 or x.shape[0] != 3 or not x.is_contiguous():
            raise ValueError(f"expected contiguous [3, N] float32 planes, got {x.dtype} {tuple(x.shape)}")
        codes = (ctypes.c_int * len(ops))(*ops)
        values = (ctypes.c_float * len(factors))(*factors)
        if self._fn(x.data_ptr(), x.shape[1], codes, values, len(ops), bound) != 0:
            raise ValueError(f"unknown ColorJitter op in {ops}")


def _ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


class HostBackend(KernelBackend):
    """Runs the fused kernels on the CPU (one shared instance per process: :meth:`get`)."""

    name = "host"
    _instance: "HostBackend | None" = None
    _lock = threading.Lock()

    def __init__(self, library: Path | None = None):
        self.path = library or build_library()
        self.lib = ctypes.CDLL(str(self.path))
        self.launches = 0
        grid = [ctypes.c_uint] * 5
        ctype = {"p": ctypes.c_void_p, "i": ctypes.c_int, "f": ctypes.c_float, "q": ctypes.c_longlong}
        self._kernels = {}
        for kernel, signature in KERNEL_SIGNATURES.items():
            fn = getattr(self.lib, kernel.replace("gpuaug_", "gpuaug_emu_"))
            fn.argtypes, fn.restype = grid + [ctype[t] for t in signature], None
            self._kernels[kernel] = fn
        self.lib.gpuaug_descriptor_layout.argtypes = [ctypes.POINTER(ctypes.c_longlong), ctypes.c_int]
        self.lib.gpuaug_descriptor_layout.restype = ctypes.c_int

    @classmethod
    def get(cls) -> "HostBackend":
        """The process-wide backend (built on first use)."""
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def supports(self, device: torch.device) -> bool:
        return device.type == "cpu"

    def launch(self, kernel: str, grid, block, *args) -> None:
        fn = self._kernels[kernel]
        converted = [_ptr(a) if isinstance(a, torch.Tensor) else a for a in args]
        fn(*grid, *block, *converted)
        self.launches += 1

    def descriptor_layout(self) -> list[int]:
        """``[sizeof(SampleDesc), offsets...]`` as the host compiler laid the header out."""
        buf = (ctypes.c_longlong * 64)()
        n = self.lib.gpuaug_descriptor_layout(buf, 64)
        return [int(v) for v in np.ctypeslib.as_array(buf)[:n]]
