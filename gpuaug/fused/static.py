"""Static checks of the CUDA kernels that need no GPU.

NVRTC (from the ``nvidia-cuda-nvrtc`` wheel, through ``cupy_backends``) compiles
``kernels/fused.cu`` to PTX for each target architecture; ``ptxas -v`` then reports
registers, stack frame and spills per kernel. ``cuobjdump`` (shipped inside Triton's
wheel) can show the SASS. ``python -m gpuaug.selftest --static`` prints the table.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .cuda import KERNELS, cuda_source
from ..errors import FusedUnavailable

ARCHES = ("sm_80", "sm_90")
MAX_REGISTERS = 64


@dataclass
class KernelResources:
    kernel: str
    arch: str
    registers: int
    stack_bytes: int
    spill_stores: int
    spill_loads: int

    @property
    def ok(self) -> bool:
        return (self.registers <= MAX_REGISTERS and self.stack_bytes == 0
                and self.spill_stores == 0 and self.spill_loads == 0)


def compile_ptx(arch: str) -> str:
    """PTX of the fused kernels for ``arch`` (e.g. ``"sm_90"``) via NVRTC."""
    try:
        from cupy_backends.cuda.libs import nvrtc
    except ImportError as e:
        raise FusedUnavailable("NVRTC needs cupy (pip install 'gpuaug[cuda]')") from e
    program = nvrtc.createProgram(cuda_source(), "fused.cu", [], [])
    try:
        nvrtc.compileProgram(program, [f"-arch=compute_{arch.split('_')[1]}", "-std=c++17"])
    except Exception as e:  # NVRTCError: the log says what went wrong
        raise RuntimeError(f"NVRTC failed for {arch}:\n{nvrtc.getProgramLog(program)}") from e
    ptx = nvrtc.getPTX(program)
    return ptx.decode() if isinstance(ptx, bytes) else ptx


def find_tool(name: str) -> str | None:
    """A CUDA binary tool: on PATH, in CUDA_HOME, in the nvcc wheel, or in Triton's wheel."""
    found = shutil.which(name)
    if found:
        return found
    candidates = [Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / name]
    for module in ("nvidia.cuda_nvcc", "triton"):
        try:
            mod = __import__(module, fromlist=["__file__"])
        except ImportError:
            continue
        root = Path(list(getattr(mod, "__path__", [os.path.dirname(mod.__file__ or "")]))[0])
        candidates += list(root.rglob(name))
    return next((str(c) for c in candidates if c.is_file()), None)


_FUNCTION = re.compile(r"Compiling entry function '(\w+)' for '(\w+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")


def kernel_resources(arch: str) -> list[KernelResources]:
    """Registers, stack and spills of every kernel for ``arch`` (``ptxas -v``)."""
    ptxas = find_tool("ptxas")
    if ptxas is None:
        raise FusedUnavailable("ptxas not found (install CUDA or the nvidia-cuda-nvcc wheel)")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "fused.ptx"
        src.write_text(compile_ptx(arch))
        result = subprocess.run([ptxas, f"-arch={arch}", "-v", str(src), "-o", str(Path(tmp) / "fused.cubin")],
                                capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ptxas failed for {arch}:\n{result.stderr}")
    found, current = {}, None
    for line in result.stderr.splitlines():
        if m := _FUNCTION.search(line):
            current = m.group(1)
            found[current] = [0, 0, 0, 0]
        elif current and (m := _FRAME.search(line)):
            found[current][1:] = [int(g) for g in m.groups()]
        elif current and (m := _REGS.search(line)):
            found[current][0] = int(m.group(1))
    return [KernelResources(k, arch, *found[k]) for k in KERNELS if k in found]


def sass(arch: str = "sm_90") -> str:
    """SASS of the kernels via ``cuobjdump --dump-sass`` (for reading, not for tests)."""
    ptxas, cuobjdump = find_tool("ptxas"), find_tool("cuobjdump")
    if not (ptxas and cuobjdump):
        raise FusedUnavailable("ptxas or cuobjdump not found")
    with tempfile.TemporaryDirectory() as tmp:
        ptx, cubin = Path(tmp) / "fused.ptx", Path(tmp) / "fused.cubin"
        ptx.write_text(compile_ptx(arch))
        subprocess.run([ptxas, f"-arch={arch}", str(ptx), "-o", str(cubin)], check=True, capture_output=True)
        return subprocess.run([cuobjdump, "--dump-sass", str(cubin)], check=True, capture_output=True,
                              text=True).stdout


def resource_table() -> list[KernelResources]:
    return [r for arch in ARCHES for r in kernel_resources(arch)]
