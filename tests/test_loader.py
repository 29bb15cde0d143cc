"""gpuaug.DataLoader end to end on CPU: sources, packing, decode, augmentation, determinism."""
from __future__ import annotations

import collections
import gc
import multiprocessing
import io
import os
import threading
import warnings

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms.v2 as v2
from PIL import Image

import gpuaug
from gpuaug import transforms as T

from conftest import encode, make_image_folder, photo_like

SIZES = [(60, 80), (90, 50), (45, 45), (120, 70), (33, 99), (70, 71), (64, 48), (50, 120), (80, 60), (41, 57)]


def recipe(size=32):
    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4, 0.1),
                      T.ToDtype(torch.float32, scale=True),
                      T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])


class BytesDataset(torch.utils.data.Dataset):
    """(jpeg bytes, index) samples; labels identify the rows of a batch."""

    def __init__(self, n=10, fmt="JPEG"):
        self.items = [encode(photo_like(*SIZES[k % len(SIZES)], seed=k), fmt) for k in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i], i


def by_index(loader):
    out = {}
    for images, idx in loader:
        for img, i in zip(images, idx.tolist()):
            out[i] = img
    return out


@pytest.fixture
def folder(tmp_path):
    return make_image_folder(tmp_path / "train", SIZES)


def test_image_folder_train_recipe(folder):
    ds = torchvision.datasets.ImageFolder(str(folder))
    loader = gpuaug.DataLoader(ds, batch_size=4, shuffle=True, num_workers=2, seed=0, device="cpu",
                               transform=recipe())
    assert len(loader) == 3
    batches = list(loader)
    images, labels = batches[0]
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.shape == (4,)
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == sorted(ds.targets)
    assert loader.decoder_counts and sum(loader.decoder_counts.values()) == 10


def test_same_sample_same_output_whatever_workers_and_batch_size():
    ds = BytesDataset(10)
    ref = by_index(gpuaug.DataLoader(ds, batch_size=7, num_workers=0, seed=3, transform=recipe()))
    for workers, bs, shuffle in ((2, 3, True), (0, 10, False), (2, 1, True)):
        got = by_index(gpuaug.DataLoader(ds, batch_size=bs, num_workers=workers, shuffle=shuffle, seed=3,
                                         transform=recipe()))
        assert got.keys() == ref.keys()
        for i in ref:
            assert torch.equal(got[i], ref[i]), (workers, bs, i)


def test_seed_and_epoch_change_the_augmentation_and_replay_reproduces():
    ds = BytesDataset(6)
    loader = gpuaug.DataLoader(ds, batch_size=3, seed=1, transform=recipe())
    epoch0 = by_index(loader)
    epoch1 = by_index(loader)
    assert loader.epoch == 1
    other_seed = by_index(gpuaug.DataLoader(ds, batch_size=3, seed=2, transform=recipe()))
    for i in range(6):
        assert not torch.equal(epoch0[i], epoch1[i])
        assert not torch.equal(epoch0[i], other_seed[i])
        assert torch.equal(loader.replay(i, epoch=0), epoch0[i])
        assert torch.equal(loader.replay(i), epoch1[i])
    loader.set_epoch(0)
    again = by_index(loader)
    assert all(torch.equal(again[i], epoch0[i]) for i in range(6))


def test_shuffle_order_is_reproducible_from_seed():
    ds = BytesDataset(10)
    order = lambda loader: [i for _, idx in loader for i in idx.tolist()]  # noqa: E731
    a = gpuaug.DataLoader(ds, batch_size=4, shuffle=True, seed=5)
    b = gpuaug.DataLoader(ds, batch_size=4, shuffle=True, seed=5, num_workers=2)
    first = order(a)
    assert first == order(b) and sorted(first) == list(range(10))
    assert order(a) != first  # next epoch reshuffles


def _forbid_decoding_in_worker(worker_id):
    from PIL import Image as PILImage
    import torchcodec.decoders as tc

    from gpuaug import decode
    decode.decode_calls.clear()   # forked workers inherit the parent's count

    def refuse(*args, **kwargs):
        raise AssertionError(f"decoding called in worker {worker_id}")

    PILImage.Image.load = refuse
    for name in ("decode_jpeg", "decode_png", "decode_webp", "decode_gif", "decode_image"):
        setattr(tc, name, refuse)


class CountingDataset(BytesDataset):
    def __getitem__(self, i):
        from gpuaug import decode
        return self.items[i], (os.getpid(), sum(decode.decode_calls.values()))


def test_workers_never_decode():
    ds = CountingDataset(10)
    loader = gpuaug.DataLoader(ds, batch_size=2, num_workers=2, worker_init_fn=_forbid_decoding_in_worker,
                               transform=T.Resize((16, 16)))
    seen = [(images.shape, pids.tolist(), calls.tolist()) for images, (pids, calls) in loader]
    assert len(seen) == 5
    assert all(shape == (2, 3, 16, 16) for shape, _, _ in seen)
    assert {p for _, pids, _ in seen for p in pids}.isdisjoint({os.getpid()})
    assert all(c == 0 for _, _, calls in seen for c in calls)
    from gpuaug import decode
    assert sum(decode.decode_calls.values()) >= 10  # the main process did decode them


# -- every kind of image field ---------------------------------------------------------------

def _kinds(tmp_path):
    img = photo_like(30, 40, seed=9)
    jpeg = encode(img, "PNG")    # lossless so every kind decodes to the same pixels
    path = tmp_path / "a.png"
    path.write_bytes(jpeg)
    pil = Image.open(io.BytesIO(jpeg)).convert("RGB")
    return img, {
        "bytes": jpeg, "bytearray": bytearray(jpeg), "numpy buffer": np.frombuffer(jpeg, np.uint8),
        "tensor buffer": torch.frombuffer(bytearray(jpeg), dtype=torch.uint8), "str path": str(path),
        "Path": path, "hf bytes": {"bytes": jpeg, "path": None}, "hf path": {"bytes": None, "path": str(path)},
        "PIL": pil, "numpy HWC": np.asarray(pil), "tensor CHW": img.clone(),
    }


def test_every_image_kind_decodes_to_the_same_pixels(tmp_path):
    img, kinds = _kinds(tmp_path)
    for name, value in kinds.items():
        loader = gpuaug.DataLoader([(value, 1)], batch_size=1)
        (images, labels), = list(loader)
        assert torch.equal(images[0], img), name
        assert labels.tolist() == [1]


def test_grayscale_and_rgba_pixels_become_rgb():
    gray = Image.fromarray(photo_like(10, 12)[0].numpy())
    rgba = Image.fromarray(photo_like(10, 12).permute(1, 2, 0).numpy()).convert("RGBA")
    for value in (gray, np.asarray(gray), torch.from_numpy(np.array(gray))[None], rgba):
        (images,), = [list(b) for b in gpuaug.DataLoader([value], batch_size=1)]
        assert images.shape == (3, 10, 12)


def test_structures_are_rebuilt():
    jpeg = encode(photo_like(20, 20))
    Sample = collections.namedtuple("Sample", "label image meta")
    out, = list(gpuaug.DataLoader([{"label": 1, "image": jpeg, "name": "a"}] * 2, batch_size=2))
    assert set(out) == {"label", "image", "name"} and out["image"].shape == (2, 3, 20, 20)
    assert out["name"] == ["a", "a"] and out["label"].tolist() == [1, 1]
    out, = list(gpuaug.DataLoader([{"jpg": jpeg, "cls": 3}], batch_size=1, image_key="jpg"))
    assert out["jpg"].shape == (1, 3, 20, 20) and out["cls"].tolist() == [3]
    out, = list(gpuaug.DataLoader([("x", jpeg, 2.5)], batch_size=1, image_key=1))
    assert out[0] == ("x",)   # what default_collate makes of a string column
    assert out[1].shape == (1, 3, 20, 20) and out[2].tolist() == [2.5]
    out, = list(gpuaug.DataLoader([Sample(4, jpeg, {"k": 1})], batch_size=1, image_key=1))
    assert isinstance(out, Sample) and out.image.shape == (1, 3, 20, 20) and out.meta["k"].tolist() == [1]
    out, = list(gpuaug.DataLoader([jpeg, jpeg], batch_size=2))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, 20, 20)


def test_ragged_output_without_fixed_size_op_is_a_list():
    ds = BytesDataset(3)
    images, _ = next(iter(gpuaug.DataLoader(ds, batch_size=3)))
    assert isinstance(images, list) and [tuple(i.shape[1:]) for i in images] == SIZES[:3]


def test_channels_last_empty_and_single():
    ds = BytesDataset(3)
    images, _ = next(iter(gpuaug.DataLoader(ds, batch_size=2, channels_last=True, transform=recipe(8))))
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert list(gpuaug.DataLoader([], batch_size=4, transform=recipe(8))) == []
    images, labels = next(iter(gpuaug.DataLoader(ds, batch_size=1, transform=recipe(8))))
    assert images.shape == (1, 3, 8, 8) and labels.tolist() == [0]
    assert len(gpuaug.DataLoader(ds, batch_size=2, drop_last=True)) == 1


# -- bad input ------------------------------------------------------------------------------

def _bomb_png(width=30000, height=30000):
    import struct
    import zlib
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


@pytest.fixture
def bad_folder(folder):
    files = sorted(folder.rglob("*.jpg"))
    good = files[0].read_bytes()
    files[1].write_bytes(good[: len(good) // 2])          # truncated
    files[3].write_bytes(b"")                             # empty
    files[5].write_bytes(b"this is not an image at all")  # not an image
    files[7].write_bytes(_bomb_png())                     # decompression bomb
    return folder, {1: ("truncated", files[1]), 3: ("empty", files[3]),
                    5: ("not a recognised image", files[5]), 7: ("decompression bomb", files[7])}


def test_bad_sample_error_names_index_path_and_reason(bad_folder):
    folder, bad = bad_folder
    ds = torchvision.datasets.ImageFolder(str(folder))
    for index, (reason, path) in bad.items():
        loader_ds = gpuaug.DataLoader(ds, batch_size=1, sampler=[index])
        with pytest.raises(gpuaug.BadSampleError) as err:
            list(loader_ds)
        message = str(err.value)
        assert f"sample {index}" in message and str(path) in message, message
        assert reason in message.lower() or (reason == "truncated" and "corrupt" in message.lower()), message


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_keeps_targets_aligned(bad_folder, workers):
    folder, bad = bad_folder
    ds = torchvision.datasets.ImageFolder(str(folder))
    loader = gpuaug.DataLoader(ds, batch_size=4, num_workers=workers, on_error="skip", transform=recipe(8))
    with pytest.warns(UserWarning, match="4 bad sample"):
        batches = list(loader)
    assert [len(labels) for _, labels in batches] == [2, 2, 2]
    kept = [i for i in range(10) if i not in bad]
    assert torch.cat([labels for _, labels in batches]).tolist() == [ds.targets[i] for i in kept]
    assert sorted(b.index for b in loader.bad_samples) == sorted(bad)
    assert {b.path for b in loader.bad_samples} == {str(p) for _, p in bad.values()}
    # the good samples are rendered exactly as without any bad neighbour
    clean = gpuaug.DataLoader(ds, batch_size=1, sampler=kept, transform=recipe(8))
    for (img, _), (ref, _) in zip([(i, None) for b, _ in batches for i in b], clean):
        assert torch.equal(img, ref[0])


def test_resample_keeps_batch_size(bad_folder):
    folder, bad = bad_folder
    ds = torchvision.datasets.ImageFolder(str(folder))
    loader = gpuaug.DataLoader(ds, batch_size=5, on_error="resample", transform=recipe(8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(loader)
    assert [len(images) for images, _ in batches] == [5, 5]
    assert sum("bad sample" in str(w.message) for w in caught) == 1
    assert {b.index for b in loader.bad_samples} >= set(bad)
    for images, labels in batches:
        assert images.shape == (5, 3, 8, 8) and torch.isfinite(images).all()


def test_resample_takes_the_replacements_label():
    good = encode(photo_like(20, 20))
    ds = [(good, 0), (b"broken", 1), (good, 2), (good, 3)]
    loader = gpuaug.DataLoader(ds, batch_size=4, on_error="resample")
    with pytest.warns(UserWarning):
        (images, labels), = list(loader)
    assert labels[1].item() in (0, 2, 3) and labels[[0, 2, 3]].tolist() == [0, 2, 3]


def test_errors_in_the_device_stage_reach_the_consumer_and_leave_no_thread():
    ds = BytesDataset(6)

    class Boom(T.Transform):
        def apply(self, state, params):
            raise ZeroDivisionError("boom in stage")

    loader = gpuaug.DataLoader(ds, batch_size=2, num_workers=2, transform=Boom())
    with pytest.raises(ZeroDivisionError, match="boom in stage") as err:
        list(loader)
    assert any(frame.name == "apply" for frame in err.traceback)   # the original traceback
    assert not [t for t in threading.enumerate() if t.name.startswith("gpuaug-prefetch")]
    assert not multiprocessing.active_children(), "worker processes left behind"


def test_break_and_del_leave_no_threads():
    loader = gpuaug.DataLoader(BytesDataset(10), batch_size=2, num_workers=2, transform=recipe(8))
    for _ in loader:
        break
    del loader
    gc.collect()
    assert not [t for t in threading.enumerate() if t.name.startswith("gpuaug")]
    assert not multiprocessing.active_children()


def test_argument_errors():
    with pytest.raises(ValueError, match="on_error"):
        gpuaug.DataLoader([], on_error="ignore")
    with pytest.raises(ValueError, match="collate_fn"):
        gpuaug.DataLoader([], collate_fn=lambda x: x)
    with pytest.raises(TypeError, match="from_torchvision"):
        gpuaug.DataLoader([], transform=v2.RandomHorizontalFlip())


class HalfMix:
    """A stand-in label mixer: averages each sample with the next (per-sample keys are passed in)."""

    mixes_labels = True

    def __call__(self, images, labels, *, seed, epoch, indices):
        self.seen = (seed, epoch, indices.tolist())
        one_hot = torch.nn.functional.one_hot(labels, 10).float()
        return (images + images.roll(1, 0)) / 2, (one_hot + one_hot.roll(1, 0)) / 2


def test_label_mixers_run_on_the_batch_and_its_labels():
    data = [(encode(photo_like(20, 20, seed=k)), k) for k in range(4)]
    mixer = HalfMix()
    pipe = T.Compose([T.Resize((8, 8)), T.ToDtype(torch.float32, scale=True), mixer])
    assert "HalfMix" in pipe.plan()
    with pytest.raises(TypeError, match="mixes labels"):
        pipe(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="last"):
        T.Compose([mixer, T.Resize(8)])
    (images, labels), = list(gpuaug.DataLoader(data, batch_size=4, seed=9, transform=pipe))
    assert labels.shape == (4, 10) and torch.allclose(labels.sum(1), torch.ones(4))
    assert mixer.seen == (9, 0, [0, 1, 2, 3])
    plain = torch.cat([b[0] for b in gpuaug.DataLoader(data, batch_size=4, transform=pipe.transforms)])
    assert torch.allclose(images, (plain + plain.roll(1, 0)) / 2)
