"""gpuaug.profile: every stage is timed, the hint names the bottleneck, the timeline stops."""
from __future__ import annotations

import time

from matplotlib.figure import Figure

import gpuaug
from gpuaug import transforms as T

from conftest import encode, photo_like


class Slow(T.Transform):
    def apply(self, state, params):
        time.sleep(0.03)
        return state


def data(n=24):
    return [(encode(photo_like(40, 50, seed=k)), k) for k in range(n)]


def test_profile_times_every_stage_and_restores_the_timeline():
    loader = gpuaug.DataLoader(data(), batch_size=4, num_workers=2, transform=T.RandomResizedCrop(16))
    report = gpuaug.profile(loader, batches=5)
    assert report.batches == 5 and report.images == 20
    assert {"worker read+pack", "wait for workers", "decode", "parameters", "other ops",
            "consumer wait"} <= set(report.ms_per_batch)
    assert all(ms >= 0 for ms in report.ms_per_batch.values())
    assert loader.timeline.enabled is False
    assert "images/s" in report.table() and isinstance(report.plot(), Figure)
    assert sum(1 for _ in loader) == 6                 # the loader is usable afterwards


def test_hint_names_a_slow_device_stage():
    loader = gpuaug.DataLoader(data(12), batch_size=4, transform=T.Compose([T.Resize((8, 8)), Slow()]))
    report = gpuaug.profile(loader, batches=3)
    assert report.ms_per_batch["other ops"] >= 25
    assert "device stage is the bottleneck" in report.hint()
