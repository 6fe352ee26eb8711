"""`python -m trainer scan DATASET [--json]`: what a dataset holds, before anything is extracted or uploaded.

Per split and class: videos, bytes and total duration; the resolutions, codecs and frame
rates; files that are not videos by their extension (grouped by extension); unreadable
files; exact duplicates; label conflicts (the same content under both classes); clips so
long that the sampled frames are far apart. `python -m deploy check`, `up` and `sync` run
it on the laptop (as a subprocess: deploy/ never imports the trainer), and deploy's job
model reads its duration and resolution to estimate decoding.

How it stays fast: nothing is decoded. Each video is opened with OpenCV's FFmpeg backend
and only its stream properties are read (CAP_PROP_FRAME_COUNT, FPS, FRAME_WIDTH/HEIGHT,
FOURCC): FFmpeg's probe of the container headers and first packets, a few ms per file,
spread over processes for big datasets. OpenCV is the trainer's own reader, so a
file it cannot open here is one `extract` would fail on too; ffprobe is not guaranteed
on a user's machine and PyAV is not a dependency. Duplicates are found by content, but
only files whose size occurs more than once are hashed.

It needs neither TensorFlow nor NumPy: on a laptop with only the deploy extra (no
OpenCV) it still lists, counts, finds duplicates and conflicts, and says that durations
and resolutions were not read. Exit 2 when `extract` would refuse the dataset (a label
conflict that is not allowed, one class only, nothing readable), after the report.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from trainer import config as config_mod
from trainer.dataset import Listing, Video, conflict_error, duplicate_groups, label_conflicts, listing
from trainer.errors import UsageError
from trainer.labels import CLASSES, SPLITS
from trainer.video_formats import video_extensions

# A clip whose sampled frames are more than this many seconds apart is reported: with the
# default 20 frames, clips over 20 s. Fights last seconds; at this spacing a short one may
# fall between two samples (RWF-2000's clips are 5 s, RLVS's 2-7 s: 0.1-0.35 s apart).
SPARSE_SECONDS_PER_FRAME = 1.0
EXAMPLES = 3  # example paths per ignored extension
PROBES_PER_PROCESS = 500  # below this many videos per process, starting processes costs more than it saves
UNSPLIT = "all"  # the split key for class-folder layouts: extract assigns the splits
# FOURCC tags (as OpenCV's FFmpeg backend reports them) -> the codec's usual name; others as they are
CODEC_NAMES = {"avc1": "h264", "h264": "h264", "x264": "h264", "hevc": "hevc", "hev1": "hevc", "hvc1": "hevc",
               "h265": "hevc", "fmp4": "mpeg4", "mp4v": "mpeg4", "xvid": "mpeg4", "divx": "mpeg4", "dx50": "mpeg4",
               "mjpg": "mjpeg", "mpg2": "mpeg2", "mpg1": "mpeg1", "vp80": "vp8", "vp90": "vp9", "av01": "av1"}


def scan(dataset: str | Path, cfg: dict, probe: bool = True, allow_label_conflicts: bool = False) -> dict:
    """The report as one JSON-ready dict (see `run` for the text form)."""
    data = cfg["data"]
    extensions = video_extensions(data["video_extensions"])
    found = listing(dataset, data["class_names"], extensions)
    videos = found.videos
    facts = _probe_all(videos) if probe else {}
    prober = "opencv" if facts is not None else None
    facts = facts or {}
    shas = _content_of_same_sized(videos)
    frames = data["frames"]
    label_of = {v.rel: v.label for v in videos}
    report = {
        "dataset": str(Path(dataset).absolute()),
        "layout": "split folders" if any(v.split for v in videos) else "class folders",
        "video_extensions": list(extensions),
        "probe": prober or "none: OpenCV is not installed here, so durations, resolutions and codecs were not read",
        "videos": len(videos),
        "bytes": sum(_size(v.path) for v in videos),
        "duration_s": _round(sum(f.get("duration_s") or 0.0 for f in facts.values())),
        "splits": _by_split(videos, facts),
        "resolutions": _counts(f"{f['width']}x{f['height']}" for f in facts.values() if f.get("width")),
        "codecs": _counts(f["codec"] for f in facts.values() if f.get("codec")),
        "frame_rates": _counts(f"{f['fps']:g}" for f in facts.values() if f.get("fps")),
        "decode": _decode_work(facts),
        "ignored": _ignored(found),
        "unreadable": [{"path": rel, "reason": f["error"]} for rel, f in sorted(facts.items()) if f.get("error")],
        "duplicates": [{"label": label_of[g[0]], "paths": g} for g in duplicate_groups(videos, shas)
                       if len({label_of[rel] for rel in g}) == 1],
        "label_conflicts": label_conflicts(videos, shas),
        "frames_per_video": frames,
        "long_clips": _long_clips(facts, frames),
    }
    report["problems"] = _problems(report, videos, allow_label_conflicts or data["allow_label_conflicts"])
    return report


# --- reading the headers ---------------------------------------------------------------

def _probe_all(videos: list[Video]) -> dict[str, dict] | None:
    """rel -> stream facts (or {"error": reason}); None when OpenCV is not installed.

    A few ms to ~20 ms a file (bench/scan_speed.py); threads gain nothing (measured: 300
    files, 3.05 ms each in one thread, 3.26 ms in four), so big datasets are spread over
    processes, one per core.
    """
    try:
        from trainer import frames  # OpenCV (and NumPy): the extractor's own reader
    except ImportError:
        return None
    paths = [str(v.path) for v in videos]
    workers = min(os.cpu_count() or 1, len(paths) // PROBES_PER_PROCESS)
    if workers < 2:
        return {v.rel: probe(v.path, frames) for v in videos}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        facts = pool.map(_probe_path, paths, chunksize=max(1, len(paths) // (workers * 8)))
        return dict(zip((v.rel for v in videos), facts))


def _probe_path(path: str) -> dict:
    return probe(Path(path))


def probe(path: Path, frames=None) -> dict:
    """Stream facts of one video from its container (no frame is decoded), or {"error": why not}."""
    if frames is None:
        from trainer import frames
    cv2 = frames.cv2
    try:
        reason = frames.truncation(path, frames.readable_size(path))
        if reason:
            return {"error": reason}
        cap = frames.open_video(path, threads=1)
    except frames.VideoError as exc:
        return {"error": str(exc)}
    except OSError as exc:
        return {"error": f"cannot read file: {exc.strerror or exc}"}
    try:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
    finally:
        cap.release()
    if width <= 0 or height <= 0:
        return {"error": "no video stream (the container holds no picture size)"}
    fps = fps if 0 < fps < 1000 else 0.0  # some containers report nonsense (e.g. 90000 for a time base)
    count = max(count, 0)
    tag = fourcc.to_bytes(4, "little").decode("latin-1").strip("\x00 ").lower() if fourcc > 0 else ""
    codec = CODEC_NAMES.get(tag, tag) if tag.isprintable() else ""
    return {"frames": count, "fps": round(fps, 3), "width": width, "height": height,
            "codec": codec, "duration_s": round(count / fps, 3) if fps and count else None}


# --- duplicates: content hashes of same-sized files only ---------------------------------

def _content_of_same_sized(videos: list[Video]) -> dict[str, str]:
    """rel -> SHA-256 for the videos that share their size with another (only they can be copies)."""
    by_size: dict[int, list[Video]] = {}
    for v in videos:
        size = _size(v.path)
        if size > 0:
            by_size.setdefault(size, []).append(v)
    todo = [v for group in by_size.values() if len(group) > 1 for v in group]
    if not todo:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(todo))) as pool:  # hashlib releases the GIL on big reads
        return {v.rel: sha for v, sha in zip(todo, pool.map(lambda v: _sha256(v.path), todo)) if sha}


def _sha256(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None  # reported as unreadable by the probe; an unreadable file is nobody's copy
    return h.hexdigest()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# --- the report's parts ----------------------------------------------------------------

def _round(x: float) -> float:
    return round(x, 3)


def _by_split(videos: list[Video], facts: dict) -> dict:
    splits = [s for s in SPLITS if any(v.split == s for v in videos)] or [UNSPLIT]
    out = {s: {c: {"videos": 0, "bytes": 0, "duration_s": 0.0} for c in CLASSES} for s in splits}
    for v in videos:
        cell = out[v.split or UNSPLIT][v.label]
        cell["videos"] += 1
        cell["bytes"] += _size(v.path)
        cell["duration_s"] = _round(cell["duration_s"] + ((facts.get(v.rel) or {}).get("duration_s") or 0.0))
    return out


def _counts(items) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _decode_work(facts: dict) -> dict:
    """What decoding every video costs: frames and frames x pixels (deploy/plan/ turns these into core-seconds)."""
    ok = [f for f in facts.values() if f.get("frames") and f.get("width")]
    return {"videos_measured": len(ok), "frames": sum(f["frames"] for f in ok),
            "pixel_frames": sum(f["frames"] * f["width"] * f["height"] for f in ok)}


def _ignored(found: Listing) -> dict[str, dict]:
    by_ext: dict[str, list[str]] = {}
    for rel in found.ignored:
        by_ext.setdefault(Path(rel).suffix.lower() or "(no extension)", []).append(rel)
    return {ext: {"files": len(rels), "examples": rels[:EXAMPLES]}
            for ext, rels in sorted(by_ext.items(), key=lambda kv: (-len(kv[1]), kv[0]))}


def _long_clips(facts: dict, frames: int) -> list[dict]:
    out = []
    for rel, f in sorted(facts.items()):
        d = f.get("duration_s")
        if d and d / frames > SPARSE_SECONDS_PER_FRAME:
            out.append({"path": rel, "duration_s": d, "seconds_between_frames": round(d / frames, 2)})
    return out


def _problems(report: dict, videos: list[Video], allow_conflicts: bool) -> list[str]:
    """One line each for what would make `extract` or `train` refuse this dataset."""
    problems = []
    if report["label_conflicts"] and not allow_conflicts:
        problems.append(str(conflict_error(report["label_conflicts"],
                                           "set data.allow_label_conflicts: true (or pass --allow-label-conflicts)")))
    present = {v.label for v in videos}
    if len(present) < len(CLASSES):
        missing = [c for c in CLASSES if c not in present][0]
        problems.append(f"no {missing} videos: training needs both classes (folders found map only to "
                        f"{next(iter(present))})")
    elif report["probe"] == "opencv":
        reason = {u["path"]: u["reason"] for u in report["unreadable"]}
        for c in CLASSES:
            mine = [v.rel for v in videos if v.label == c]
            if all(rel in reason for rel in mine):
                problems.append(f"none of the {len(mine)} {c} videos can be read (e.g. {mine[0]}: {reason[mine[0]]})")
    return problems


# --- text --------------------------------------------------------------------------------

def _hours(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _top(counts: dict[str, int], n: int = 4) -> str:
    items = list(counts.items())
    text = ", ".join(f"{k} {v:,}" for k, v in items[:n])
    return text + (f", {len(items) - n} more" if len(items) > n else "") if items else "-"


def print_report(r: dict, out=None) -> None:
    out = out or sys.stdout
    probed = r["probe"] == "opencv"
    split_note = "split folders" if r["layout"] == "split folders" else "class folders: extract assigns the splits"
    print(f"dataset {r['dataset']}: {r['videos']:,} videos ({split_note}), {_gb(r['bytes'])}"
          + (f", {_hours(r['duration_s'])} of video" if probed else ""), file=out)
    print(f"{'split':<6} {'class':<11} {'videos':>7} {'size':>10} {'duration':>10} {'mean':>8}", file=out)
    for split, classes in r["splits"].items():
        for cls, cell in classes.items():
            mean = cell["duration_s"] / cell["videos"] if cell["videos"] and probed else None
            print(f"{split:<6} {cls:<11} {cell['videos']:>7,} {_gb(cell['bytes']):>10} "
                  f"{_hours(cell['duration_s']) if probed else '?':>10} {f'{mean:.1f} s' if mean else '-':>8}",
                  file=out)
    if probed:
        print(f"resolutions: {_top(r['resolutions'])}; codecs: {_top(r['codecs'])}; "
              f"frame rates: {_top(r['frame_rates'])}", file=out)
    else:
        print(f"durations, resolutions, codecs: not read ({r['probe']})", file=out)
    if r["ignored"]:
        parts = [f"{ext} {g['files']:,} (e.g. {g['examples'][0]})" for ext, g in r["ignored"].items()]
        print(f"ignored, not a video by extension: {'; '.join(parts)} - add an extension under "
              f"data.video_extensions to use it", file=out)
    if r["unreadable"]:
        print(f"unreadable: {len(r['unreadable'])} (extract records and skips them)", file=out)
        for u in r["unreadable"][:10]:
            print(f"  {u['path']}: {u['reason']}", file=out)
        if len(r["unreadable"]) > 10:
            print(f"  ... and {len(r['unreadable']) - 10} more (--json lists them all)", file=out)
    if r["duplicates"]:
        print(f"duplicates: {len(r['duplicates'])} video(s) stored more than once in one class (extract keeps "
              f"every copy in one split)", file=out)
        for d in r["duplicates"][:5]:
            print(f"  {d['label']}: {' = '.join(d['paths'])}", file=out)
    if r["label_conflicts"]:
        print(f"label conflicts: {len(r['label_conflicts'])} video(s) in BOTH classes (one label is wrong)", file=out)
        for c in r["label_conflicts"][:10]:
            print("  " + " = ".join(f"{p} ({cls})" for cls, paths in c["paths"].items() for p in paths), file=out)
    if r["long_clips"]:
        longest = max(c["duration_s"] for c in r["long_clips"])
        print(f"long clips: {len(r['long_clips'])} video(s) longer than "
              f"{SPARSE_SECONDS_PER_FRAME * r['frames_per_video']:g} s (up to {_hours(longest)}): their "
              f"{r['frames_per_video']} sampled frames are more than {SPARSE_SECONDS_PER_FRAME:g} s apart, so a short "
              f"fight can fall between two; cut them into clips (ffmpeg -f segment -segment_time 5), and use "
              f"`predict --window` on long footage", file=out)
        for c in r["long_clips"][:5]:
            print(f"  {c['path']}: {_hours(c['duration_s'])}, a frame every {c['seconds_between_frames']:g} s",
                  file=out)


def run(args) -> int:
    overrides: dict = {}
    if getattr(args, "allow_label_conflicts", False):
        config_mod.set_dotted(overrides, "data.allow_label_conflicts", True)
    cfg = config_mod.load(args.config, overrides)
    report = scan(args.dataset, cfg)
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print_report(report)
    for problem in report["problems"][:-1]:
        print(f"error: {problem}", file=sys.stderr)
    if report["problems"]:
        raise UsageError(report["problems"][-1])
    return 0
