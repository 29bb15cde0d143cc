"""The CUDA source handed to NVRTC (the launch itself lives in :mod:`gpuaug.device`).

``descriptor.h`` is inlined and a hash of all of ``kernels/`` is stamped in a comment,
because CuPy's compile cache is keyed by the source text and the options, not by the
headers it finds through ``-I``: an edited header must change the key.
"""
from __future__ import annotations

from .._paths import kernels_dir
from .host import kernel_sources_hash

KERNELS = ("gpuaug_hpass", "gpuaug_vpass", "gpuaug_warp", "gpuaug_color")
OPTIONS = ("-std=c++17",)


def cuda_source() -> str:
    """``fused.cu`` with its header inlined, stamped with the hash of ``kernels/``."""
    root = kernels_dir()
    header = (root / "descriptor.h").read_text()
    body = (root / "fused.cu").read_text().replace('#include "descriptor.h"', header)
    return f"// gpuaug kernels sha256 {kernel_sources_hash()}\n{body}"
