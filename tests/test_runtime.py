"""The device-stage scheduler on CPU: overlap, errors, shutdown, decoder fallbacks.

The CUDA runtime shares all of this logic; only stream/event calls differ (gpuaug.device).
"""
from __future__ import annotations

import gc
import multiprocessing
import threading
import time

import pytest
import torch

import gpuaug
from gpuaug import transforms as T
from gpuaug.batch_decode import BatchDecoder, probe_applies_exif
from gpuaug.decode import CpuDecoder
from gpuaug.headers import read_header

from conftest import encode, photo_like


class Sleep(T.Transform):
    """A device stage that costs ``seconds`` per batch and logs when it ran."""

    def __init__(self, seconds, log):
        self.seconds, self.log = seconds, log

    def apply(self, state, params):
        start = time.perf_counter()
        time.sleep(self.seconds)
        self.log.append((start, time.perf_counter()))
        return state


def jpeg_dataset(n=8):
    return [(encode(photo_like(24, 32, seed=k)), k) for k in range(n)]


def test_device_stage_overlaps_the_consumer():
    n, stage_cost, step_cost = 8, 0.1, 0.1
    stage_log, consumer_log = [], []
    loader = gpuaug.DataLoader(jpeg_dataset(n), batch_size=1, transform=Sleep(stage_cost, stage_log),
                               prefetch_depth=2)
    start = time.perf_counter()
    for _ in loader:
        t0 = time.perf_counter()
        time.sleep(step_cost)                      # the "model step"
        consumer_log.append((t0, time.perf_counter()))
    total = time.perf_counter() - start
    # Structure: batch i+1 was being prepared while the consumer worked on batch i.
    overlapped = sum(1 for (s, _), (c0, c1) in zip(stage_log[1:], consumer_log) if s < c1)
    assert overlapped >= n - 2
    # Time: near n * max(T, P) = 0.8 s, far from n * (T + P) = 1.6 s (generous margin for slow CI).
    assert total < 0.75 * n * (stage_cost + step_cost), total


def test_prefetch_depth_bounds_work_ahead():
    stage_log = []
    loader = gpuaug.DataLoader(jpeg_dataset(10), batch_size=1, transform=Sleep(0.0, stage_log), prefetch_depth=2)
    it = iter(loader)
    next(it)
    time.sleep(0.5)             # a slow consumer: the stage must not run away
    assert len(stage_log) <= 1 + 2 + 1    # consumed + queued + the one blocked on the full queue
    del it


def test_stage_error_surfaces_with_message_and_shutdown_is_clean():
    class Fail(T.Transform):
        def apply(self, state, params):
            raise RuntimeError("kernel exploded on batch")

    loader = gpuaug.DataLoader(jpeg_dataset(6), batch_size=2, num_workers=2, transform=Fail())
    with pytest.raises(RuntimeError, match="kernel exploded"):
        for _ in loader:
            pass
    assert not [t for t in threading.enumerate() if t.name.startswith("gpuaug-prefetch")]
    assert not multiprocessing.active_children()
    # the loader is still usable after an error
    loader.transform.transforms[:] = []
    assert len(list(loader)) == 3


def test_early_break_and_del_leave_nothing_behind():
    loader = gpuaug.DataLoader(jpeg_dataset(8), batch_size=2, num_workers=2, transform=T.Resize((8, 8)))
    for _ in loader:
        break
    iter_again = iter(loader)       # a new epoch closes the unfinished one
    next(iter_again)
    del iter_again, loader
    gc.collect()
    assert not [t for t in threading.enumerate() if t.name.startswith("gpuaug")]
    assert not multiprocessing.active_children()


# -- decoder fallback logic with a stand-in batched decoder -------------------------------

class StandIn:
    """A batched 'device' decoder that refuses chosen samples (by their first bytes' hash)."""

    def __init__(self, refuse: set[bytes]):
        self.refuse, self.batch_calls, self.single_calls = refuse, 0, 0
        self.cpu = CpuDecoder(1)

    def __call__(self, datas):
        if len(datas) == 1:
            self.single_calls += 1
        else:
            self.batch_calls += 1
        if any(bytes(d[-64:].tolist()) in self.refuse for d in datas):
            raise RuntimeError("nvJPEG refused the batch")
        return [self.cpu.decode_batch([(d, read_header(d))])[0] for d in datas]


def _items(blobs):
    out = []
    for blob in blobs:
        data = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
        out.append((data, read_header(data)))
    return out


def test_failed_batched_call_retries_per_sample_then_cpu():
    good = [encode(photo_like(20, 30, seed=k)) for k in range(4)]
    refused_but_valid = good[1]
    corrupt = good[3][:200] + b"\x00" * 300 + good[3][-2:]
    stand_in = StandIn({refused_but_valid[-64:], corrupt[-64:]})
    decoder = BatchDecoder(CpuDecoder(1), stand_in, name="standin")
    results = decoder.decode(_items([good[0], refused_but_valid, good[2], corrupt]))
    assert stand_in.batch_calls == 1 and stand_in.single_calls == 4
    assert all(isinstance(r, torch.Tensor) for r in results[:3])     # refused-but-valid decoded on CPU
    assert isinstance(results[3], Exception) and "corrupt" in str(results[3]).lower()
    assert decoder.counts["standin"] == 2 and sum(decoder.counts.values()) == 3


def test_fallback_feeds_on_error_in_the_loader():
    good = [encode(photo_like(20, 30, seed=k)) for k in range(4)]
    corrupt = good[3][:200] + b"\x00" * 300 + good[3][-2:]
    data = [(good[0], 0), (good[1], 1), (corrupt, 2), (good[2], 3)]
    stand_in = StandIn({corrupt[-64:]})
    loader = gpuaug.DataLoader(data, batch_size=4, on_error="skip", transform=T.Resize((8, 8)))
    loader._decoder.batched, loader._decoder.name = stand_in, "standin"
    with pytest.warns(UserWarning, match="1 bad sample"):
        (images, labels), = list(loader)
    assert labels.tolist() == [0, 1, 3] and images.shape == (3, 3, 8, 8)
    assert loader.bad_samples[0].index == 2
    assert loader.decoder_counts["standin"] == 3


def test_decoder_argument_checks():
    with pytest.raises(ValueError, match="needs a CUDA device"):
        gpuaug.DataLoader([], decoder="nvjpeg", device="cpu")
    with pytest.raises(ValueError, match="decoder must be one of"):
        gpuaug.DataLoader([], decoder="libjpeg")


# -- EXIF orientation of device-decoded JPEGs ----------------------------------------------

def _exif_jpeg(img, orientation):
    import io

    from PIL import Image
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, "JPEG", quality=95, exif=exif)
    return buf.getvalue()


class StoredOrientation:
    """A batched decoder that, like some nvJPEG builds, ignores EXIF orientation."""

    def __init__(self):
        self.calls = 0

    def __call__(self, datas):
        import io

        import numpy as np
        from PIL import Image
        self.calls += 1
        out = []
        for d in datas:
            rgb = np.asarray(Image.open(io.BytesIO(bytes(d.numpy()))).convert("RGB"))   # no exif_transpose
            out.append(torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous())
        return out


@pytest.mark.parametrize("fused", [False, True])
def test_exif_flips_of_device_decoded_jpegs_fold_into_the_pipeline(fused):
    data = [(_exif_jpeg(photo_like(24, 40, seed=k), k), k) for k in range(1, 9)]
    pipe = T.Compose([T.RandomResizedCrop(16), T.RandomHorizontalFlip(), T.ToDtype(torch.float32, scale=True)])
    expected = torch.cat([b[0] for b in gpuaug.DataLoader(data, batch_size=8, seed=1, transform=pipe, fused=fused)])
    loader = gpuaug.DataLoader(data, batch_size=8, seed=1, transform=pipe, fused=fused)
    stand_in = StoredOrientation()
    loader._decoder.batched, loader._decoder.name = stand_in, "standin"
    loader._decoder._applies_exif = lambda: probe_applies_exif(stand_in)
    got = torch.cat([b[0] for b in loader])
    assert loader.decoder_counts["standin"] == 8 and loader._decoder.applies_exif is False
    assert (got - expected).abs().max() < 2e-3     # same libjpeg, same pixels: only float rounding differs


def test_probe_recognises_decoders_that_apply_exif():
    assert probe_applies_exif(StoredOrientation()) is False
    cpu = CpuDecoder(1)
    assert probe_applies_exif(lambda ds: [cpu.decode_batch([(d, read_header(d))])[0] for d in ds]) is True
