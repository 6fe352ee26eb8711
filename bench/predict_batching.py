"""`predict` on many short files: frames batched across files versus one file at a time.

Baseline (the previous `predict`, measured in the same run): each file's 20 frames go
through the backbone alone, padded to its 64-frame batch (31 % useful work), then the
model classifies that one clip. Ours: trainer.predict.classify_clips, which carries the
frames of consecutive files into full 64-frame backbone passes (only the last pass of
the run is partial) and classifies the clips in one model batch. Same files, same
backbone object, same model; the script checks that both give the same probabilities.

Backbone: VGG19 with weights=none (random init from a fixed seed: the same compute as
the ImageNet weights, no download). Model: the seed's classifier at its default size,
untrained (its speed does not depend on its weights).

    .venv/bin/python bench/predict_batching.py [--files 20] [--seconds 5] [--width 320 --height 240]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from trainer.frames import cv2, sample_frames  # noqa: E402


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


def one_at_a_time(files, backbone, model, n_frames) -> list[float]:
    """The previous predict: per file, its frames alone through the (padded) backbone, then the model."""
    out = []
    for path in files:
        frames = sample_frames(path, n_frames, 224).frames
        feats = backbone.features(frames).astype(np.float16)[None]
        out.append(float(np.asarray(model(feats, training=False))[0, 1]))
    return out


def batched(files, backbone, model, settings) -> tuple[list[float], int]:
    from trainer.batching import BatchedClassifier
    from trainer.predict import classify_clips

    probs: list[float] = []
    clf = BatchedClassifier(backbone, model, lambda tag, p: probs.append(p), batch_frames=backbone.batch_size)
    assert classify_clips(clf, files, settings) == 0
    return probs, clf.passes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    args = ap.parse_args()

    from trainer.backbone import feature_settings, load_backbone
    from trainer.config import load as load_config
    from trainer.model import build_model

    settings = feature_settings({"backbone": "vgg19", "weights": "none", "image_size": 224, "frames": 20})
    backbone = load_backbone(settings, batch_size=64)
    model = build_model(20, settings["feature_dim"], load_config(None)["model"])
    with tempfile.TemporaryDirectory() as tmp:
        files = make_clips(Path(tmp), args.files, args.seconds, args.width, args.height)
        # warm-up: the first pass of each traces the graphs; not part of either timing
        backbone.features(np.zeros((64, 224, 224, 3), np.uint8))
        model(np.zeros((1, 20, settings["feature_dim"]), np.float16), training=False)
        model(np.zeros((args.files, 20, settings["feature_dim"]), np.float16), training=False)

        t0 = time.perf_counter()
        base = one_at_a_time(files, backbone, model, 20)
        t_base = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours, passes = batched(files, backbone, model, settings)
        t_ours = time.perf_counter() - t0
    agree = np.allclose(base, ours, atol=1e-4)
    frames = 20 * args.files
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s); "
          f"VGG19 (weights=none), {args.files} clips of {args.seconds:g} s at {args.width}x{args.height}")
    print(f"one file at a time (baseline): {t_base:7.1f} s  {args.files} backbone passes of 64, "
          f"{frames / (64 * args.files):.0%} useful")
    print(f"batched across files (ours):   {t_ours:7.1f} s  {passes} backbone passes of 64, "
          f"{frames / (64 * passes):.0%} useful")
    print(f"same probabilities: {'yes' if agree else 'NO'} (max difference {np.max(np.abs(np.subtract(base, ours))):.2e})")
    print(f"speed-up: {t_base / t_ours:.2f}x (goal >= 2.5x on a CPU)")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
