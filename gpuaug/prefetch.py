"""Run the device stage ahead of the consumer, on a background thread.

The consumer (the training loop) takes batch *i* while batch *i+1* is being prepared.
This is the scheduling logic shared by every device: on CPU the background thread
does the work itself; on CUDA the same thread enqueues it on a side stream. Errors
raised while preparing a batch are re-raised in the consumer with their original
traceback, after the prefetcher has closed: the error reaches the consumer only once
the thread is gone. Closing (loop exhausted, an error, ``break`` then garbage
collection, ``del``) stops the thread, drops the results it prepared and then calls
``on_close``, where the owner releases what the thread was using.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator

_DONE = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def _produce(source: Iterator, process: Callable[[Any], Any], out: queue.Queue, stop: threading.Event) -> None:
    # Must not reference the Prefetcher: the consumer dropping its iterator has to be
    # able to garbage-collect it (and so close us) while this thread still runs.
    try:
        for item in source:
            if stop.is_set():
                return
            result = process(item)
            _put(out, result, stop)
            item = result = None     # not held while waiting for the next item
        _put(out, _DONE, stop)
    except BaseException as e:  # noqa: BLE001 - every error must reach the consumer
        _put(out, _Failure(e), stop)


def _put(out: queue.Queue, item, stop: threading.Event) -> None:
    """Put ``item`` unless the consumer closes first (then nobody would take it)."""
    while not stop.is_set():
        try:
            out.put(item, timeout=0.05)
            return
        except queue.Full:
            continue


class Prefetcher:
    """Iterate ``process(item) for item in source`` with ``depth`` results prepared ahead.

    Args:
        source: an iterator (e.g. a torch DataLoader iterator).
        process: the work to run on each item, off the consumer's thread.
        depth: how many processed items may wait for the consumer (>= 1).
        on_close: called once when the prefetcher closes, after the thread has stopped
            (e.g. to shut workers down); when it closes because ``process`` or
            ``source`` raised, a failure of ``on_close`` is added as a note to that
            error instead of replacing it.

    Example:
        >>> from gpuaug.prefetch import Prefetcher
        >>> list(Prefetcher(iter(range(4)), lambda x: x * x, depth=2))
        [0, 1, 4, 9]
    """

    def __init__(self, source: Iterator, process: Callable[[Any], Any], depth: int = 2,
                 on_close: Callable[[], None] | None = None, name: str = "gpuaug-prefetch"):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._on_close = on_close
        self._closed = False
        self._thread = threading.Thread(target=_produce, args=(source, process, self._queue, self._stop),
                                        name=name, daemon=True)
        self._thread.start()

    def __iter__(self):
        return self

    def __next__(self):
        if self._closed:
            raise StopIteration
        while True:
            try:
                item = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    self.close()
                    raise RuntimeError("gpuaug prefetch thread died without reporting an error") from None
        if item is _DONE:
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            error, item = item.error, None
            try:
                self._close_after(error)
                raise error
            finally:
                error = None         # this frame is in error's traceback: no cycle through it
        return item

    def _close_after(self, error: BaseException) -> None:
        try:
            self.close()
        except Exception as cleanup:  # noqa: BLE001 - the stage's error is what the consumer must see
            error.add_note(f"gpuaug: shutting down after this error also failed: {cleanup!r}")

    def close(self) -> None:
        """Stop the background thread, drop what it prepared, then call ``on_close``. Idempotent.

        Waits for the item being processed to finish. If interrupted (KeyboardInterrupt
        while waiting) a later call, or the finalizer, finishes the job.
        """
        if self._closed:
            return
        self._stop.set()
        if self._thread is not threading.current_thread():
            # Unblock a producer waiting on a full queue, then wait for it to notice.
            while self._thread.is_alive():
                self._drain()
                self._thread.join(timeout=0.05)
        self._drain()                # prepared results (pinned inputs, device tensors) go now
        self._closed = True
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    def _drain(self) -> None:
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass
