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

import math
from pathlib import Path

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
    return out


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


def write_video(path: Path, frames: list[np.ndarray], fps: int = FPS, fourcc: str = FOURCC) -> None:
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    if not writer.isOpened():
        raise UsageError(f"OpenCV cannot write {fourcc} video to {path}")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()


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


def run(args) -> int:
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
