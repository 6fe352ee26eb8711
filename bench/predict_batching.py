"""`predict` on many short files: frames batched across files versus one file at a time.

What differs and what does not. Both read each file's 20 frames the same way
(trainer.frames.sample_frames) and run the same frames through the same backbone
(VGG19, weights=none: random init from a fixed seed, the same compute as the ImageNet
weights): 20 frames per file. `Backbone.features` runs a pass at the size it is given and
never pads, so

- the baseline (the previous `predict`): per file, one backbone pass of 20 frames, then
  one classifier call for that clip;
- ours (trainer.predict.classify_clips + trainer.batching.BatchedClassifier): frames of
  consecutive files carried into passes of 64 (the last pass of the run smaller), and
  one classifier call for up to 64 clips.

Same frames through the backbone either way. What batching can buy: (1) whatever a pass
of 64 frames costs less per frame than a pass of 20 — on a CPU little, the convolutions
already keep the cores busy at 20 frames; on a GPU a pass of 64 is expected to cost
about what a pass of 20 does (about 3x less per frame) — and (2) fewer classifier calls.
The script measures both parts in the same run (per-frame cost of a pass of 20 and of
64 frames; one classifier call for 1 clip and for all clips), then both ways end to end,
checks that they give the same probabilities, and prints the ratio. It runs on whatever
TensorFlow sees: the printed device says which.

Model: the seed's classifier at its default size, untrained (its speed does not depend on
its weights). Clips: camera-like (textured background, moving shapes), mp4v at 25 fps.

    .venv/bin/python bench/predict_batching.py [--files 20] [--seconds 5] [--width 320 --height 240]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from trainer.frames import cv2, sample_frames  # noqa: E402

N_FRAMES, SIZE = 20, 224


def make_clips(root: Path, n: int, seconds: float, width: int, height: int) -> list[str]:
    """Short camera-like clips (textured background, moving shapes), mp4v at 25 fps."""
    paths = []
    for i in range(n):
        path = root / f"clip{i:03d}.mp4"
        rng = np.random.default_rng(i)
        base = cv2.resize(rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8), (width, height))
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (width, height))
        pos, vel = rng.uniform(0, 1, (4, 2)) * (width, height), rng.normal(0, 6, (4, 2))
        for _ in range(int(seconds * 25)):
            frame = base.copy()
            pos = (pos + vel) % (width, height)
            for k, (x, y) in enumerate(pos):
                cv2.circle(frame, (int(x), int(y)), 12 + 5 * k, (40 * k, 255 - 30 * k, 128), -1)
            writer.write(frame)
        writer.release()
        paths.append(str(path))
    return paths


class Counted:
    """The backbone and the classifier, counting what really runs: backbone passes (at the
    size each really has) and frames, classifier calls and clips, and the time in each."""

    def __init__(self, backbone, model):
        self.backbone, self.model = backbone, model
        self.batch_size = backbone.batch_size
        self.reset()

    def reset(self) -> None:
        self.pass_sizes: list[int] = []
        self.calls, self.clips = 0, 0
        self.backbone_s = self.model_s = 0.0

    def features(self, frames):
        n = len(frames)
        self.pass_sizes += [min(self.batch_size, n - s) for s in range(0, n, self.batch_size)]
        t0 = time.perf_counter()
        out = self.backbone.features(frames)
        self.backbone_s += time.perf_counter() - t0
        return out

    def __call__(self, x, training=False):
        self.calls += 1
        self.clips += len(x)
        t0 = time.perf_counter()
        out = self.model(x, training=training)
        self.model_s += time.perf_counter() - t0
        return out

    def passes(self) -> str:
        sizes = sorted(set(self.pass_sizes), reverse=True)
        parts = [f"{self.pass_sizes.count(s)} of {s}" for s in sizes]
        return f"backbone passes: {' + '.join(parts)} frames"


def one_at_a_time(files, counted: Counted) -> list[float]:
    """The previous predict: per file, its frames alone through the backbone, then the classifier."""
    out = []
    for path in files:
        frames = sample_frames(path, N_FRAMES, SIZE).frames
        feats = counted.features(frames).astype(np.float16)[None]
        out.append(float(np.asarray(counted(feats, training=False))[0, 1]))
    return out


def batched(files, counted: Counted, settings) -> list[float]:
    from trainer.batching import BatchedClassifier
    from trainer.predict import classify_clips

    probs: list[float] = []
    clf = BatchedClassifier(counted, counted, lambda tag, p: probs.append(p), batch_frames=counted.batch_size)
    assert classify_clips(clf, files, settings) == 0
    return probs


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn):
    w0, c0 = time.perf_counter(), cpu_seconds()
    result = fn()
    return result, time.perf_counter() - w0, cpu_seconds() - c0


def per_frame_ms(backbone, n: int, rounds: int) -> float:
    frames = np.random.default_rng(0).integers(0, 255, (n, SIZE, SIZE, 3), dtype=np.uint8)
    best = math.inf
    for _ in range(rounds):
        t0 = time.perf_counter()
        backbone.features(frames)
        best = min(best, time.perf_counter() - t0)
    return 1000 * best / n


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--pass-rounds", type=int, default=2, help="timings of each pass size (the fastest is kept)")
    args = ap.parse_args()

    import tensorflow as tf

    from trainer.backbone import load_backbone
    from trainer.backbone_settings import feature_settings
    from trainer.config import load as load_config
    from trainer.model import build_model

    settings = feature_settings({"backbone": "vgg19", "weights": "none", "image_size": SIZE, "frames": N_FRAMES})
    backbone = load_backbone(settings, batch_size=64)
    model = build_model(N_FRAMES, settings["feature_dim"], load_config(None)["model"])
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s); device: "
          f"{', '.join(gpus) if gpus else 'CPU only'}; TensorFlow {tf.__version__}")
    print(f"VGG19 (weights=none), {args.files} clips of {args.seconds:g} s at {args.width}x{args.height}; {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        files = make_clips(Path(tmp), args.files, args.seconds, args.width, args.height)
        # warm-up: the first pass of each size traces its graph; not part of any timing
        for n in (64, N_FRAMES, args.files * N_FRAMES % 64 or 64):
            backbone.features(np.zeros((n, SIZE, SIZE, 3), np.uint8))
        for clips in (1, args.files):
            model(np.zeros((clips, N_FRAMES, settings["feature_dim"]), np.float16), training=False)

        ms20, ms64 = per_frame_ms(backbone, N_FRAMES, args.pass_rounds), per_frame_ms(backbone, 64, args.pass_rounds)
        print(f"backbone alone: a pass of {N_FRAMES} frames {ms20:.0f} ms/frame, a pass of 64 {ms64:.0f} ms/frame: "
              f"passes of 64 do {ms20 / ms64:.2f}x the work per second here")
        x1 = np.zeros((1, N_FRAMES, settings["feature_dim"]), np.float16)
        xn = np.zeros((args.files, N_FRAMES, settings["feature_dim"]), np.float16)
        _, t1, _ = timed(lambda: model(x1, training=False))
        _, tn, _ = timed(lambda: model(xn, training=False))
        print(f"classifier alone: 1 clip per call {t1:.2f} s, {args.files} clips in one call {tn:.2f} s")

        counted = Counted(backbone, model)
        base, t_base, c_base = timed(lambda: one_at_a_time(files, counted))
        line_base = (f"{counted.passes()} = {sum(counted.pass_sizes)} frames through the backbone "
                     f"({counted.backbone_s:.1f} s), {counted.calls} classifier calls ({counted.model_s:.1f} s)")
        counted.reset()
        ours, t_ours, c_ours = timed(lambda: batched(files, counted, settings))
        line_ours = (f"{counted.passes()} = {sum(counted.pass_sizes)} frames through the backbone "
                     f"({counted.backbone_s:.1f} s), {counted.calls} classifier call(s) ({counted.model_s:.1f} s)")
    agree = np.allclose(base, ours, atol=1e-4)
    print(f"one file at a time (baseline): {t_base:7.1f} s wall, {c_base:7.1f} CPU-s; {line_base}")
    print(f"batched across files (ours):   {t_ours:7.1f} s wall, {c_ours:7.1f} CPU-s; {line_ours}")
    print(f"same probabilities: {'yes' if agree else 'NO'} (max difference {np.max(np.abs(np.subtract(base, ours))):.2e})")
    print(f"speed-up: {t_base / t_ours:.2f}x wall, {c_base / c_ours:.2f}x CPU ({load()})")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
