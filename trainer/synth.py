"""`python -m trainer synth`: a labelled set of real, encoded videos whose classes differ only in motion.

Every video shows one large filled shape (a circle or a square) on a plain background.
Shape, colours, size and starting position are drawn from the SAME distributions for
both classes, and no frame is blurred, so no single frame tells the class:

- violent:    the shape moves fast (14-22 px/frame at 96 px) and changes direction
              abruptly every 1-3 frames, bouncing off the edges;
- nonviolent: the same kind of shape drifts slowly (0.1-0.4 px/frame) along a gently
              curving path.

Only a model that compares frames over time can separate them, which is what the
demo must show. Files are written with OpenCV's VideoWriter (MPEG-4 Part 2, `mp4v`,
in .mp4) so that extraction decodes real compressed video. A given seed always
yields the same videos.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from trainer.errors import UsageError

FPS = 25
FOURCC = "mp4v"
# Motion, in pixels per frame of a 96-px video (scaled with --size). Chosen so that the
# demo's model (BiLSTM on 32x32 grey thumbnails, ~110 training videos) learns the task
# in its few hundred steps: a large shape, one colour scheme for every video (so that
# nothing but motion varies between frames), big jumps against a near-still drift.
VIOLENT_SPEED = (14.0, 22.0)
CALM_SPEED = (0.1, 0.4)
VIOLENT_TURN_EVERY = (1, 4)  # frames between abrupt turns (upper bound exclusive)
RADIUS = (0.20, 0.28)  # shape radius as a share of the frame side
SHAPES = (1, 1)  # shapes per video (inclusive range)
BACKGROUND = (30, 31)  # per-channel grey level range of the background (upper bound exclusive)
FOREGROUND = (220, 221)  # per-channel grey level range of the shapes


def _trajectory(rng: np.random.Generator, violent: bool, n_frames: int, size: int, radius: int) -> np.ndarray:
    """Centre positions [n_frames, 2] in pixels, reflected into the frame."""
    lo, hi = radius, size - radius
    pos = rng.uniform(lo, hi, size=2)
    heading = rng.uniform(0, 2 * math.pi)
    return _walk(rng, violent, n_frames, size, radius, pos, heading)[0]


def _walk(rng: np.random.Generator, violent: bool, n_frames: int, size: int, radius: int,
          pos: np.ndarray, heading: float) -> tuple[np.ndarray, np.ndarray, float]:
    """n_frames of one class's motion from (pos, heading); returns (positions, next pos, next heading)."""
    lo, hi = radius, size - radius
    scale = size / 96.0  # speeds are specified for a 96-px frame
    if violent:
        speed = rng.uniform(*VIOLENT_SPEED) * scale
        next_turn = rng.integers(*VIOLENT_TURN_EVERY)
    else:
        speed = rng.uniform(*CALM_SPEED) * scale
        turn_rate = rng.uniform(-0.05, 0.05)  # radians per frame: a smooth curve
    out = np.empty((n_frames, 2))
    for t in range(n_frames):
        out[t] = pos
        if violent:
            next_turn -= 1
            if next_turn == 0:  # an abrupt, large change of direction
                heading += rng.uniform(math.pi / 2, 3 * math.pi / 2)
                speed = rng.uniform(*VIOLENT_SPEED) * scale
                next_turn = rng.integers(*VIOLENT_TURN_EVERY)
        else:
            heading += turn_rate
        pos = pos + speed * np.array([math.cos(heading), math.sin(heading)])
        for axis in (0, 1):  # bounce off the edges
            if pos[axis] < lo or pos[axis] > hi:
                pos[axis] = np.clip(2 * (lo if pos[axis] < lo else hi) - pos[axis], lo, hi)
                heading = math.pi - heading if axis == 0 else -heading
    return out, pos, heading


def render_video(rng: np.random.Generator, violent: bool, n_frames: int, size: int) -> list[np.ndarray]:
    """BGR uint8 frames of one synthetic video."""
    import cv2

    background = rng.integers(*BACKGROUND, size=3)
    shapes = []
    for _ in range(int(rng.integers(SHAPES[0], SHAPES[1] + 1))):
        radius = int(rng.integers(int(size * RADIUS[0]), int(size * RADIUS[1]) + 1))
        colour = tuple(int(c) for c in rng.integers(*FOREGROUND, size=3))
        square = bool(rng.integers(0, 2))
        shapes.append((radius, colour, square, _trajectory(rng, violent, n_frames, size, radius)))
    frames = []
    for t in range(n_frames):
        frame = np.empty((size, size, 3), np.uint8)
        frame[:] = background
        for radius, colour, square, path in shapes:
            cx, cy = (int(round(v)) for v in path[t])
            if square:
                cv2.rectangle(frame, (cx - radius, cy - radius), (cx + radius, cy + radius), colour, thickness=-1)
            else:
                cv2.circle(frame, (cx, cy), radius, colour, thickness=-1, lineType=cv2.LINE_AA)
        frames.append(frame)
    return frames


def write_video(path: Path, frames: Iterable[np.ndarray], fps: int = FPS, fourcc: str = FOURCC) -> int:
    """Encode frames (a list or any iterable, consumed one at a time); returns how many were written."""
    import cv2

    frames = iter(frames)
    first = next(frames)
    h, w = first.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    if not writer.isOpened():
        raise UsageError(f"OpenCV cannot write {fourcc} video to {path}")
    n = 0
    try:
        for frame in itertools.chain([first], frames):
            writer.write(frame)
            n += 1
    finally:
        writer.release()
    return n


# --- one long video: calm footage with violent sections (predict --window's test material) ---

def long_video_frames(rng: np.random.Generator, sections: list[tuple[bool, int]], size: int) -> Iterator[np.ndarray]:
    """BGR frames of ONE continuous scene: the same shape and colours throughout, its motion
    switching class at each section [(violent, n_frames), ...]. Generated lazily, so a
    ten-minute video never sits in memory."""
    import cv2

    background = rng.integers(*BACKGROUND, size=3)
    radius = int(rng.integers(int(size * RADIUS[0]), int(size * RADIUS[1]) + 1))
    colour = tuple(int(c) for c in rng.integers(*FOREGROUND, size=3))
    square = bool(rng.integers(0, 2))
    pos = rng.uniform(radius, size - radius, size=2)
    heading = rng.uniform(0, 2 * math.pi)
    for violent, n_frames in sections:
        done = 0
        while done < n_frames:  # in chunks: the trajectory of a long calm section is not held either
            chunk = min(n_frames - done, 1000)
            path, pos, heading = _walk(rng, violent, chunk, size, radius, pos, heading)
            for cx, cy in np.rint(path).astype(int):
                frame = np.empty((size, size, 3), np.uint8)
                frame[:] = background
                if square:
                    cv2.rectangle(frame, (cx - radius, cy - radius), (cx + radius, cy + radius), colour, thickness=-1)
                else:
                    cv2.circle(frame, (int(cx), int(cy)), radius, colour, thickness=-1, lineType=cv2.LINE_AA)
                yield frame
            done += chunk


def long_video(path: Path, seconds: float, violent: list[tuple[float, float]], seed: int = 0,
               size: int = 96) -> list[tuple[bool, float, float]]:
    """Write a `seconds`-long video, violent motion in the given (start_s, end_s) spans, calm elsewhere.

    Returns the sections as written: [(violent, start_s, end_s), ...].
    """
    total = int(round(seconds * FPS))
    cuts = sorted((max(0, int(round(a * FPS))), min(total, int(round(b * FPS)))) for a, b in violent)
    sections, at = [], 0
    for a, b in cuts:
        if a < at or b <= a:
            raise UsageError(f"--violent spans must be increasing, non-overlapping and inside the video: {violent}")
        if a > at:
            sections.append((False, a - at))
        sections.append((True, b - a))
        at = b
    if total > at:
        sections.append((False, total - at))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, long_video_frames(np.random.default_rng([seed, 1_000_003]), sections, size))
    out, at = [], 0
    for v, n in sections:
        out.append((v, at / FPS, (at + n) / FPS))
        at += n
    return out


def synthesize(out: Path, n_videos: int, seed: int = 0, n_frames: int = 48, size: int = 96,
               progress: bool = True) -> list[Path]:
    from tqdm import tqdm

    paths = []
    for cls in ("violent", "nonviolent"):
        (out / cls).mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(n_videos), desc="synth", unit="video", disable=not progress):
        violent = i % 2 == 0  # alternate so any N gives halves (violent gets the odd one)
        cls = "violent" if violent else "nonviolent"
        # One generator per video, derived from (seed, index): video i is the same
        # whatever N is, so a larger set extends a smaller one.
        rng = np.random.default_rng([seed, i])
        path = out / cls / f"{cls}_{i // 2:05d}.mp4"
        write_video(path, render_video(rng, violent, n_frames, size))
        paths.append(path)
    return paths


def _spans(text: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in text.replace("-", ":").split(":"))
    except ValueError:
        raise UsageError(f"--violent expects START:END in seconds, got {text!r}") from None
    return a, b


def run(args) -> int:
    if getattr(args, "long", None) is not None:
        return _run_long(args)
    if args.videos is None:
        raise UsageError("--videos N is required (or --long SECONDS for one long video)")
    if args.videos < 2:
        raise UsageError("--videos must be at least 2 (one per class)")
    if args.frames < 2:
        raise UsageError("--frames must be at least 2")
    if args.size < 16:
        raise UsageError("--size must be at least 16 pixels")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    paths = synthesize(out, args.videos, args.seed, args.frames, args.size,
                       progress=not getattr(args, "quiet", False))
    n_violent = sum(1 for p in paths if p.parent.name == "violent")
    print(f"wrote {len(paths)} videos to {out} ({n_violent} violent, {len(paths) - n_violent} nonviolent, "
          f"{args.frames} frames of {args.size}x{args.size} at {FPS} fps, {FOURCC})")
    return 0


def _run_long(args) -> int:
    if args.long <= 0:
        raise UsageError("--long must be a positive number of seconds")
    if args.size < 16:
        raise UsageError("--size must be at least 16 pixels")
    out = Path(args.out)
    if out.is_dir() or out.suffix.lower() != ".mp4":
        raise UsageError(f"--out {out}: with --long, --out is the .mp4 file to write")
    spans = [_spans(t) for t in (args.violent or [])] or [(args.long * 0.4, args.long * 0.6)]
    sections = long_video(out, args.long, spans, args.seed, args.size)
    violent = ", ".join(f"{a:g}-{b:g} s" for v, a, b in sections if v) or "none"
    print(f"wrote {out}: {args.long:g} s at {FPS} fps, {args.size}x{args.size}, violent motion at {violent}, calm elsewhere")
    return 0
