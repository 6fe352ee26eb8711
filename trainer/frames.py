"""Exact, evenly spaced frame sampling, decoding only what the sampled frames need.

Which frames: a video of T frames lasting D seconds is cut into n equal stretches of
time and the frame on screen at the centre of each is taken. At a constant frame rate
that is the frame at the centre of each of n equal segments of frames:

    index_i = floor((2*i + 1) * T / (2*n)),   i = 0 .. n-1

so the samples cover the whole video, keep an equal distance (T/n frames) between them,
and never sit on the very first or last frame (fades, black frames, and the frame a
wrong container count most often gets wrong). When the frame rate varies (phones,
screen recordings, CCTV exports), the frames' own timestamps place the n points
(`sample_positions`), so a stretch recorded at 10 fps gets as many samples per second as
one at 30 fps. When T < n the same rule repeats frames evenly (T=5, n=20 takes every
frame 4 times); the result is flagged `padded`.

How, per video, whichever decodes fewer frames (trainer/seek_plan.py has the cost model):

- one sequential pass: the video is read once from start to end with grab() (demux +
  decode) and only the wanted frames are retrieve()d (colour-converted and copied).
  Reading to the end also tells the TRUE frame count; when the container reported a
  different count, the indices are re-picked for the true count and, only then, a
  second pass fetches them. Short clips whose every frame is a reference (no B-frames),
  and any file whose container index is missing or disagrees with its header, take this
  path: it is how every damaged file is judged.
- keyframe seeks: the container's packet list (trainer/video_index.py, no decoding)
  gives every frame's timestamp and the keyframes; decoding starts at the keyframe
  before each sampled frame, skips the groups of pictures that hold none, and lets the
  decoder drop the B-frames no other frame refers to. Long videos, and short ones full
  of B-frames, take this path; the frames are byte-identical to the sequential pass's,
  and anything unexpected on the way falls back to the sequential pass.

OpenCV's own seek (CAP_PROP_POS_FRAMES), which the seed used once per sampled frame,
starts 16 frames early, lands a whole group of pictures back when the target is near a
keyframe, and counts frames from timestamps and the frame rate, which is inexact on
some files; it is not used.

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
    indices: list[int]  # frame index (0-based, in display order) of each sample
    total_frames: int  # frames in the video: decoded to the end, or listed by a trusted container index
    reported_frames: int  # what the container claimed (0 = unknown)
    padded: bool  # fewer decodable frames than asked: some frames repeat
    passes: int  # sequential passes used (2 only when the reported count was wrong; 1 for seeks)
    method: str = "sequential"  # "sequential" (every frame decoded) or "seek" (only the needed groups of pictures)
    frames_read: int = 0  # frames the decoder decoded to get these (the cost the plan was chosen by)


METHODS = ("auto", "sequential", "seek")


def sample_indices(total: int, n: int) -> list[int]:
    """The centres of n equal segments of [0, total): see the module docstring."""
    if total <= 0 or n <= 0:
        raise ValueError(f"need total > 0 and n > 0, got total={total}, n={n}")
    return [((2 * i + 1) * total) // (2 * n) for i in range(n)]


# A video whose every frame lies within this share of a frame period of a uniform grid is
# sampled by index: timestamps rounded to the container's clock (1 ms in Matroska: 33, 33,
# 34 ms at 30 fps) must not move a sample off the frame the index formula picks.
CFR_JITTER = 0.25
TIME_EPS_S = 1e-6  # far below any frame period: timestamps from two readers agree to this


def sample_positions(times_s, n: int) -> list[int]:
    """The display positions of the frames on screen at the centres of n equal stretches of time.

    times_s: each frame's presentation time (seconds, display order). At a constant frame
    rate (to within CFR_JITTER of a frame) this is exactly sample_indices(len(times_s), n).
    Otherwise the video lasts from the first timestamp to the last plus the last frame's
    duration (taken as the step before it: the container rarely knows it), and the frame
    on screen at point (2i+1)/(2n) of that span is sampled.
    """
    total = len(times_s)
    t = np.asarray(times_s, dtype=np.float64)
    if total < 2 or not np.all(np.diff(t) > 0):
        return sample_indices(total, n)  # no usable timestamps: by count, as before
    t = t - t[0]
    period = t[-1] / (total - 1)
    if np.max(np.abs(t - np.arange(total) * period)) <= CFR_JITTER * period:
        return sample_indices(total, n)
    duration = t[-1] + (t[-1] - t[-2])
    points = (2 * np.arange(n) + 1) * duration / (2 * n)
    return [int(j) for j in np.searchsorted(t, points + TIME_EPS_S, side="right") - 1]


def sample_frames(path: str | Path, n_frames: int, size: int, threads: int | None = None,
                  method: str = "auto") -> SampledFrames:
    """`n_frames` RGB frames of `size`x`size`, evenly spaced over the whole video at `path`.

    `threads`: FFmpeg decoding threads for this one video (1 when many videos are
    decoded by parallel processes; None lets the decoder choose).
    `method`: "auto" picks per video whichever decodes fewer frames; "sequential" and
    "seek" force one (for tests and benchmarks; "seek" still falls back to a sequential
    pass when the file cannot be sampled exactly by seeking).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    path = Path(path)
    _check_file(path)
    cap = open_video(path, threads)
    try:
        reported = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        reported = reported if reported > 0 else 0
        fps = cap.get(cv2.CAP_PROP_FPS)
        index = None if method == "sequential" else _trusted_index(path, reported, fps)
        if index is not None:
            wanted = sample_positions(index.times_s, n_frames)
            sampled = _by_seeking(path, index, wanted, size, threads, reported, force=method == "seek")
            if sampled is not None:
                return sampled
        else:
            wanted = sample_indices(reported, n_frames) if reported else []
        got, total, stamps = _read_pass(cap, set(wanted), size)
    finally:
        cap.release()

    last_ms = stamps[-1] * 1000 if stamps else 0.0  # of the last frame that demuxed, decoded or not
    if total == 0:
        raise VideoError("no decodable frame (the video stream is empty or its codec data is corrupt)")
    if reported and total < reported and not reached_end(total, last_ms, reported, fps):
        raise VideoError(
            f"decoding stopped at frame {total} of {reported} ({last_ms / 1000:.1f} s of "
            f"{reported / fps:.1f} s): corrupt or truncated video data"
        )
    passes = 1
    final = sample_positions(stamps[:total], n_frames)
    if not set(final) <= got.keys():
        # The container's count was wrong (or unknown), or the frame rate varies: fetch the right frames now.
        cap = open_video(path, threads)
        try:
            got, total2, _ = _read_pass(cap, set(final), size)
        finally:
            cap.release()
        passes = 2
        if total2 != total:  # the file changed under us, or the decoder is not deterministic
            raise VideoError(f"decoded {total} frames, then {total2} on a second pass: unstable video")
    frames = np.stack([got[i] for i in final])
    return SampledFrames(frames, final, total, reported, total < n_frames, passes, "sequential", total * passes)


def _trusted_index(path: Path, reported: int, fps: float):
    """The container's packet index, if the header backs it: then it can stand in for decoding to the end.

    Not when the header states a frame count the packets do not match (the header lies,
    or the data is damaged), when it states neither a count nor a duration (nothing to
    check the packets against), or when the packets stop well before the end it
    announces: those files take the sequential pass, which judges them as always.
    """
    if not reported:
        return None
    from trainer.video_index import read_index

    index = read_index(path)
    if index is None or index.container_frames not in (0, len(index)):
        return None
    if not reached_end(len(index), index.times_s[-1] * 1000, reported, fps):
        return None
    return index


def _by_seeking(path: Path, index, wanted: list[int], size: int, threads: int | None,
                reported: int, force: bool) -> SampledFrames | None:
    """The sampled frames by keyframe seeks (trainer.seek_plan), or None where a
    sequential pass is cheaper or seeking cannot give exact frames."""
    from trainer import seek_plan

    runs = seek_plan.plan_runs(index, wanted + [0])  # frame 0: the check below
    if runs is None or not (force or seek_plan.worth_seeking(index, runs)):
        return None
    try:
        got, decoded, first_bgr = seek_plan.decode_runs(path, index, runs, lambda bgr: to_rgb(bgr, size),
                                                        threads, keep_bgr=0)
    except Exception:  # noqa: BLE001  (SeekFailed, or anything PyAV raises: the sequential pass decides)
        return None
    # Two FFmpeg builds decode here (OpenCV's and PyAV's). They agree bit for bit on every
    # codec we test; this per-video check keeps it so whatever either library's version.
    cap = open_video(path, 1)
    try:
        ok, opencv_first = cap.read()
    finally:
        cap.release()
    if not ok or first_bgr is None or not np.array_equal(opencv_first, first_bgr):
        return None
    total = len(index)
    frames = np.stack([got[i] for i in wanted])
    return SampledFrames(frames, wanted, total, reported, total < len(wanted), 1, "seek", decoded)


def _read_pass(cap: "cv2.VideoCapture", wanted: set[int], size: int) -> tuple[dict[int, np.ndarray], int, list[float]]:
    """Decode every frame; keep the wanted ones resized to size x size RGB.

    Returns ({index: frame}, frames decoded, each frame's timestamp in seconds: one more
    than frames decoded when the last frame demuxed but could not be converted).
    """
    got: dict[int, np.ndarray] = {}
    index = 0
    stamps: list[float] = []
    while cap.grab():
        stamps.append(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
        if index in wanted:
            ok, bgr = cap.retrieve()
            if not ok or bgr is None:
                break  # a frame that demuxes but cannot be converted ends the usable video
            got[index] = to_rgb(bgr, size)
        index += 1
    return got, index, stamps


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
