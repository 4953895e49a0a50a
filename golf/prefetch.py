"""Training micro-batches made ahead of the step, in a background thread (§10.4).

``PrefetchLoader`` calls the wrapped loader's ``next_batch`` in order on one worker, pins and copies
each batch to the GPU on a side stream, and keeps up to ``depth`` ready: every rank sees exactly the
wrapped loader's sequences, in order (spec §1.5). A worker failure or stall is raised in the
training thread as a ``GolfError``, never a hang.
"""
from __future__ import annotations

import logging
import queue
import threading
import time

import torch

from golf.runtime import GolfError

log = logging.getLogger("golf")

class _Failure:
    """What the worker puts in the queue in place of a batch when the loader raised."""

    def __init__(self, exc: BaseException):
        self.exc = exc


class PrefetchLoader:
    """``next_batch()`` like the wrapped loader's, but made ``depth`` micro-batches ahead.

    ``depth=0`` runs no thread: each call is the wrapped ``loader.next_batch(device)``, made on
    demand in the caller's thread (the path golf took before prefetching; ``loader_prefetch: false``).
    """

    def __init__(self, loader, device: torch.device | str, depth: int = 4, stall_timeout_s: float = 300.0):
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        self.loader, self.device, self.depth = loader, torch.device(device), depth
        self.stall_timeout_s = stall_timeout_s
        self._cuda = self.device.type == "cuda"
        if self._cuda and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self._error: GolfError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if depth == 0:
            return
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stream = torch.cuda.Stream(self.device) if self._cuda else None
        self._thread = threading.Thread(target=self._work, name="golf-prefetch", daemon=True)
        self._thread.start()

    # --- worker thread -----------------------------------------------------------------------

    def _make(self):
        if not self._cuda:
            return self.loader.next_batch("cpu")
        x, y = self.loader.next_batch("cpu")  # [B, T] int64 each, pageable
        with torch.cuda.stream(self._stream):
            # pinned memory lets the copy run on the copy engine, asynchronously to the host;
            # the host allocator keeps each pinned block until its copy has finished
            x = x.pin_memory().to(self.device, non_blocking=True)
            y = y.pin_memory().to(self.device, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(self._stream)
        return x, y, ready

    def _work(self) -> None:
        if self._cuda:
            torch.cuda.set_device(self.device)  # the current device is per thread
        try:
            while not self._stop.is_set():
                self._put(self._make())
        except BaseException as exc:  # handed to the training thread, which raises it
            self._put(_Failure(exc))

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    # --- training thread -----------------------------------------------------------------------

    def next_batch(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (x, y), each [B, T] int64 on the device; ready to use on the current stream."""
        if device is not None and torch.device(device).type != self.device.type:
            raise ValueError(f"this PrefetchLoader makes batches on {self.device}, not {device}")
        if self.depth == 0:
            return self.loader.next_batch(self.device)
        if self._error is not None:
            raise self._error
        item = self._get()
        if isinstance(item, _Failure):
            exc = item.exc
            self._error = GolfError(f"the training-data loader failed in its prefetch thread: "
                                    f"{type(exc).__name__}: {exc}")
            self.close()
            raise self._error from exc
        if not self._cuda:
            return item
        x, y, ready = item
        stream = torch.cuda.current_stream(self.device)
        stream.wait_event(ready)
        x.record_stream(stream)  # made on the side stream, used and freed on this one
        y.record_stream(stream)
        return x, y

    def _get(self):
        waited = 0.0
        while True:
            if self._thread is None:
                raise GolfError("the training-data PrefetchLoader is closed")
            try:
                return self._queue.get(timeout=0.5)
            except queue.Empty:
                waited += 0.5
            if not self._thread.is_alive() and self._queue.empty():
                self._error = GolfError("the training-data prefetch thread stopped without a batch or an error")
                raise self._error
            if waited >= self.stall_timeout_s:
                self._error = GolfError(f"the training-data loader made no micro-batch in {self.stall_timeout_s:.0f} s "
                                        f"(slow or unreachable shard files?)")
                self.close(timeout_s=1.0)  # the worker is stuck in the loader: it may not stop
                raise self._error

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the worker and wait for it; batches still queued are dropped. Safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        while thread.is_alive() and time.monotonic() < deadline:
            try:  # make room, so a worker blocked on a full queue sees the stop flag
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)
        if thread.is_alive():  # stuck inside the loader itself; a daemon thread, it ends with the process
            log.warning("the training-data prefetch thread did not stop within %.0f s", timeout_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> "PrefetchLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
