"""How each video's frames were read (trainer/frames.py's per-video choice), for extract's summary.

Each cache index record carries its video's `sampling` ("sequential" or "seek") and
`frames_read` (frames the decoder decoded for it); the summary adds them up per method,
so a user sees what the seek plan saved on long videos.
"""

from __future__ import annotations


def count_sampling(run: dict, result: dict) -> None:
    """Add one decoded video (decode_pool.decode_video's result) to run["sampling"]."""
    method = result.get("sampling")
    if method is None:
        return
    cell = run.setdefault("sampling", {}).setdefault(method, {"videos": 0, "frames_read": 0, "frames": 0})
    cell["videos"] += 1
    cell["frames_read"] += int(result.get("frames_read") or 0)
    cell["frames"] += int(result.get("frames_decoded") or 0)


def sampling_line(sampling: dict) -> str:
    parts = []
    seek = sampling.get("seek")
    if seek:
        share = seek["frames_read"] / seek["frames"] if seek["frames"] else 0.0
        parts.append(f"{seek['videos']} by keyframe seeks (decoded {seek['frames_read']:,} of their "
                     f"{seek['frames']:,} frames, {share:.0%})")
    seq = sampling.get("sequential")
    if seq:
        parts.append(f"{seq['videos']} in one sequential pass ({seq['frames_read']:,} frames decoded)")
    return "frame sampling: " + ", ".join(parts)
