"""`python -m trainer predict FILE... --model FILE [--window S --stride S] [--threshold P] [--plot F]`

Short clips (no --window): one JSON line per video on stdout.

    {"path": ..., "violent_probability": 0.97, "label": "violent"}
    {"path": ..., "error": "no decodable frame (...)"}        # this video only; the rest still run

Long videos (--window, --stride or --plot): one line per window, then one per file.

    {"path": ..., "start_s": 0.0, "end_s": 5.0, "violent_probability": 0.03}
    {"path": ..., "start_s": 57.5, "end_s": 60.0, "violent_probability": 0.1, "short": true}
    {"path": ..., "segments": [{"start_s": 20.0, "end_s": 35.0, "peak_probability": 0.99, "windows": 5}],
     "duration_s": 60.0, "fps": 25.0, "windows": 23, "window_s": 5.0, "stride_s": 2.5, "threshold": 0.5}

The frames are sampled and turned into features exactly as for the cache the model was
trained on: train writes that cache's settings (backbone, weights, image size, frames,
sampling rule) to model_info.json next to the model, and predict reads them from there.
Frames of consecutive videos and windows share full backbone batches (batching.py).
Exit code: 0 when every video was read to its end, 2 when at least one could not be read
(its error line says why and, for a long video, where decoding stopped).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from trainer.errors import UsageError

THRESHOLD = 0.5


def read_model_info(model_path: Path) -> dict:
    from trainer.settings_check import model_info

    return model_info(model_path, required=True)  # missing, corrupt or incomplete: one line


def backbone_settings(info: dict, weights_override: str | None) -> dict:
    from trainer.backbone_settings import recorded_settings

    return recorded_settings(info, weights_override)  # the backbone recorded with the model


def build_backbone(info: dict, settings: dict):
    """The backbone the model's features were made with (the one place predict builds it)."""
    from trainer.backbone import from_model_info

    return from_model_info(info, settings)


def load(args):
    """(model, settings, info) after checking that model and model_info.json belong together."""
    from trainer.evaluate import load_model

    from trainer.paths import model_file

    model_path = model_file(args.model)  # missing, a folder, not a zip: before TensorFlow loads
    info = read_model_info(model_path)
    settings = backbone_settings(info, getattr(args, "weights", None))
    model = load_model(model_path)
    expected = tuple(model.input_shape[1:])
    if expected != (settings["frames"], settings["feature_dim"]):
        raise UsageError(f"model_info.json says {settings['frames']} x {settings['feature_dim']} features but the "
                         f"model expects {expected}; the file does not belong to this model")
    return model, settings, info


def _check_args(args) -> None:
    threshold = getattr(args, "threshold", THRESHOLD)
    if not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--threshold must be between 0 and 1, got {threshold}")
    for flag in ("window", "stride"):
        value = getattr(args, flag, None)
        if value is None or value == "auto":
            continue
        try:
            ok = float(value) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise UsageError(f"--{flag} must be a positive number of seconds, got {value!r}")


def check_files(files: list[str]) -> None:
    """A folder is a mistake, and so is a list of which no file exists: said before TensorFlow loads.

    A missing file among existing ones gets its own error line (the others still run).
    """
    from pathlib import Path

    for f in files:
        if Path(f).is_dir():
            raise UsageError(f"{f} is a folder: pass the video files in it (e.g. {Path(f) / '*.mp4'})")
    if not any(Path(f).exists() for f in files):
        raise UsageError(f"no such file: {files[0]}" + (f" (nor any of the other {len(files) - 1})"
                                                         if len(files) > 1 else ""))


def run(args) -> int:
    from trainer.paths import model_file

    _check_args(args)
    read_model_info(model_file(args.model))  # these three in milliseconds, before TensorFlow loads
    check_files(args.files)
    from trainer.batching import BatchedClassifier

    model, settings, info = load(args)
    backbone = build_backbone(info, settings)
    threshold = getattr(args, "threshold", THRESHOLD)
    windowed = any(getattr(args, a, None) is not None for a in ("window", "stride", "plot"))
    if windowed:
        from trainer.predict_windows import predict_windows

        return predict_windows(args, model, backbone, settings, info, threshold)

    def emit(tag, prob):
        path, extra = tag
        if prob is None:  # an error marker
            print(json.dumps({"path": path, **extra}), flush=True)
            return
        line = {"path": path, "violent_probability": round(prob, 6),
                "label": "violent" if prob >= threshold else "nonviolent", **extra}
        print(json.dumps(line), flush=True)

    clf = BatchedClassifier(backbone, model, emit, batch_frames=getattr(backbone, "batch_size", 64))
    failed = classify_clips(clf, args.files, settings)
    if failed:
        print(f"error: {failed} of {len(args.files)} video(s) could not be read (see their JSON lines)", file=sys.stderr)
        return 2
    return 0


def classify_clips(clf, files: list[str], settings: dict) -> int:
    """Every file as one clip (frames.sample_frames over the whole file) through `clf`; returns the failures."""
    from trainer.frames import VideoError, sample_frames

    failed = 0
    for n, path in enumerate(files):
        try:
            sampled = sample_frames(path, settings["frames"], settings["image_size"])
        except VideoError as exc:
            failed += 1
            clf.add_marker((path, {"error": str(exc)}))
            continue
        extra = {"padded": True} if sampled.padded else {}  # shorter than the frame count: some frames repeat
        clf.add((path, extra), [(n, i) for i in sampled.indices], sampled.frames)
    clf.flush()
    return failed
