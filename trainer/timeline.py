"""Long videos as a timeline: sliding windows in one decoding pass, and violent segments.

Windows. A video is cut into windows of `window` seconds every `stride` seconds, in
frames of the video's real frame rate (W = round(window * fps), S = round(stride * fps)):
window k covers frames [k*S, k*S + W). Inside each window the SAME rule as for a whole
training clip picks the frames (frames.sample_indices: the centres of n equal segments),
so the model sees a window exactly as it saw a clip of that length. Windows follow each
other until one reaches the end of the video; the last one is cut at the end, marked
`short`, and when it has fewer frames than asked its frames repeat as in extraction
(`padded`).

One pass, bounded memory. The video is read once with grab() (decode only); a frame is
retrieve()d (colour conversion, resize: ~7x the cost of grab on 360p) only when an open
window wants it, and dropped as soon as the windows that want it are complete, so at
most about n * W / S frames are held whatever the video's length. The frames a cut last
window needs depend on where the video really ends, which containers misreport; the
last 2 W frames before the announced end (or every frame, if no count is announced) also
go through a small ring buffer of W frames, so the tail is sampled without a second pass.

The container can lie about the frame rate and the duration: the frame rate comes from
the decoded timestamps of the first frames when they disagree with the container (or it
gives none), and times and the duration come from decoded timestamps.

Segments: the windows whose violent probability reaches the threshold, overlapping or
touching ones merged (`merge_segments`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from trainer.frames import (VideoError, open_video, reached_end, readable_size, to_rgb, cv2, sample_indices,
                            truncation)

FPS_PROBE_FRAMES = 16  # decoded timestamps looked at before the pass, to check the container's frame rate
FPS_TOLERANCE = 0.05  # container and decoded frame rate further apart than this: trust the decoded one
DEFAULT_FPS = 25.0  # neither the container nor the timestamps say (a one-frame video)


@dataclass
class Window:
    index: int
    start_frame: int
    end_frame: int  # exclusive
    frame_indices: list[int]
    start_s: float = 0.0
    end_s: float = 0.0
    short: bool = False  # cut by the end of the video: shorter than the window length
    padded: bool = False  # fewer frames in it than asked: some frames repeat


@dataclass
class VideoTimeline:
    """What one pass over a video found; filled in while `WindowSampler.windows()` runs."""
    fps: float = 0.0
    fps_note: str | None = None  # set when the container's frame rate was not used
    frames_reported: int = 0
    frames_decoded: int = 0
    duration_s: float = 0.0
    error: str | None = None  # decoding stopped early: where and why (the windows before it are good)
    max_frames_held: int = 0  # the most decoded frames in memory at once (bounded by the window)
    window_s: float = 0.0  # window and stride as whole frames at `fps`
    stride_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def window_frames(window_s: float, stride_s: float, fps: float) -> tuple[int, int]:
    """Window length and stride in frames at `fps` (each at least one frame)."""
    # half up, not Python's round-half-to-even: 2.5 s at 25 fps is 63 frames, not 62
    return max(1, int(window_s * fps + 0.5)), max(1, int(stride_s * fps + 0.5))


class WindowSampler:
    """`for window, frames in WindowSampler(path, n, size, 5.0, 2.5).windows(): ...`

    frames: uint8 RGB [n, size, size, 3], the window's frames by frames.sample_indices.
    After the loop (or a VideoError before the first window), `.timeline` says what was
    decoded. Raises VideoError only when the file gives no frame at all.
    """

    def __init__(self, path: str | Path, n_frames: int, size: int, window_s: float | None, stride_s: float | None,
                 window_frames_hint: int | None = None, threads: int | None = None,
                 on_progress: Callable[[float, float | None], None] | None = None):
        # window_s None: `window_frames_hint` frames at this video's frame rate; stride_s None: half the window
        if (window_s is None and not window_frames_hint) or (window_s or 1) <= 0 or (stride_s or 1) <= 0:
            raise ValueError("window and stride must be positive")
        self.window_frames_hint = window_frames_hint
        self.path, self.n, self.size = Path(path), n_frames, size
        self.window_s, self.stride_s, self.threads = window_s, stride_s, threads
        self.on_progress = on_progress
        self.timeline = VideoTimeline()

    # -- the pass ------------------------------------------------------------------------
    def windows(self) -> Iterator[tuple[Window, np.ndarray]]:
        tl = self.timeline
        self._check_file()
        cap = open_video(self.path, self.threads)
        try:
            tl.frames_reported = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
            container_fps = cap.get(cv2.CAP_PROP_FPS)
        finally:
            cap.release()
        tl.fps = self._frame_rate(container_fps)
        if self.window_s is None:
            self.window_s = self.window_frames_hint / tl.fps
        if self.stride_s is None:
            self.stride_s = self.window_s / 2
        win, stride = window_frames(self.window_s, self.stride_s, tl.fps)
        tl.window_s, tl.stride_s = win / tl.fps, stride / tl.fps  # what the windows really are, in frames
        announced_s = tl.frames_reported / tl.fps if tl.frames_reported else None
        offsets = sample_indices(win, self.n)  # the same for every full window
        # the ring buffer starts 2 windows before the announced end: slack for a count that is too high
        tail_from = max(0, tl.frames_reported - 2 * win) if tl.frames_reported else 0
        tail: deque[tuple[int, np.ndarray]] = deque(maxlen=win)

        open_windows: dict[int, dict] = {}  # k -> {"got": {index: frame}, "start_ms": float}
        wanted: dict[int, list[int]] = {}  # frame index -> open windows that want it
        next_k, index, last_ms, emitted_end = 0, 0, 0.0, 0
        cap = open_video(self.path, self.threads)
        try:
            while True:
                if not cap.grab():
                    break
                ms = cap.get(cv2.CAP_PROP_POS_MSEC)
                last_ms = ms
                while next_k * stride <= index:  # open the windows that start here
                    start = next_k * stride
                    open_windows[next_k] = {"got": {}, "start_ms": ms}
                    for off in offsets:
                        wanted.setdefault(start + off, []).append(next_k)
                    next_k += 1
                frame = None
                if index in wanted or index >= tail_from:
                    ok, bgr = cap.retrieve()
                    if not ok or bgr is None:
                        tl.error = f"frame {index} ({ms / 1000:.1f} s) demuxes but does not decode"
                        break
                    frame = to_rgb(bgr, self.size)
                    for k in wanted.pop(index, ()):
                        open_windows[k]["got"][index] = frame
                    if index >= tail_from:
                        tail.append((index, frame))
                    held = {id(f) for w in open_windows.values() for f in w["got"].values()} | {id(f) for _, f in tail}
                    tl.max_frames_held = max(tl.max_frames_held, len(held))
                k0 = min(open_windows) if open_windows else None
                if k0 is not None and k0 * stride + win - 1 == index:  # the oldest window is complete
                    w = open_windows.pop(k0)
                    start = k0 * stride
                    window = Window(k0, start, start + win, [start + o for o in offsets],
                                    w["start_ms"] / 1000, (ms + 1000 / tl.fps) / 1000)
                    emitted_end = start + win
                    yield window, np.stack([w["got"][i] for i in window.frame_indices])
                index += 1
                if self.on_progress and index % 25 == 0:
                    self.on_progress(ms / 1000, announced_s)
        finally:
            cap.release()

        tl.frames_decoded = index
        tl.duration_s = (last_ms + 1000 / tl.fps) / 1000 if index else 0.0
        if self.on_progress:
            self.on_progress(tl.duration_s, announced_s)
        if index == 0:
            raise VideoError("no decodable frame (the video stream is empty or its codec data is corrupt)")
        reported = tl.frames_reported
        if tl.error is None and reported and index < reported and not reached_end(index, last_ms, reported, tl.fps):
            tl.error = (f"decoding stopped at frame {index} ({tl.duration_s:.1f} s) of the {reported} announced "
                        f"({reported / tl.fps:.1f} s): corrupt or truncated video data")
        if tl.error is not None:
            return  # the windows so far are good; a last one cut at a corrupt spot would not be
        yield from self._last_window(open_windows, emitted_end, tail, stride, index)

    def _last_window(self, open_windows: dict, emitted_end: int, tail: deque, stride: int, total: int):
        """The window cut by the end of the video, if frames after the last full window remain."""
        tl = self.timeline
        if total <= emitted_end or not open_windows:
            return
        k = min(open_windows)
        start = k * stride
        indices = [start + o for o in sample_indices(total - start, self.n)]
        have = {**dict(tail), **open_windows[k]["got"]}
        missing = set(indices) - have.keys()
        if missing:
            # The container announced far more frames than there are, so the ring buffer started
            # too late: a second pass (grab only up to the missing frames) fetches them.
            have.update(self._fetch(missing))
            tl.notes.append(f"the container announced {tl.frames_reported} frames for {total}: a second pass "
                            "fetched the last window's frames")
            if not set(indices) <= have.keys():
                tl.notes.append("the last window could not be sampled (the second pass decoded differently)")
                return
        window = Window(k, start, total, indices, open_windows[k]["start_ms"] / 1000, tl.duration_s,
                        short=True, padded=total - start < self.n)
        yield window, np.stack([have[i] for i in indices])

    # -- helpers -------------------------------------------------------------------------
    def _fetch(self, indices: set[int]) -> dict[int, np.ndarray]:
        got: dict[int, np.ndarray] = {}
        cap = open_video(self.path, self.threads)
        try:
            index, last = 0, max(indices)
            while index <= last and cap.grab():
                if index in indices:
                    ok, bgr = cap.retrieve()
                    if not ok or bgr is None:
                        break
                    got[index] = to_rgb(bgr, self.size)
                index += 1
        finally:
            cap.release()
        return got

    def _check_file(self) -> None:
        reason = truncation(self.path, readable_size(self.path))
        if reason:  # a cut file: read what decodes, and say so
            self.timeline.notes.append(reason)

    def _frame_rate(self, container_fps: float) -> float:
        """The container's frame rate, unless the first decoded timestamps say otherwise."""
        cap = open_video(self.path, self.threads)
        stamps = []
        try:
            while len(stamps) < FPS_PROBE_FRAMES and cap.grab():
                stamps.append(cap.get(cv2.CAP_PROP_POS_MSEC))
        finally:
            cap.release()
        fps, self.timeline.fps_note = choose_frame_rate(container_fps, stamps)
        return fps


def choose_frame_rate(container_fps: float, stamps_ms: list[float]) -> tuple[float, str | None]:
    """(frame rate, note when it is not the container's) from the container's figure and the
    decoded timestamps (ms) of the first frames: the median step between them wins when the
    two disagree by more than FPS_TOLERANCE, or when the container gives no usable figure."""
    steps = np.diff(stamps_ms)
    steps = steps[steps > 0]
    decoded = 1000.0 / float(np.median(steps)) if len(steps) else 0.0
    plausible = 0 < container_fps <= 1000
    if plausible and (not decoded or abs(container_fps - decoded) <= FPS_TOLERANCE * decoded):
        return float(container_fps), None
    if decoded:
        return decoded, (f"the container says {container_fps:g} fps, the decoded timestamps "
                         f"{decoded:.3g} fps; using {decoded:.3g}")
    return DEFAULT_FPS, f"no frame rate known; assuming {DEFAULT_FPS:g} fps"


def merge_segments(windows: list[tuple[float, float, float]], threshold: float) -> list[dict]:
    """(start_s, end_s, probability) per window -> the merged stretches at or above threshold.

    A window at or above the threshold counts as violent (the same rule as a clip's label);
    windows that overlap or touch join one segment, which keeps its peak probability.
    """
    segments: list[dict] = []
    for start, end, prob in sorted(windows):
        if prob < threshold:
            continue
        if segments and start <= segments[-1]["end_s"]:
            seg = segments[-1]
            seg["end_s"] = max(seg["end_s"], end)
            seg["peak_probability"] = max(seg["peak_probability"], prob)
            seg["windows"] += 1
        else:
            segments.append({"start_s": start, "end_s": end, "peak_probability": prob, "windows": 1})
    for seg in segments:
        seg["start_s"], seg["end_s"] = round(seg["start_s"], 3), round(seg["end_s"], 3)
        seg["peak_probability"] = round(seg["peak_probability"], 6)
    return segments


def typical_clip(records: list[dict]) -> dict:
    """The training clips' median length, for model_info.json (predict's default window).

    Always the frame count (every cache record has `frames_decoded`); seconds as well
    when the records carry a duration or a frame rate.
    """
    frames = [r["frames_decoded"] for r in records if r.get("frames_decoded")]
    out = {"clip_frames": int(np.median(frames))} if frames else {}
    seconds = [r["duration_s"] if r.get("duration_s") else r["frames_decoded"] / r["fps"]
               for r in records if r.get("duration_s") or (r.get("fps") and r.get("frames_decoded"))]
    if seconds:
        out["clip_seconds"] = round(float(np.median(seconds)), 3)
    return out
