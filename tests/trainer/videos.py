"""Real encoded test videos, made by the tests themselves (OpenCV's writers and, when
installed, the ffmpeg command-line tool), plus deliberately broken ones.

Frames of `indexed_frames` carry their own index as 8 big black/white blocks (one bit
each), which survive lossy codecs, so a test can read back exactly which frame it got.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import cv2
import numpy as np

BITS = 8  # indices 0..255
W, H = 160, 96  # 2 rows x 4 columns of 40x48 blocks

# (fourcc, extension) pairs OpenCV's bundled FFmpeg can write.
OPENCV_FORMATS = [("mp4v", ".mp4"), ("MJPG", ".avi"), ("XVID", ".avi")]
# (ffmpeg arguments, extension) for formats written by the ffmpeg CLI.
FFMPEG_FORMATS = [(["-c:v", "libx264", "-pix_fmt", "yuv420p"], ".mkv"),
                  (["-c:v", "libvpx-vp9", "-b:v", "0", "-crf", "40", "-deadline", "realtime"], ".webm"),
                  (["-c:v", "mpeg4", "-q:v", "5"], ".mov")]


def has_ffmpeg() -> bool:
    return shutil.which("ffmpeg") is not None


def indexed_frame(i: int, rows: int = 2, size: tuple[int, int] = (W, H)) -> np.ndarray:
    """A BGR frame whose rows x 4 blocks spell i in binary (block k white = bit k set)."""
    w, h = size
    frame = np.zeros((h, w, 3), np.uint8)
    bw, bh = w // 4, h // rows
    for k in range(4 * rows):
        if (i >> k) & 1:
            r, c = divmod(k, 4)
            frame[r * bh:(r + 1) * bh, c * bw:(c + 1) * bw] = 255
    return frame


def read_index(rgb: np.ndarray, rows: int = 2) -> int:
    """Inverse of indexed_frame on a (resized) decoded frame: the centre of each block."""
    h, w = rgb.shape[:2]
    grey = rgb.mean(axis=2)
    value = 0
    for k in range(4 * rows):
        r, c = divmod(k, 4)
        y, x = int((r + 0.5) * h / rows), int((c + 0.5) * w / 4)
        if grey[y, x] > 127:
            value |= 1 << k
    return value


def indexed_frames(n: int) -> list[np.ndarray]:
    return [indexed_frame(i) for i in range(n)]


def write_opencv(path: Path, frames: list[np.ndarray], fourcc: str = "mp4v", fps: float = 25) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} to {path}"
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True, timeout=120)


def write_ffmpeg(path: Path, frames: list[np.ndarray], codec_args: list[str], fps: float = 25) -> Path:
    """Encode through the ffmpeg CLI (lossless MJPG AVI as the intermediate)."""
    src = write_opencv(path.with_suffix(".src.avi"), frames, "MJPG", fps)
    ffmpeg("-i", str(src), *codec_args, str(path))
    src.unlink()
    return path


def write_vfr_mkv(path: Path, frames: list[np.ndarray]) -> Path:
    """A variable-frame-rate Matroska file: the second half of the frames lasts 4x as long.

    OpenCV estimates its frame count as duration x frame rate, far above the truth,
    which is how phone recordings often look.
    """
    src = write_opencv(path.with_suffix(".src.avi"), frames, "MJPG")
    half = len(frames) // 2
    ffmpeg("-i", str(src), "-vf", f"setpts='if(lt(N,{half}),N,{half}+(N-{half})*4)/25/TB'",
           "-fps_mode", "passthrough", "-c:v", "mpeg4", "-q:v", "5", str(path))
    src.unlink()
    return path


# --- broken files -------------------------------------------------------------------

def zero_byte(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def text_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not a video, just text with a video extension\n")
    return path


def truncated_copy(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def _avi_chunks(data: bytearray):
    """(offset of payload, size) of each video chunk ('00dc') in the 'movi' list."""
    pos = data.find(b"movi") + 4
    while True:
        j = data.find(b"00dc", pos)
        if j < 0:
            return
        size = struct.unpack("<I", data[j + 4:j + 8])[0]
        yield j + 8, size
        pos = j + 8 + size


def corrupt_avi_frames(src: Path, dst: Path, every: int = 1, start: int = 0) -> Path:
    """An MJPG AVI whose container is intact but whose frame data (from `start`, every
    `every`-th chunk) is zeroed: it opens, reports its frames, and decodes none of those."""
    data = bytearray(src.read_bytes())
    for n, (off, size) in enumerate(_avi_chunks(data)):
        if n >= start and (n - start) % every == 0:
            data[off:off + size] = bytes(size)
    dst.write_bytes(bytes(data))
    return dst


def avi_with_frame_count(src: Path, dst: Path, count: int) -> Path:
    """A copy of an AVI whose headers (avih dwTotalFrames, strh dwLength) claim `count` frames."""
    data = bytearray(src.read_bytes())
    assert data[:4] == b"RIFF" and data[24:28] == b"avih"
    data[48:52] = struct.pack("<I", count)
    strh = data.find(b"strh")
    data[strh + 8 + 32:strh + 8 + 36] = struct.pack("<I", count)
    dst.write_bytes(bytes(data))
    return dst


def reported_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()


def motion_frames(n: int, seed: int, size: tuple[int, int] = (W, H)) -> list[np.ndarray]:
    """Ordinary-looking content (a moving bright square on noise) for extraction tests."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
    out = []
    for t in range(n):
        f = base.copy()
        x = (7 * t + seed * 13) % (w - 20)
        f[h // 3:h // 3 + 20, x:x + 20] = (40 + 20 * seed % 200, 200, 255)
        out.append(f)
    return out


def crash_on(item: str) -> str:
    """For DecoderPool tests (runs in a worker): die like a segfaulting decoder on 'boom'."""
    import os
    import time

    if item == "boom":
        os._exit(139)
    time.sleep(0.2)  # keep other items in flight when the crash happens
    return item.upper()
