"""The fused stage: consecutive fusable ops rendered by one kernel pipeline.

``plan`` decides which ops fuse and builds per-sample descriptors from the reference
parameters; ``run`` launches the passes through a backend: :class:`HostBackend` (the
kernel sources compiled for the CPU) or :class:`CudaBackend` (CuPy, imported lazily).
"""
from .host import FusedUnavailable, HostBackend
from .plan import Segment, plan_segments
from .run import run_fused_segment

__all__ = ["HostBackend", "FusedUnavailable", "Segment", "plan_segments", "run_fused_segment", "cuda_backend"]


def cuda_backend(device=None):
    """The CuPy backend for ``device`` (raises :class:`FusedUnavailable` without CUDA/CuPy)."""
    from ..device import CudaBackend

    return CudaBackend.get(device)
