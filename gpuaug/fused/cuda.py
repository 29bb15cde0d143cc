"""The CUDA backend: ``kernels/fused.cu`` through NVRTC and CuPy.

The source handed to NVRTC has the headers it includes from ``kernels/`` inlined
(``descriptor.h``, ``color.h``, ``dtype.h``, ``portable.h``) and a hash of all of
``kernels/`` stamped in a comment, because CuPy's compile cache is keyed by the source
text and the options, not by the headers it finds through ``-I``: an edited header must
change the key. The CuPy calls themselves are in :class:`gpuaug.device.CupyModule` (the
package's GPU glue); this module only marshals arguments by kernel signature.
"""
from __future__ import annotations

import re
import threading

import numpy as np
import torch

from .._paths import kernels_dir
from ..device import CupyModule
from ..errors import FusedUnavailable
from ..native import kernel_sources_hash
from .run import KERNEL_SIGNATURES, KernelBackend

KERNELS = ("gpuaug_hpass", "gpuaug_vpass", "gpuaug_warp", "gpuaug_color")
OPTIONS = ("-std=c++17",)
#: How each signature letter of :data:`KERNEL_SIGNATURES` becomes a CuPy launch argument:
#: tensors are passed by device address (no copy), scalars as sized C types.
_MARSHAL = {"p": lambda a: np.uint64(a.data_ptr()), "i": np.int32, "f": np.float32, "q": np.int64}
_INCLUDE = re.compile(r'^#include "([^"]+)"[^\n]*$', re.MULTILINE)


def _inline_headers(text: str, root, seen: set[str]) -> str:
    """``text`` with each ``#include "x.h"`` of ``kernels/`` replaced by the header's text,
    recursively, the first time it appears (they all say ``#pragma once``) and by nothing after."""
    def include(match: re.Match) -> str:
        name = match.group(1)
        if name in seen:
            return ""
        seen.add(name)
        return _inline_headers((root / name).read_text(), root, seen)
    return _INCLUDE.sub(include, text)


def cuda_source() -> str:
    """``fused.cu`` with its headers inlined, stamped with the hash of ``kernels/``."""
    root = kernels_dir()
    body = _inline_headers((root / "fused.cu").read_text(), root, set())
    return f"// gpuaug kernels sha256 {kernel_sources_hash()}\n{body}"


class CudaBackend(KernelBackend):
    """Launches the fused kernels on one CUDA device (one shared instance per device: :meth:`get`).

    NVRTC compiles on first use (:class:`gpuaug.device.CupyModule`).
    """

    name = "cuda"
    _instances: dict[int, "CudaBackend"] = {}
    _lock = threading.Lock()

    def __init__(self, device_index: int):
        self.device_index = device_index
        self.module = CupyModule(device_index, cuda_source(), OPTIONS, KERNELS)
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
        converted = tuple(_MARSHAL[t](a) for t, a in zip(KERNEL_SIGNATURES[kernel], args, strict=True))
        self.module.launch(kernel, grid, (*block, 1), converted)
        self.launches += 1
