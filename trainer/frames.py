"""Exact, evenly spaced frame sampling in one sequential decoding pass.

Which frames: a video of T decodable frames is cut into n equal segments and the frame
at the centre of each segment is taken:

    index_i = floor((2*i + 1) * T / (2*n)),   i = 0 .. n-1

so the samples cover the whole video, keep an equal distance (T/n frames) between them,
and never sit on the very first or last frame (fades, black frames, and the frame a
wrong container count most often gets wrong). When T < n the same formula repeats
frames evenly (T=5, n=20 takes every frame 4 times); the result is flagged `padded`.

How: seeking (CAP_PROP_POS_FRAMES) makes FFmpeg jump to the previous key frame and
decode forward to the target, once per sampled frame, and is inexact on some codecs.
Instead the video is read once from start to end with grab() (demux + decode) and only
the wanted frames are retrieve()d (colour-converted and copied). Reading to the end
also tells the TRUE frame count; when the container reported a different count, the
indices are re-picked for the true count and, only then, a second pass fetches them.

Anything that is not a usable video raises `VideoError` with a reason a person can act on.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# FFmpeg's own log lines ("moov atom not found", "No JPEG data found in image") would
# tear through the progress bar; VideoError carries a clearer reason instead.
# OpenCV reads this when it first opens a video, so it must be set before that.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

import cv2  # noqa: E402  (after the environment variable above)

# Decoding must reach this share of the duration the container announced; stopping
# earlier means corrupt or missing data, not a merely wrong frame count.
COMPLETE_FRACTION = 0.9


class VideoError(Exception):
    """This file cannot give frames; str(exc) is the reason recorded in the cache index."""


@dataclass
class SampledFrames:
    frames: np.ndarray  # uint8 [n_frames, size, size, 3], RGB
    indices: list[int]  # frame index (0-based, in decoding order) of each sample
    total_frames: int  # frames actually decoded from the video
    reported_frames: int  # what the container claimed (0 = unknown)
    padded: bool  # fewer decodable frames than asked: some frames repeat
    passes: int  # decoding passes used (2 only when the reported count was wrong)


def sample_indices(total: int, n: int) -> list[int]:
    """The centres of n equal segments of [0, total): see the module docstring."""
    if total <= 0 or n <= 0:
        raise ValueError(f"need total > 0 and n > 0, got total={total}, n={n}")
    return [((2 * i + 1) * total) // (2 * n) for i in range(n)]


def sample_frames(path: str | Path, n_frames: int, size: int, threads: int | None = None) -> SampledFrames:
    """`n_frames` RGB frames of `size`x`size`, evenly spaced over the whole video at `path`.

    `threads`: FFmpeg decoding threads for this one video (1 when many videos are
    decoded by parallel processes; None lets OpenCV choose).
    """
    path = Path(path)
    _check_file(path)
    cap = open_video(path, threads)
    try:
        reported = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        reported = reported if reported > 0 else 0
        fps = cap.get(cv2.CAP_PROP_FPS)
        wanted = sample_indices(reported, n_frames) if reported else []
        got, total, last_ms = _read_pass(cap, set(wanted), size)
    finally:
        cap.release()

    if total == 0:
        raise VideoError("no decodable frame (the video stream is empty or its codec data is corrupt)")
    if reported and total < reported and not reached_end(total, last_ms, reported, fps):
        raise VideoError(
            f"decoding stopped at frame {total} of {reported} ({last_ms / 1000:.1f} s of "
            f"{reported / fps:.1f} s): corrupt or truncated video data"
        )
    passes = 1
    final = sample_indices(total, n_frames)
    if total != reported and not set(final) <= got.keys():
        # The container's count was wrong (or unknown): fetch the right frames now.
        cap = open_video(path, threads)
        try:
            got, total2, _ = _read_pass(cap, set(final), size)
        finally:
            cap.release()
        passes = 2
        if total2 != total:  # the file changed under us, or the decoder is not deterministic
            raise VideoError(f"decoded {total} frames, then {total2} on a second pass: unstable video")
    frames = np.stack([got[i] for i in final])
    return SampledFrames(frames, final, total, reported, total < n_frames, passes)


def _read_pass(cap: "cv2.VideoCapture", wanted: set[int], size: int) -> tuple[dict[int, np.ndarray], int, float]:
    """Decode every frame; keep the wanted ones resized to size x size RGB.

    Returns ({index: frame}, frames decoded, timestamp in ms of the last decoded frame).
    """
    got: dict[int, np.ndarray] = {}
    index = 0
    last_ms = 0.0
    while cap.grab():
        last_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
        if index in wanted:
            ok, bgr = cap.retrieve()
            if not ok or bgr is None:
                break  # a frame that demuxes but cannot be converted ends the usable video
            got[index] = to_rgb(bgr, size)
        index += 1
    return got, index, last_ms


def to_rgb(bgr: np.ndarray, size: int) -> np.ndarray:
    if bgr.ndim == 2:
        bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
    # Plain resize (no crop), as VGG19's ImageNet pipeline and the seed did; INTER_AREA
    # because this nearly always shrinks, where it avoids aliasing.
    interp = cv2.INTER_AREA if bgr.shape[0] >= size and bgr.shape[1] >= size else cv2.INTER_LINEAR
    small = cv2.resize(bgr, (size, size), interpolation=interp)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


def reached_end(total: int, last_ms: float, reported: int, fps: float) -> bool:
    """Did decoding run (nearly) to the end the container announced?"""
    if total >= COMPLETE_FRACTION * reported:
        return True
    if fps <= 0:
        return True  # no duration to compare with: trust the decoder
    announced_ms = reported / fps * 1000.0
    return last_ms + 1000.0 / fps >= COMPLETE_FRACTION * announced_ms


def open_video(path: Path, threads: int | None) -> "cv2.VideoCapture":
    params = [cv2.CAP_PROP_N_THREADS, int(threads)] if threads else []
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        kind = container_kind(path)
        if kind is None:
            raise VideoError("not a video file (content is no known video container)")
        raise VideoError(f"{kind} file that FFmpeg cannot open as video (no video stream, corrupt, "
                         "or an unsupported codec)")
    return cap


def readable_size(path: Path) -> int:
    """The file's size; VideoError when it is missing, unreadable or empty."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise VideoError("file not found") from None
    except OSError as exc:
        raise VideoError(f"cannot read file: {exc.strerror}") from None
    if size == 0:
        raise VideoError("empty file (0 bytes)")
    return size


def _check_file(path: Path) -> None:
    reason = truncation(path, readable_size(path))
    if reason:
        raise VideoError(reason)


# --- container headers --------------------------------------------------------------
# OpenCV says only "cannot open" or stops decoding early; these few header checks say
# *why* for the common containers, so a user can tell a cut download from a bad codec.

def container_kind(path: Path) -> str | None:
    """A name for the container from the file's first bytes, or None if none is known."""
    with open(path, "rb") as fh:
        head = fh.read(189)
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI"
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "MP4/MOV"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "Matroska/WebM"
    if head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):
        return "MPEG-PS"
    if head[:1] == b"\x47" and head[188:189] == b"\x47":  # 188-byte packets
        return "MPEG-TS"
    if head[:3] == b"FLV":
        return "FLV"
    if head[:16] == bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c"):
        return "ASF/WMV"
    return None


def truncation(path: Path, size: int) -> str | None:
    """A reason string if the container header promises more bytes than the file holds."""
    kind = container_kind(path)
    with open(path, "rb") as fh:
        if kind == "AVI":
            fh.seek(4)
            declared = struct.unpack("<I", fh.read(4))[0] + 8
            if declared > size:
                return f"truncated AVI file ({size} of {declared} bytes)"
        elif kind == "MP4/MOV":
            return _mp4_truncation(fh, size)
        elif kind == "Matroska/WebM":
            return _mkv_truncation(fh, size)
    return None


def _mp4_truncation(fh, size: int) -> str | None:
    offset, boxes = 0, set()
    while offset + 8 <= size:
        fh.seek(offset)
        box_size, box_type = struct.unpack(">I4s", fh.read(8))
        if box_size == 1:
            box_size = struct.unpack(">Q", fh.read(8))[0]
        elif box_size == 0:  # "extends to the end of the file"
            box_size = size - offset
        if box_size < 8:
            return f"corrupt MP4/MOV file (bad box size at byte {offset})"
        boxes.add(box_type)
        if offset + box_size > size:
            return (f"truncated MP4/MOV file ({size} of at least {offset + box_size} bytes, "
                    f"cut inside the '{box_type.decode('latin-1')}' box)")
        offset += box_size
    if b"moov" not in boxes:
        return "incomplete MP4/MOV file (no 'moov' index: the recording was never finalised or was cut)"
    return None


def _mkv_truncation(fh, size: int) -> str | None:
    fh.seek(4)  # past the EBML header's 4-byte ID
    header_len, _ = _ebml_vint(fh)
    fh.seek(fh.tell() + header_len)
    if fh.read(4) != b"\x18\x53\x80\x67":  # the Segment element follows the header
        return None
    seg_len, unknown = _ebml_vint(fh)
    if unknown:  # live recordings may leave the size open; nothing to check
        return None
    declared = fh.tell() + seg_len
    if declared > size:
        return f"truncated Matroska/WebM file ({size} of {declared} bytes)"
    return None


def _ebml_vint(fh) -> tuple[int, bool]:
    """An EBML variable-length size: (value, is the reserved 'unknown size')."""
    first = fh.read(1)
    if not first or first[0] == 0:
        return 0, True
    width = 8 - first[0].bit_length() + 1
    value = first[0] & ((1 << (8 - width)) - 1)
    for b in fh.read(width - 1):
        value = (value << 8) | b
    return value, value == (1 << (7 * width)) - 1
