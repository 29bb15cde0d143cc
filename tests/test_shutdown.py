"""Every way an iteration ends leaves nothing of gpuaug behind.

What a pass over the loader holds (its prefetch thread, the decode threads, its worker
processes, the batches prepared ahead: pinned host buffers and device tensors, work
queued on the side CUDA stream) must be gone when it ends: exhausted, an error (before
the error reaches the consumer), ``break``, ``del``, garbage collection. Persistent
workers belong to the loader and go with ``loader.close()``. The CUDA runtime's stream
calls are stood in for by a recording CPU runtime: the clean-up logic is the same.
"""
from __future__ import annotations

import contextlib
import gc
import os
import signal
import threading
import time

import psutil
import pytest
import torch
import torchvision

import gpuaug
from gpuaug import transforms as T
from gpuaug.device import CpuRuntime
from gpuaug.pack import RawBatch

from conftest import encode, make_image_folder, photo_like, tree_rss_kb

SIZES = [(20 + k, 24 - k) for k in range(12)]     # 6 batches of 2
CORRUPT = 7                                       # dataset index of the corrupt file (batch 3)


class Snapshot:
    """The threads and child processes alive now; :meth:`left` lists those started since."""

    def __init__(self):
        gc.collect()
        self.threads = set(threading.enumerate())
        self.children = {p.pid for p in psutil.Process().children(recursive=True)}
        self.batches = {id(o) for o in gc.get_objects() if type(o) is RawBatch}

    def batches_alive(self) -> int:
        """Packed batches created since and still referenced (a pinned buffer lives exactly
        as long as its batch)."""
        gc.collect()
        return sum(type(o) is RawBatch and id(o) not in self.batches for o in gc.get_objects())

    def left(self, timeout: float = 5.0) -> list[str]:
        """What is still alive after waiting up to ``timeout`` seconds for it to go."""
        deadline = time.monotonic() + timeout
        while True:
            threads = [t.name for t in threading.enumerate() if t not in self.threads and t.is_alive()]
            children = [f"process {p.pid}" for p in psutil.Process().children(recursive=True)
                        if p.pid not in self.children and _running(p)]
            if not (threads or children) or time.monotonic() >= deadline:
                return threads + children
            time.sleep(0.02)


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def only_persistent_workers(left: list[str], workers: int = 2) -> bool:
    """What a loader with persistent workers keeps between passes: the worker processes and
    the feeder threads of torch's queues to them, nothing of gpuaug."""
    processes = [name for name in left if name.startswith("process")]
    return len(processes) == workers and all(name == "QueueFeederThread" for name in left if name not in processes)


def ours(left: list[str]) -> list[str]:
    """gpuaug's threads and the worker processes (torch's queue feeder threads end on their
    own, just after the queues are closed)."""
    return [name for name in left if name != "QueueFeederThread"]


class RecordingRuntime(CpuRuntime):
    """The CPU runtime, logging what a CUDA one does with its side stream."""

    def __init__(self, device):
        super().__init__(device)
        self.log: list[str] = []

    @contextlib.contextmanager
    def stream_context(self):
        self.log.append("enqueue")           # CUDA: the stage's work queued on the side stream
        yield

    def synchronize(self):
        self.log.append("synchronize")


def side_stream_idle(runtime: RecordingRuntime) -> bool:
    """The runtime synchronized after the last work it queued."""
    log = runtime.log
    return "synchronize" in log and "enqueue" not in log[len(log) - 1 - log[::-1].index("synchronize"):]


class FailAt(T.Transform):
    """A transform that raises ``error(*args)`` on its ``at``-th batch (counting from 1)."""

    def __init__(self, at: int, error: type[BaseException], *args):
        self.at, self.error, self.args, self.calls = at, error, args, 0

    def apply(self, state, params):
        self.calls += 1
        if self.calls == self.at:
            raise self.error(*self.args)    # a new one: a kept instance would keep its traceback
        return state


@pytest.fixture
def folder(tmp_path):
    root = make_image_folder(tmp_path / "train", SIZES)
    return root


def make_loader(root, corrupt=False, transform=None, **kwargs):
    dataset = torchvision.datasets.ImageFolder(str(root))
    if corrupt:
        path = dataset.samples[CORRUPT][0]
        with open(path, "r+b") as f:
            blob = f.read()
            f.seek(0)
            f.write(blob[:200] + b"\x00" * (len(blob) - 202) + blob[-2:])
    kwargs = {"batch_size": 2, "num_workers": 2, "on_error": "raise", **kwargs}
    loader = gpuaug.DataLoader(dataset, transform=transform or T.Resize((8, 8)), **kwargs)
    loader._runtime = RecordingRuntime(loader.device)
    return loader


def consume(loader):
    for _ in loader:
        pass


def raise_in_body(error: type[BaseException], *args):
    def body(loader):
        for k, _ in enumerate(loader):
            if k == 1:
                raise error(*args)
    return body


# name: (loader arguments, loop, the error that reaches the consumer)
ERROR_PATHS = {
    "decoder raises": (lambda: dict(corrupt=True), consume, gpuaug.BadSampleError),
    "transform raises": (lambda: dict(transform=FailAt(3, RuntimeError, "kernel exploded")), consume,
                         RuntimeError),
    "KeyboardInterrupt in the device stage": (lambda: dict(transform=FailAt(3, KeyboardInterrupt)), consume,
                                              KeyboardInterrupt),
    "loop body raises": (dict, raise_in_body(ValueError, "the model diverged"), ValueError),
    "KeyboardInterrupt in the loop body": (dict, raise_in_body(KeyboardInterrupt), KeyboardInterrupt),
}


@pytest.mark.parametrize("persistent", [False, True], ids=["workers", "persistent workers"])
@pytest.mark.parametrize("path", list(ERROR_PATHS))
def test_an_error_leaves_nothing_behind_before_it_reaches_the_consumer(folder, path, persistent):
    kwargs, loop, expected = ERROR_PATHS[path]
    before = Snapshot()
    loader = make_loader(folder, persistent_workers=persistent, **kwargs())
    with pytest.raises(expected) as caught:
        try:
            loop(loader)
        except expected:
            # Already now, not after garbage collection: the pass is gone.
            left = before.left(timeout=0)
            assert only_persistent_workers(left) if persistent else not ours(left), f"{path}: alive: {left}"
            raise
    if path == "decoder raises":
        assert caught.value.sample.index == CORRUPT and caught.value.sample.path.endswith(".jpg")
        assert caught.value.sample.path in str(caught.value)
    del caught
    assert side_stream_idle(loader._runtime)
    if persistent:
        assert only_persistent_workers(before.left(timeout=0)), before.left(timeout=0)
        # torch's persistent iterator may still hold batches its workers read ahead out of
        # order (num_workers * prefetch_factor at most) until the next pass or close()
        assert before.batches_alive() <= 2 * 2
    else:
        assert before.left() == []
        assert before.batches_alive() == 0, "prepared batches (pinned buffers) kept alive"
    # the loader is still usable, then closes everything
    loader.transform.transforms[:] = []
    if path != "decoder raises":
        assert len(list(loader)) == 6
    loader.close()
    assert before.left() == []
    assert before.batches_alive() == 0
    assert loader._runtime.log[-1] == "synchronize"


def test_early_break_releases_without_garbage_collection(folder):
    before = Snapshot()
    loader = make_loader(folder)
    gc.disable()                      # the iterator goes by reference counting, at once
    try:
        for _ in loader:
            break
        assert ours(before.left(timeout=0)) == []
    finally:
        gc.enable()
    assert side_stream_idle(loader._runtime)
    assert before.batches_alive() == 0


@pytest.mark.parametrize("started", [True, False], ids=["after next()", "before next()"])
def test_garbage_collected_iterator_releases_its_pass(folder, started):
    before = Snapshot()
    loader = make_loader(folder)
    it = iter(loader)
    if started:
        next(it)
    time.sleep(0.2)                   # let the prefetcher fill its queue
    del it
    gc.collect()
    assert before.left() == []
    assert side_stream_idle(loader._runtime)
    assert before.batches_alive() == 0
    assert len(list(loader)) == 6


def test_explicit_close_of_the_iterator_and_of_a_new_pass(folder):
    before = Snapshot()
    loader = make_loader(folder)
    first = iter(loader)
    next(first)
    second = iter(loader)             # a new pass closes the unfinished one
    assert next(first, "ended") == "ended"
    next(second)
    second.close()
    assert ours(before.left(timeout=0)) == []
    assert next(second, "ended") == "ended"
    assert before.batches_alive() == 0


@pytest.mark.parametrize("persistent", [False, True], ids=["workers", "persistent workers"])
def test_del_loader_mid_pass(folder, persistent):
    before = Snapshot()
    loader = make_loader(folder, persistent_workers=persistent)
    it = iter(loader)
    next(it)
    del loader, it
    gc.collect()
    assert before.left() == []
    assert before.batches_alive() == 0


def test_end_of_epoch_with_persistent_workers_keeps_only_the_workers(folder):
    before = Snapshot()
    with make_loader(folder, persistent_workers=True) as loader:
        for _ in range(2):
            consume(loader)
            # decoding and prefetching belong to the pass; the workers stay
            assert only_persistent_workers(before.left(timeout=0)), before.left(timeout=0)
        assert side_stream_idle(loader._runtime)
    assert before.left() == []           # leaving the with block closed the loader
    assert len(list(loader)) == 6        # a closed loader starts afresh
    loader.close()
    assert before.left() == []


def test_end_of_epoch_without_persistent_workers_leaves_nothing(folder):
    before = Snapshot()
    loader = make_loader(folder)
    consume(loader)
    assert before.left() == []
    assert side_stream_idle(loader._runtime)


def test_a_cleanup_failure_does_not_hide_the_error(folder):
    loader = make_loader(folder, transform=FailAt(2, RuntimeError, "kernel exploded"))

    def broken_synchronize():
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    loader._runtime.synchronize = broken_synchronize
    before = Snapshot()
    with pytest.raises(RuntimeError, match="kernel exploded") as caught:
        consume(loader)
    assert any("illegal memory access" in note for note in caught.value.__notes__)
    assert before.left() == []           # the other clean-up steps still ran


@pytest.mark.parametrize("where", ["decoder", "transform"])
def test_soak_errors_every_tenth_batch_keep_memory_and_threads_flat(tmp_path, where):
    # 10 batches per epoch: with a corrupt last sample the decoder fails the 10th.
    data = [(encode(photo_like(16, 16, seed=k), "PNG"), k) for k in range(20)]
    transform = T.Compose([T.RandomResizedCrop(8), T.ToDtype(torch.float32, scale=True)])
    if where == "decoder":
        data[-1] = (data[-1][0][:60], 19)          # the header parses, the pixels are cut off
    else:
        transform = T.Compose([*transform.transforms, FailEvery(10)])
    loader = gpuaug.DataLoader(data, batch_size=2, num_workers=1, persistent_workers=True, transform=transform)
    batches, errors = 0, 0
    rss, threads, children = [], [], []
    while batches + errors < 300:
        try:
            for _ in loader:
                batches += 1
        except (gpuaug.BadSampleError, RuntimeError):
            errors += 1
            rss.append(tree_rss_kb())
            threads.append(threading.active_count())
            children.append(len(psutil.Process().children(recursive=True)))
    assert errors >= 25, (batches, errors)
    assert (max(rss[3:]) - rss[3]) / rss[3] < 0.05, rss
    assert len(set(threads)) == 1, threads
    assert len(set(children)) == 1, children
    loader.close()


class FailEvery(T.Transform):
    """Raises on every ``n``-th batch it sees."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def apply(self, state, params):
        self.calls += 1
        if self.calls % self.n == 0:
            raise RuntimeError(f"transform failed on its batch {self.calls}")
        return state


class SlowBytes(torch.utils.data.Dataset):
    def __len__(self):
        return 40

    def __getitem__(self, i):
        time.sleep(0.01)
        return encode(photo_like(8, 8)), i


def test_a_killed_persistent_worker_is_replaced_on_the_next_pass():
    before = Snapshot()
    loader = gpuaug.DataLoader(SlowBytes(), batch_size=2, num_workers=2, persistent_workers=True)
    it = iter(loader)
    next(it)
    os.kill(psutil.Process().children()[0].pid, signal.SIGKILL)
    with pytest.raises(Exception):       # "worker exited unexpectedly", or a reset connection mid-batch
        for _ in it:
            pass
    # the surviving worker cannot serve another pass: it went with this one
    assert ours(before.left()) == []
    assert len(list(loader)) == 20            # new workers
    assert only_persistent_workers(before.left(timeout=0))
    loader.close()
    assert before.left() == []
