"""How many bytes each phase of a job moves, found before renting: the job model's inputs.

- the local dataset or feature cache: the files rsync would send (their sizes on disk here);
- a host-side download (dataset.url): the archive's HTTP Content-Length (a HEAD request);
  dataset.kaggle: the dataset's `totalBytes` from the Kaggle API's dataset view;
- the image: the sum of its compressed layer sizes from the registry's manifest (Docker
  Registry HTTP API v2 / OCI distribution spec), anonymous token included for Docker Hub.

Every lookup is short (a few seconds' timeout) and optional: when one fails, the caller
falls back to a configured or documented figure and says so. Hand-written with urllib
because no library here answers "how big is this image" without a Docker daemon.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from deploy.errors import UsageError
from deploy.providers import vast_image

TIMEOUT_S = 4.0
# RFC 2606 / RFC 6761 names that never resolve: no lookup is tried for them (tests use them).
_NEVER_RESOLVES = (".example", ".invalid", ".test", ".localhost")

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


def folder_bytes(path: str | os.PathLike | None) -> int:
    """Bytes of the files under `path` (what rsync sends); 0 when it is not a folder. Which of them are
    videos is the trainer's call: `python -m trainer scan` (deploy/trainer_cli.py), one list of extensions."""
    if not path or not Path(path).is_dir():
        return 0
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _get(url: str, headers: dict | None = None, method: str = "GET"):
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    return urllib.request.urlopen(req, timeout=TIMEOUT_S)  # noqa: S310 (http(s) only, checked by callers)


def content_length(url: str, headers: dict | None = None) -> int | None:
    """The archive's size from a HEAD request (redirects followed); None when the server does not say."""
    try:
        with _get(url, headers, "HEAD") as r:
            n = r.headers.get("Content-Length")
            return int(n) if n and n.isdigit() else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def kaggle_size(slug: str, headers: dict, api_base: str) -> int | None:
    """`totalBytes` of GET {api}/datasets/view/{owner}/{slug} (the Kaggle API's dataset metadata).

    The endpoint is the kaggle-api client's `datasets_view`; `totalBytes` is the field its
    models (kaggle_models_extended.py: Dataset / File) turn into the size the CLI prints.
    """
    try:
        with _get(f"{api_base.rstrip('/')}/datasets/view/{slug}", headers) as r:
            meta = json.loads(r.read().decode())
        n = meta.get("totalBytes")
        return int(n) if n is not None else None
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        return None


def parse_image(image: str) -> tuple[str, str, str]:
    """(registry host to ask, repository, tag or digest): vast_image.parse's reading of the
    reference, with Docker Hub's API host and its `library/` namespace for short names."""
    registry, repo, tag = vast_image.parse(image)
    if registry == "docker.io":
        registry = "registry-1.docker.io"
        if "/" not in repo:
            repo = "library/" + repo
    return registry, repo, tag or "latest"


def image_compressed_bytes(image: str | None, scheme: str = "https") -> int | None:
    """Sum of the layer sizes in the image's manifest (linux/amd64 when it is an index); None if unreachable."""
    if not image or "REGISTRY/" in image:
        return None
    try:
        registry, repo, tag = parse_image(image)
    except UsageError:  # malformed: `check` and `up` say so; the estimate just lacks the figure
        return None
    if registry.split(":")[0].endswith(_NEVER_RESOLVES):
        return None
    base = f"{scheme}://{registry}/v2/{repo}"
    headers = {"Accept": MANIFEST_TYPES}
    try:
        manifest = _manifest(f"{base}/manifests/{tag}", headers, repo, registry)
        if "manifests" in manifest:  # an index: pick linux/amd64, what Vast.ai hosts run
            pick = next((m for m in manifest["manifests"]
                         if (m.get("platform") or {}).get("architecture") == "amd64"
                         and (m.get("platform") or {}).get("os") == "linux"), None)
            if pick is None:
                return None
            manifest = _manifest(f"{base}/manifests/{pick['digest']}", headers, repo, registry)
        layers = manifest.get("layers") or []
        return sum(int(layer.get("size") or 0) for layer in layers) or None
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
        return None


def _manifest(url: str, headers: dict, repo: str, registry: str) -> dict:
    try:
        with _get(url, headers) as r:
            return json.loads(r.read().decode())
    except urllib.error.HTTPError as exc:
        challenge = exc.headers.get("WWW-Authenticate", "") if exc.code == 401 else ""
        if not challenge.lower().startswith("bearer"):
            raise
        # Anonymous pull token (Docker Registry token auth): realm, service and scope from the challenge
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        query = {"service": params.get("service", registry), "scope": params.get("scope", f"repository:{repo}:pull")}
        with _get(params["realm"] + "?" + urllib.parse.urlencode(query)) as r:
            token = json.loads(r.read().decode()).get("token")
        with _get(url, {**headers, "Authorization": f"Bearer {token}"}) as r:
            return json.loads(r.read().decode())
