"""CUDA backend: the only module that launches kernels on a GPU (CuPy ``RawModule``).

Kept deliberately thin: everything else of the fused stage (planning, descriptor
packing, buffer allocation, launch order) is shared with the host emulation and tested
on CPU. Kernels are compiled by NVRTC on first use and cached by CuPy per device;
the source handed to CuPy has ``descriptor.h`` inlined and a hash of all of
``kernels/`` in a comment, because CuPy's cache key covers the source text and the
options but not headers found through ``-I``.
"""
from __future__ import annotations

import threading

import numpy as np
import torch

from .._paths import kernels_dir
from .host import FusedUnavailable, kernel_sources_hash
from .run import KERNEL_SIGNATURES

KERNELS = ("gpuaug_hpass", "gpuaug_vpass", "gpuaug_color")
OPTIONS = ("-std=c++17",)


def cuda_source() -> str:
    """``fused.cu`` with its header inlined, stamped with the hash of ``kernels/``."""
    root = kernels_dir()
    header = (root / "descriptor.h").read_text()
    body = (root / "fused.cu").read_text().replace('#include "descriptor.h"', header)
    return f"// gpuaug kernels sha256 {kernel_sources_hash()}\n{body}"


class CudaBackend:
    """Launches the fused kernels with CuPy on the current torch CUDA stream."""

    name = "cuda"
    _instances: dict[int, "CudaBackend"] = {}
    _lock = threading.Lock()

    def __init__(self, device_index: int):
        try:
            import cupy
        except ImportError as e:  # pragma: no cover - needs the cuda extra
            raise FusedUnavailable("the CUDA fused path needs CuPy: pip install 'gpuaug[cuda]'") from e
        self.cupy = cupy
        self.device_index = device_index
        with cupy.cuda.Device(device_index):
            self.module = cupy.RawModule(code=cuda_source(), options=OPTIONS)
            self.functions = {name: self.module.get_function(name) for name in KERNELS}
        self.launches = 0

    @classmethod
    def get(cls, device=None) -> "CudaBackend":
        if not torch.cuda.is_available():
            raise FusedUnavailable("no CUDA device is available")
        index = torch.device(device if device is not None else "cuda").index
        index = torch.cuda.current_device() if index is None else index
        with cls._lock:
            if index not in cls._instances:
                cls._instances[index] = cls(index)
            return cls._instances[index]

    def supports(self, device: torch.device) -> bool:
        return device.type == "cuda" and (device.index is None or device.index == self.device_index)

    def launch(self, kernel: str, grid, block, *args) -> None:
        signature = KERNEL_SIGNATURES[kernel]
        cast = {"p": lambda a: np.uint64(a.data_ptr()),   # tensors are passed by address, no copy
                "i": np.int32, "f": np.float32, "q": np.int64}
        converted = tuple(cast[t](a) for t, a in zip(signature, args, strict=True))
        stream = torch.cuda.current_stream(self.device_index)
        with self.cupy.cuda.Device(self.device_index):
            self.functions[kernel](grid, (*block, 1), converted,
                                   stream=self.cupy.cuda.ExternalStream(stream.cuda_stream))
        self.launches += 1
