"""The job model: what a whole run costs on each offer, phase by phase, before renting.

The bill of a run is $/h x the hours it is rented, and those hours go to four phases:

    upload   the dataset (or only the feature cache) through min(offer inet_down, your uplink);
             a host-side download (dataset.url / dataset.kaggle) through inet_down alone
    pull     the image's compressed layers through inet_down
    extract  videos / min(decode rate = CPU cores x videos/s per core,
                          backbone rate = frames/s on the offer's GPU / frames per video)
    train    start-up + epochs x epoch time, the epoch's FLOPs over the offer's TFLOPS x an efficiency

job cost = dph_total (the GPU and the disk at our size, per hour) x the hours of all four,
plus the offer's inet_down_cost for the bytes it receives. `rank` orders offers by that.

Every constant below says where it comes from. Figures measured by earlier runs of this
project (.deploy/plan.json, deploy/plan_report.py) replace or correct them: the uplink
measured by sync, and a measured/estimated ratio per phase.
Offer fields used (all in the vendor spec, vast-ai/docs api-reference/openapi/yaml/search_offers.yaml):
inet_down (Mb/s, as the vastai SDK's cli/util.py `required_inet_mbps` reads it), dph_total,
storage_total_cost, inet_down_cost ($/GB), cpu_cores_effective, total_flops (TFLOPs across all
GPUs), num_gpus, gpu_name, disk_bw (MB/s), dlperf_per_dphtotal.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

PHASES = ("upload", "pull", "extract", "train")

# -- constants, each with its source ---------------------------------------------------
# Keras Applications table (keras.io/api/applications): VGG19, "Time (ms) per inference step (GPU)"
# 4.4 ms, "GPU: Tesla A100, Batch size: 32" -> 32 / 0.0044 frames/s. Our backbone is VGG19 up to fc2,
# the same convolutions and fc1/fc2 (only the 1000-way softmax layer dropped).
KERAS_A100_VGG19_FPS = 32 / 0.0044
# NVIDIA A100 Tensor Core GPU datasheet: 19.5 TFLOPS FP32 (non-tensor). The anchor that
# turns an offer's total_flops into "A100s worth" for the figure above.
A100_FP32_TFLOPS = 19.5
# bench/plan_inputs.py, "decode, 1 thread": sample_frames on 640x360 5-s H.264 clips (x264 defaults),
# one process, one decoder thread = one extract worker per core (2-core AMD EPYC dev machine).
DECODE_VIDEOS_PER_S_PER_CORE = 5.0  # measured 4.97 (2026-12-01)
# Backbone frames/s on one A100-equivalent GPU. thumbnail does no GPU work (a resize): decode-bound.
BACKBONE_A100_FPS = {"vgg19": KERAS_A100_VGG19_FPS, "thumbnail": math.inf}
# Assumption, not measured (no GPU was available to this work): the fraction of peak FP32 FLOP/s the
# 3 x BiLSTM(128) training step reaches at batch 64. Recurrent steps are small matmuls; 5 % gives
# ~7 s per 10,778-sample epoch on an A100. The first real run's ratio (.deploy/plan.json) corrects it.
TRAIN_EFFICIENCY = 0.05
# Assumption: Python + TensorFlow import, backbone build and weights load before the first video
# (extract) or the first step (train, including graph tracing / XLA compile). Corrected by runs.
EXTRACT_STARTUP_S = 60.0
TRAIN_STARTUP_S = 120.0
# README "Docker images" table: `make image` measured 6.8 GB (uncompressed, an upper bound of the
# compressed pull) - used when vast.image_gb is unset and the registry manifest is unreachable.
IMAGE_GB_FALLBACK = 6.8
# The default before anything is measured: a 100 Mb/s home uplink.
UPLINK_MBPS_DEFAULT = 100.0
# Disk read rate when an offer does not report disk_bw (MB/s); a SATA SSD's order of magnitude.
DISK_MBPS_FALLBACK = 500.0
# configs/train.yaml defaults, used when the train config lacks a key.
FRAMES_DEFAULT, EPOCHS_DEFAULT = 20, 100
SPLIT_DEFAULT = {"train": 0.70, "val": 0.15}
FEATURE_DIM = {"vgg19": 4096}  # trainer/backbone.py VGG19_DIM; thumbnail: image_size ** 2


@dataclass
class Job:
    """What one run moves and computes; independent of the offer."""
    upload_bytes: int = 0          # rsync'ed through the user's uplink (dataset or feature cache)
    download_bytes: int = 0        # fetched by the host itself (dataset.url / dataset.kaggle)
    image_bytes: int = int(IMAGE_GB_FALLBACK * 1e9)
    videos: int = 0                # to extract on the host (0 when the cache is sent)
    frames: int = FRAMES_DEFAULT
    backbone: str = "vgg19"
    feature_dim: int = 4096
    epochs: int = EPOCHS_DEFAULT
    train_samples: int = 0
    val_samples: int = 0
    lstm_units: int = 128
    lstm_layers: int = 3
    uplink_mbps: float = UPLINK_MBPS_DEFAULT
    sources: dict = field(default_factory=dict)       # input -> where its figure came from
    corrections: dict = field(default_factory=dict)   # phase -> measured / estimated, from earlier runs

    def lstm_params(self) -> int:
        """Weights of the bidirectional LSTM stack (trainer/model.py): 2 directions x 4 gates."""
        n, width = 0, self.feature_dim
        for _ in range(self.lstm_layers):
            n += 2 * 4 * (self.lstm_units * (width + self.lstm_units) + self.lstm_units)
            width = 2 * self.lstm_units
        return n

    def epoch_flops(self) -> float:
        """~2 FLOPs per weight per time step forward, x3 for a training step (forward + backward)."""
        forward = 2.0 * self.lstm_params() * self.frames
        return self.train_samples * 3 * forward + self.val_samples * forward


def _f(offer: dict, key: str, default: float = 0.0) -> float:
    v = offer.get(key)
    try:
        return float(v) if v is not None else default
    except (TypeError, ValueError):
        return default


def per_gpu_tflops(offer: dict) -> float:
    """total_flops is across all GPUs (spec); extraction uses one, training all of them."""
    return _f(offer, "total_flops", A100_FP32_TFLOPS * max(1, int(_f(offer, "num_gpus", 1)))) / max(
        1, int(_f(offer, "num_gpus", 1)))


def phase_seconds(offer: dict, job: Job) -> dict[str, float]:
    down = max(_f(offer, "inet_down", 1.0), 1e-3)  # Mb/s
    disk = _f(offer, "disk_bw", DISK_MBPS_FALLBACK) or DISK_MBPS_FALLBACK  # MB/s
    up = min(down, job.uplink_mbps) if job.upload_bytes else down
    s = {
        # rsync through both pipes; a host-side archive through inet_down, then unpacked on its disk
        "upload": job.upload_bytes * 8 / 1e6 / up + job.download_bytes * 8 / 1e6 / down
                  + job.download_bytes / 1e6 / disk,
        "pull": job.image_bytes * 8 / 1e6 / down,
        "extract": 0.0,
        "train": 0.0,
    }
    if job.videos:
        decode = max(_f(offer, "cpu_cores_effective", _f(offer, "cpu_cores", 1.0)), 1.0) * DECODE_VIDEOS_PER_S_PER_CORE
        gpu_fps = BACKBONE_A100_FPS.get(job.backbone, KERAS_A100_VGG19_FPS) * per_gpu_tflops(offer) / A100_FP32_TFLOPS
        s["extract"] = EXTRACT_STARTUP_S + job.videos / min(decode, gpu_fps / job.frames)
    if job.epochs and job.train_samples:
        flops = _f(offer, "total_flops", A100_FP32_TFLOPS) * 1e12 * TRAIN_EFFICIENCY
        cache_read = (job.train_samples + job.val_samples) * job.frames * job.feature_dim * 2 / 1e6 / disk  # float16
        s["train"] = TRAIN_STARTUP_S + cache_read + job.epochs * job.epoch_flops() / flops
    for phase, ratio in job.corrections.items():
        if phase in s and ratio and ratio > 0:
            s[phase] *= ratio
    return s


def estimate(offer: dict, job: Job, price_per_hour: float | None = None) -> dict:
    """One offer's whole-job estimate: hours per phase, total, $ and the phase that dominates."""
    secs = phase_seconds(offer, job)
    hours = sum(secs.values()) / 3600
    price = float(price_per_hour if price_per_hour is not None else _f(offer, "dph_total"))
    gb_in = (job.upload_bytes + job.download_bytes + job.image_bytes) / 1e9
    bandwidth_usd = gb_in * _f(offer, "inet_down_cost")
    dominant = max(PHASES, key=lambda p: secs[p])
    return {
        "id": offer.get("id"),
        "gpus": f"{offer.get('num_gpus')}x {offer.get('gpu_name')}",
        "price_per_hour": round(price, 4),
        "job_cost_usd": round(price * hours + bandwidth_usd, 4),
        "job_hours": round(hours, 3),
        "phases": {p: round(secs[p] / 3600, 4) for p in PHASES},
        "disk_usd": round(_f(offer, "storage_total_cost") * hours, 2),
        "bandwidth_usd": round(bandwidth_usd, 2),
        "dominant": dominant,
        "inet_down_mbps": _f(offer, "inet_down"),
        "dlperf_per_dphtotal": _f(offer, "dlperf_per_dphtotal"),
    }


def rank(offers: list[dict], job: Job, order_by: str = "job_cost", price_of=None) -> list[tuple[dict, dict]]:
    """(offer, estimate) pairs, best first. order_by: job_cost | price | dlperf_per_dollar."""
    pairs = [(o, estimate(o, job, price_of(o) if price_of else None)) for o in offers]
    if order_by == "price":
        key = lambda p: (p[1]["price_per_hour"], -_f(p[0], "reliability2", _f(p[0], "reliability")))  # noqa: E731
    elif order_by == "dlperf_per_dollar":
        key = lambda p: (-p[1]["dlperf_per_dphtotal"], p[1]["price_per_hour"])  # noqa: E731
    else:
        key = lambda p: (p[1]["job_cost_usd"], p[1]["job_hours"])  # noqa: E731
    return sorted(pairs, key=key)


def fmt_minutes(hours: float) -> str:
    m = hours * 60
    if m < 1:
        return f"{m * 60:.0f} s"
    return f"{m:.0f} min" if m < 120 else f"{hours:.1f} h"


def bound(est: dict) -> str:
    """'upload-bound: 41 min of 58'."""
    p = est["dominant"]
    return f"{p}-bound: {fmt_minutes(est['phases'][p])} of {fmt_minutes(est['job_hours'])}"


def breakdown(est: dict) -> str:
    return ", ".join(f"{p} {fmt_minutes(est['phases'][p])}" for p in PHASES)


# -- the job from the deploy config ---------------------------------------------------
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


def job_from_config(config: dict, measured: dict | None = None, env=None, lookups: bool = True) -> Job:
    """The Job for this project: sizes found here, figures measured by earlier runs, or documented defaults.

    `lookups`: ask the network (HEAD of dataset.url, the Kaggle API, the image registry) for sizes.
    """
    import os

    from deploy import plan_sizes

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
            from deploy import download_dataset
            try:
                url, headers = download_dataset.source(ds.get("url"), ds.get("kaggle"), ds.get("token_env"), env)
            except Exception:  # missing credentials: `sync` will say so; the estimate just lacks the size
                url, headers = None, {}
            if ds.get("kaggle") and url:
                size = plan_sizes.kaggle_size(ds["kaggle"], headers,
                                              env.get("DEPLOY_KAGGLE_API", download_dataset.KAGGLE_API))
            elif url:
                size = plan_sizes.content_length(url, headers)
        job.download_bytes = size or 0
        src["download"] = ("Kaggle API totalBytes" if ds.get("kaggle") else "HTTP Content-Length") if size else \
            "unknown (the server did not say): counted as 0"
        videos = int(measured.get("videos") or 0)
        src["videos"] = "the last run's dataset" if videos else "unknown until the host has it: extract not estimated"
    else:
        cache_bytes, _ = plan_sizes.folder_stats(ds.get("cache"))
        data_bytes, videos = plan_sizes.folder_stats(ds.get("path"))
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
        job.videos = videos_to_extract
        src["videos"] = f"{videos} video files under dataset.path" if videos else "none"
    if not job.videos and (ds.get("url") or ds.get("kaggle")):
        job.videos = videos
    job.train_samples = int(videos * t["train_frac"])
    job.val_samples = int(videos * t["val_frac"])

    image_gb = vast.get("image_gb")
    if image_gb:
        job.image_bytes, src["image"] = int(float(image_gb) * 1e9), "vast.image_gb"
    else:
        got = plan_sizes.image_compressed_bytes(vast.get("image")) if lookups else None
        if got:
            job.image_bytes, src["image"] = got, "registry manifest (compressed layers)"
        else:
            src["image"] = "README's measured `make image` size; registry manifest not reachable"

    if vast.get("uplink_mbps"):
        job.uplink_mbps, src["uplink"] = float(vast["uplink_mbps"]), "vast.uplink_mbps"
    elif measured.get("uplink_mbps"):
        job.uplink_mbps = float(measured["uplink_mbps"])
        src["uplink"] = f"measured {measured.get('uplink_how', 'by an earlier sync')}"
    else:
        src["uplink"] = f"{UPLINK_MBPS_DEFAULT:g} Mb/s default (measured after the first `up`)"
    job.corrections = {p: float(r) for p, r in (measured.get("corrections") or {}).items() if p in PHASES}
    return job


def describe_inputs(job: Job) -> str:
    parts = [f"upload {job.upload_bytes / 1e9:.2f} GB ({job.sources.get('upload', '-')}) over "
             f"min(inet_down, uplink {job.uplink_mbps:g} Mb/s: {job.sources.get('uplink', '-')})"]
    if job.download_bytes or "download" in job.sources:
        parts.append(f"host download {job.download_bytes / 1e9:.2f} GB ({job.sources.get('download')})")
    parts.append(f"image {job.image_bytes / 1e9:.1f} GB ({job.sources.get('image', '-')})")
    parts.append(f"extract {job.videos:,} videos x {job.frames} frames ({job.backbone})")
    parts.append(f"train {job.epochs} epochs x {job.train_samples:,} samples")
    if job.corrections:
        parts.append("corrected by earlier runs: " + ", ".join(f"{p} x{r:.2f}" for p, r in job.corrections.items()))
    return "; ".join(parts)
