"""Where the time goes: spans of the data flow's stages, per batch.

The loader records spans only while profiling (``loader.timeline.enabled = True``),
so the hot path pays one attribute check per stage otherwise. Times come from
``time.perf_counter``, which on Linux is CLOCK_MONOTONIC and so comparable between the
worker processes and the main process. On CUDA the stage spans are host times unless
``sync`` is set (profiling does set it: it waits for the device after each stage,
which serializes the pipeline but attributes device time to the right stage).

Example:
    >>> from gpuaug.timeline import Timeline
    >>> tl = Timeline(enabled=True)
    >>> with tl.span("decode", batch=0):
    ...     pass
    >>> [s.stage for s in tl.spans]
    ['decode']
"""
from __future__ import annotations

import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

STAGES = ("worker read+pack", "wait for workers", "decode", "parameters", "fused stage", "other ops",
          "consumer wait")


@dataclass(frozen=True)
class Span:
    stage: str
    batch: int
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


class Timeline:
    """A bounded record of stage spans (the most recent ``capacity``)."""

    def __init__(self, enabled: bool = False, capacity: int = 100_000, sync: Callable[[], None] | None = None):
        self.enabled = enabled
        self.sync = sync
        self.spans: deque[Span] = deque(maxlen=capacity)

    def add(self, stage: str, batch: int, start: float, end: float) -> None:
        if self.enabled:
            self.spans.append(Span(stage, batch, start, end))

    @contextlib.contextmanager
    def span(self, stage: str, batch: int):
        if not self.enabled:
            yield
            return
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.sync is not None:
                self.sync()
            self.spans.append(Span(stage, batch, start, time.perf_counter()))

    def clear(self) -> None:
        self.spans.clear()


#: The timeline of code that runs without a loader (standalone transforms): never records.
DISABLED = Timeline(enabled=False)
