"""Past one process: torchrun sharding, iterable splitting, resume, long runs, worker crashes."""
from __future__ import annotations

import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import torchvision

import gpuaug
from gpuaug import transforms as T

from conftest import encode, make_image_folder, photo_like, tree_rss_kb

SIZES = [(30 + 3 * k, 50 - 2 * k) for k in range(11)]


def test_torchrun_two_ranks_shard_like_distributed_sampler(tmp_path):
    root = make_image_folder(tmp_path / "train", SIZES)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(__file__).parent / "helpers" / "ddp_run.py"), str(root), str(tmp_path)]
    # A session of its own, so a hang is cleaned up with every rank it started.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, output.decode()[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2] and ranks[0]["len"] == ranks[1]["len"] == 3
    single = gpuaug.DataLoader(torchvision.datasets.ImageFolder(str(root)), batch_size=2, seed=7, device="cpu",
                               transform=T.Compose([T.RandomResizedCrop(16), T.RandomHorizontalFlip(),
                                                    T.ColorJitter(0.3, 0.3, 0.3, 0.05)]))
    for epoch in range(2):
        per_rank = [[i for idx, _, _ in r["seen"][epoch] for i in idx] for r in ranks]
        assert len(per_rank[0]) == len(per_rank[1]) == 6          # 11 samples padded to 12
        assert set(per_rank[0]) | set(per_rank[1]) == set(range(11))
        assert len(set(per_rank[0]) & set(per_rank[1])) <= 1      # only the padding repeats
        for r in ranks:
            for idx, images, labels in r["seen"][epoch]:
                for i, image in zip(idx, images):
                    assert torch.equal(image, single.replay(i, epoch)), (r["rank"], epoch, i)
    orders = [[i for idx, _, _ in ranks[0]["seen"][e] for i in idx] for e in range(2)]
    assert orders[0] != orders[1], "set_epoch must reshuffle"


def test_explicit_rank_and_world_size():
    data = [(encode(photo_like(10, 10, seed=k)), k) for k in range(8)]
    got = [sorted(int(v) for _, labels in gpuaug.DataLoader(data, batch_size=2, rank=r, world_size=2,
                                                              shuffle=True, seed=1) for v in labels)
           for r in range(2)]
    assert sorted(got[0] + got[1]) == list(range(8)) and not set(got[0]) & set(got[1])
    with pytest.raises(ValueError, match="rank"):
        gpuaug.DataLoader(data, rank=2, world_size=2)


class BytesStream(torch.utils.data.IterableDataset):
    def __init__(self, n):
        self.items = [encode(photo_like(12, 14, seed=k), "PNG") for k in range(n)]

    def __iter__(self):
        for k, blob in enumerate(self.items):
            yield {"bytes": blob, "label": k}


@pytest.mark.parametrize("workers", [0, 2])
def test_iterable_dataset_each_sample_once_with_workers(workers):
    loader = gpuaug.DataLoader(BytesStream(13), batch_size=3, num_workers=workers, image_key="bytes",
                               transform=T.RandomResizedCrop(8))
    for _ in range(2):
        labels, identities = [], []
        for batch in loader:
            labels += batch["label"].tolist()
            identities += loader.indices.tolist()
        assert sorted(labels) == list(range(13))
        assert identities == labels          # a streamed sample's identity is its stream position


def test_iterable_identity_does_not_depend_on_workers():
    outs = {}
    for workers in (0, 2):
        loader = gpuaug.DataLoader(BytesStream(9), batch_size=2, num_workers=workers, image_key="bytes", seed=3,
                                   transform=T.Compose([T.RandomResizedCrop(8), T.ColorJitter(0.5)]))
        outs[workers] = {int(l): img for b in loader for img, l in zip(b["bytes"], b["label"])}
    assert all(torch.equal(outs[0][k], outs[2][k]) for k in range(9))


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_is_bit_exact(tmp_path, workers):
    root = make_image_folder(tmp_path / "train", SIZES)
    make = lambda: gpuaug.DataLoader(torchvision.datasets.ImageFolder(str(root)), batch_size=2,  # noqa: E731
                                     shuffle=True, num_workers=workers, seed=5,
                                     transform=T.Compose([T.RandomResizedCrop(16), T.ColorJitter(0.4, 0.4)]))
    reference = make()
    list(reference)                                   # epoch 0
    uninterrupted = [(i.clone(), l.clone()) for i, l in reference]   # epoch 1
    first = make()
    list(first)
    it = iter(first)
    head = [next(it) for _ in range(2)]
    state = first.state_dict()
    assert state == {"epoch": 1, "batches": 2, "seed": 5}
    del it, first
    resumed = make()
    resumed.load_state_dict(state)
    tail = list(resumed)
    assert len(head) + len(tail) == len(uninterrupted)
    for (a, la), (b, lb) in zip(head + tail, uninterrupted):
        assert torch.equal(a, b) and torch.equal(la, lb)
    assert resumed.state_dict() == {"epoch": 2, "batches": 0, "seed": 5}
    with pytest.raises(ValueError, match="seed"):
        make().load_state_dict({**state, "seed": 6})


def test_resume_iterable_dataset():
    make = lambda: gpuaug.DataLoader(BytesStream(10), batch_size=3, image_key="bytes", seed=2,  # noqa: E731
                                     transform=T.RandomResizedCrop(8))
    full = [b["bytes"] for b in make()]
    first = make()
    it = iter(first)
    head = [next(it)["bytes"]]
    resumed = make()
    resumed.load_state_dict(first.state_dict())
    tail = [b["bytes"] for b in resumed]
    assert all(torch.equal(a, b) for a, b in zip(head + tail, full)) and len(head + tail) == len(full)


def test_soak_memory_files_and_threads_stay_flat():
    data = [(encode(photo_like(16, 16, seed=k), "PNG"), k) for k in range(100)]
    loader = gpuaug.DataLoader(data, batch_size=1, num_workers=1, persistent_workers=True, seed=0,
                               transform=T.Compose([T.RandomResizedCrop(8), T.ColorJitter(0.3, 0.3, 0.3, 0.05),
                                                    T.ToDtype(torch.float32, scale=True)]))
    rss, fds, threads = [], [], []
    for epoch in range(30):                 # 3000 batches
        for _ in loader:
            pass
        # the process tree: this process and its persistent worker
        rss.append(tree_rss_kb())
        fds.append(len(os.listdir("/proc/self/fd")))
        threads.append(threading.active_count())
    assert (max(rss[1:]) - rss[1]) / rss[1] < 0.05, rss
    assert len(set(fds[1:])) == 1, fds
    assert len(set(threads[1:])) == 1, threads


def test_killed_worker_surfaces_as_an_error_naming_it():
    class Slow(torch.utils.data.Dataset):
        def __len__(self):
            return 400

        def __getitem__(self, i):
            time.sleep(0.02)
            return encode(photo_like(8, 8)), i

    loader = gpuaug.DataLoader(Slow(), batch_size=2, num_workers=2, timeout=0)
    it = iter(loader)
    next(it)
    pids = [w.pid for w in multiprocessing.active_children()]
    assert pids
    start = time.perf_counter()
    os.kill(pids[0], signal.SIGKILL)
    with pytest.raises(RuntimeError, match=r"worker.*(killed|exited)") as err:
        for _ in it:
            pass
    assert time.perf_counter() - start < 20
    assert str(pids[0]) in str(err.value)


class _WorkersOnly:
    """Stands in for torch's multi-process iterator: only its ``_workers`` list is read."""

    def __init__(self, workers):
        self._workers = workers


def test_a_reset_socket_from_a_dying_worker_names_the_worker():
    # The race CI met: the worker dies while the main process fetches its batch's shared
    # memory; the socket breaks before the process can be reaped, so torch re-raises the
    # bare ConnectionResetError. The loader must still name the worker.
    from gpuaug.loader import _dead_worker_error

    worker = multiprocessing.get_context("fork").Process(target=time.sleep, args=(30,))
    worker.start()
    threading.Timer(0.2, os.kill, (worker.pid, signal.SIGKILL)).start()
    reset = ConnectionResetError(104, "Connection reset by peer")
    error = _dead_worker_error(_WorkersOnly([worker]), reset, grace_s=10)
    assert isinstance(error, RuntimeError)
    assert re.search(rf"worker \(pid {worker.pid} killed by signal SIGKILL\).*exited", str(error))
    assert "Connection reset" in str(error)


def test_a_reset_socket_with_every_worker_alive_is_not_renamed():
    from gpuaug.loader import _dead_worker_error

    worker = multiprocessing.get_context("fork").Process(target=time.sleep, args=(30,))
    worker.start()
    try:
        assert _dead_worker_error(_WorkersOnly([worker]), ConnectionResetError(), grace_s=0.2) is None
        assert _dead_worker_error(object(), ConnectionResetError(), grace_s=0.2) is None
    finally:
        worker.kill()
        worker.join()
