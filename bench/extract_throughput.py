"""Extraction end to end on real-looking H.264 clips: `trainer extract` against the seed's method.

The seed's method, as its report describes it: per video, one seek
(CAP_PROP_POS_FRAMES) + read per sampled frame, the 20 frames resized and converted to
float32 on the host, VGG19's preprocess_input on the host, one `predict` of those 20
frames, one .npy per video. Ours: `trainer.extract.extract` (one sequential decoding
pass per video in worker processes, frames packed into full passes across videos, uint8
to the device with the preprocessing in the graph, a backbone thread per device,
atomic cache writes). Same clips, same VGG19 fc2 (weights=none: random init from the
same seed, the same compute as ImageNet weights), both timed from building the model to
the last feature file, in the same run.

Clips: the ffmpeg CLI renders moving test patterns with temporal noise (camera-like:
nothing static for the encoder to skip) at 1280x720 and 1920x1080, 5 s at 30 fps,
encoded with libx264 at its defaults (preset medium, key frame every 250 frames,
B-frames), as phones and video sites produce.

A third run times ours with `data.precision: bfloat16` (mixed_bfloat16: several times
faster on CPUs with AMX tiles, other features, so a cache of its own).

Also measured: decoding alone, one process with one decoder thread (videos/s per core on
these clips), to set against what the backbone consumes.

    .venv/bin/python bench/extract_throughput.py [--clips 6] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from frame_sampling import machine, seek_per_frame  # noqa: E402
from trainer.frames import sample_frames  # noqa: E402

N_FRAMES, SIZE = 20, 224


def make_clips(root: Path, n: int) -> list[Path]:
    sizes = ["1280x720", "1920x1080"]
    paths = []
    for i in range(n):
        path = root / ("violent" if i % 2 else "nonviolent") / f"clip{i:02d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file():
            src = f"testsrc2=size={sizes[i % 2]}:rate=30:duration=5"
            subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", src,
                            "-vf", f"noise=alls={4 + i % 3}:allf=t,hue=h={37 * i}", "-c:v", "libx264",
                            "-pix_fmt", "yuv420p", str(path)], check=True, timeout=600)
        paths.append(path)
    return paths


def seed_method(paths: list[Path], out: Path) -> float:
    """The seed's extractor (see the module docstring), timed from building VGG19."""
    import keras
    from keras.applications import vgg19

    from trainer.backbone_settings import INIT_SEED

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    keras.utils.set_random_seed(INIT_SEED)
    full = vgg19.VGG19(include_top=True, weights=None)
    model = keras.Model(full.input, full.get_layer("fc2").output)
    for i, p in enumerate(paths):
        frames = seek_per_frame(p, N_FRAMES, SIZE).astype(np.float32)  # RGB, resized like ours
        feats = model.predict(vgg19.preprocess_input(frames), verbose=0)
        np.save(out / f"{i}.npy", feats.astype(np.float16))
    return time.perf_counter() - t0


def ours(dataset: Path, cache_dir: Path, precision: str = "auto") -> tuple[float, dict]:
    from trainer import config
    from trainer.extract import extract

    shutil.rmtree(cache_dir, ignore_errors=True)
    cfg = config.load(overrides={"data": {"backbone": "vgg19", "weights": "none", "precision": precision}})
    t0 = time.perf_counter()
    summary = extract(dataset, cache_dir, cfg, progress=False, log=lambda _: None)
    return time.perf_counter() - t0, summary


def amx() -> bool:
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=6, help="clips, half 720p and half 1080p")
    ap.add_argument("--workdir", help="keep the clips here (default: a temporary folder)")
    ap.add_argument("--no-bfloat16", action="store_true",
                    help="skip the third run, ours with data.precision: bfloat16 (fast only on CPUs with AMX)")
    args = ap.parse_args()
    if shutil.which("ffmpeg") is None:
        print("needs the ffmpeg command-line tool to make the H.264 clips", file=sys.stderr)
        return 2
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_extract_"))
    print(f"machine: {machine()}")
    t0 = time.perf_counter()
    paths = make_clips(work / "clips", args.clips)
    print(f"clips: {len(paths)} x 5 s H.264 (x264 defaults), 720p and 1080p, made in {time.perf_counter() - t0:.0f}s")

    t0 = time.perf_counter()
    for p in paths:
        sample_frames(p, N_FRAMES, SIZE, threads=1)
    per_core = len(paths) / (time.perf_counter() - t0)
    print(f"decode alone (one sequential pass, 1 thread, 1 process): {per_core:.2f} videos/s per core")

    import tensorflow as tf  # noqa: F401  (imported before either timing starts)

    t_ours, summary = ours(work / "clips", work / "cache")
    assert summary["videos"] == len(paths), summary["failed"]
    t_seed = seed_method(paths, work / "seed")
    p = summary["run"]["pipeline"]
    print(f"ours (trainer extract):  {t_ours:7.1f}s  {len(paths) / t_ours:.3f} videos/s  "
          f"({p['passes']} passes, {p['full_passes']} full; busy shares {p['busy']}; bottleneck {p['bottleneck']})")
    print(f"seed's method:           {t_seed:7.1f}s  {len(paths) / t_seed:.3f} videos/s")
    print(f"ratio: ours is {t_seed / t_ours:.2f}x the speed of the seed's method (goal >= 1.5x on 2 CPU cores)")
    if not args.no_bfloat16:
        t_bf, s_bf = ours(work / "clips", work / "cache_bf16", "bfloat16")
        assert s_bf["videos"] == len(paths), s_bf["failed"]
        print(f"ours, data.precision: bfloat16: {t_bf:7.1f}s  {len(paths) / t_bf:.3f} videos/s; ratio to the seed's "
              f"method {t_seed / t_bf:.2f}x (CPU has AMX-BF16: {amx()}; other features, so its own cache key)")
    forward_s = p["busy"]["forward"] * p["wall_s"]  # one device here: its busy seconds
    cores = len(os.sched_getaffinity(0))
    print(f"decode capacity with {cores} cores ~ {per_core * cores:.2f} videos/s; the backbone alone "
          f"took {forward_s:.1f}s = {len(paths) / max(forward_s, 1e-9):.2f} videos/s here")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
