"""``gpuaug.profile(loader)``: where the time of an input pipeline goes, stage by stage.

It turns on the loader's timeline for a few batches (:mod:`gpuaug.timeline`), then
summarizes: per-stage milliseconds per batch, the consumer's wait for data, a plain-words
hint at the bottleneck, and a timeline plot.

Example:
    >>> import io, torch, gpuaug
    >>> from PIL import Image
    >>> from gpuaug import transforms as T
    >>> buf = io.BytesIO(); Image.new("RGB", (64, 48), "red").save(buf, "JPEG")
    >>> loader = gpuaug.DataLoader([(buf.getvalue(), 0)] * 16, batch_size=4, transform=T.RandomResizedCrop(32))
    >>> report = gpuaug.profile(loader, batches=3)
    >>> sorted(report.ms_per_batch) == sorted(set(report.ms_per_batch))
    True
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

import torch

from .timeline import STAGES, Span


@dataclass
class Profile:
    """The spans of a profiled run and what they add up to.

    :func:`profile` makes one from a loader's run; it can also be built from spans:

    Example:
        >>> from gpuaug.profile import Profile
        >>> from gpuaug.timeline import Span
        >>> spans = [Span("decode", 0, 0.0, 0.02), Span("other ops", 0, 0.02, 0.05), Span("consumer wait", 0, 0.0, 0.05)]
        >>> report = Profile(spans, wall_seconds=0.05, batches=1, images=32, num_workers=2)
        >>> {stage: round(ms, 1) for stage, ms in report.ms_per_batch.items()}, round(report.images_per_s)
        ({'decode': 20.0, 'other ops': 30.0, 'consumer wait': 50.0}, 640)
        >>> print(report.hint())
        the device stage is the bottleneck (50.0 ms/batch: decode, parameters, fused stage, other ops); ...
    """

    spans: list[Span]
    wall_seconds: float
    batches: int
    images: int
    num_workers: int
    ms_per_batch: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        totals = collections.defaultdict(float)
        for span in self.spans:
            totals[span.stage] += span.seconds
        self.ms_per_batch = {stage: 1000 * totals[stage] / max(self.batches, 1) for stage in STAGES
                             if stage in totals}

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_seconds if self.wall_seconds else 0.0

    def share_of_wall(self, stage: str) -> float:
        return self.ms_per_batch.get(stage, 0.0) * self.batches / 1000 / self.wall_seconds if self.wall_seconds else 0

    def hint(self) -> str:
        """The bottleneck, in plain words."""
        waiting = self.share_of_wall("consumer wait")
        device = sum(self.ms_per_batch.get(s, 0.0) for s in ("decode", "parameters", "fused stage", "other ops"))
        workers = self.ms_per_batch.get("worker read+pack", 0.0) / max(self.num_workers, 1)
        starved = self.ms_per_batch.get("wait for workers", 0.0)
        if waiting < 0.1:
            return f"the input pipeline keeps up: the consumer waited only {waiting:.0%} of the time"
        if starved > 0.5 * device or workers > device:
            return (f"workers cannot keep up: the device stage waited {starved:.1f} ms/batch for them; "
                    "raise num_workers")
        return (f"the device stage is the bottleneck ({device:.1f} ms/batch: decode, parameters, fused "
                "stage, other ops); use a GPU (device='cuda') or fewer/cheaper ops")

    def table(self) -> str:
        lines = [f"{'stage':18s} {'ms/batch':>9s} {'share of wall':>14s}"]
        for stage, ms in self.ms_per_batch.items():
            lines.append(f"{stage:18s} {ms:9.2f} {self.share_of_wall(stage):14.0%}")
        lines.append(f"{self.batches} batches, {self.images_per_s:.1f} images/s, {self.num_workers} workers "
                     "(worker time is per worker process)")
        return "\n".join(lines)

    def plot(self):
        """A matplotlib Figure: the stages' spans over wall time, one lane per stage."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 3.5), dpi=80)
        ax = fig.add_subplot(1, 1, 1)
        start = min((s.start for s in self.spans), default=0.0)
        lanes = [stage for stage in STAGES if stage in self.ms_per_batch]
        colors = {b: f"C{b % 10}" for b in {s.batch for s in self.spans}}
        for lane, stage in enumerate(lanes):
            bars = [(s.start - start, s.seconds) for s in self.spans if s.stage == stage]
            ax.broken_barh(bars, (lane - 0.4, 0.8), facecolors=[colors[s.batch] for s in self.spans
                                                                if s.stage == stage])
        ax.set_yticks(range(len(lanes)), lanes)
        ax.invert_yaxis()
        ax.set_xlabel("seconds (colour: batch)")
        ax.set_title(self.hint(), fontsize=9)
        fig.tight_layout()
        from .viz import displayable

        return displayable(fig)

    def __repr__(self) -> str:
        return f"{self.table()}\nhint: {self.hint()}"


def profile(loader, batches: int = 20) -> Profile:
    """Run ``batches`` batches of a fresh iteration of ``loader`` with its timeline on.

    On CUDA each stage waits for the device while profiling, so device time lands in the
    right stage (the run itself is then less overlapped than without profiling).

    Example:
        >>> import torch, gpuaug
        >>> from gpuaug import transforms as T
        >>> dataset = [(torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8), 0) for _ in range(8)]
        >>> loader = gpuaug.DataLoader(dataset, batch_size=4, device="cpu", transform=T.RandomResizedCrop(32))
        >>> report = gpuaug.profile(loader, batches=2)
        >>> print(report.table())                                   # ms per stage; report.hint() says the bottleneck
        stage                ms/batch  share of wall
        ...
        2 batches, ... images/s, 0 workers (worker time is per worker process)
    """
    timeline = loader.timeline
    timeline.clear()
    timeline.enabled = True
    if loader.device.type == "cuda":
        timeline.sync = torch.cuda.synchronize
    images = done = 0
    start = time.perf_counter()
    try:
        for batch in loader:
            first = batch[0] if isinstance(batch, (list, tuple)) else (
                next(iter(batch.values())) if isinstance(batch, dict) else batch)
            images += len(first)
            done += 1
            if done >= batches:
                break
    finally:
        wall = time.perf_counter() - start
        timeline.enabled = False
        timeline.sync = None
    return Profile(list(timeline.spans), wall, done, images, loader.num_workers)
