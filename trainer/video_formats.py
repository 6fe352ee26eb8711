"""The one list of video file extensions: what `extract`, `scan` and deploy's job model count as a video.

Dependency-free on purpose: `python -m trainer scan` imports it on a laptop that may have
only the deploy extra installed, and deploy/ learns the list from that scan's JSON
(`video_extensions`) instead of keeping a copy of its own (deploy/ never imports trainer/).

CCTV recorders write MPEG transport streams (`.ts`, and `.m2ts` / `.mts` from AVCHD
cameras); a `.dav` export converted with `ffmpeg -i x.dav -c copy x.ts` is one too.
`data.video_extensions` in the train config adds more (e.g. `[".dav"]` where the
installed FFmpeg reads them directly).
"""

from __future__ import annotations

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv", ".flv", ".3gp",
                    ".ts", ".m2ts", ".mts")


def video_extensions(extra: list[str] | tuple[str, ...] = ()) -> tuple[str, ...]:
    """The built-in extensions plus `extra` (from data.video_extensions), lower case, each with its dot."""
    out = list(VIDEO_EXTENSIONS)
    for ext in extra:
        ext = str(ext).strip().lower()
        ext = ext if ext.startswith(".") else "." + ext
        if ext not in out:
            out.append(ext)
    return tuple(out)


def check_extension(ext: object) -> str | None:
    """Why `ext` cannot be a data.video_extensions entry, or None when it can."""
    if not isinstance(ext, str) or not ext.strip():
        return f"{ext!r} is not an extension (write e.g. \".dav\")"
    body = ext.strip().lstrip(".")
    if not body or not body.isalnum() or len(body) > 10:
        return f"{ext!r} is not a file extension (letters and digits after one dot, e.g. \".dav\")"
    return None
