"""`make local-run DATASET=path`: the full trainer in the image, on this machine.

Runs the same two commands a rented instance runs -- `python -m trainer extract` then
`python -m trainer train` (which ends with the test-split evaluation: metrics.json and
plots/) -- in one container, with:

    DATASET (read-only)   -> /workspace/dataset
    cache folder          -> /workspace/cache     (features; reused by later runs)
    output folder         -> /workspace/output    (best_model.keras, checkpoints, history, metrics)
    this checkout's trainer/ (read-only) -> /workspace/app/trainer, the working directory,
                             so local code changes are used without rebuilding the image

GPUs are passed through (`--gpus all`) only when the engine has the NVIDIA runtime;
otherwise the same image runs on the CPU. Exit status: the container's; 2 for a usage
error (missing dataset, no engine, unknown image).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import container_run  # noqa: E402  (sibling modules; docker/ is not a package: it would shadow the SDK)
import image_build  # noqa: E402

REPO = image_build.REPO


def trainer_steps(config: bool, train_args: list[str]) -> list[list[str]]:
    t = ["python3", "-m", "trainer"]
    cfg = ["--config", "/workspace/config.yaml"] if config else []
    return [
        # Which copy of the code runs: this checkout's (mounted), never silently the image's.
        ["python3", "-c", "import trainer; print('trainer code:', trainer.__file__)"],
        t + ["extract", "--dataset-path", "/workspace/dataset", "--cache-dir", "/workspace/cache", *cfg],
        t + ["train", "--cache-dir", "/workspace/cache", "--output-dir", "/workspace/output", *cfg, *train_args],
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="docker/local_run.py", description=__doc__.splitlines()[0],
                                epilog="Arguments after -- go to `trainer train`, e.g. -- --epochs 5 --resume")
    p.add_argument("--dataset", required=True, help="folder of class folders of videos")
    p.add_argument("--cache-dir", help="feature cache (default: cache/<dataset folder name>)")
    p.add_argument("--output-dir", help="run folder (default: runs/local-<UTC time>)")
    p.add_argument("--config", help="training YAML (default: the built-in defaults, as configs/train.yaml)")
    p.add_argument("--image", help="default: violence-trainer:gpu with GPUs, violence-trainer:cpu without; built if missing")
    p.add_argument("--gpus", choices=["auto", "all", "none"], default="auto",
                   help="auto: all GPUs when the NVIDIA runtime is installed (default)")
    argv = sys.argv[1:] if argv is None else argv
    train_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)

    dataset = Path(args.dataset).expanduser()
    if not dataset.is_dir():
        print(f"error: DATASET={args.dataset} is not a folder (expected class folders of videos)", file=sys.stderr)
        return 2
    if args.config and not Path(args.config).is_file():
        print(f"error: --config {args.config}: no such file", file=sys.stderr)
        return 2
    cache = Path(args.cache_dir or REPO / "cache" / dataset.resolve().name)
    output = Path(args.output_dir or REPO / "runs" / time.strftime("local-%Y%m%d-%H%M%S", time.gmtime()))

    try:
        import docker

        client = image_build.docker_client()
        gpus = args.gpus == "all" or (args.gpus == "auto" and container_run.nvidia_runtime_available(client))
        image = args.image or image_build.DEFAULT_TAGS["gpu" if gpus else "cpu"]
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            if args.image and args.image not in image_build.DEFAULT_TAGS.values():
                print(f"error: no local image {image} (build it, or docker pull it)", file=sys.stderr)
                return 2
            variant = "gpu" if image == image_build.DEFAULT_TAGS["gpu"] else "cpu"
            print(f"local-run: {image} is not built yet; building it once (make image{'' if variant == 'gpu' else '-cpu'})",
                  file=sys.stderr)
            image_build.build(variant, image)
    except image_build.BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    mounts = {"/workspace/dataset": dataset, "/workspace/cache": cache, "/workspace/output": output,
              "/workspace/app/trainer": REPO / "trainer"}
    if args.config:
        mounts["/workspace/config.yaml"] = Path(args.config)
    print(f"local-run: {image} on {'all GPUs' if gpus else 'the CPU (no NVIDIA runtime)' if args.gpus == 'auto' else 'the CPU'}\n"
          f"  dataset {dataset}\n  cache   {cache}\n  output  {output}", file=sys.stderr)
    status = container_run.run_steps(
        client, image, trainer_steps(bool(args.config), train_args), mounts=mounts, gpus=gpus,
        read_only=("/workspace/dataset", "/workspace/app/trainer", "/workspace/config.yaml"),
        workdir="/workspace/app", env={"PYTHONDONTWRITEBYTECODE": "1"})
    if status == 0:
        print(f"local-run: done; results in {output}", file=sys.stderr)
    else:
        print(f"local-run: the trainer exited with status {status}; what finished is kept in {output} "
              f"and {cache} (add -- --resume to continue training)", file=sys.stderr)
    return status


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        raise SystemExit(130) from None
