"""Everything that only a GPU runs: CUDA streams and events, nvJPEG, CuPy launches.

This module is the whole of gpuaug's GPU glue and is deliberately thin. The rest of the
package (scheduling, decoding fallbacks, planning, descriptor packing) is shared with
the CPU and tested there: a :class:`CpuRuntime` stands in for the CUDA one with the
same methods, whose stream and event calls do nothing.

Host synchronizations that remain on the hot path (also listed in the README):

1. nvJPEG (TorchCodec / torchvision) synchronizes internally while decoding a batch;
2. ops that run through the torch reference on CUDA may sync (``nonzero`` to find the
   samples an op applies to); the fused path has none: parameters are drawn on the
   host and uploaded with one non-blocking copy from pinned memory.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch

from .errors import FusedUnavailable


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class CpuRuntime:
    """The CPU stand-in: the same interface as :class:`CudaRuntime`, no streams."""

    def __init__(self, device: torch.device):
        self.device = device

    def stream_context(self):
        return contextlib.nullcontext()

    def record_event(self):
        return None

    def hand_over(self, event, batch: Any) -> Any:
        """Make ``batch`` safe to use on the consumer's stream (nothing to do on CPU)."""
        return batch

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device)

    def pin(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def decode_jpegs(self, datas: list[torch.Tensor]) -> list[torch.Tensor]:
        raise FusedUnavailable("nvJPEG needs a CUDA device")

    def synchronize(self) -> None:
        """Wait for the device work queued by the stage (none on CPU: it ran synchronously)."""

    def close(self) -> None:
        self.synchronize()


class CudaRuntime:
    """One side stream per loader; events hand batches over to the consumer's stream.

    Args:
        device: the CUDA device the loader works on (``cuda:k``).
    """

    def __init__(self, device: torch.device):
        index = device.index if device.index is not None else torch.cuda.current_device()
        self.device = torch.device("cuda", index)
        # Created once: the caching allocator pools memory per stream, so a new stream
        # per batch would fragment it (timm learned this the hard way).
        self.stream = torch.cuda.Stream(self.device)

    def stream_context(self):
        """Run the device stage on the side stream (in the prefetch thread)."""
        return torch.cuda.stream(self.stream)

    def record_event(self) -> torch.cuda.Event:
        event = torch.cuda.Event()
        event.record(self.stream)
        return event

    def hand_over(self, event: torch.cuda.Event | None, batch: Any) -> Any:
        """Called on the consumer's thread: its current stream waits for the batch, and
        every tensor of the batch is marked as used there, so the allocator does not hand
        its memory to the side stream before the consumer is done with it."""
        consumer = torch.cuda.current_stream(self.device)
        if event is not None:
            consumer.wait_event(event)
        for tensor in _tensors(batch):
            if tensor.is_cuda:
                tensor.record_stream(consumer)
        return batch

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, non_blocking=True)

    def pin(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if tensor.is_pinned() else tensor.pin_memory()

    def decode_jpegs(self, datas: list[torch.Tensor]) -> list[torch.Tensor]:
        """Decode JPEGs (1-D uint8 CPU tensors) in one batched nvJPEG call, as RGB."""
        return nvjpeg_decode(datas, self.device)

    def synchronize(self) -> None:
        """Called when an iteration ends, however it ends: nothing it queued is left running."""
        self.stream.synchronize()

    def close(self) -> None:
        # The stream itself comes from torch's per-device pool, which never destroys its
        # streams: releasing it means leaving no work on it and dropping our reference
        # with the loader.
        self.synchronize()


def runtime_for(device: torch.device):
    return CudaRuntime(device) if device.type == "cuda" else CpuRuntime(device)


def _tensors(batch: Any):
    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, dict):
        for value in batch.values():
            yield from _tensors(value)
    elif isinstance(batch, (list, tuple)):
        for value in batch:
            yield from _tensors(value)


def nvjpeg_decode(datas: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """One batched nvJPEG call: TorchCodec when installed, else torchvision.io."""
    try:
        from torchcodec.decoders import decode_jpeg

        return decode_jpeg(list(datas), mode="RGB", device=device)
    except ImportError:
        import warnings

        from torchvision.io import ImageReadMode, decode_jpeg as tv_decode_jpeg
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)   # torchvision.io deprecation notice
            return tv_decode_jpeg(list(datas), mode=ImageReadMode.RGB, device=device)


# -- CuPy: compiled CUDA C launched on torch's stream ---------------------------------------

class CupyModule:
    """CUDA C compiled by NVRTC through CuPy's ``RawModule``, launched on torch's current stream.

    CuPy compiles once per device and caches the result keyed by the source text and
    the options. Only launch arguments already in their C types (``numpy`` scalars,
    device addresses as ``numpy.uint64``) are accepted: marshalling is the caller's job
    (:mod:`gpuaug.fused.cuda`), so this stays the bare CuPy call.

    Args:
        device_index: the CUDA device to compile for and launch on.
        source: the CUDA C source.
        options: NVRTC options.
        names: the ``extern "C"`` kernels to look up.
    """

    def __init__(self, device_index: int, source: str, options: tuple[str, ...], names: tuple[str, ...]):
        try:
            import cupy
        except ImportError as e:  # pragma: no cover - needs the cuda extra
            raise FusedUnavailable("the CUDA fused path needs CuPy: pip install 'gpuaug[cuda]'") from e
        self.cupy = cupy
        self.device_index = device_index
        with cupy.cuda.Device(device_index):
            module = cupy.RawModule(code=source, options=options)
            self.functions = {name: module.get_function(name) for name in names}

    def launch(self, name: str, grid: tuple[int, int, int], block: tuple[int, int, int], args: tuple) -> None:
        stream = torch.cuda.current_stream(self.device_index)
        with self.cupy.cuda.Device(self.device_index):
            self.functions[name](grid, block, args, stream=self.cupy.cuda.ExternalStream(stream.cuda_stream))
