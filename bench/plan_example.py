"""The job model's worked example in docs/deploy-vast.md: the seed's 15,398 videos on two offers.

Prints every input with where it comes from, then each offer's phases, total and cost,
computed by deploy/plan/job_model.py itself (no TensorFlow, no network), so the page's figures
are this script's output.

    .venv/bin/python bench/plan_example.py [--dataset-gb 20] [--uplink-mbps 100]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy.plan import job_model  # noqa: E402

SEED_VIDEOS = 15_398  # seed report: "Dataset: 15,398 videos loaded correctly"

# Two rows in the vendor spec's shape (vast-ai/docs search_offers.yaml field names). The figures
# follow the example ($0.60/h at 100 Mb/s against $0.80/h at 2 Gb/s with twice the compute);
# total_flops of 2x RTX 5000 Ada = 2 x 65.3 TFLOPS FP32 (NVIDIA RTX 5000 Ada datasheet).
OFFERS = [
    {"id": "A (cheap hour)", "gpu_name": "RTX 5000Ada", "num_gpus": 2, "dph_total": 0.60, "inet_down": 100.0,
     "total_flops": 65.3, "cpu_cores_effective": 8.0, "disk_bw": 1000.0, "storage_total_cost": 0.0139,
     "inet_down_cost": 0.0},
    {"id": "B (fast pipe)", "gpu_name": "RTX 5000Ada", "num_gpus": 2, "dph_total": 0.80, "inet_down": 2000.0,
     "total_flops": 130.6, "cpu_cores_effective": 16.0, "disk_bw": 2000.0, "storage_total_cost": 0.0139,
     "inet_down_cost": 0.0},
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset-gb", type=float, default=20.0,
                    help="the videos' total size (the seed does not say; measure yours with du -sh dataset/)")
    ap.add_argument("--uplink-mbps", type=float, default=job_model.UPLINK_MBPS_DEFAULT)
    args = ap.parse_args()
    job = job_model.Job(upload_bytes=int(args.dataset_gb * 1e9), videos=SEED_VIDEOS,
                   train_samples=int(SEED_VIDEOS * 0.70), val_samples=int(SEED_VIDEOS * 0.15),
                   uplink_mbps=args.uplink_mbps)
    print(f"job: {SEED_VIDEOS:,} videos, {args.dataset_gb:g} GB, {job.frames} frames each, {job.backbone}, "
          f"{job.epochs} epochs over {job.train_samples:,} training + {job.val_samples:,} validation samples")
    print(f"  image {job.image_bytes / 1e9:g} GB; uplink {job.uplink_mbps:g} Mb/s; decode "
          f"{job_model.DECODE_VIDEOS_PER_S_PER_CORE:g} videos/s per core; "
          f"VGG19 {job_model.KERAS_A100_VGG19_FPS:,.0f} frames/s "
          f"per A100 ({job_model.A100_FP32_TFLOPS} TFLOPS)")
    print(f"  LSTM weights {job.lstm_params():,}; {job.epoch_flops() / 1e12:.2f} TFLOP per epoch at "
          f"{job_model.TRAIN_EFFICIENCY:.0%} of peak")
    for o in OFFERS:
        s = job_model.phase_seconds(o, job)
        e = job_model.estimate(o, job)
        decode = o["cpu_cores_effective"] * job_model.DECODE_VIDEOS_PER_S_PER_CORE
        gpu = job_model.KERAS_A100_VGG19_FPS * job_model.per_gpu_tflops(o) / job_model.A100_FP32_TFLOPS / job.frames
        print(f"\noffer {o['id']}: ${o['dph_total']:.2f}/h, inet_down {o['inet_down']:g} Mb/s, "
              f"{o['cpu_cores_effective']:g} cores, {o['total_flops']} TFLOPS")
        print(f"  upload  {job.upload_bytes * 8 / 1e6:,.0f} Mbit / min({o['inet_down']:g}, {job.uplink_mbps:g}) Mb/s"
              f" = {s['upload']:,.0f} s")
        print(f"  pull    {job.image_bytes * 8 / 1e6:,.0f} Mbit / {o['inet_down']:g} Mb/s = {s['pull']:,.0f} s")
        print(f"  extract {job_model.EXTRACT_STARTUP_S:g} s + {SEED_VIDEOS:,} / min(decode {decode:g}, GPU {gpu:,.0f}) "
              f"videos/s = {s['extract']:,.0f} s")
        print(f"  train   {job_model.TRAIN_STARTUP_S:g} s + cache read + {job.epochs} x "
              f"{job.epoch_flops() / (o['total_flops'] * 1e12 * job_model.TRAIN_EFFICIENCY):.1f} s = {s['train']:,.0f} s")
        print(f"  total   {job_model.fmt_minutes(e['job_hours'])} -> ${e['job_cost_usd']:.2f}; {job_model.bound(e)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
