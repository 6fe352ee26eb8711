"""`python -m trainer scan` reads container headers only: how much faster than decoding the same clips.

Clips: H.264 (x264 defaults) made by ffmpeg's test source, 5 s at 30 fps, 640x360 and
1280x720 (half each). Baseline in the same run: the extractor's reader (trainer.frames.
sample_frames, one decoder thread: one extract worker) on the same clips, which is what
decoding them costs. Also prints the per-file header time that docs/benchmarks.md quotes.

    .venv/bin/python bench/scan_speed.py [--clips 20] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.frame_sampling import machine  # noqa: E402


def make_clips(root: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        cls = "violent" if i % 2 else "nonviolent"
        size = "1280x720" if i % 4 < 2 else "640x360"
        path = root / cls / f"clip{i:03d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                            f"testsrc2=size={size}:rate=30:duration=5,noise=alls=20:allf=t+u",
                            "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True)
        paths.append(path)
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    if shutil.which("ffmpeg") is None:
        print("error: the ffmpeg CLI makes the clips", file=sys.stderr)
        return 2
    from trainer import config, scan
    from trainer.frames import sample_frames

    work = args.workdir or Path(tempfile.mkdtemp(prefix="scan-speed-"))
    paths = make_clips(work, args.clips)
    print(f"machine: {machine()}")
    print(f"clips: {len(paths)} x 5 s H.264 at 30 fps, half 640x360, half 1280x720, in {work}")
    cfg = config.load(None)
    t0 = time.perf_counter()
    report = scan.scan(work, cfg)
    scan_s = time.perf_counter() - t0
    assert report["videos"] == len(paths) and not report["unreadable"], report["unreadable"]
    t0 = time.perf_counter()
    for p in paths:
        sample_frames(p, 20, 224, threads=1)
    decode_s = time.perf_counter() - t0
    print(f"scan (headers, hashes of same-sized files, report): {scan_s:.2f} s, "
          f"{scan_s / len(paths) * 1000:.1f} ms per clip")
    print(f"decoding them (sample_frames, 1 thread):            {decode_s:.2f} s, "
          f"{decode_s / len(paths) * 1000:.0f} ms per clip")
    print(f"ratio: the scan is {decode_s / scan_s:.0f}x faster than decoding")
    return 0


if __name__ == "__main__":
    sys.exit(main())
