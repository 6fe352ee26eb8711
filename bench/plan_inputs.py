"""The job model's measurable inputs (deploy/plan/job_model.py), measured on this machine.

1. Decode throughput per CPU core: trainer.frames.sample_frames (the extractor's own
   reader, 20 frames at 224x224) on real-looking H.264 clips (bench/frame_sampling.py's
   generator, transcoded by ffmpeg with x264 defaults), one decoder thread in one process,
   which is how `extract` runs one worker per core. Baseline in the same run: the same
   clips with OpenCV choosing the thread count (all cores), so the ratio shows how much a
   single process gains from more cores (it should be well under the core count: one
   worker per core is the better use of a many-core host).
2. VGG19 fc2 frames/s on this CPU (weights=None: the same compute as ImageNet weights),
   batch 32 at 224x224, printed against the Keras Applications figure for a Tesla A100
   (4.4 ms per batch of 32, keras.io/api/applications) that deploy/plan/job_model.py scales by each
   offer's TFLOPS.

    .venv/bin/python bench/plan_inputs.py [--videos 12] [--seconds 5] [--width 640 --height 360]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.clips import make_videos, transcode_h264  # noqa: E402
from bench.frame_sampling import machine  # noqa: E402
from deploy.plan import job_model  # noqa: E402
from trainer.frames import sample_frames  # noqa: E402


def decode_rate(paths: list[Path], threads: int | None, repeats: int) -> float:
    """videos/s, median of `repeats` passes over every clip."""
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for p in paths:
            sample_frames(p, job_model.FRAMES_DEFAULT, 224, threads=threads)
        rates.append(len(paths) / (time.perf_counter() - t0))
    return statistics.median(rates)


def vgg19_cpu_fps(batches: int) -> float:
    import numpy as np

    from trainer.backbone import load_backbone
    from trainer.backbone_settings import feature_settings

    bb = load_backbone(feature_settings({"backbone": "vgg19", "weights": "none", "frames": 20, "image_size": 224}),
                       batch_size=32)
    x = np.random.default_rng(0).integers(0, 255, (32, 224, 224, 3), dtype=np.uint8)
    bb.features(x)  # build + trace, untimed
    t0 = time.perf_counter()
    for _ in range(batches):
        bb.features(x)
    return 32 * batches / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=5.0, help="clip length at 30 fps (RLVS-like clips are ~5 s)")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--vgg19-batches", type=int, default=3)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="plan-inputs-"))
    mp4v = make_videos(work / "mp4v", args.videos, int(args.seconds * 30), args.width, args.height)
    h264 = transcode_h264(mp4v, work / "h264")
    if h264 is None:
        print("error: the ffmpeg CLI is needed to make H.264 clips", file=sys.stderr)
        return 2
    mb = sum(p.stat().st_size for p in h264) / len(h264) / 1e6
    print(f"clips: {len(h264)} H.264 (x264 defaults), {args.width}x{args.height}, {args.seconds:g} s at 30 fps, "
          f"{mb:.2f} MB each")
    one = decode_rate(h264, threads=1, repeats=args.repeats)
    auto = decode_rate(h264, threads=None, repeats=args.repeats)
    print(f"decode, 1 thread (one extract worker per core): {one:.2f} videos/s per core")
    print(f"decode, OpenCV's thread choice ({os.cpu_count()} cores):  {auto:.2f} videos/s   "
          f"ratio {auto / one:.2f}x the single thread")
    print(f"  -> deploy/plan/job_model.py DECODE_VIDEOS_PER_S_PER_CORE (now {job_model.DECODE_VIDEOS_PER_S_PER_CORE})")
    fps = vgg19_cpu_fps(args.vgg19_batches)
    print(f"VGG19 fc2 on this CPU: {fps:.2f} frames/s (batch 32); Keras's Tesla A100 figure "
          f"{job_model.KERAS_A100_VGG19_FPS:,.0f} frames/s is {job_model.KERAS_A100_VGG19_FPS / fps:,.0f}x that")
    return 0


if __name__ == "__main__":
    sys.exit(main())
