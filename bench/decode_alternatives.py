"""Decoding alone, OpenCV (what extract uses) against PyAV, on real-looking H.264 clips.

Can the decoders keep a GPU fed? extract runs one decoder process per core, one
FFmpeg thread each (trainer/decode_pool.py), and each process reads every frame of a video
once, keeping only the 20 it samples (trainer.frames.sample_frames: grab() for every
frame, retrieve() + convert + resize for the sampled ones). Timed here, one process, in
the same run, on the same clips, each method over every clip:

- baseline: trainer.frames.sample_frames(threads=1), the extractor's own reader;
- PyAV, 1 thread: the same decode-every-frame pass through PyAV (FFmpeg's own Python
  binding), converting only the sampled frames (frame.reformat to 224x224 rgb24);
- PyAV, 1 thread, skip_loop_filter=all: FFmpeg skips H.264's deblocking filter, a known
  decode speed-up that changes the pixels slightly (reported: mean absolute difference);
- OpenCV and PyAV with threaded decoding on every core, one process: what a single
  process gains from more cores (extract instead runs one process per core).

Prints videos/s per method, the ratio to the baseline, and what that means for feeding a
GPU: the cores needed for a given backbone rate (default 250 videos/s, the issue's VGG19
estimate for one modern GPU).

    .venv/bin/python bench/decode_alternatives.py [--clips 6] [--repeats 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from extract_throughput import N_FRAMES, SIZE, make_clips  # noqa: E402
from frame_sampling import machine  # noqa: E402
from trainer.frames import sample_frames, sample_indices  # noqa: E402
from trainer.seek_plan import set_threads  # noqa: E402


def pyav_sample(path: Path, threads: int, skip_loop_filter: bool = False) -> np.ndarray:
    """20 frames at SIZE x SIZE RGB from one decode-every-frame pass, like sample_frames."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        set_threads(ctx, threads)
        if skip_loop_filter:
            ctx.options = {"skip_loop_filter": "all"}
        total = stream.frames  # the container's count, as sample_frames starts from
        wanted = set(sample_indices(total, N_FRAMES))
        got = {}
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                got[i] = frame.reformat(width=SIZE, height=SIZE, format="rgb24").to_ndarray()
    return np.stack([got[i] for i in sorted(got)])


def rate(fn, paths: list[Path], repeats: int) -> tuple[float, list]:
    """(videos/s, median of `repeats` passes over every clip; the last pass's outputs)."""
    rates, out = [], []
    for _ in range(repeats):
        out = []
        t0 = time.perf_counter()
        for p in paths:
            out.append(fn(p))
        rates.append(len(paths) / (time.perf_counter() - t0))
    return statistics.median(rates), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=6, help="clips, half 720p and half 1080p (5 s, 30 fps)")
    ap.add_argument("--repeats", type=int, default=3, help="passes over the clips per method (median)")
    ap.add_argument("--workdir", help="keep the clips here (default: a temporary folder)")
    ap.add_argument("--gpu-videos-per-s", type=float, default=250.0,
                    help="backbone rate to feed, for the 'cores needed' line")
    args = ap.parse_args()
    try:
        import av
    except ImportError:
        print("needs PyAV (the `train` extra installs it): pip install av", file=sys.stderr)
        return 2
    if shutil.which("ffmpeg") is None:
        print("needs the ffmpeg command-line tool to make the H.264 clips", file=sys.stderr)
        return 2
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_decode_"))
    cores = len(os.sched_getaffinity(0))
    print(f"machine: {machine()}, PyAV {av.__version__} (FFmpeg {'.'.join(map(str, av.library_versions['libavcodec']))} "
          f"libavcodec)")
    paths = make_clips(work / "clips", args.clips)
    print(f"clips: {len(paths)} x 5 s H.264 (x264 defaults), 720p and 1080p; {args.repeats} passes per method")

    methods = {
        "baseline: sample_frames (OpenCV), 1 thread": lambda p: sample_frames(p, N_FRAMES, SIZE, threads=1).frames,
        "PyAV, 1 thread": lambda p: pyav_sample(p, 1),
        "PyAV, 1 thread, skip_loop_filter=all": lambda p: pyav_sample(p, 1, skip_loop_filter=True),
        f"OpenCV, threaded ({cores} cores, 1 process)": lambda p: sample_frames(p, N_FRAMES, SIZE, threads=None).frames,
        f"PyAV, threaded ({cores} cores, 1 process)": lambda p: pyav_sample(p, cores),
    }
    results = {}
    for name, fn in methods.items():
        results[name] = rate(fn, paths, args.repeats)
    names = list(methods)
    base = results[names[0]][0]
    # pixels compared within one library: OpenCV and PyAV resize with different filters
    same_as = {names[1]: names[0], names[2]: names[1], names[3]: names[0], names[4]: names[1]}
    for name, (r, frames) in results.items():
        line = f"{name:<48} {r:6.3f} videos/s  ratio {r / base:5.2f}x"
        if name in same_as:
            ref = results[same_as[name]][1]
            diff = np.mean([np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() for a, b in zip(frames, ref)])
            line += f"  (mean |pixel difference| to '{same_as[name]}': {diff:.2f} of 255)"
        print(line)
    per_core = max(results[n][0] for n in list(methods)[:3])
    print(f"best single-thread rate {per_core:.3f} videos/s per core: feeding {args.gpu_videos_per_s:g} videos/s "
          f"of backbone needs about {args.gpu_videos_per_s / per_core:.0f} cores of decoding on clips like these")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
