"""Real encoded videos for the keyframe-seek and time-sampling tests, made by the ffmpeg CLI.

- Long clips with the group-of-pictures structure of real footage (x264's keyframe
  every 250 frames, B-frames), small enough to encode and decode in a second or two.
  Each frame carries its index as a 4 x 4 grid of black/white blocks (16 bits; the
  8-bit blocks of tests/trainer/videos.py stop at 255 frames).
- Variable-frame-rate clips: segments recorded at different frame rates joined end to
  end, timestamps kept as recorded.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np

from tests.trainer import videos as tv

W, H = 128, 96
ROWS = 4  # a 4 x 4 grid of 32 x 24 blocks: 16 bits


def indexed_frame(i: int) -> np.ndarray:
    return tv.indexed_frame(i, ROWS, (W, H))


def read_index(rgb: np.ndarray) -> int:
    return tv.read_index(rgb, ROWS)


def encode(path: Path, frames, fps: float, codec_args: list[str]) -> Path:
    """Raw BGR frames piped into the ffmpeg CLI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{W}x{H}",
           "-r", str(fps), "-i", "-", *codec_args, str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    try:
        for f in frames:
            proc.stdin.write(f.tobytes())
    finally:
        proc.stdin.close()
    assert proc.wait(timeout=300) == 0, f"ffmpeg failed writing {path}"
    return path


# x264 with its default keyframe interval (250) and B-frames, as phones and cameras write;
# scene-cut detection off so that the index pattern's big changes do not add keyframes.
X264_GOP250 = ["-c:v", "libx264", "-preset", "ultrafast", "-bf", "3", "-g", "250", "-sc_threshold", "0",
               "-pix_fmt", "yuv420p"]
# the same without B-frames (every frame a reference), as baseline-profile phones and many cameras write
X264_GOP250_NO_B = [a if a != "3" else "0" for a in X264_GOP250]


def long_gop_clip(path: Path, total: int, codec_args: list[str] = X264_GOP250, fps: float = 25) -> Path:
    return encode(path, (indexed_frame(i) for i in range(total)), fps, codec_args)


def vfr_clip(path: Path, segments: list[tuple[int, float]], codec_args: list[str]) -> tuple[Path, list[float]]:
    """Segments of (frames, fps) end to end in one file, each frame's index in its pixels.

    The frames are stamped as a camera that changes its frame rate records them (ffmpeg's
    setpts on a 1/600 s clock, which holds 10, 15, 25 and 30 fps steps exactly, timestamps passed through to the container unchanged).
    Returns the path and each frame's presentation time in seconds.
    """
    times, start, first, cases = [], 0.0, 0, []
    for count, fps in segments:
        times += [start + i / fps for i in range(count)]
        cases.append((first + count, f"{start!r}+(N-{first})/{fps!r}"))
        start += count / fps
        first += count
    expr = cases[-1][1]
    for end, formula in reversed(cases[:-1]):
        expr = f"if(lt(N,{end}),{formula},{expr})"
    src = tv.write_opencv(path.with_name(f"{path.stem}.src.avi"), [tv.indexed_frame(i) for i in range(first)], "MJPG")
    tv.ffmpeg("-i", str(src), "-vf", f"settb=1/600,setpts='({expr})/TB'", "-fps_mode", "passthrough",
              "-enc_time_base", "1/600", *codec_args, str(path))
    src.unlink()
    return path, times


def on_screen(times: list[float], t: float) -> int:
    """The frame shown at time t: the last one whose timestamp is not after t."""
    return max(j for j, tj in enumerate(times) if tj <= t + 1e-9)


def assert_evenly_spaced_in_time(indices: list[int], times: list[float], tolerance_s: float = 0.003) -> None:
    """Each sample i is the frame on screen at the centre of the i-th of n equal stretches of
    the video's duration (the last frame lasting as long as the one before it), to within
    the container's timestamp rounding."""
    n = len(indices)
    duration = times[-1] + (times[-1] - times[-2])
    ends = times[1:] + [duration]
    for i, j in enumerate(indices):
        point = (2 * i + 1) * duration / (2 * n)
        assert times[j] - tolerance_s <= point < ends[j] + tolerance_s, (
            f"sample {i} is frame {j} ({times[j]:.3f}-{ends[j]:.3f} s), not the frame on screen at {point:.3f} s")


def decoded_times(path: Path) -> list[float]:
    """Each frame's presentation time (s) as OpenCV's decoder reports it: the file's own
    timestamps, read independently of trainer/video_index.py."""
    cap = cv2.VideoCapture(str(path))
    times = []
    try:
        while cap.grab():
            times.append(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000)
    finally:
        cap.release()
    return [t - times[0] for t in times]
