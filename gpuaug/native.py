"""C++ compiled on the user's machine: the build cache, and the CPU path's two helpers.

Everything gpuaug compiles lives in ``kernels/`` and is built here with the system's C++
compiler into a shared library cached under :func:`gpuaug._paths.cache_dir`, keyed by a
hash of every source in ``kernels/``, the compiler, its flags and (for ``-march=native``
builds) the CPU, so an edited source or another machine gets its own build. Three
libraries come from there:

- the host emulation of the CUDA kernels (:class:`gpuaug.fused.HostBackend`, tests and
  ``fused=True`` on a CPU);
- :class:`CpuRender`: a sample's flips, ColorJitter, ToDtype and Normalize after its
  uint8 resize, in one call, one vectorized loop per op (``kernels/cpu_render.cpp``, with
  the per-pixel formulas of ``kernels/color.h`` and ``kernels/dtype.h`` that the CUDA
  kernels use too);
- :class:`JpegRegion`: libjpeg-turbo decoding only the rows and columns of a crop box
  (``kernels/jpeg_region.cpp``; needs ``jpeglib.h``, e.g. Debian's ``libjpeg-dev``).

Each is optional: where it cannot be built, ``get()`` returns ``None``, says why in
``_failed``, and the CPU path uses its torch code instead. ctypes releases the GIL for
every call, so the decode pool's threads run them in parallel.

Example:
    >>> import torch
    >>> from gpuaug.native import CpuRender
    >>> x = torch.tensor([[200.0, 10.0], [100.0, 10.0], [50.0, 10.0]])    # [3, N] planes
    >>> CpuRender.get().jitter(x, [0, 3], [1.2, 0.5], 255.0)      # brightness x1.2, then hue + 180 deg
    >>> x.round()
    tensor([[ 60.,  12.],
            [180.,  12.],
            [240.,  12.]])
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from ._paths import cache_dir, kernels_dir
from .errors import DecodeError, FusedUnavailable

BASE_FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-fno-strict-aliasing"]
# Vectorized for this machine's CPU (floor and min/max need SSE4.1 at least; AVX2 or
# AVX-512 where present). The loops never read errno or FP traps.
NATIVE_FLAGS = ["-march=native", "-fno-math-errno", "-fno-trapping-math"]


def kernel_sources_hash() -> str:
    """sha256 over every source file in ``kernels/`` (names and contents)."""
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


def _cpu_identity() -> str:
    """What ``-march=native`` compiles for: a library built for one CPU must not be loaded
    on another that shares the cache directory."""
    try:
        with open("/proc/cpuinfo") as f:
            return "".join([line for line in f if line.startswith(("model name", "flags"))][:2])
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def build_library(source: str, flag_sets: list[list[str]], libs: tuple[str, ...] = ()) -> Path:
    """Compile (or find in the cache) ``kernels/<source>`` into a shared library; returns its path.

    ``flag_sets`` are tried in order and the first that compiles wins; ``libs`` (``-l...``)
    follow the source on the command line, where the linker wants them.

    Raises:
        FusedUnavailable: no compiler, or no flag set compiled (the compiler's message).
    """
    compiler = find_compiler()
    if compiler is None:
        raise FusedUnavailable("no C++ compiler found ($CXX, c++, g++ or clang++): the host-compiled "
                               "kernels need one; using the torch implementation instead")
    path = kernels_dir() / source
    error = ""
    for flags in flag_sets:
        command = [*flags, *libs]
        identity = f"{kernel_sources_hash()} {compiler} {' '.join(command)}"
        if "-march=native" in flags:
            identity += _cpu_identity()
        key = hashlib.sha256(identity.encode()).hexdigest()[:20]
        target = cache_dir() / "host" / f"gpuaug_{path.stem}_{key}.so"
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        result = subprocess.run([compiler, *flags, "-I", str(kernels_dir()), str(path), *libs, "-o", tmp],
                                capture_output=True, text=True)
        if result.returncode == 0:
            os.replace(tmp, target)   # atomic: concurrent builders never see a partial file
            return target
        os.unlink(tmp)
        error = result.stderr.strip()
    raise FusedUnavailable(f"compiling kernels/{source} failed:\n{error}")


class _Library:
    """One compiled helper per process, built on first use; ``None`` where it cannot be."""

    _instance = None
    _failed: str | None = None          # why it could not be built, once tried

    def __init_subclass__(cls):
        cls._lock = threading.Lock()

    @classmethod
    def get(cls):
        """The process-wide instance, or ``None`` when it cannot be built (``_failed`` says why)."""
        with cls._lock:
            if cls._instance is None and cls._failed is None:
                try:
                    cls._instance = cls()
                except (FusedUnavailable, OSError, AttributeError) as exc:
                    cls._failed = str(exc)
            return cls._instance


#: The codes of :meth:`CpuRender.render`'s steps besides ColorJitter's 0-3 (``kernels/cpu_render.cpp``).
STEP_AFFINE = 8
_STEP_FLOATS = 6
#: Output dtypes, as ``GPUAUG_OUT_*`` in ``kernels/descriptor.h``.
OUT_DTYPES = {torch.uint8: 0, torch.float32: 1, torch.float16: 2, torch.bfloat16: 3}


class CpuRender(_Library):
    """A sample's work after its uint8 resize, in one call (``kernels/cpu_render.cpp``):
    flips, ColorJitter with the CUDA kernels' formulas as one vectorized loop per op,
    ToDtype and Normalize, the output row in its dtype and layout."""

    def __init__(self, library: Path | None = None):
        self.path = library or build_library(
            "cpu_render.cpp", [BASE_FLAGS + NATIVE_FLAGS, BASE_FLAGS + ["-fno-math-errno"]])
        lib = ctypes.CDLL(str(self.path))
        i, q, p = ctypes.c_int, ctypes.c_longlong, ctypes.c_void_p
        self._jitter = lib.gpuaug_cpu_jitter
        self._jitter.argtypes = [p, q, p, p, i, ctypes.c_float]
        self._render = lib.gpuaug_cpu_render
        self._render.argtypes = [p, q, q, q, i, i, i, i, p, p, i, p, i, q, q, q]
        self._jitter.restype = self._render.restype = ctypes.c_int

    def render(self, src: torch.Tensor, flip_y: bool, flip_x: bool, steps: list, out: torch.Tensor) -> None:
        """Write ``src`` (``[3, h, w]`` uint8, any strides) into ``out`` (``[3, h, w]`` uint8,
        float32, float16 or bfloat16, any strides) through ``steps``, in order, after the flips:
        ``(op, factor, bound)`` for a ColorJitter op (0 brightness, 1 contrast, 2 saturation,
        3 hue; clamped to ``[0, bound]`` after it) and ``(STEP_AFFINE, mul, add)`` with three
        values each (``x * mul + add`` per channel). uint8 output is rounded half to even.

        Example:
            >>> src = torch.tensor([[[0, 255]], [[128, 0]], [[255, 255]]], dtype=torch.uint8)   # [3, 1, 2]
            >>> out = torch.empty(3, 1, 2)
            >>> CpuRender.get().render(src, False, True, [(0, 0.5, 255.0), (STEP_AFFINE, [2.0] * 3, [1.0] * 3)], out)
            >>> out.flatten().tolist()      # mirrored, halved, then * 2 + 1
            [256.0, 1.0, 1.0, 129.0, 256.0, 256.0]
        """
        h, w = src.shape[-2:]
        if src.dtype != torch.uint8 or src.shape != (3, h, w) or out.shape != (3, h, w) or out.dtype not in OUT_DTYPES:
            raise ValueError(f"expected [3, h, w] uint8 in and [3, h, w] {list(OUT_DTYPES)} out, got "
                             f"{src.dtype} {tuple(src.shape)} and {out.dtype} {tuple(out.shape)}")
        codes = (ctypes.c_int * max(len(steps), 1))()
        values = (ctypes.c_float * (_STEP_FLOATS * max(len(steps), 1)))()
        for k, (code, a, b) in enumerate(steps):
            codes[k] = code
            values[_STEP_FLOATS * k:_STEP_FLOATS * (k + 1)] = [*a, *b] if code == STEP_AFFINE else [a, b, 0, 0, 0, 0]
        status = self._render(src.data_ptr(), *src.stride(), h, w, int(flip_y), int(flip_x), codes, values, len(steps),
                              out.data_ptr(), OUT_DTYPES[out.dtype], *out.stride())
        if status != 0:
            raise ValueError(f"unknown step code in {[s[0] for s in steps]}")

    def jitter(self, x: torch.Tensor, ops: list[int], factors: list[float], bound: float) -> None:
        """ColorJitter ops (0 brightness, 1 contrast, 2 saturation, 3 hue) in order on ``x``
        (``[3, N]`` contiguous float32), in place, clamped to ``[0, bound]`` after each."""
        if x.dtype != torch.float32 or x.dim() != 2 or x.shape[0] != 3 or not x.is_contiguous():
            raise ValueError(f"expected contiguous [3, N] float32 planes, got {x.dtype} {tuple(x.shape)}")
        codes = (ctypes.c_int * len(ops))(*ops)
        values = (ctypes.c_float * len(factors))(*factors)
        if self._jitter(x.data_ptr(), x.shape[1], codes, values, len(ops), bound) != 0:
            raise ValueError(f"unknown ColorJitter op in {ops}")


class JpegRegion(_Library):
    """Decode only a box of a JPEG with libjpeg-turbo (``kernels/jpeg_region.cpp``): the
    same pixels as a full decode with that library, for the cost of the box's rows and
    columns (rows below the box are never read).

    Example:
        >>> import io, numpy as np, torch
        >>> from PIL import Image
        >>> buf = io.BytesIO(); Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(buf, "JPEG")
        >>> JpegRegion.get().decode(buf.getvalue(), 10, 20, 5, 7).shape     # rows 10-14, columns 20-26
        torch.Size([5, 7, 3])
    """

    MESSAGE_BYTES = 200

    def __init__(self, library: Path | None = None):
        self.path = library or build_library("jpeg_region.cpp", [BASE_FLAGS], libs=("-ljpeg",))
        # Deep binding: its jpeg_* calls go to the libjpeg it was linked with, never to
        # another copy that an imaging package loaded into the process first.
        mode = ctypes.RTLD_LOCAL | getattr(os, "RTLD_DEEPBIND", 0)
        self._fn = ctypes.CDLL(str(self.path), mode=mode).gpuaug_jpeg_region
        self._fn.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                             ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        self._fn.restype = ctypes.c_int

    def decode(self, data: bytes | torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor | None:
        """Rows ``[top, top + height)`` and columns ``[left, left + width)`` of the *stored*
        image (EXIF orientation not applied) as ``[height, width, 3]`` uint8 RGB; ``None``
        when this decoder does not take the file (CMYK, a box outside the image).

        Raises:
            DecodeError: libjpeg's error or warning (corrupt or truncated data).
        """
        if isinstance(data, torch.Tensor):
            if data.dtype != torch.uint8 or not data.is_contiguous():
                raise ValueError("expected contiguous uint8 bytes")
            address, size = data.data_ptr(), data.numel()
        else:
            size = len(data)
            data = ctypes.c_char_p(bytes(data))           # no copy when ``data`` is already bytes
            address = ctypes.cast(data, ctypes.c_void_p).value
        out = torch.empty((height, width, 3), dtype=torch.uint8)
        message = ctypes.create_string_buffer(self.MESSAGE_BYTES)
        status = self._fn(address, size, top, left, height, width, out.data_ptr(), message, self.MESSAGE_BYTES)
        if status < 0:
            raise DecodeError(f"corrupt or truncated JPEG data: {message.value.decode(errors='replace')}")
        return out if status == 0 else None


__all__ = ["CpuRender", "JpegRegion", "STEP_AFFINE", "build_library", "find_compiler", "kernel_sources_hash"]
