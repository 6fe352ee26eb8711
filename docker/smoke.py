"""`make docker-smoke`: build the CPU image and run the whole trainer in it, end to end.

synth -> extract -> info -> train (2 epochs) -> evaluate run inside one container
with the dataset, cache and output folders bind-mounted from a temporary folder on
the host; then the outputs are checked from the host: best_model.keras,
training_history.csv with one row per epoch, metrics.json with an accuracy, and
everything owned by the calling user. The container gets no network at all, so
the run also proves the image needs none once built.

Works without Docker Hub: image_build falls back to a locally built Debian base.
Exit 0 on success, 1 when a check fails, 2 when there is no engine or the build fails.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import container_run  # noqa: E402  (sibling modules; docker/ is not a package: it would shadow the SDK)
import image_build  # noqa: E402

EPOCHS = 2
VIDEOS = 40  # enough for every split to hold both classes at 70/15/15
DEMO_CONFIG = "/opt/violence-trainer/configs/demo.yaml"  # baked into the image's last layer


def smoke_steps(epochs: int = EPOCHS, videos: int = VIDEOS) -> list[list[str]]:
    t = ["python3", "-m", "trainer"]
    return [
        t + ["synth", "--out", "/workspace/dataset", "--videos", str(videos), "--seed", "0"],
        t + ["extract", "--dataset-path", "/workspace/dataset", "--cache-dir", "/workspace/cache",
             "--config", DEMO_CONFIG, "--quiet"],
        ["sh", "-c", "python3 -m trainer info --cache-dir /workspace/cache --json > /workspace/output/info.json"],
        t + ["train", "--cache-dir", "/workspace/cache", "--output-dir", "/workspace/output/run",
             "--config", DEMO_CONFIG, "--epochs", str(epochs), "--no-evaluate"],
        t + ["evaluate", "--cache-dir", "/workspace/cache", "--model", "/workspace/output/run/best_model.keras"],
    ]


def check_outputs(root: Path, epochs: int = EPOCHS, videos: int = VIDEOS) -> list[str]:
    """Every problem found in the host-side outputs (empty when all is well)."""
    problems = []
    run = root / "output" / "run"
    try:
        info = json.loads((root / "output" / "info.json").read_text())
        if info.get("videos") != videos or info.get("failed"):
            problems.append(f"info: expected {videos} cached videos and no failures, got "
                            f"videos={info.get('videos')} failed={info.get('failed')}")
    except (OSError, ValueError) as exc:
        problems.append(f"info.json unreadable: {exc}")
    model = run / "best_model.keras"
    if not model.is_file() or model.stat().st_size == 0:
        problems.append(f"{model} missing or empty")
    try:
        with open(run / "training_history.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        if len(rows) != epochs:
            problems.append(f"training_history.csv: expected {epochs} rows, got {len(rows)}")
    except OSError as exc:
        problems.append(f"training_history.csv unreadable: {exc}")
    try:
        metrics = json.loads((run / "metrics.json").read_text())
        accuracy = metrics.get("accuracy")
        if not isinstance(accuracy, (int, float)) or not 0.0 <= accuracy <= 1.0:
            problems.append(f"metrics.json: accuracy should be a number in [0, 1], got {accuracy!r}")
    except (OSError, ValueError) as exc:
        problems.append(f"metrics.json unreadable: {exc}")
    foreign = [p for p in root.rglob("*") if p.stat().st_uid != os.getuid()]
    if foreign:
        problems.append(f"{len(foreign)} files not owned by uid {os.getuid()}, e.g. {foreign[0]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="docker/smoke.py", description=__doc__.splitlines()[0])
    p.add_argument("--variant", choices=["cpu", "thin"], default="cpu",
                   help="cpu: docker/Dockerfile; thin: docker/thin.Dockerfile on a local stand-in for Vast's "
                        "TensorFlow image unless --base-image names the real one (default: %(default)s)")
    p.add_argument("--image", help="tag to build and run (default: violence-trainer:<variant>)")
    p.add_argument("--base-image", default=None,
                   help="base image (default: the slim Python image, or a local Debian one when it cannot be pulled)")
    p.add_argument("--no-build", action="store_true", help="run an already built --image")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (kept anyway on failure)")
    args = p.parse_args(argv)
    args.image = args.image or image_build.DEFAULT_TAGS[args.variant]

    timings = {}
    try:
        client = image_build.docker_client()
        if not args.no_build:
            started = time.monotonic()
            base = args.base_image or os.environ.get("VAST_TF_IMAGE" if args.variant == "thin" else "BASE_IMAGE")
            if args.variant == "thin" and not base:
                base = image_build.build_standin(progress="plain")
            image_build.build(args.variant, args.image, base, progress="plain")
            timings["build"] = time.monotonic() - started
    except image_build.BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    root = Path(tempfile.mkdtemp(prefix="docker-smoke-"))
    mounts = {f"/workspace/{name}": root / name for name in ("dataset", "cache", "output")}
    started = time.monotonic()
    status = container_run.run_steps(client, args.image, smoke_steps(), mounts=mounts, network="none",
                                     env={"TF_CPP_MIN_LOG_LEVEL": "2"}, log_prefix="[container] ")
    timings["run"] = time.monotonic() - started
    problems = [f"the container exited with status {status}"] if status else check_outputs(root)

    spent = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    if problems:
        print("docker smoke FAILED:\n  " + "\n  ".join(problems) + f"\n  outputs kept in {root}", file=sys.stderr)
        return 1
    print(f"docker smoke passed ({spent}): synth -> extract -> train ({EPOCHS} epochs) -> evaluate in {args.image}")
    if args.keep:
        print(f"outputs in {root}")
    else:
        shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
