"""The fused stage: consecutive fusable ops rendered by one kernel pipeline.

It sits on top of the reference (:mod:`gpuaug.transforms`, whose op types and
parameters it reads) and below the loader; the reference never imports it.
``plan`` decides which ops fuse and builds per-sample descriptors from the reference
parameters; ``run`` launches the passes through a backend: :class:`HostBackend` (the
kernel sources compiled for the CPU) or ``CudaBackend`` (:mod:`gpuaug.fused.cuda`,
CuPy through :mod:`gpuaug.device`, imported lazily).
"""
from ..errors import FusedUnavailable
from .host import HostBackend
from .plan import Segment, plan_segments
from .run import KernelBackend, render_pipeline, run_fused_segment

__all__ = ["HostBackend", "KernelBackend", "FusedUnavailable", "Segment", "plan_segments", "render_pipeline",
           "run_fused_segment", "cuda_backend"]


def cuda_backend(device=None):
    """The CuPy backend for ``device`` (raises :class:`FusedUnavailable` without CUDA/CuPy)."""
    from .cuda import CudaBackend

    return CudaBackend.get(device)
