"""The Docker image reference Vast.ai pulls, and the registry login it needs for a private one.

Vast's create takes `image_login` (create_instance.yaml: "Docker registry credentials if
needed") in the `docker login` argument form that SkyPilot and dstack both send:
`-u USER -p PASSWORD REGISTRY`. The password is read from the environment variable that
`vast.image_login.password_env` names, at create time only: never from the config, never
printed, never written to .deploy/.
"""

from __future__ import annotations

import os
import re

from deploy.errors import UsageError

# Registries whose new packages are private unless made public (GHCR's default), or always
# need a login: a pull there without image_login fails on the host with "unauthorized".
LOGIN_USUALLY_NEEDED = ("ghcr.io", "registry.gitlab.com", "nvcr.io")
PLACEHOLDER = "REGISTRY/IMAGE"

# Docker's reference grammar (distribution/reference), reduced to what we must tell apart.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"^(?:(?P<registry>[A-Za-z0-9.-]+(?::[0-9]+)?|localhost(?::[0-9]+)?)/)?"
    rf"(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    rf"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}))?(?:@(?P<digest>sha256:[0-9a-f]{{64}}))?$")


# Vast.ai hosts cache the layers of the vendor's popular images (vast-ai/base-image README,
# "Building a Derived Image": "Vast.ai hosts already have our base layers cached, so only your
# custom layers need to be downloaded"): renting one of them pulls next to nothing.
VENDOR_NAMESPACE = "vastai/"
# The vendor's TensorFlow image that `remote.python: overlay` runs on and docker/thin.Dockerfile
# builds FROM (tests/docker keeps the two equal). A tag that exists: the vendor's tags are
# `<tf>-cuda-<cuda>` (derivatives/tensorflow/README.build.md:12-13 builds TENSORFLOW_VERSION on
# cuda-12.4.1); Docker Hub's vastai/tensorflow tag page as indexed by public search shows
# `2.19.0-cuda-12.4.1`, `2.16.1-cuda-12.4.1` and `latest`, and public Dockerfiles build
# `FROM vastai/tensorflow:2.19.0-cuda-12.4.1`. No `2.21.0` tag was found. `check` and `up` ask
# the registry before renting, so a tag the vendor retires is a FIX line, not a failed pull.
VENDOR_TF_IMAGE = "vastai/tensorflow:2.19.0-cuda-12.4.1"


def is_vendor_image(image: str | None) -> bool:
    try:
        registry, path, _ = parse(image)
    except UsageError:
        return False
    return registry == "docker.io" and path.startswith(VENDOR_NAMESPACE)


def parse(image: str | None) -> tuple[str, str, str | None]:
    """-> (registry, path, tag or digest or None); UsageError with what to fix when the reference is malformed."""
    if not image or PLACEHOLDER in image:
        raise UsageError("vast.image is not set: build and push the image (make image push) and put "
                         "REGISTRY/IMAGE:TAG in the deploy config")
    m = _REFERENCE.match(image)
    if m is None:
        raise UsageError(f"vast.image {image!r} is not a valid image reference: use lower-case "
                         f"REGISTRY/NAME:TAG, e.g. ghcr.io/you/violence-trainer:1.0")
    registry = m.group("registry")
    path = m.group("path")
    if registry and "." not in registry and ":" not in registry and registry != "localhost":
        path, registry = f"{registry}/{path}", None  # "you/image": a Docker Hub namespace, not a registry
    return registry or "docker.io", path, m.group("tag") or m.group("digest")


def login_arg(image: str | None, login: dict | None) -> str | None:
    """The image_login string for create, or None for a public image."""
    if not login:
        return None
    registry, _, _ = parse(image)
    token = os.environ.get(login["password_env"])
    if not token:
        raise UsageError(f"vast.image_login names ${login['password_env']} for the {registry} password, but it is "
                         f"not set: export it (a read-only token is enough), or drop image_login for a public image")
    return f"-u {login['username']} -p {token} {registry}"
