"""Camera-like synthetic clips for the benches that need many videos (backbones, job-model inputs).

Textured background, moving shapes and sensor noise, written with OpenCV's mp4v, and the same
clips as H.264 with x264's defaults through the ffmpeg CLI. (bench/frame_sampling.py makes its
own long H.264 clips with ffmpeg directly: it needs lengths and keyframe spacing, not counts.)
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from trainer.frames import cv2


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
        tmp = path.with_suffix(".tmp.mp4")  # a clip cut short by Ctrl-C is never reused as finished
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), 30, (width, height))
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
        tmp.replace(path)
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
            tmp = dst.with_suffix(".tmp.mp4")
            subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(p), "-c:v", "libx264", "-preset", "veryfast",
                            "-pix_fmt", "yuv420p", str(tmp)], check=True)
            tmp.replace(dst)
        out.append(dst)
    return out
