"""The job model's Job for this project: sizes found here, figures from earlier runs, documented defaults.

deploy/plan/job_model.py prices a Job on an offer; this module builds the Job from configs/deploy.yaml,
the train config it names, the files under dataset.path / dataset.cache, the size lookups of
deploy/plan/sizes.py and what .deploy/plan.json measured (deploy/plan/report.py).
"""

from __future__ import annotations

import os
import re

from deploy.config import OVERLAY
from deploy.plan.job_model import (EPOCHS_DEFAULT, FEATURE_DIM, FRAMES_DEFAULT, PHASES, SPLIT_DEFAULT,
                         UPLINK_MBPS_DEFAULT, Job)


def train_settings(config: dict) -> dict:
    """frames, backbone, epochs, split and LSTM shape from the train config, with train.args overrides."""
    import yaml

    path = (config.get("train") or {}).get("config")
    cfg: dict = {}
    try:
        with open(path) as fh:
            cfg = yaml.safe_load(fh) or {}
    except (OSError, TypeError, yaml.YAMLError):
        cfg = {}
    data, model, train = cfg.get("data") or {}, cfg.get("model") or {}, cfg.get("train") or {}
    epochs = int(train.get("epochs", EPOCHS_DEFAULT))
    args = list((config.get("train") or {}).get("args") or [])
    for i, a in enumerate(args):  # the trainer's own flags win, as they do on the host
        m = re.fullmatch(r"--epochs(?:=(\d+))?", str(a))
        if m:
            value = m.group(1) or (args[i + 1] if i + 1 < len(args) else None)
            if value is not None and str(value).isdigit():
                epochs = int(value)
    backbone = str(data.get("backbone", "vgg19"))
    size = int(data.get("image_size", 224))
    split = {**SPLIT_DEFAULT, **(data.get("split") or {})}
    return {"frames": int(data.get("frames", FRAMES_DEFAULT)), "backbone": backbone,
            "feature_dim": FEATURE_DIM.get(backbone, size * size), "epochs": epochs,
            "train_frac": float(split["train"]), "val_frac": float(split["val"]),
            "lstm_units": int(model.get("lstm_units", 128)), "lstm_layers": int(model.get("lstm_layers", 3))}


# The wheels pip adds over Vast's TensorFlow image in remote.python: overlay: 174.5 MB,
# measured by bench/image_bytes.py (docs/images.md "Start in minutes"), 2026-12-01.
OVERLAY_WHEEL_BYTES = 174_500_000


def job_from_config(config: dict, measured: dict | None = None, env=None, lookups: bool = True) -> Job:
    """The Job for this project: sizes found here, figures measured by earlier runs, or documented defaults.

    `lookups`: ask the network (HEAD of dataset.url, the Kaggle API, the image registry) for sizes.
    """
    import os

    from deploy.plan import sizes

    env = os.environ if env is None else env
    measured = measured or {}
    ds, vast = config.get("dataset") or {}, config.get("vast") or {}
    t = train_settings(config)
    job = Job(frames=t["frames"], backbone=t["backbone"], feature_dim=t["feature_dim"], epochs=t["epochs"],
              lstm_units=t["lstm_units"], lstm_layers=t["lstm_layers"])
    src = job.sources
    videos = 0
    if ds.get("url") or ds.get("kaggle"):
        size = None
        if lookups:
            from deploy.dataset import kaggle, source
            try:
                url, headers = source.source(ds.get("url"), ds.get("kaggle"), ds.get("token_env"), env)
            except Exception:  # missing credentials: `sync` will say so; the estimate just lacks the size
                url, headers = None, {}
            if ds.get("kaggle") and url:
                size = sizes.kaggle_size(ds["kaggle"], headers,
                                              env.get("DEPLOY_KAGGLE_API", kaggle.API))
            elif url:
                size = sizes.content_length(url, headers)
        job.download_bytes = size or 0
        src["download"] = ("Kaggle API totalBytes" if ds.get("kaggle") else "HTTP Content-Length") if size else \
            "unknown (the server did not say): counted as 0"
        videos = int(measured.get("videos") or 0)
        src["videos"] = "the last run's dataset" if videos else "unknown until the host has it: extract not estimated"
    else:
        cache_bytes = sizes.folder_bytes(ds.get("cache"))
        data_bytes = sizes.folder_bytes(ds.get("path"))
        videos, decode, scanned = _scanned(ds.get("path"), (config.get("train") or {}).get("config"))
        if ds.get("cache") and cache_bytes:
            job.upload_bytes = cache_bytes + data_bytes
            src["upload"] = f"feature cache {ds['cache']}" + (f" + dataset {ds['path']}" if data_bytes else "")
            videos_to_extract = 0  # the cache holds the features: the host's extract finds nothing to do
            if not data_bytes:  # cache only: train on what it holds (float16 [frames, dim] per video)
                videos = int(cache_bytes / max(1, job.frames * job.feature_dim * 2))
        else:
            job.upload_bytes = data_bytes
            src["upload"] = f"dataset {ds.get('path')}" if data_bytes else "nothing local to send"
            videos_to_extract = videos
            job.decode_pixel_frames = decode
        job.videos = videos_to_extract
        src["videos"] = scanned
    if not job.videos and (ds.get("url") or ds.get("kaggle")):
        job.videos = videos
    job.train_samples = int(videos * t["train_frac"])
    job.val_samples = int(videos * t["val_frac"])

    image_gb = vast.get("image_gb")
    if image_gb:
        job.image_bytes, src["image"] = int(float(image_gb) * 1e9), "vast.image_gb"
    else:
        from deploy.providers.vast import registry

        pull = registry.pull_estimate(vast.get("image"), vast.get("image_login"), env) if lookups else None
        if pull is not None and pull.bytes is not None:
            job.image_bytes, src["image"] = pull.bytes, pull.how
        else:
            src["image"] = ("docs/images.md's measured `make image` size (an upper bound); registry not asked"
                            + (f": {pull.how}" if pull is not None else ""))

    if config.get("remote", {}).get("python") == OVERLAY:
        job.image_bytes += OVERLAY_WHEEL_BYTES
        src["image"] += f" + {OVERLAY_WHEEL_BYTES / 1e6:.0f} MB of pip wheels for the overlay venv"

    if vast.get("uplink_mbps"):
        job.uplink_mbps, src["uplink"] = float(vast["uplink_mbps"]), "vast.uplink_mbps"
    elif measured.get("uplink_mbps"):
        job.uplink_mbps = float(measured["uplink_mbps"])
        src["uplink"] = f"measured {measured.get('uplink_how', 'by an earlier sync')}"
    else:
        src["uplink"] = f"{UPLINK_MBPS_DEFAULT:g} Mb/s default (measured after the first `up`)"
    job.corrections = {p: float(r) for p, r in (measured.get("corrections") or {}).items() if p in PHASES}
    return job


def _scanned(path: str | None, train_config: str | None) -> tuple[int, int, str]:
    """(videos, decoded pixels of all of them, how known) from `python -m trainer scan` of dataset.path."""
    from deploy.local import trainer_cli

    if not path or not os.path.isdir(path):
        return 0, 0, "none"
    out = trainer_cli.scan(str(path), train_config if train_config and os.path.isfile(train_config) else None)
    r = out.report
    if not r:
        return 0, 0, f"not scanned ({out.error}): extract not estimated"
    videos, d = int(r.get("videos") or 0), r.get("decode") or {}
    measured = int(d.get("videos_measured") or 0)
    if not measured:  # no headers read (no OpenCV here): the per-video 640x360 5-s figure
        return videos, 0, f"{videos} videos under dataset.path (durations unknown: decoded as 640x360 5-s clips)"
    pixels = int(d.get("pixel_frames") or 0) * videos // measured  # unreadable ones: as the average
    hours = (r.get("duration_s") or 0) / 3600
    top = next(iter(r.get("resolutions") or {}), "?")
    return videos, pixels, (f"{videos} videos under dataset.path, {hours:.1f} h, mostly {top} (dataset scan: "
                            f"decode scales with frames x pixels)")


def describe_inputs(job: Job) -> str:
    parts = [f"upload {job.upload_bytes / 1e9:.2f} GB ({job.sources.get('upload', '-')}) over "
             f"min(inet_down, uplink {job.uplink_mbps:g} Mb/s: {job.sources.get('uplink', '-')})"]
    if job.download_bytes or "download" in job.sources:
        parts.append(f"host download {job.download_bytes / 1e9:.2f} GB ({job.sources.get('download')})")
    parts.append(f"image {job.image_bytes / 1e9:.1f} GB ({job.sources.get('image', '-')})")
    parts.append(f"extract {job.videos:,} videos x {job.frames} frames ({job.backbone}"
                 + (f"; {job.sources['videos']})" if job.decode_pixel_frames else ")"))
    parts.append(f"train {job.epochs} epochs x {job.train_samples:,} samples")
    if job.corrections:
        parts.append("corrected by earlier runs: " + ", ".join(f"{p} x{r:.2f}" for p, r in job.corrections.items()))
    return "; ".join(parts)
