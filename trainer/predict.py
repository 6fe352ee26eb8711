"""`python -m trainer predict FILE... --model FILE`: one JSON line per video on stdout.

    {"path": ..., "violent_probability": 0.97, "label": "violent"}
    {"path": ..., "error": "no decodable frame (...)"}        # this video only; the rest still run

The frames are sampled and turned into features exactly as for the cache the model was
trained on: train writes that cache's settings (backbone, weights, image size, frames,
sampling rule) to model_info.json next to the model, and predict reads them from there.
Exit code: 0 when every video was classified, 2 when at least one could not be read
(its error line says why; a one-line summary goes to stderr).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from trainer.cache import CLASSES
from trainer.errors import UsageError

THRESHOLD = 0.5


def read_model_info(model_path: Path) -> dict:
    info_path = model_path.parent / "model_info.json"
    if not info_path.is_file():
        raise UsageError(f"{info_path} is missing: predict needs the feature settings the model was trained "
                         "with (train writes this file next to best_model.keras)")
    return json.loads(info_path.read_text())


def backbone_settings(info: dict, weights_override: str | None) -> dict:
    from trainer.backbone import recorded_settings

    return recorded_settings(info, weights_override)  # the backbone recorded with the model


def run(args) -> int:
    from trainer.backbone import from_model_info
    from trainer.evaluate import load_model
    from trainer.frames import VideoError, sample_frames

    model_path = Path(args.model)
    if not model_path.is_file():
        raise UsageError(f"--model {model_path}: no such file")
    info = read_model_info(model_path)
    settings = backbone_settings(info, args.weights)
    model = load_model(model_path)
    expected = tuple(model.input_shape[1:])
    if expected != (settings["frames"], settings["feature_dim"]):
        raise UsageError(f"model_info.json says {settings['frames']} x {settings['feature_dim']} features but the "
                         f"model expects {expected}; the file does not belong to this model")
    backbone = from_model_info(info, settings)
    violent = CLASSES.index("violent")

    failed = 0
    for path in args.files:
        try:
            sampled = sample_frames(path, settings["frames"], settings["image_size"])
        except VideoError as exc:
            failed += 1
            print(json.dumps({"path": path, "error": str(exc)}), flush=True)
            continue
        # float16 exactly as the cache stores features, so train and predict see the same inputs
        feats = backbone.features(sampled.frames).astype(np.float16)[None]
        prob = float(np.asarray(model(feats, training=False))[0, violent])
        line = {"path": path, "violent_probability": round(prob, 6),
                "label": CLASSES[violent] if prob >= THRESHOLD else CLASSES[1 - violent]}
        if sampled.padded:
            line["padded"] = True  # shorter than the frame count: some frames repeat
        print(json.dumps(line), flush=True)
    if failed:
        print(f"error: {failed} of {len(args.files)} video(s) could not be read (see their JSON lines)", file=sys.stderr)
        return 2
    return 0
