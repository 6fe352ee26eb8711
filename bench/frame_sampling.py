"""Frame sampling: one sequential grab()/retrieve() pass versus one seek per sampled frame.

The pipeline in the seed report read its 20 frames with `cap.set(CAP_PROP_POS_FRAMES, i)`
+ `cap.read()` for each frame; trainer/frames.py reads the video once and converts only
the wanted frames. Both are timed here on the same generated videos, in the same run,
with the same frame indices, the same decoder threads and the same resize; the script
also checks that both methods return the same pixels. Then it times `extract` end to
end (decoding workers + backbone + cache writes) with the thumbnail backbone and with
VGG19 (weights=none: random init, same compute as ImageNet weights) on this machine.

Two encodings of the same videos are compared: OpenCV's mp4v (a key frame every 12
frames, so each seek decodes at most 11 extra frames) and H.264 as x264 writes it by
default (a key frame every 250 frames, as phones and video sites produce; each seek
decodes from the previous key frame). The ffmpeg CLI makes the H.264 set.

    .venv/bin/python bench/frame_sampling.py [--videos 20] [--frames-per-video 300]
        [--width 640 --height 360] [--vgg19-videos 6] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from trainer.frames import to_rgb, cv2, sample_frames, sample_indices  # noqa: E402

N_FRAMES, SIZE = 20, 224


def make_videos(root: Path, n: int, length: int, width: int, height: int) -> list[Path]:
    """Camera-like content: textured background, several moving shapes, sensor noise (mp4v)."""
    paths = []
    for i in range(n):
        path = root / ("violent" if i % 2 else "nonviolent") / f"v{i:03d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            paths.append(path)
            continue
        rng = np.random.default_rng(i)
        base = cv2.resize(rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8), (width, height))
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (width, height))
        pos = rng.uniform(0, 1, (5, 2)) * (width, height)
        vel = rng.normal(0, 6, (5, 2))
        for _ in range(length):
            frame = base.copy()
            pos = (pos + vel) % (width, height)
            for k, (x, y) in enumerate(pos):
                cv2.circle(frame, (int(x), int(y)), 20 + 6 * k, (40 * k, 255 - 30 * k, 128), -1)
            noise = rng.integers(0, 12, frame.shape, dtype=np.uint8)
            writer.write(cv2.add(frame, noise))
        writer.release()
        paths.append(path)
    return paths


def transcode_h264(paths: list[Path], root: Path) -> list[Path] | None:
    """The same videos as H.264 with x264's defaults (key frame every 250 frames, B-frames),
    which is what phones and video sites produce; None when the ffmpeg CLI is missing."""
    if shutil.which("ffmpeg") is None:
        return None
    out = []
    for p in paths:
        dst = root / p.parent.name / p.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.is_file():
            subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(p), "-c:v", "libx264", "-preset", "veryfast",
                            "-pix_fmt", "yuv420p", str(dst)], check=True)
        out.append(dst)
    return out


def compare(label: str, paths: list[Path], repeats: int) -> None:
    seq = lambda p: sample_frames(p, N_FRAMES, SIZE, threads=1)  # noqa: E731
    seek = lambda p: seek_per_frame(p, N_FRAMES, SIZE)  # noqa: E731
    seq(paths[0]), seek(paths[0])  # warm the page cache and the decoder libraries for both
    best_seq = best_seek = float("inf")
    for _ in range(repeats):  # interleaved, so background load hits both alike
        t, seq_res = time_it(seq, paths)
        best_seq = min(best_seq, t)
        t, seek_res = time_it(seek, paths)
        best_seek = min(best_seek, t)
    same = sum(int(np.array_equal(a.frames, b)) for a, b in zip(seq_res, seek_res))
    n = len(paths)
    print(f"[{label}]")
    print(f"  sequential pass (trainer.frames):   {best_seq:7.2f}s  {n / best_seq:7.1f} videos/s")
    print(f"  seek per frame (seed's method):     {best_seek:7.2f}s  {n / best_seek:7.1f} videos/s")
    print(f"  ratio: the sequential pass is {best_seek / best_seq:.2f}x the speed of seeking "
          f"(videos whose 20 frames are identical both ways: {same}/{n})")


def seek_per_frame(path: Path, n: int, size: int) -> np.ndarray:
    """The seed's method: one CAP_PROP_POS_FRAMES seek + read per sampled frame."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    out = []
    for i in sample_indices(total, n):
        cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(to_rgb(bgr, size))
    cap.release()
    return np.stack(out)


def time_it(fn, paths) -> tuple[float, list]:
    start = time.perf_counter()
    results = [fn(p) for p in paths]
    return time.perf_counter() - start, results


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores usable, OpenCV {cv2.__version__}, Python {platform.python_version()}"


def extraction_rate(dataset: Path, cache_dir: Path, data: dict) -> tuple[float, int]:
    from trainer import config
    from trainer.extract import extract

    shutil.rmtree(cache_dir, ignore_errors=True)
    cfg = config.load(overrides={"data": data})
    start = time.perf_counter()
    summary = extract(dataset, cache_dir, cfg, progress=False, log=lambda _: None)
    return time.perf_counter() - start, summary["videos"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--frames-per-video", type=int, default=300)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--repeats", type=int, default=2, help="timing rounds per method (best is kept)")
    ap.add_argument("--vgg19-videos", type=int, default=6, help="videos for the (slow on CPU) VGG19 run; 0 skips")
    ap.add_argument("--workdir", help="keep generated videos here (default: a temporary folder)")
    args = ap.parse_args()

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_frames_"))
    print(f"machine: {machine()}")
    print(f"videos: {args.videos} x {args.frames_per_video} frames of {args.width}x{args.height} (mp4v), "
          f"sampling {N_FRAMES} frames resized to {SIZE}x{SIZE}, 1 decoder thread each")
    t0 = time.perf_counter()
    paths = make_videos(work / "dataset", args.videos, args.frames_per_video, args.width, args.height)
    print(f"generated in {time.perf_counter() - t0:.1f}s under {work}")

    compare("MPEG-4 Part 2 (mp4v), key frame every 12 frames (OpenCV's writer)", paths, args.repeats)
    h264 = transcode_h264(paths, work / "dataset_h264")
    if h264 is None:
        print("[H.264] skipped: the ffmpeg command-line tool is not installed")
    else:
        compare("H.264 (x264 defaults: key frame every 250 frames, B-frames), as from phones and the web",
                h264, args.repeats)

    t, done = extraction_rate(work / "dataset", work / "cache_thumb",
                              {"backbone": "thumbnail", "weights": "none", "image_size": 32})
    print(f"extract end to end, thumbnail 32x32:        {done} videos in {t:6.1f}s = {done / t:6.2f} videos/s")
    if args.vgg19_videos:
        subset = work / "dataset_vgg"
        shutil.rmtree(subset, ignore_errors=True)
        for p in paths[: args.vgg19_videos]:
            dst = subset / p.parent.name / p.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dst)
        t, done = extraction_rate(subset, work / "cache_vgg", {"backbone": "vgg19", "weights": "none"})
        print(f"extract end to end, VGG19 fc2 (weights=none): {done} videos in {t:6.1f}s = {done / t:6.2f} videos/s "
              f"({done * N_FRAMES / t:.1f} frames/s; includes loading TensorFlow and building the model)")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
