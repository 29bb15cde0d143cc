"""DALI as the batched JPEG decoder (``gpuaug.DataLoader(..., decoder="dali")``).

One small DALI pipeline per loader: an ``external_source`` fed with the batch's JPEG
bytes (views into the packed buffer, copied once into DALI) and ``fn.decoders.image``
with ``device="mixed"`` (nvJPEG + CPU Huffman decoding) on CUDA, or ``device="cpu"``
(libjpeg-turbo) without a GPU. Outputs are HWC; they come back as ``[3, H, W]`` uint8
tensors on the loader's device. Everything else of the batch still goes through
gpuaug's CPU pool.
"""
from __future__ import annotations

import threading

import numpy as np
import torch

from .errors import FusedUnavailable

MAX_BATCH = 1024


class DaliJpegDecoder:
    """Decode a list of JPEG byte tensors with one DALI pipeline run.

    Args:
        device: ``cuda:k`` for DALI's mixed (GPU) decoder, ``cpu`` for its CPU decoder.
        num_threads: DALI's CPU threads.
    """

    def __init__(self, device: torch.device, num_threads: int = 2):
        try:
            from nvidia.dali import fn, pipeline, types
        except ImportError as e:
            raise FusedUnavailable("decoder='dali' needs NVIDIA DALI: pip install 'gpuaug[dali]'") from e
        self.device = torch.device(device)
        on_gpu = self.device.type == "cuda"
        device_id = (self.device.index or 0) if on_gpu else None
        self.pipe = pipeline.Pipeline(batch_size=MAX_BATCH, num_threads=num_threads, device_id=device_id,
                                      exec_async=False, exec_pipelined=False, prefetch_queue_depth=1)
        with self.pipe:
            jpegs = fn.external_source(name="jpegs", device="cpu", dtype=types.UINT8, ndim=1)
            images = fn.decoders.image(jpegs, device="mixed" if on_gpu else "cpu", output_type=types.RGB)
            self.pipe.set_outputs(images)
        self.pipe.build()
        self._lock = threading.Lock()     # one pipeline run at a time

    def __call__(self, datas: list[torch.Tensor]) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for start in range(0, len(datas), MAX_BATCH):
            out += self._run(datas[start:start + MAX_BATCH])
        return out

    def _run(self, datas: list[torch.Tensor]) -> list[torch.Tensor]:
        arrays = [np.frombuffer(memoryview(d.numpy()), dtype=np.uint8) for d in datas]
        with self._lock:
            self.pipe.feed_input("jpegs", arrays)
            (decoded,) = self.pipe.run()
            if self.device.type != "cuda":
                return [torch.from_numpy(np.array(decoded.at(i))).permute(2, 0, 1).contiguous()
                        for i in range(len(arrays))]
            # GPU output: copied device to device into torch tensors on the current stream.
            from nvidia.dali.plugin.pytorch import feed_ndarray

            stream = torch.cuda.current_stream(self.device)
            images = []
            for i in range(len(arrays)):
                sample = decoded[i]
                hwc = torch.empty(tuple(sample.shape()), dtype=torch.uint8, device=self.device)
                feed_ndarray(sample, hwc, cuda_stream=stream)
                images.append(hwc.permute(2, 0, 1).contiguous())
            return images
