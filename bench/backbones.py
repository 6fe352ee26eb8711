"""Backbones: frames/s of each feature extractor on the same real frames, as a ratio to VGG19.

Every backbone of trainer/backbone_settings.py runs on the same decoded frames (20 frames sampled
from each of a few camera-like videos, resized to each backbone's own input size as
extract does), through the same `features()` call extract and predict use, on this
machine (the CPU, or a GPU where TensorFlow sees one). weights=none: random init, the
same compute as ImageNet weights, no download. Model building and the first (tracing)
batch are not timed; the best of --repeats rounds is kept, rounds interleaved across
backbones so background load hits them alike. VGG19 is the baseline, measured in the
same run.

Also printed per backbone: the bytes one video takes in the cache (a real
FeatureCache .npy of 20 frames, float16), and the projected extraction time and cost of
the seed's 15,398 videos (20 frames each = 307,960 frames) at the measured frames/s and
a stated $/h (--usd-per-hour; a price you pay for this kind of machine, not a quote).
Decoding is not included: it is the same for every backbone (bench/frame_sampling.py).

    .venv/bin/python bench/backbones.py [--videos 4] [--batch 32] [--repeats 2] [--usd-per-hour 0.50]
        [--only vgg19,efficientnetv2b0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from clips import make_videos  # noqa: E402
from frame_sampling import machine  # noqa: E402
from trainer.backbone import load_backbone  # noqa: E402
from trainer.backbone_settings import BACKBONES, feature_settings  # noqa: E402
from trainer.cache import FeatureCache  # noqa: E402
from trainer.frames import sample_frames  # noqa: E402

SEED_VIDEOS, FRAMES = 15_398, 20


def frames_for(paths: list[Path], size: int, batch: int) -> np.ndarray:
    """The same sampled frames of the same videos at `size`, repeated up to a whole number of batches."""
    frames = np.concatenate([sample_frames(p, FRAMES, size).frames for p in paths])
    n = max(batch, len(frames) // batch * batch)
    return np.resize(frames, (n, *frames.shape[1:]))  # np.resize repeats when n > len(frames)


def cache_bytes(dim: int, root: Path) -> int:
    cache = FeatureCache(root)
    cache.save_features("probe", np.zeros((FRAMES, dim), np.float16))
    return cache.feature_path("probe").stat().st_size


def device() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU (TensorFlow sees no GPU)"
    names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    return f"GPU: {', '.join(names)} (mixed_float16)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=4, help="videos to sample frames from (20 frames each)")
    ap.add_argument("--batch", type=int, default=32, help="frames per backbone pass")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--usd-per-hour", type=float, default=0.50,
                    help="price of this machine for the cost projection (stated, not measured)")
    ap.add_argument("--only", help="comma-separated backbones (vgg19 is always included: the baseline)")
    args = ap.parse_args()
    names = [b for b in BACKBONES if not args.only or b in args.only.split(",") or b == "vgg19"]

    work = Path(tempfile.mkdtemp(prefix="bench_backbones_"))
    paths = make_videos(work / "videos", args.videos, 120, 640, 360)
    print(f"machine: {machine()}")
    print(f"device: {device()}")
    settings = {b: feature_settings({"backbone": b, "weights": "none", "image_size": 0, "frames": FRAMES})
                for b in names}
    frames = {s: frames_for(paths, s, args.batch) for s in {st["image_size"] for st in settings.values()}}
    print(f"frames: {len(paths)} videos (640x360, mp4v) x {FRAMES} sampled frames, repeated to "
          f"{len(next(iter(frames.values())))} frames per round, batches of {args.batch}; best of {args.repeats}")

    backbones = {}
    for b in names:
        t0 = time.perf_counter()
        bb = load_backbone(settings[b], batch_size=args.batch)
        bb.features(frames[settings[b]["image_size"]][: args.batch])  # trace / warm up, not timed
        backbones[b] = bb
        print(f"  {b}: built and warmed up in {time.perf_counter() - t0:.1f}s")

    best = {b: float("inf") for b in names}
    for _ in range(args.repeats):
        for b in names:
            x = frames[settings[b]["image_size"]]
            t0 = time.perf_counter()
            feats = backbones[b].features(x)
            best[b] = min(best[b], time.perf_counter() - t0)
            assert feats.shape == (len(x), settings[b]["feature_dim"]) and np.isfinite(feats).all()

    fps = {b: len(frames[settings[b]["image_size"]]) / best[b] for b in names}
    seed_frames = SEED_VIDEOS * FRAMES
    print(f"\nprojection: the seed's {SEED_VIDEOS:,} videos x {FRAMES} frames = {seed_frames:,} frames on this "
          f"machine at ${args.usd_per_hour:.2f}/h (decoding not included)")
    header = (f"{'backbone':<17} {'input':>5} {'features':>8} {'frames/s':>9} {'vs VGG19':>8} "
              f"{'cache B/video':>13} {'hours':>8} {'cost $':>9}")
    print(header)
    for b in names:
        s = settings[b]
        hours = seed_frames / fps[b] / 3600
        print(f"{b:<17} {s['image_size']:>5} {s['feature_dim']:>8} {fps[b]:>9.2f} {fps[b] / fps['vgg19']:>7.2f}x "
              f"{cache_bytes(s['feature_dim'], work / 'cache'):>13,} {hours:>8.1f} {hours * args.usd_per_hour:>9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
