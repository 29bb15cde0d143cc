"""Host emulation backend: ``kernels/fused.cu`` compiled as C++ and called through ctypes.

The kernel sources are built with ``kernels/emulation.h`` into a shared library
(:func:`gpuaug.native.build_library`: cached, keyed by a hash of every file in
``kernels/`` and the compiler command, so an edited kernel is rebuilt). OpenMP runs the
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
import threading
from pathlib import Path

import numpy as np
import torch

from ..native import BASE_FLAGS, build_library
from .run import KERNEL_SIGNATURES, KernelBackend


def build_host_library() -> Path:
    """Compile (or find in the cache) the host-emulation library; returns its path."""
    return build_library("host_emulation.cpp", [BASE_FLAGS + ["-fopenmp"], BASE_FLAGS])


def _ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


class HostBackend(KernelBackend):
    """Runs the fused kernels on the CPU (one shared instance per process: :meth:`get`)."""

    name = "host"
    _instance: "HostBackend | None" = None
    _lock = threading.Lock()

    def __init__(self, library: Path | None = None):
        self.path = library or build_host_library()
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
