"""Decode only the groups of pictures that hold a sampled frame.

A decoder can start only at a keyframe. To get frame j, it decodes from the last keyframe
at or before j up to j. Twenty frames sampled from a long video (a 10-minute clip at
30 fps has 18,000 frames; x264, phones and cameras put a keyframe every 250 or so) sit
in at most twenty groups of pictures, and most groups hold none: decoding only from each
needed keyframe up to the last sampled frame of its group costs a small part of reading
the whole video. On a short clip every group holds a sampled frame, and one sequential
pass is cheaper than seeking. The cost model below counts frames to decode per plan;
trainer/frames.py picks the cheaper plan per video.

The plan is a list of runs: seek to a keyframe, decode forward, keep the wanted frames,
stop after the run's last one. Consecutive runs whose gap is shorter than a seek's cost
are merged (decoding through is cheaper than seeking again).

Exactness. Decoding from a keyframe gives the same pictures as decoding from the start
for closed groups of pictures (IDR keyframes: what x264 writes by default and what
phones and cameras write) and for the intra-only and MPEG-4 codecs. Frames are matched
to display positions by their presentation timestamps from the container index
(trainer/video_index.py), never by counting, so a demuxer that seeks imprecisely (MPEG-TS
has no index and seeks by bisecting on timestamps) is caught: packets before the wanted
keyframe are skipped undecoded, and a seek that lands past it is retried from earlier.
Anything unexpected raises SeekFailed, and the caller reads the video sequentially.

PyAV decodes here (OpenCV cannot seek to a given keyframe: its CAP_PROP_POS_FRAMES seeks
16 frames before the target and counts frames from timestamps and the frame rate).
PyAV's swscale conversion to BGR is called with OpenCV's flags (bicubic, the codec's
own colour range), and frames.py checks per video that both give the same first frame.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from trainer.video_index import VideoIndex

# What starting a run costs beyond the frames it decodes, in frames decoded: the seek,
# the keyframe (an intra picture decodes slower than the others) and the frames the
# decoder holds back to reorder B-frames. An estimate; it matters only near break-even.
RUN_OVERHEAD_FRAMES = 8
# Share of the B-frames on the way to a sampled frame that must still be decoded: the
# others are referred to by no frame and are skipped (skip_frame=NONREF). x264's default
# B-pyramid keeps about one B-frame in three or four as a reference (its 720p clips in
# bench/frame_sampling.py: 79 % of B-frames skipped); one in two leaves room for encoders
# that keep more.
BFRAME_COST = 0.5
# Seek only when the plan decodes at most this share of what a sequential pass decodes:
# the sequential pass is the path every damaged file has always taken (no surprises), so
# it keeps the benefit of the doubt near break-even.
SEEK_WORTH = 0.8
SEEK_RETRIES = 6  # seeks that land past the keyframe are retried from this many points further back


class SeekFailed(Exception):
    """The seek plan could not deliver exact frames; read the video sequentially instead."""


@dataclass
class Run:
    key: int  # display position of the keyframe decoding starts from
    targets: list[int] = field(default_factory=list)  # display positions to keep, ascending

    @property
    def last(self) -> int:
        return self.targets[-1]


def plan_runs(index: VideoIndex, wanted: list[int]) -> list[Run] | None:
    """The runs that decode the `wanted` display positions; None if some has no keyframe before it."""
    keys = index.keyframes
    runs: list[Run] = []
    for j in sorted(set(wanted)):
        at = bisect_right(keys, j) - 1
        if at < 0:
            return None
        key = keys[at]
        if runs and (key <= runs[-1].last or key - runs[-1].last <= RUN_OVERHEAD_FRAMES):
            runs[-1].targets.append(j)  # same group, or decoding through is cheaper than a seek
        else:
            runs.append(Run(key, [j]))
    return runs


def plan_cost(index: VideoIndex, runs: list[Run]) -> float:
    """Frames the plan decodes, in units of one decoded frame (overheads included): every
    frame from each run's keyframe to its last target, B-frames that are not targets at
    BFRAME_COST."""
    cost = 0.0
    b = index.bframes_before
    for r in runs:
        span = r.last - r.key + 1
        skippable = b[r.last + 1] - b[r.key] - sum(b[j + 1] - b[j] for j in r.targets)
        cost += span - (1 - BFRAME_COST) * skippable + RUN_OVERHEAD_FRAMES
    return cost


def worth_seeking(index: VideoIndex, runs: list[Run] | None) -> bool:
    """Does the plan decode enough less than a sequential pass (every frame) to be worth it?"""
    return runs is not None and plan_cost(index, runs) <= SEEK_WORTH * len(index)


def decode_runs(path: str | Path, index: VideoIndex, runs: list[Run], convert: Callable[[np.ndarray], np.ndarray],
                threads: int | None = None, keep_bgr: int | None = None) -> tuple[dict[int, np.ndarray], int, np.ndarray | None]:
    """Run the plan: ({display position: convert(BGR frame)}, frames decoded, BGR frame at `keep_bgr`)."""
    import av

    position = index.position()
    got: dict[int, np.ndarray] = {}
    kept = None
    decoded = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            ctx = stream.codec_context
            set_threads(ctx, threads)
            for run in runs:
                remaining = set(run.targets)
                wanted_pts = {index.pts[j] for j in remaining}
                for packet in _packets_from_key(container, stream, ctx, index, run.key):
                    # A frame no other frame refers to (most B-frames) is needed only if it is itself
                    # sampled: the decoder may drop the others unseen (FFmpeg's skip_frame).
                    ctx.skip_frame = "DEFAULT" if packet.size == 0 or packet.pts in wanted_pts else "NONREF"
                    for frame in ctx.decode(packet):
                        decoded += 1
                        j = position.get(frame.pts)
                        if j is None:
                            raise SeekFailed(f"decoded a frame (pts {frame.pts}) the container index does not list")
                        if j in remaining:
                            bgr = frame.to_ndarray(format="bgr24", interpolation="BICUBIC")
                            if j == keep_bgr:
                                kept = bgr
                            got[j] = convert(bgr)
                            remaining.discard(j)
                    if not remaining or packet.size == 0:
                        break
                if remaining:
                    raise SeekFailed(f"frames {sorted(remaining)[:5]} did not come out of the decoder")
    except av.FFmpegError as exc:
        raise SeekFailed(f"decoder error: {exc}") from None
    return got, decoded, kept


def set_threads(ctx, threads: int | None) -> None:
    """FFmpeg decoding threads of a PyAV codec context: 1 = none (parallel processes
    decode one video each), None = FFmpeg's choice, else that many."""
    if threads == 1:
        ctx.thread_type, ctx.thread_count = "NONE", 1
    else:
        ctx.thread_type, ctx.thread_count = "AUTO", threads or 0


def _packets_from_key(container, stream, ctx, index: VideoIndex, key: int) -> Iterator:
    """Packets in decoding order starting with the keyframe at display position `key`
    (and ending with the end-of-stream marker, size 0)."""
    key_pts = index.pts[key]
    key_rank = index.decode_rank[key_pts]
    back = 0
    one_second = max(1, int(1 / index.time_base))
    for _ in range(SEEK_RETRIES):
        container.seek(key_pts - back, stream=stream, backward=True, any_frame=False)
        ctx.flush_buffers()
        packets = container.demux(stream)
        for packet in packets:
            if packet.size == 0:
                break  # the end, and no keyframe on the way
            rank = index.decode_rank.get(packet.pts)
            if rank is None:
                raise SeekFailed(f"a packet (pts {packet.pts}) the container index does not list")
            if rank < key_rank:
                continue  # before the keyframe: skipped without decoding
            if rank == key_rank:
                return chain([packet], packets)
            break  # landed past the keyframe
        back = max(2 * back, one_second)
    raise SeekFailed(f"seeking did not reach the keyframe at frame {key}")
