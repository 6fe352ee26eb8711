"""A video's frames as the container lists them, read without decoding a single frame.

Demuxing (reading the packets the file is made of) costs a small fraction of decoding
them: it copies compressed bytes, it runs no codec. From the packets of the video stream
this module learns

- the frame count the file really holds (one packet per frame for the codecs in use);
- every frame's presentation timestamp, so frames can be sampled at equal points in
  time even when the frame rate varies (phones, screen recordings, CCTV exports);
- which frames are keyframes (the points a decoder can start from), and the order in
  which packets are decoded: a frame stored after one it is shown before is a B-frame,
  which most often no other frame refers to, so a decoder may skip it unless it is wanted.

PyAV (FFmpeg's Python binding) reads the packets; OpenCV offers no packet-level access.
A file whose packets do not give a usable list (missing or repeated timestamps, no video
stream, a demuxer error) gets no index: callers then fall back to decoding every frame,
which handles every damaged file the way trainer/frames.py always did.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path


@dataclass
class VideoIndex:
    pts: list[int]  # presentation timestamps in display order, in `time_base` units
    time_base: Fraction
    keyframes: list[int]  # display positions of the keyframes, ascending
    decode_rank: dict[int, int]  # pts -> the packet's position in decoding (file) order
    container_frames: int  # the frame count the container header states (0: it states none)
    times_s: list[float]  # each frame's presentation time, in seconds after the first frame's
    bframes_before: list[int]  # [j]: B-frames (reordered packets) among display positions < j; len = frames + 1

    def __len__(self) -> int:
        return len(self.pts)

    def position(self) -> dict[int, int]:
        """pts -> display position."""
        return {p: i for i, p in enumerate(self.pts)}


def read_index(path: str | Path) -> VideoIndex | None:
    """The index of the first video stream of `path`, or None when it cannot be had.

    None also when PyAV is not installed: it is an optional speed-up, everything works
    (more slowly on long videos) without it.
    """
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            time_base = stream.time_base
            container_frames = max(0, int(stream.frames or 0))
            packets = [(p.pts, p.is_keyframe) for p in container.demux(stream)
                       if p.size and not p.is_discard]  # size 0: the end-of-stream marker
    except Exception:  # noqa: BLE001  (any failure: no index, and the sequential pass judges the file)
        return None
    return build_index(packets, time_base, container_frames)


def build_index(packets: list[tuple[int | None, bool]], time_base, container_frames: int) -> VideoIndex | None:
    """An index from (pts, is_keyframe) of each packet in file order; None if unusable."""
    if not packets or time_base is None or any(pts is None for pts, _ in packets):
        return None
    decode_rank = {pts: rank for rank, (pts, _) in enumerate(packets)}
    if len(decode_rank) != len(packets):  # two packets, one timestamp: frames cannot be told apart
        return None
    pts_sorted = sorted(decode_rank)
    position = {p: i for i, p in enumerate(pts_sorted)}
    keyframes = sorted(position[pts] for pts, key in packets if key)
    reordered = [False] * len(packets)
    latest = None
    for pts, _ in packets:  # in decoding order: shown before a frame decoded earlier = a B-frame
        if latest is not None and pts < latest:
            reordered[position[pts]] = True
        latest = pts if latest is None else max(latest, pts)
    bframes_before = [0]
    for b in reordered:
        bframes_before.append(bframes_before[-1] + b)
    time_base = Fraction(time_base)
    times_s = [float((p - pts_sorted[0]) * time_base) for p in pts_sorted]
    return VideoIndex(pts_sorted, time_base, keyframes, decode_rank, container_frames, times_s, bframes_before)
