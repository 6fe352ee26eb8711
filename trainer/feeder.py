"""Feeding the backbone(s) during `extract`: full passes across videos, every device, stage timings.

- Full passes. Frames of consecutive videos are packed into passes of exactly
  `batch` frames; a video's frames may straddle two passes (its features are put back
  together before it is stored). Only the last pass of a run is smaller; on a GPU a network
  backbone pads it up to the next power of two (trainer/backbone.py `pass_size`: a fixed
  set of shapes, so the last pass autotunes nothing new), and the summary counts those frames.
- Every device. One thread per device (each visible GPU, or each logical CPU device
  where some are configured, else the CPU) holds its own backbone and takes passes from
  one bounded queue, so a fast device simply takes more. TensorFlow releases the GIL
  while it computes, so threads run the devices concurrently; the main thread keeps
  collecting decoded videos and writing the cache meanwhile.
- uint8 in. Passes are uint8 frames; the cast and the preprocessing are in the
  backbone's graph (trainer/backbone.py), so a pass copies 1 byte per pixel, not 4.
- Timings. Each stage's busy time is kept (decode in the workers, copy to the device,
  forward pass, cache writes) so the summary can say which stage bounds the run.

Hand-written, not tf.data: the inputs come from a process pool whose results arrive in
any order and may be failures, and resume needs each video stored as soon as its last
frame is through; a plain queue and threads say that most directly.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

_STOP = object()


def extraction_devices(settings: dict, gpus: int = 0) -> list[str]:
    """TensorFlow device names that extract uses: all GPUs (at most `gpus` when > 0), else the
    logical CPU devices. The thumbnail backbone has no graph: one host "device"."""
    from trainer.backbone_settings import SPECS

    if SPECS[settings["backbone"]].app is None:
        return ["host"]
    import tensorflow as tf

    from trainer.runtime import enable_memory_growth

    # On every visible GPU, also with --gpus 1: TensorFlow starts all of them and refuses
    # mixed settings; without it each GPU's memory is taken whole.
    enable_memory_growth()
    devices = [d.name for d in tf.config.list_logical_devices("GPU")]
    if not devices:
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    return devices[:gpus] if gpus > 0 else devices


def describe_backbone_run(settings: dict, devices: list[str]) -> str:
    """One line for the extract log: which backbone, in which precision, where, and whether
    it compiles with XLA and why (trainer/backbone.py decides; this only reports it)."""
    from trainer.backbone import xla_decision
    from trainer.backbone_settings import SPECS, backbone_policy

    if SPECS[settings["backbone"]].app is None:
        return f"backbone {settings['backbone']} on the host (no network: nothing to compile)"
    on_gpu = any("GPU" in d.upper() for d in devices)
    policy = backbone_policy(settings.get("precision"), on_gpu)
    where = ", ".join(d.split("device:")[-1].lstrip("/") for d in devices)
    _, why = xla_decision(on_gpu)
    return f"backbone {settings['backbone']} in {policy.replace('mixed_', '')} on {where}; XLA: {why}"


@dataclass
class _Pending:
    item: Any
    frames: np.ndarray  # uint8 [n, s, s, 3], not yet sent
    sent: int = 0  # frames of it already in a pass


@dataclass
class _Video:
    item: Any
    feats: np.ndarray | None = None  # float32 [n, dim], filled as passes come back
    missing: int = 0  # frames whose features have not come back yet


@dataclass
class Stats:
    frames: int = 0
    passes: int = 0
    full_passes: int = 0
    batch: int = 0
    computed: int = 0  # frames the backbones ran, padding of a short last pass included
    per_device: dict = field(default_factory=dict)  # device -> passes
    copy_s: dict = field(default_factory=dict)  # device -> seconds
    forward_s: dict = field(default_factory=dict)  # device -> seconds
    load_s: float = 0.0  # building the backbones (in their threads, while decoding runs)


class Feeder:
    """put(item, frames) videos in; done() yields (item, features) for every finished video."""

    def __init__(self, make_backbone: Callable[[str], Any], devices: list[str], batch: int):
        self.batch = max(1, int(batch))
        self.devices = devices
        self.stats = Stats(batch=self.batch, per_device={d: 0 for d in devices},
                           copy_s={d: 0.0 for d in devices}, forward_s={d: 0.0 for d in devices})
        self._make_backbone = make_backbone
        # Two passes per device waiting: a device never idles while the main thread packs the next.
        self._in: queue.Queue = queue.Queue(maxsize=2 * len(devices))
        self._out: queue.Queue = queue.Queue()
        self._pending: list[_Pending] = []
        self._pending_frames = 0
        self._videos: dict[int, _Video] = {}
        self._next_id = 0
        self._in_flight = 0  # passes sent whose features have not come back
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._device_loop, args=(d,), daemon=True, name=f"extract-{d}")
                         for d in devices]
        for t in self._threads:
            t.start()

    # --- main thread -----------------------------------------------------------------
    def put(self, item: Any, frames: np.ndarray) -> Iterator[tuple[Any, np.ndarray]]:
        """Queue one video's frames; yields the videos finished meanwhile."""
        vid = self._next_id
        self._next_id += 1
        self._videos[vid] = _Video(item, None, len(frames))
        self._pending.append(_Pending(vid, frames))
        self._pending_frames += len(frames)
        while self._pending_frames >= self.batch:
            yield from self._send(self.batch)
        yield from self._collect(block=False)

    def finish(self) -> Iterator[tuple[Any, np.ndarray]]:
        """Send the last (partial) pass and yield every video still in flight."""
        if self._pending_frames:
            yield from self._send(self._pending_frames)
        while self._in_flight:
            yield from self._collect(block=True)

    def close(self) -> None:
        """Stop the device threads (after Ctrl-C too); a pass being computed finishes first."""
        self._stop.set()
        for _ in self._threads:
            try:
                self._in.put_nowait(_STOP)
            except queue.Full:
                pass

    def _send(self, n: int) -> Iterator[tuple[Any, np.ndarray]]:
        parts, segments, taken = [], [], 0
        while taken < n:
            p = self._pending[0]
            k = min(n - taken, len(p.frames) - p.sent)
            parts.append(p.frames[p.sent:p.sent + k])
            segments.append((p.item, p.sent, taken, k))  # (video, its first frame, place in the pass, count)
            p.sent += k
            taken += k
            if p.sent == len(p.frames):
                self._pending.pop(0)
        self._pending_frames -= n
        batch = parts[0] if len(parts) == 1 else np.concatenate(parts)
        self.stats.frames += n
        self.stats.passes += 1
        self.stats.full_passes += n == self.batch
        self._in_flight += 1
        while True:  # bounded: wait for a free slot, but notice a device thread that died
            try:
                self._in.put((batch, segments), timeout=0.2)
                break
            except queue.Full:
                yield from self._collect(block=False)
                if not any(t.is_alive() for t in self._threads):
                    yield from self._collect(block=True)  # raises the thread's error

    def _collect(self, block: bool) -> Iterator[tuple[Any, np.ndarray]]:
        while self._in_flight:
            try:
                msg = self._out.get(timeout=0.5) if block else self._out.get_nowait()
            except queue.Empty:
                if block and not any(t.is_alive() for t in self._threads) and self._out.empty():
                    raise RuntimeError("every extraction device thread stopped") from None
                if block:
                    continue
                return
            if isinstance(msg, BaseException):
                raise msg
            feats, segments = msg
            self._in_flight -= 1
            for vid, first, at, k in segments:
                v = self._videos[vid]
                if v.feats is None:
                    v.feats = np.empty((v.missing, feats.shape[1]), np.float32)
                v.feats[first:first + k] = feats[at:at + k]
                v.missing -= k
                if v.missing == 0:
                    del self._videos[vid]
                    yield v.item, v.feats
            if block:
                return

    # --- device threads ----------------------------------------------------------------
    def _device_loop(self, device: str) -> None:
        try:
            t0 = time.perf_counter()
            backbone = self._make_backbone(device)
            with self._lock:
                self.stats.load_s = max(self.stats.load_s, time.perf_counter() - t0)
            while not self._stop.is_set():
                job = self._in.get()
                if job is _STOP:
                    return
                batch, segments = job
                t0 = time.perf_counter()
                x = backbone.to_device(batch)
                t1 = time.perf_counter()
                before = getattr(backbone, "computed", None)
                feats = backbone.features(x)
                t2 = time.perf_counter()
                with self._lock:
                    self.stats.computed += len(batch) if before is None else backbone.computed - before
                    self.stats.copy_s[device] += t1 - t0
                    self.stats.forward_s[device] += t2 - t1
                    self.stats.per_device[device] += 1
                self._out.put((feats, segments))
        except BaseException as exc:  # noqa: BLE001  (handed to the main thread, which raises it)
            self._out.put(exc)


# --- the figures the extract summary prints ------------------------------------------

def pipeline_stats(stats, wall: float, workers: int, decode_s: float, store_s: float) -> dict:
    """Frames, passes, useful work and each stage's busy share of the run's wall time."""
    wall = max(wall, 1e-9)
    devices = list(stats.per_device)
    busy = {
        "decode": decode_s / (workers * wall),  # share of the workers' time spent decoding
        "copy": sum(stats.copy_s.values()) / (len(devices) * wall),
        "forward": sum(stats.forward_s.values()) / (len(devices) * wall),
        "store": store_s / wall,
    }
    computed = stats.computed or stats.frames
    return {"frames": stats.frames, "passes": stats.passes, "full_passes": stats.full_passes, "batch": stats.batch,
            "computed": computed,
            "useful_work": (stats.frames / computed) if computed else None,
            "fill": stats.frames / (stats.passes * stats.batch) if stats.passes else None,
            "devices": {d: stats.per_device[d] for d in devices}, "workers": workers,
            "wall_s": round(wall, 3), "model_load_s": round(stats.load_s, 3),
            "busy": {k: round(v, 4) for k, v in busy.items()},
            "bottleneck": max(busy, key=busy.get) if stats.passes else None}


def print_pipeline(p: dict, out=None) -> None:
    """Frames, passes, useful work, devices, and which stage bounded the run."""
    out = out or sys.stdout
    if not p["passes"]:
        return
    last = p["frames"] - p["full_passes"] * p["batch"]
    devices = ", ".join(f"{d.split('device:')[-1].lstrip('/')} {n}" for d, n in p["devices"].items())
    print(f"backbone: {p['frames']} frames in {p['passes']} passes ({p['full_passes']} full of {p['batch']}"
          + (f", the last of {last}" if p["full_passes"] < p["passes"] else "")
          + f"); useful work {100 * p['useful_work']:.0f}% ("
          + (f"{p['computed'] - p['frames']} black frames pad the last pass to a fixed size"
             if p.get("computed", p["frames"]) > p["frames"] else "no padded frame computed")
          + f"), passes {100 * p['fill']:.1f}% "
          f"full on average; passes per device: {devices}", file=out)
    shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in p["busy"].items())
    bound = {"decode": "decode-bound: more decoding workers (cores) would speed it up",
             "forward": "backbone-bound: the devices are the limit",
             "copy": "copy-bound: host-to-device transfers are the limit",
             "store": "store-bound: cache writes are the limit (slow disk?)"}[p["bottleneck"]]
    if p["busy"][p["bottleneck"]] < 0.5:  # nothing was busy most of the time: start-up dominated
        bound = (f"no stage was busy half the time ({p['bottleneck']} the most): starting the decoders "
                 "and loading the backbone dominate a run this short")
    print(f"stages, busy share of {p['wall_s']:.1f} s ({p['workers']} decoding workers, backbones built in "
          f"{p['model_load_s']:.1f} s meanwhile): {shares}; {bound}", file=out)
