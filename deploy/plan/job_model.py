"""The job model: what a whole run costs on each offer, phase by phase, before renting.

The bill of a run is $/h x the hours it is rented, and those hours go to four phases:

    upload   the dataset (or only the feature cache) through min(offer inet_down, your uplink);
             a host-side download (dataset.url / dataset.kaggle) through inet_down alone
    pull     the image's compressed layers through inet_down
    extract  max(decode = the videos' decoded pixels / (CPU cores x pixels/s per core),
                 backbone = videos x frames per video / frames/s on the offer's GPU)
    train    start-up + epochs x epoch time, the epoch's FLOPs over the offer's TFLOPS x an efficiency

job cost = dph_total (the GPU and the disk at our size, per hour) x the hours of all four,
plus bandwidth both ways: the offer's inet_down_cost for the bytes it receives (dataset, image)
and its inet_up_cost for the bytes it sends back (`fetch`'s results). vast-ai/docs
guides/reference/billing.mdx:83: "You are charged bandwidth prices for every byte sent or received
to or from the instance". `rank` orders offers by that.

Every constant below says where it comes from. Figures measured by earlier runs of this
project (.deploy/plan.json, deploy/plan/report.py) replace or correct them: the uplink
measured by sync, and a measured/estimated ratio per phase.
Offer fields used (all in the vendor spec, vast-ai/docs api-reference/openapi/yaml/search_offers.yaml):
inet_down (Mb/s, as the vastai SDK's cli/util.py `required_inet_mbps` reads it), dph_total,
storage_total_cost, inet_down_cost and inet_up_cost ($/GB), cpu_cores_effective, total_flops (TFLOPs across all
GPUs), num_gpus, gpu_name, disk_bw (MB/s), dlperf_per_dphtotal.
"""

from __future__ import annotations

import math
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
DECODE_VIDEOS_PER_S_PER_CORE = 5.0  # measured 4.97 (2026-12-01); 7.84 at low load with keyframe seeks (2026-12-06)
# The same measurement per decoded pixel: 4.97 clips/s x 150 frames (5 s at 30 fps) x 640 x 360.
# The model charges every frame of a video, frames x pixels: `python -m trainer scan`
# gives both per video (container headers: frame count, width, height). Linear in pixels, this
# predicts 0.76 videos/s per core for docs/benchmarks.md's 720p/1080p H.264 clips (bench/decode_alternatives.py
# measured 0.88-1.02): about 5x slower than 640x360, and on the safe side by ~20 %. Since extract
# seeks to keyframes (trainer/seek_plan.py), a long clip decodes only the groups of pictures that
# hold its 20 frames (1,202 of 18,000 for 10 min at GOP 250, bench/frame_sampling.py), so for long
# clips this errs high, by up to ~10x: the estimate then overstates cost, never understates it.
DECODE_PIXEL_FRAMES_PER_S_PER_CORE = 4.97 * 150 * 640 * 360
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
# docs/images.md table: `make image` measured 6.8 GB (uncompressed, an upper bound of the
# compressed pull) - used when vast.image_gb is unset and the registry manifest is unreachable.
IMAGE_GB_FALLBACK = 6.8
# The default before anything is measured: a 100 Mb/s home uplink.
UPLINK_MBPS_DEFAULT = 100.0
# Disk read rate when an offer does not report disk_bw (MB/s); a SATA SSD's order of magnitude.
DISK_MBPS_FALLBACK = 500.0
# configs/train.yaml defaults, used when the train config lacks a key.
FRAMES_DEFAULT, EPOCHS_DEFAULT = 20, 100
SPLIT_DEFAULT = {"train": 0.70, "val": 0.15}
FEATURE_DIM = {"vgg19": 4096}  # trainer/backbone_settings.py VGG19_DIM; thumbnail: image_size ** 2
# What `fetch` brings back besides best_model.keras (deploy/fetch.py RESULTS): metrics, history, log,
# plots and TensorBoard scalars. An assumption of their order of magnitude, not a measurement.
FETCH_EXTRA_BYTES = 20_000_000


@dataclass
class Job:
    """What one run moves and computes; independent of the offer."""
    upload_bytes: int = 0          # rsync'ed through the user's uplink (dataset or feature cache)
    download_bytes: int = 0        # fetched by the host itself (dataset.url / dataset.kaggle)
    image_bytes: int = int(IMAGE_GB_FALLBACK * 1e9)
    videos: int = 0                # to extract on the host (0 when the cache is sent)
    # sum of frames x width x height over those videos (the dataset scan); 0: unknown, so the
    # 640x360 5-s clip figure per video is used
    decode_pixel_frames: int = 0
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

    def result_bytes(self) -> int:
        """What `fetch` downloads from the host: best_model.keras holds the float32 weights and Adam's two
        moments per weight (Keras saves the optimizer), plus FETCH_EXTRA_BYTES of logs, plots, TensorBoard."""
        return 3 * 4 * self.lstm_params() + FETCH_EXTRA_BYTES

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
        cores = max(_f(offer, "cpu_cores_effective", _f(offer, "cpu_cores", 1.0)), 1.0)
        if job.decode_pixel_frames:
            decode_s = job.decode_pixel_frames / (cores * DECODE_PIXEL_FRAMES_PER_S_PER_CORE)
        else:
            decode_s = job.videos / (cores * DECODE_VIDEOS_PER_S_PER_CORE)
        gpu_fps = BACKBONE_A100_FPS.get(job.backbone, KERAS_A100_VGG19_FPS) * per_gpu_tflops(offer) / A100_FP32_TFLOPS
        s["extract"] = EXTRACT_STARTUP_S + max(decode_s, job.videos * job.frames / gpu_fps)
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
    gb_out = job.result_bytes() / 1e9
    bandwidth_usd = gb_in * _f(offer, "inet_down_cost") + gb_out * _f(offer, "inet_up_cost")
    dominant = max(PHASES, key=lambda p: secs[p])
    return {
        "id": offer.get("id"),
        "gpus": f"{offer.get('num_gpus')}x {offer.get('gpu_name')}",
        "price_per_hour": round(price, 4),
        "job_cost_usd": round(price * hours + bandwidth_usd, 4),
        "job_hours": round(hours, 4),
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
