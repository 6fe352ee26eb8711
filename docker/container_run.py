"""Run trainer steps in one container of the image, with host folders mounted.

Shared by docker/smoke.py and docker/local_run.py. One container runs all the steps
(`sh -c 'step1 && step2 ...'`, every argument shell-quoted) rather than one container
per step: each new container copies the image's filesystem under the vfs storage
driver, gigabytes for the GPU image.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from pathlib import Path


def nvidia_runtime_available(client) -> bool:
    """True when `--gpus all` can work: the engine knows the NVIDIA runtime or its hook is installed.

    Asking for GPUs without it makes `docker run` fail outright, so a GPU-less
    laptop runs the same image on its CPU instead.
    """
    runtimes = client.info().get("Runtimes") or {}
    return "nvidia" in runtimes or shutil.which("nvidia-container-runtime-hook") is not None


def step_script(steps: list[list[str]]) -> str:
    """One shell line running each step in turn, announcing it, stopping at the first failure."""
    parts = []
    for argv in steps:
        line = shlex.join(argv)
        parts.append(f"echo {shlex.quote('+ ' + line)} && {line}")
    return " && ".join(parts)


def run_steps(client, image: str, steps: list[list[str]], *, mounts: dict[str, Path],
              read_only: tuple[str, ...] = (), workdir: str = "/workspace", gpus: bool = False,
              network: str | None = None, env: dict[str, str] | None = None, log_prefix: str = "") -> int:
    """Run `steps` in a fresh container, stream its output here, return its exit status.

    `mounts` maps container paths to host paths (folders created if missing), bind-mounted
    read-write except the container paths listed in `read_only`. The container runs as
    the calling user, so what it writes on the host belongs to that user; it is removed
    afterwards, and Ctrl-C stops it.
    """
    from docker.types import DeviceRequest, Mount  # the SDK: imported here so that importing this module never needs it

    binds = []
    for target, source in mounts.items():
        if not Path(source).exists():
            Path(source).mkdir(parents=True)
        binds.append(Mount(target=target, source=str(Path(source).resolve()), type="bind",
                           read_only=target in read_only))
    environment = {"HOME": "/tmp", "PYTHONUNBUFFERED": "1", **(env or {})}
    container = client.containers.create(
        image, ["sh", "-c", step_script(steps)], mounts=binds, working_dir=workdir,
        user=f"{os.getuid()}:{os.getgid()}", environment=environment, network_mode=network,
        device_requests=[DeviceRequest(count=-1, capabilities=[["gpu"]])] if gpus else None,
        # The trainer's data loaders share memory between processes; Docker's 64 MB default is too small.
        shm_size="2g", init=True,
    )
    try:
        container.start()
        at_line_start = True
        for chunk in container.logs(stream=True, follow=True):
            text = chunk.decode(errors="replace")
            if log_prefix:  # prefix every line, and every progress-bar redraw (\r) too
                pieces = re.split(r"(?<=[\r\n])", text)
                text = "".join((log_prefix if (i or at_line_start) and piece.strip("\r\n") else "") + piece
                               for i, piece in enumerate(pieces))
                at_line_start = text.endswith(("\r", "\n"))
            sys.stdout.write(text)
            sys.stdout.flush()
        return int(container.wait()["StatusCode"])
    except KeyboardInterrupt:
        print(f"\n{log_prefix}interrupted: stopping the container (finished epochs and cached "
              "features are kept; train again with --resume)", file=sys.stderr)
        container.stop(timeout=20)
        raise
    finally:
        _remove(container)


def _remove(container) -> None:
    """Remove a finished container without letting a slow removal fail the run.

    Under the vfs storage driver a container's filesystem is a full copy of its image,
    gigabytes to delete: on a busy disk that outlasts the SDK's 60 s request timeout,
    while the engine goes on removing it by itself.
    """
    import requests

    try:
        container.remove(force=True)
    except requests.exceptions.Timeout:
        print(f"note: the Docker engine is still removing container {container.short_id}", file=sys.stderr)
