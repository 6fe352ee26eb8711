"""Frames of many clips (or windows of a long video) -> full backbone batches -> model -> results in order.

Classifying one 20-frame clip at a time runs the backbone in passes of 20 frames (it
never pads a pass) and the classifier once per clip. Here frames from consecutive items
are carried across item boundaries into the same backbone pass, so every pass is full
except the last one of the run, and the classifier runs once per `model_batch` clips.
The same frames go through the backbone either way: this pays where a pass of 64
frames costs little more than a pass of 20 (a GPU), hardly on a CPU
(bench/predict_batching.py measures both). A frame seen before (the same key: overlapping windows
of a long video often pick the same frame) is not run through the backbone again.
Results come out in the order the items went in; an item without frames (an error line,
the end of a file) is a marker that comes out in its place.

Memory: at most one backbone batch of frames waits, plus the features of the items not
yet classified (at most `model_batch` items) and `reuse` recent frames' features.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from typing import Any, Callable, Hashable

import numpy as np

from trainer.cache import CLASSES

VIOLENT = CLASSES.index("violent")


class BatchedClassifier:
    def __init__(self, backbone, model, on_result: Callable[[Any, float | None], None],
                 batch_frames: int = 64, model_batch: int = 64, reuse: int = 256):
        self.backbone, self.model, self.on_result = backbone, model, on_result
        self.batch_frames = max(1, int(batch_frames))
        self.model_batch = max(1, int(model_batch))
        self.items: deque[tuple[Any, list | None]] = deque()  # (tag, keys) in arrival order; keys None = marker
        self.queue: OrderedDict[Hashable, np.ndarray] = OrderedDict()  # frames waiting for the backbone
        self.features: dict[Hashable, np.ndarray] = {}  # features of frames that pending items use
        self.refs: Counter = Counter()
        self.recent: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self.reuse = reuse
        self.passes = 0  # backbone calls
        self.frames_run = 0  # frames through the backbone

    def add(self, tag: Any, keys: list[Hashable], frames: np.ndarray) -> None:
        """An item of len(keys) frames (uint8 [n, H, W, 3]); keys name the frames (repeats allowed)."""
        for key, frame in zip(keys, frames):
            self.refs[key] += 1
            if key in self.features or key in self.queue:
                continue
            if key in self.recent:
                self.features[key] = self.recent.pop(key)
                continue
            self.queue[key] = frame
        self.items.append((tag, list(keys)))
        while len(self.queue) >= self.batch_frames:
            self._run_backbone(self.batch_frames)
        self._drain(final=False)

    def add_marker(self, tag: Any) -> None:
        self.items.append((tag, None))
        self._drain(final=False)

    def flush(self) -> None:
        while self.queue:
            self._run_backbone(len(self.queue))
        self._drain(final=True)

    # -----------------------------------------------------------------------------------
    def _run_backbone(self, n: int) -> None:
        keys = [k for k, _ in zip(self.queue, range(n))]
        frames = np.stack([self.queue.pop(k) for k in keys])
        # float16 exactly as the cache stores features, so train and predict see the same inputs
        feats = np.asarray(self.backbone.features(frames)).astype(np.float16)
        self.passes += 1
        self.frames_run += len(keys)
        self.features.update(zip(keys, feats))

    def _drain(self, final: bool) -> None:
        """Classify and hand out the leading items, a full model batch at a time (any size when final)."""
        while self.items:
            tag, keys = self.items[0]
            if keys is None:  # a marker in front: its turn has come
                self.items.popleft()
                self.on_result(tag, None)
                continue
            prefix, clips = 0, []
            for tag, keys in self.items:
                if keys is not None:
                    if len(clips) == self.model_batch or not all(k in self.features for k in keys):
                        break
                    clips.append(keys)
                prefix += 1
            if not clips or (len(clips) < self.model_batch and not final):
                return  # wait for the item in front, or for a fuller model batch
            probs = iter(self._classify(clips))
            for _ in range(prefix):
                tag, keys = self.items.popleft()
                if keys is None:
                    self.on_result(tag, None)
                else:
                    self.on_result(tag, next(probs))
                    self._release(keys)

    def _classify(self, clips: list[list]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(clips), self.model_batch):
            chunk = clips[start:start + self.model_batch]
            x = np.stack([np.stack([self.features[k] for k in keys]) for keys in chunk])
            out += [float(p) for p in np.asarray(self.model(x, training=False))[:, VIOLENT]]
        return out

    def _release(self, keys: list) -> None:
        for key in keys:
            self.refs[key] -= 1
            if self.refs[key] <= 0:
                del self.refs[key]
                self.recent[key] = self.features.pop(key)
                while len(self.recent) > self.reuse:
                    self.recent.popitem(last=False)
