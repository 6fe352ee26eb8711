"""Build and push the trainer's images: `make image`, `make image-cpu`, `make push`.

    python docker/image_build.py build --variant gpu|cpu [--tag T] [--base-image B] [--bake-weights]
    python docker/image_build.py build --variant thin [--base-image VENDOR_TF_IMAGE]
    python docker/image_build.py standin      (a local stand-in for Vast's TensorFlow image; prints its tag)
    python docker/image_build.py push IMAGE [--source violence-trainer:gpu]

Builds go through the docker CLI, not the Python SDK: the Dockerfile needs BuildKit
(RUN --mount for the bind-mounted pyproject.toml and the CA secret) and the SDK only
speaks the legacy builder. Everything else (inspect, pull, tag, push, credentials)
uses the SDK.

The default base (python:3.11-slim-bookworm) comes from Docker Hub; when it cannot be
pulled, docker/build_base.sh builds an equivalent one from a Debian mirror.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "docker" / "Dockerfile"
THIN_DOCKERFILE = REPO / "docker" / "thin.Dockerfile"
STANDIN_DOCKERFILE = REPO / "docker" / "vast-tf-standin.Dockerfile"
DEFAULT_BASE = "python:3.11-slim-bookworm"
DEFAULT_TAGS = {"gpu": "violence-trainer:gpu", "cpu": "violence-trainer:cpu", "thin": "violence-trainer:thin"}
# The host's CA bundle, passed as the `extra_ca` build secret so pip inside the build
# trusts whatever the host trusts (a TLS-intercepting proxy's CA included).
HOST_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")


class BuildError(Exception):
    """A problem the user must fix; main() prints it on one line and exits 2."""


def project() -> dict:
    with open(REPO / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]


def tensorflow_spec(variant: str) -> str:
    """The pinned TensorFlow requirement of pyproject.toml's `gpu` or `cpu` extra."""
    extra = project()["optional-dependencies"][variant]
    specs = [r for r in extra if r.lower().startswith("tensorflow")]
    if len(specs) != 1:
        raise BuildError(f"pyproject.toml: the `{variant}` extra must hold exactly one tensorflow requirement")
    return specs[0]


def source_url() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "remote", "get-url", "origin"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    url = out.stdout.strip()
    # Never put credentials embedded in a remote URL into an image label.
    return re.sub(r"//[^/@]+@", "//", url) if out.returncode == 0 and url else "unknown"


REQUEST_TIMEOUT_S = 900


def docker_client():
    import docker  # the SDK; imported here so `--help` works without it

    try:
        # Under the vfs storage driver (where overlayfs cannot run) creating a container copies the
        # whole image, gigabytes, and the engine answers only when done: the SDK's 60 s request
        # timeout failed `make local-run` on a busy disk while the engine was still working.
        client = docker.from_env(timeout=REQUEST_TIMEOUT_S)
        client.ping()
    except Exception as exc:  # DockerException, requests errors, PermissionError: all mean "no engine"
        raise BuildError(f"no Docker engine answers ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); start dockerd "
                         "or check DOCKER_HOST and your access to the socket") from None
    return client


def buildkit_cli() -> list[str]:
    """argv prefix of a docker CLI that builds with BuildKit.

    The buildx plugin if any `docker` on PATH has it; otherwise a CLI older than 23,
    which still carries BuildKit inside (DOCKER_BUILDKIT=1). Debian's docker.io package
    is such a CLI, and may sit behind a newer plugin-less one earlier on PATH.
    """
    candidates = []
    for folder in os.get_exec_path():
        exe = Path(folder) / "docker"
        if exe.is_file() and os.access(exe, os.X_OK) and exe.resolve() not in [c.resolve() for c in candidates]:
            candidates.append(exe)
    if not candidates:
        raise BuildError("the docker CLI is not installed (Debian: apt-get install docker.io)")
    for exe in candidates:
        if subprocess.run([exe, "buildx", "version"], capture_output=True).returncode == 0:
            return [str(exe), "buildx", "build", "--load"]
    for exe in candidates:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True)
        major = re.search(r"version (\d+)\.", out.stdout)
        if major and int(major.group(1)) < 23:
            return [str(exe), "build"]
    raise BuildError("docker build needs BuildKit: install the buildx plugin "
                     "(Debian/Ubuntu: docker-buildx; Docker's own repository: docker-buildx-plugin)")


def resolve_base(client, requested: str | None) -> str:
    """The base image to build on: the one asked for, else the slim Python image, else a local one."""
    if requested:
        return requested
    import docker

    try:
        client.images.get(DEFAULT_BASE)
        return DEFAULT_BASE
    except docker.errors.ImageNotFound:
        pass
    print(f"image_build: pulling {DEFAULT_BASE} ...", file=sys.stderr)
    try:
        repo, tag = DEFAULT_BASE.split(":")
        client.images.pull(repo, tag=tag)
        return DEFAULT_BASE
    except docker.errors.APIError as exc:
        reason = str(exc.explanation or exc).splitlines()[0]
        print(f"image_build: cannot pull {DEFAULT_BASE} ({reason}); building a Debian base locally "
              "with docker/build_base.sh", file=sys.stderr)
    out = subprocess.run(["bash", str(REPO / "docker" / "build_base.sh")], stdout=subprocess.PIPE, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        raise BuildError("docker/build_base.sh failed (see above); or pass --base-image / BASE_IMAGE=<an image you can pull>")
    return out.stdout.strip().splitlines()[-1]


def thin_default_base() -> str:
    """The vendor TensorFlow image thin.Dockerfile names by default (its VAST_TF_IMAGE)."""
    found = re.search(r"^ARG VAST_TF_IMAGE=(\S+)", THIN_DOCKERFILE.read_text(), re.M)
    if not found:
        raise BuildError("docker/thin.Dockerfile has no default VAST_TF_IMAGE")
    return found.group(1)


def build(variant: str, tag: str | None = None, base_image: str | None = None, *,
          bake_weights: bool = False, extra_ca: str | None = "auto", network: str | None = None,
          progress: str = "auto", context: Path = REPO) -> str:
    """Build one variant and return its tag. `context` is the repository to build from.

    gpu/cpu: docker/Dockerfile on a Debian Python base. thin: docker/thin.Dockerfile on
    Vast's TensorFlow image (`base_image`; default: the Dockerfile's VAST_TF_IMAGE).
    """
    if variant not in DEFAULT_TAGS:
        raise BuildError(f"unknown variant {variant!r}: gpu, cpu or thin")
    if variant == "thin" and bake_weights:
        raise BuildError("--bake-weights is for the gpu/cpu images (the thin image keeps to its own small layers)")
    tag = tag or DEFAULT_TAGS[variant]
    client = docker_client()
    common = ["--build-arg", f"VERSION={project()['version']}", "--build-arg", f"SOURCE={source_url()}"]
    if variant == "thin":
        base = base_image or thin_default_base()
        args = ["--file", str(THIN_DOCKERFILE), "--build-arg", f"VAST_TF_IMAGE={base}"] + common
    else:
        base = resolve_base(client, base_image)
        args = ["--file", str(DOCKERFILE), "--build-arg", f"BASE_IMAGE={base}",
                "--build-arg", f"TENSORFLOW={tensorflow_spec(variant)}",
                "--build-arg", f"BAKE_VGG19_WEIGHTS={int(bake_weights)}"] + common
    return _buildkit(client, variant, tag, base, args, extra_ca, network, progress, context)


def vendor_tf_version() -> str:
    """The TensorFlow version of the vendor image thin.Dockerfile builds on: `2.19.0` of
    vastai/tensorflow:2.19.0-cuda-12.4.1 (the vendor's tags are <tf>-cuda-<cuda>)."""
    found = re.match(r"(\d+\.\d+\.\d+)", thin_default_base().rsplit(":", 1)[-1])
    if not found:
        raise BuildError(f"cannot read a TensorFlow version from {thin_default_base()}")
    return found.group(1)


def build_standin(tag: str | None = None, *, extra_ca: str | None = "auto", progress: str = "auto") -> str:
    """A local stand-in for Vast's TensorFlow image: the vendor's TensorFlow version (CPU build) in /venv/main,
    as docker/vast-tf-standin.Dockerfile copies it from vast-ai/base-image."""
    version = vendor_tf_version()
    tag = tag or f"violence-trainer-vast-tf-standin:{version}"
    client = docker_client()
    base = resolve_base(client, None)
    args = ["--file", str(STANDIN_DOCKERFILE), "--build-arg", f"BASE_IMAGE={base}",
            "--build-arg", f"TENSORFLOW_VERSION={version}"]
    return _buildkit(client, "stand-in", tag, base, args, extra_ca, None, progress, REPO)


def _buildkit(client, what: str, tag: str, base: str, args: list[str], extra_ca: str | None,
              network: str | None, progress: str, context: Path) -> str:
    if network is None:  # an engine started with --bridge=none can only build on the host network
        network = "default" if any(n.name == "bridge" for n in client.networks.list()) else "host"
    cmd = buildkit_cli() + ["--tag", tag, "--progress", progress, "--network", network] + args
    if extra_ca == "auto":
        extra_ca = next((p for p in [os.environ.get("SSL_CERT_FILE", ""), *HOST_CA_BUNDLES] if p and os.path.isfile(p)), None)
    if extra_ca:
        if not os.path.isfile(extra_ca):
            raise BuildError(f"--extra-ca: no such file {extra_ca}")
        cmd += ["--secret", f"id=extra_ca,src={extra_ca}"]
    cmd.append(str(context))

    previous = _image_id(client, tag)
    print(f"image_build: building {tag} ({what}) on {base}", file=sys.stderr)
    started = time.monotonic()
    result = subprocess.run(cmd, env=dict(os.environ, DOCKER_BUILDKIT="1"))
    if result.returncode != 0:
        raise BuildError(f"docker build of {tag} failed (exit {result.returncode}; the build log above says why)")
    if previous and previous != _image_id(client, tag):
        _remove_if_unused(client, previous)
    size = client.images.get(tag).attrs["Size"]
    print(f"image_build: built {tag} in {time.monotonic() - started:.0f} s, {size / 1e9:.2f} GB", file=sys.stderr)
    return tag


def _image_id(client, tag: str) -> str | None:
    import docker

    try:
        return client.images.get(tag).id
    except docker.errors.ImageNotFound:
        return None


def _remove_if_unused(client, image_id: str) -> None:
    """Delete the image a rebuild just untagged, unless something still uses it.

    Each rebuild otherwise leaves a dangling image behind, and under the vfs storage
    driver its last layer is a full copy of the filesystem (gigabytes per code change).
    Only that one image is touched, never other dangling images on the machine.
    """
    import docker

    try:
        if not client.images.get(image_id).tags:
            client.images.remove(image_id)
    except docker.errors.APIError:  # in use by a container, or a parent of another image: keep it
        pass


def push(image: str, source: str = DEFAULT_TAGS["gpu"]) -> None:
    """Tag the local `source` image as `image` and push it, refusing early when not logged in."""
    import docker
    from docker import auth

    if not image or image.startswith("-"):
        raise BuildError("push needs IMAGE=registry/name:tag")
    repo, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
    registry, _ = auth.resolve_repository_name(repo)
    # The SDK reads the same credentials as `docker login` (config.json, credential helpers).
    if not auth.load_config().resolve_authconfig(registry):
        shown = registry if registry != auth.INDEX_NAME else "Docker Hub"
        raise BuildError(f"not logged in to {shown}: run `docker login{'' if registry == auth.INDEX_NAME else ' ' + registry}` first")

    client = docker_client()
    try:
        client.images.get(source).tag(repo, tag)
    except docker.errors.ImageNotFound:
        raise BuildError(f"no local image {source}: run `make image` first (or --source another tag)") from None
    print(f"image_build: pushing {repo}:{tag}", file=sys.stderr)
    layers: dict[str, str] = {}
    for event in client.images.push(repo, tag=tag, stream=True, decode=True):
        if "error" in event:
            message = event["error"]
            if re.search(r"denied|unauthorized|authentication required", message, re.I):
                raise BuildError(f"{registry} refused the push ({message.splitlines()[0]}): "
                                 f"log in with `docker login {registry}` as a user who may push to {repo}")
            raise BuildError(f"push failed: {message.splitlines()[0]}")
        if "id" in event and event.get("status") in ("Pushed", "Layer already exists"):
            layers[event["id"]] = event["status"]
            print(f"  {event['id']}: {event['status']} ({len(layers)} layers done)", file=sys.stderr)
    print(f"image_build: pushed {repo}:{tag}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="docker/image_build.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the gpu, cpu or thin image")
    b.add_argument("--variant", choices=sorted(DEFAULT_TAGS), default="gpu")
    b.add_argument("--tag", help="image tag (default: violence-trainer:<variant>)")
    b.add_argument("--base-image", default=None,
                   help=f"base image (gpu/cpu: $BASE_IMAGE, else {DEFAULT_BASE}, else a locally built Debian one; "
                        f"thin: $VAST_TF_IMAGE, else docker/thin.Dockerfile's VAST_TF_IMAGE)")
    b.add_argument("--bake-weights", action="store_true", help="download the VGG19 ImageNet weights into the image")
    b.add_argument("--extra-ca", default=os.environ.get("EXTRA_CA") or "auto",
                   help="PEM bundle the build trusts for downloads (default: the host's CA bundle; 'none' for none)")
    b.add_argument("--progress", default="auto", choices=["auto", "plain", "tty"])
    sub.add_parser("standin", help="build a local stand-in for Vast's TensorFlow image and print its tag")
    s = sub.add_parser("push", help="tag the local image as IMAGE and push it")
    s.add_argument("image", help="registry/name:tag")
    s.add_argument("--source", default=DEFAULT_TAGS["gpu"], help="local image to push (default: %(default)s)")
    args = p.parse_args(argv)
    try:
        if args.command == "build":
            base = args.base_image or os.environ.get("VAST_TF_IMAGE" if args.variant == "thin" else "BASE_IMAGE") or None
            build(args.variant, args.tag, base, bake_weights=args.bake_weights,
                  extra_ca=None if args.extra_ca == "none" else args.extra_ca, progress=args.progress)
        elif args.command == "standin":
            print(build_standin())
        else:
            push(args.image, args.source)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
