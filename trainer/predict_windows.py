"""`predict --window/--stride/--plot`: long videos as a timeline of violent probability.

Each file is read in one pass (timeline.WindowSampler); the windows' frames go through
shared backbone batches (batching.BatchedClassifier); one JSON line per window, then a
line per file with the merged segments at or above the threshold (and the plot).
predict.py calls in here; nothing here imports predict.py (that was an import circle).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DEFAULT_WINDOW_S = 5.0  # when model_info.json does not say how long the training clips were


def resolve_window(args, info: dict) -> tuple[float | None, float | None, int | None, str]:
    """(window_s, stride_s, window_frames_hint, how it was chosen) from the flags and model_info.json."""
    window = getattr(args, "window", None)
    stride = float(args.stride) if getattr(args, "stride", None) is not None else None
    if window not in (None, "auto"):
        return float(window), stride, None, "--window"
    if info.get("clip_seconds"):
        return float(info["clip_seconds"]), stride, None, "the training clips' median length (model_info.json)"
    if info.get("clip_frames"):
        return None, stride, int(info["clip_frames"]), (
            f"the training clips' median length of {info['clip_frames']} frames (model_info.json) at each video's "
            "frame rate")
    return DEFAULT_WINDOW_S, stride, None, "the default (model_info.json does not record the training clips' length)"


def plot_path(plot: str, index: int, video: str, n_files: int) -> Path:
    """--plot F for one file; F's stem + _<n>_<video stem> for several."""
    plot = Path(plot)
    if n_files == 1:
        return plot
    return plot.with_name(f"{plot.stem}_{index + 1:02d}_{Path(video).stem}{plot.suffix or '.png'}")


def predict_windows(args, model, backbone, settings: dict, info: dict, threshold: float) -> int:
    from trainer.batching import BatchedClassifier
    from trainer.frames import VideoError
    from trainer.timeline import WindowSampler, merge_segments

    window_s, stride_s, hint, how = resolve_window(args, info)
    quiet = getattr(args, "quiet", False)
    print(f"windows: {f'{window_s:g} s' if window_s else f'{hint} frames'} ({how}), stride "
          f"{f'{stride_s:g} s' if stride_s else 'half the window'}, {settings['frames']} frames each, "
          f"threshold {threshold:g}", file=sys.stderr)
    files: list[dict] = []
    failed = 0

    def emit(tag, prob):
        kind, f = tag[0], tag[1]
        if kind == "window":
            w = tag[2]
            line = {"path": f["path"], "start_s": round(w.start_s, 3), "end_s": round(w.end_s, 3),
                    "violent_probability": round(prob, 6)}
            if w.short:
                line["short"] = True  # cut by the end of the video
            if w.padded:
                line["padded"] = True  # fewer frames than asked: some repeat
            f["windows"].append((w.start_s, w.end_s, prob))
            print(json.dumps(line), flush=True)
            return
        summary = {"path": f["path"]}
        if f.get("error") and not f["windows"]:
            summary["error"] = f["error"]
            print(json.dumps(summary), flush=True)
            return
        tl = f["timeline"]
        summary.update({
            "segments": merge_segments(f["windows"], threshold), "duration_s": round(tl.duration_s, 3),
            "fps": round(tl.fps, 3), "frames": tl.frames_decoded, "windows": len(f["windows"]),
            "window_s": round(f["window_s"], 3), "stride_s": round(f["stride_s"], 3), "threshold": threshold})
        if f.get("error"):
            summary["error"] = f["error"]
            summary["decoded_until_s"] = round(tl.duration_s, 3)
        if tl.fps_note:
            summary["fps_note"] = tl.fps_note
        if tl.notes:
            summary["notes"] = tl.notes
        if getattr(args, "plot", None):
            from trainer.plots import timeline_png

            out = plot_path(args.plot, f["index"], f["path"], len(args.files))
            timeline_png(out, f["windows"], threshold, summary["segments"], title=Path(f["path"]).name,
                         duration_s=tl.duration_s, stopped=f.get("error"))
            summary["plot"] = str(out)
        print(json.dumps(summary), flush=True)

    clf = BatchedClassifier(backbone, model, emit, batch_frames=getattr(backbone, "batch_size", 64))
    for i, path in enumerate(args.files):
        f = {"path": path, "index": i, "windows": []}
        files.append(f)
        bar = _ProgressBar(Path(path).name, disabled=quiet)
        sampler = WindowSampler(path, settings["frames"], settings["image_size"], window_s, stride_s,
                                window_frames_hint=hint, on_progress=bar.update)
        try:
            for window, frames in sampler.windows():
                clf.add(("window", f, window), [(i, k) for k in window.frame_indices], frames)
        except VideoError as exc:
            f["error"] = str(exc)
        finally:
            bar.close()
        tl = sampler.timeline
        f["timeline"], f["window_s"], f["stride_s"] = tl, tl.window_s, tl.stride_s
        if tl.error and "error" not in f:
            f["error"] = tl.error
        if "error" in f:
            failed += 1
            where = f" after {tl.duration_s:.1f} s" if tl.frames_decoded else ""
            print(f"warning: {path}: {f['error']}{where}", file=sys.stderr)
        clf.add_marker(("file", f))
    clf.flush()
    if failed:
        print(f"error: {failed} of {len(args.files)} video(s) could not be read to the end "
              "(see their JSON lines)", file=sys.stderr)
        return 2
    return 0


class _ProgressBar:
    """tqdm over seconds of video, made at the first report, when the announced duration is known."""

    def __init__(self, name: str, disabled: bool):
        self.name, self.disabled, self.bar = name[-30:], disabled, None

    def update(self, pos_s: float, total_s: float | None) -> None:
        from tqdm import tqdm

        if self.bar is None:
            fmt = ("{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of video [{elapsed}<{remaining}]"
                   if total_s else "{desc}: {n:.0f} s of video [{elapsed}]")
            self.bar = tqdm(desc=self.name, total=total_s, disable=self.disabled, dynamic_ncols=True,
                            bar_format=fmt)
        if self.bar.total and pos_s > self.bar.total:
            self.bar.total = pos_s  # the container announced less than there is
        self.bar.update(pos_s - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
