"""Decoding videos in worker processes: a bounded pool of spawned decoders that survives a crashing one.

Workers are started with 'spawn' (never fork a process that may hold TensorFlow),
ignore Ctrl-C (the main process stops them), and exit on their own when the main
process is killed. At most a few videos are ever in flight, so a SIGKILL loses only them.
Nothing here imports TensorFlow: the workers import this module.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator

from trainer.errors import UsageError


# --- worker side (runs in the spawned processes; must not import TensorFlow) ---------

def _init_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C
    from trainer.frames import cv2  # through trainer.frames: it quiets OpenCV's logging first

    cv2.setNumThreads(1)  # parallelism comes from the processes; threads would oversubscribe
    parent = os.getppid()

    # A SIGKILLed main process cannot stop its pool; without this the workers would wait
    # on their task queue forever. Polling the parent id works on every POSIX system.
    def watch_parent() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()


def decode_video(path: str, n_frames: int, size: int) -> dict:
    """Frames of one video, or the reason it has none (never raises for a bad video)."""
    from trainer.frames import VideoError, sample_frames

    t0 = time.perf_counter()
    try:
        s = sample_frames(path, n_frames, size, threads=1)
    except VideoError as exc:
        return {"ok": False, "reason": str(exc)}
    except Exception as exc:  # a decoder bug must cost one video, not the run
        return {"ok": False, "reason": f"unexpected {type(exc).__name__}: {exc}"}
    return {"ok": True, "frames": s.frames, "indices": s.indices, "frames_decoded": s.total_frames,
            "frames_reported": s.reported_frames, "padded": s.padded, "passes": s.passes,
            "sampling": s.method, "frames_read": s.frames_read,
            "seconds": time.perf_counter() - t0}


# --- process pool -------------------------------------------------------------------

class DecoderPool:
    """Runs one function per item in spawned processes with a bounded number in flight.

    Bounded because decoded frames wait in memory until the backbone takes them: with
    VGG19 on a CPU, decoding is far ahead and an unbounded queue would hold every video.
    A worker that dies (a decoder segfault, the OOM killer) breaks a ProcessPoolExecutor
    for every task in flight; those are retried one at a time in a fresh pool, so only
    the video that really kills its worker is reported, as `crashed`.
    """

    def __init__(self, workers: int):
        self.workers = max(1, workers)
        self._ctx = multiprocessing.get_context("spawn")
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self, workers: int | None = None) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=workers or self.workers, mp_context=self._ctx,
                                   initializer=_init_worker)

    def map_unordered(self, fn: Callable, items: Iterable, window: int | None = None) -> Iterator[tuple]:
        """Yield (item, result) as results arrive; result is a `Crashed` for a killer item."""
        window = window or 2 * self.workers
        items = iter(items)
        self._pool = self._pool or self._executor()
        in_flight: dict = {}
        exhausted = False
        while True:
            while not exhausted and len(in_flight) < window:
                try:
                    item = next(items)
                except StopIteration:
                    exhausted = True
                    break
                in_flight[self._pool.submit(fn, *item)] = item
            if not in_flight:
                return
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            broken = []
            for fut in done:
                item = in_flight.pop(fut)
                try:
                    yield item, fut.result()
                except BrokenProcessPool:
                    broken.append(item)
            if broken:
                broken += list(in_flight.values())  # every other task died with the pool
                in_flight.clear()
                self._pool.shutdown(wait=False, cancel_futures=True)
                for item in broken:
                    yield item, self._run_alone(fn, item)
                self._pool = self._executor()

    def _run_alone(self, fn: Callable, item: tuple):
        with self._executor(1) as solo:
            try:
                return solo.submit(fn, *item).result()
            except BrokenProcessPool:
                return Crashed()

    def close(self, cancel: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=not cancel, cancel_futures=cancel)
            self._pool = None


class Crashed:
    """The result of an item whose worker process died even when it ran alone."""

    reason = "the video decoder crashed on this file (worker process died)"


# --- main side --------------------------------------------------------------------

def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours a container's CPU limit
    except AttributeError:
        return os.cpu_count() or 1


def worker_count(data: dict) -> int:
    """Decoding processes (and hashing threads) for the config's `data.workers` (0 = one per CPU)."""
    n = data["workers"]
    if n < 0:
        raise UsageError(f"data.workers must be >= 0 (0 = one per CPU core), got {n}")
    return n or default_workers()
