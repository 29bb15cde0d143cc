"""Host emulation backend: ``kernels/fused.cu`` compiled as C++ and called through ctypes.

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


def build_library() -> Path:
    """Compile (or find in the cache) the host-emulation library; returns its path."""
    compiler = find_compiler()
    if compiler is None:
        raise FusedUnavailable("no C++ compiler found ($CXX, c++, g++ or clang++): the host-emulated fused "
                               "kernels need one; using the torch reference instead")
    source = kernels_dir() / "host_emulation.cpp"
    for flags in (_BASE_FLAGS + ["-fopenmp"], _BASE_FLAGS):
        key = hashlib.sha256(f"{kernel_sources_hash()} {compiler} {' '.join(flags)}".encode()).hexdigest()[:20]
        target = cache_dir() / "host" / f"gpuaug_fused_{key}.so"
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        cmd = [compiler, *flags, "-I", str(kernels_dir()), str(source), "-o", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode == 0:
            os.replace(tmp, target)   # atomic: concurrent builders never see a partial file
            return target
        os.unlink(tmp)
        error = result.stderr.strip()
    raise FusedUnavailable(f"compiling the host-emulated kernels failed:\n{error}")


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
