"""Ask an image's registry about it before renting: does the tag exist, which tags do, how big is the pull.

A Vast.ai host pulls `vast.image` only after the instance is rented, and a tag that does not
exist fails on every offer `up` tries. So `check`, and `up` before it rents, ask the registry
itself through the OCI distribution API (the Docker Registry HTTP API v2):

- `GET /v2/<repo>/manifests/<tag>` with Accept for an OCI index, a Docker manifest list and
  both single-image manifests; for an index, the linux/amd64 manifest (what Vast hosts run).
  Its layers' `size` fields are the compressed bytes a host downloads.
- When the manifest is missing: `GET /v2/<repo>/tags/list` (paginated), to name the closest
  tags that do exist.
- Auth: the registry's `WWW-Authenticate` challenge. Bearer (Docker Hub, GHCR): a token from
  the challenge's realm for `repository:<repo>:pull`, anonymous, or with `vast.image_login`'s
  user and password for a private image; Basic: the same login sent directly.
- Transport: HTTPS. A registry on 127.0.0.1 / localhost / ::1 is tried with HTTPS first and
  then plain HTTP, as Docker treats loopback registries as insecure ones; credentials are never
  sent over plain HTTP (python-dxf refuses, and so do we).

The client is python-dxf (PyPI `python-dxf`, MIT): a maintained Docker Registry v2 client that
already does the token dance, manifest lists / OCI indexes per platform, digest checks and
the paginated tag list. Not `oras`: its manifest reads validate against the OCI artifact
schema and do not pick a platform out of a Docker manifest list, which is what Docker Hub serves.

Every lookup is short (TIMEOUT_S per request) and its failure is a finding, never a crash:
`unknown` when the registry cannot be reached, so `up` goes on with a warning.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field

from deploy.errors import UsageError
from deploy.http_guard import is_loopback_host
from deploy.providers.vast.image import is_vendor_image, parse as parse_reference

TIMEOUT_S = 6.0
PLATFORM = "linux/amd64"  # Vast.ai hosts (vast-ai/base-image derivatives/tensorflow/README.build.md:3)
MAX_TAG_PAGES = 20        # a tag list this long is enough to name the closest ones
# RFC 2606 / RFC 6761 names that never resolve: nothing is asked for them (tests and examples use them).
NEVER_RESOLVES = (".example", ".invalid", ".test", ".localhost")
DOCKER_HUB_API = "registry-1.docker.io"
# "docker.io=mirror.example:5000 ghcr.io=127.0.0.1:5001": ask another registry host in a registry's
# place, as Docker's `registry-mirrors` does for Docker Hub (a pull-through cache at work; the tests'
# registries on 127.0.0.1, so that no test sends a request beyond this machine).
MAP_ENV = "DEPLOY_REGISTRY_MAP"


def _mapped(registry: str, env) -> str:
    for pair in (env.get(MAP_ENV) or "").split():
        name, _, host = pair.partition("=")
        if name == registry and host:
            return host
    return registry


@dataclass
class ImageFacts:
    """What the registry said about one image reference."""

    image: str
    registry: str = ""                 # the API host asked (registry-1.docker.io for Docker Hub)
    repo: str = ""
    ref: str = "latest"                # tag or digest
    exists: bool | None = None         # None: not asked or not answerable (see `problem`)
    layers: list[tuple[str, int]] = field(default_factory=list)  # (digest, compressed bytes), linux/amd64
    near_tags: list[str] = field(default_factory=list)           # when missing: the closest existing tags
    problem: str = ""                  # one line: why exists is None, or what is missing

    @property
    def compressed_bytes(self) -> int | None:
        return sum(size for _, size in self.layers) if self.layers else None


def endpoint(image: str, env=None) -> tuple[str, str, str]:
    """(API host, repository, tag or digest) as Docker resolves a reference: Docker Hub's API
    host and its `library/` namespace for short names, `latest` when no tag is given; a
    registry named in $DEPLOY_REGISTRY_MAP is asked at the host it maps to."""
    env = os.environ if env is None else env
    registry, repo, ref = parse_reference(image)
    mapped = _mapped(registry, env)
    if registry == "docker.io":
        if "/" not in repo:
            repo = "library/" + repo
        mapped = DOCKER_HUB_API if mapped == registry else mapped
    return mapped, repo, ref or "latest"


def is_loopback(host: str) -> bool:
    """A registry's `host[:port]` (IPv6 in brackets) on this machine."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    return is_loopback_host(name.strip("[]"))


def _login(image_login: dict | None, env) -> tuple[str | None, str | None]:
    if not image_login:
        return None, None
    return image_login.get("username"), env.get(image_login.get("password_env") or "")


def _client(registry: str, repo: str, insecure: bool, user: str | None, password: str | None):
    from dxf import DXF

    def auth(dxf, response):  # called by python-dxf on a 401: the challenge decides bearer or basic
        dxf.authenticate(user, password, actions=["pull"], response=response)

    return DXF(registry, repo, auth=auth, insecure=insecure, timeout=TIMEOUT_S)


def lookup(image: str | None, image_login: dict | None = None, env=None, tags_on_miss: bool = True) -> ImageFacts:
    """Ask the image's registry for its linux/amd64 manifest (and its tag list when it is missing)."""
    env = os.environ if env is None else env
    facts = ImageFacts(image=image or "")
    try:
        facts.registry, facts.repo, facts.ref = endpoint(image, env)
    except UsageError as exc:
        facts.problem = str(exc)
        return facts
    if facts.registry.split(":")[0].endswith(NEVER_RESOLVES):
        facts.problem = f"{facts.registry} is a reserved example name: not looked up"
        return facts
    user, password = _login(image_login, env)
    if image_login and not password:
        facts.problem = f"vast.image_login's ${image_login.get('password_env')} is not set: cannot log in to look"
        return facts
    try:
        import dxf  # noqa: F401
    except ImportError:
        facts.problem = "python-dxf is not installed here: pip install -e '.[deploy]'"
        return facts
    schemes = [False, True] if is_loopback(facts.registry) else [False]  # insecure = plain HTTP
    for insecure in schemes:
        try:
            return _ask(facts, _client(facts.registry, facts.repo, insecure, user, password), tags_on_miss)
        except Exception as exc:  # noqa: BLE001  (every failure is a finding: see _why)
            facts.problem, retry = _why(exc, facts, insecure)
            if not retry:
                break
    return facts


def _ask(facts: ImageFacts, dxf, tags_on_miss: bool) -> ImageFacts:
    import requests

    try:
        layers = dxf.get_alias(facts.ref, sizes=True, platform=PLATFORM)
    except requests.HTTPError as exc:
        if exc.response is None or exc.response.status_code != 404:
            raise
        facts.exists = False
        facts.problem = f"{facts.image}: the registry has no {_ref_word(facts.ref)} {facts.ref!r}"
        if tags_on_miss and not facts.ref.startswith("sha256:"):
            try:
                tags = _tags(dxf)
            except requests.HTTPError as tag_exc:
                if tag_exc.response is not None and tag_exc.response.status_code == 404:
                    facts.problem = f"{facts.image}: repository {facts.repo} does not exist on {facts.registry}"
                    return facts
                raise
            facts.near_tags = closest_tags(facts.ref, tags)
            if not tags:
                facts.problem += " (the repository lists no tags at all)"
        return facts
    facts.exists = True
    facts.layers = [(str(d), int(s)) for d, s in layers]
    return facts


def _tags(dxf) -> list[str]:
    out = []
    for i, tag in enumerate(dxf.list_aliases(batch_size=1000, iterate=True)):
        out.append(tag)
        if i >= MAX_TAG_PAGES * 1000:
            break
    return out


def _ref_word(ref: str) -> str:
    return "digest" if ref.startswith("sha256:") else "tag"


def _why(exc: Exception, facts: ImageFacts, insecure: bool) -> tuple[str, bool]:
    """(one line, whether plain HTTP is worth trying next); sets facts.exists to False where the
    registry's answer means "not pullable as configured", leaves it None where nothing is known."""
    import requests
    from dxf import exceptions as dx

    where = f"{'http' if insecure else 'https'}://{facts.registry}"
    if isinstance(exc, dx.DXFAuthInsecureError):
        return f"{where} asks for a login over plain HTTP: credentials are not sent unencrypted", False
    if isinstance(exc, dx.DXFUnauthorizedError) or (
            isinstance(exc, requests.HTTPError) and exc.response is not None and exc.response.status_code in (401, 403)):
        facts.exists = False
        return (f"{facts.image}: {facts.registry} refused to show {facts.repo} (it does not exist, or it is "
                f"private: set vast.image_login with a read-only token)"), False
    if isinstance(exc, dx.DXFPlatformDataNotFound):
        facts.exists = False
        return f"{facts.image} has no {PLATFORM} image (Vast.ai hosts are {PLATFORM})", False
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS to {where} failed ({_short(exc)})", True
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return f"cannot reach {where} ({_short(exc)})", True
    if isinstance(exc, requests.HTTPError):
        code = exc.response.status_code if exc.response is not None else "?"
        return f"{where} answered HTTP {code} for {facts.repo}:{facts.ref}", False
    return f"{where}: {type(exc).__name__}: {_short(exc)}", False


def _short(exc: Exception) -> str:
    text = re.sub(r"\s+", " ", str(exc))
    return text if len(text) <= 160 else text[:157] + "..."


def missing_line(facts: ImageFacts) -> str:
    """One line for an image the registry does not have: what is missing and what exists instead."""
    text = facts.problem
    if facts.near_tags:
        name = facts.image.rsplit(":", 1)[0] if ":" in facts.image.rsplit("/", 1)[-1] else facts.image
        text += "; closest existing tags: " + ", ".join(f"{name}:{t}" for t in facts.near_tags)
    return text


def require(image: str | None, image_login: dict | None = None, env=None) -> ImageFacts:
    """Before renting: refuse an image its registry does not have (UsageError, nothing rented);
    say so and go on when the registry cannot be asked (a reserved example name goes unsaid)."""
    import sys

    facts = lookup(image, image_login, env)
    if facts.exists is False:
        raise UsageError(missing_line(facts) + "; nothing was rented (fix vast.image)")
    if facts.exists is None and "not looked up" not in facts.problem:
        print(f"warning: could not ask the registry whether {image} exists ({facts.problem}); renting anyway",
              file=sys.stderr)
    return facts


# -- which existing tags are closest to a missing one -------------------------------------------
def _numbers(tag: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", tag)]


def closest_tags(wanted: str, tags: list[str], n: int = 5) -> list[str]:
    """The tags a user most likely meant: those sharing the longest run of leading version
    numbers with `wanted` (2.19.0 -> 2.19.0-cuda-12.4.1 before 2.16.1-...), then by spelling
    (difflib's ratio), newest version first among equals; `latest` last unless nothing else is close."""
    if not tags:
        return []
    want = _numbers(wanted)

    def shared(tag: str) -> int:
        k = 0
        for a, b in zip(want, _numbers(tag)):
            if a != b:
                break
            k += 1
        return k

    def key(tag: str):
        return (-shared(tag), -round(difflib.SequenceMatcher(None, wanted, tag).ratio(), 2),
                [-x for x in _numbers(tag)], tag)

    return sorted(set(tags), key=key)[:n]


# -- what a Vast host really downloads ----------------------------------------------------------------
# vast-ai/base-image README.md:373 ("Building a Derived Image"): "Vast.ai hosts already have our base
# layers cached, so only your custom layers need to be downloaded"; README.md:9-13 says the same of the
# nvidia/cuda layers under them. Nothing claims a derivative's own layers cached: the TensorFlow image's
# `pip install tensorflow[and-cuda]` layer (derivatives/tensorflow/Dockerfile:17-35) is several GB.
VENDOR_BASE_REPO = "vastai/base-image"


def vendor_base_candidates(image: str) -> list[str]:
    """The vastai/base-image tags a vastai/<name>:<x>-cuda-<v> image is built on, most likely first.

    derivatives/tensorflow/README.build.md:12 builds TensorFlow on
    `vastai/base-image:cuda-<v>-cudnn-devel-ubuntu22.04`; the Dockerfile's own default
    (derivatives/tensorflow/Dockerfile:1) is `cuda-12.1.1-cudnn8-devel-ubuntu22.04`.
    """
    _, _, tag = parse_reference(image)
    m = re.search(r"cuda-(\d+\.\d+\.\d+)", tag or "")
    if not m:
        return []
    v = m.group(1)
    return [f"{VENDOR_BASE_REPO}:cuda-{v}-cudnn-devel-ubuntu22.04", f"{VENDOR_BASE_REPO}:cuda-{v}-cudnn8-devel-ubuntu22.04",
            f"{VENDOR_BASE_REPO}:cuda-{v}-cudnn-devel-ubuntu24.04"]


def uncached_layers(image_layers: list[tuple[str, int]], base_layers: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The image's layers above its base: a derived image starts with its base's layers, same digests."""
    k = 0
    for (a, _), (b, _) in zip(image_layers, base_layers):
        if a != b:
            break
        k += 1
    return image_layers[k:]


@dataclass
class PullEstimate:
    bytes: int | None
    how: str


def pull_estimate(image: str | None, image_login: dict | None = None, env=None, facts: ImageFacts | None = None,
                  base_lookup=None) -> PullEstimate:
    """The compressed bytes a Vast host downloads for `image`.

    A vastai/ image: its layers above vastai/base-image (the cached part, by the vendor's README);
    when no base tag shares its first layers, all of it (said so). Any other image: all its layers.
    """
    facts = facts or lookup(image, image_login, env, tags_on_miss=False)
    if facts.exists is not True:
        return PullEstimate(None, facts.problem or "not looked up")
    total = facts.compressed_bytes or 0
    if not is_vendor_image(image):
        return PullEstimate(total, "registry manifest (compressed layers)")
    base_lookup = base_lookup or (lambda ref: lookup(ref, None, env, tags_on_miss=False))
    for candidate in vendor_base_candidates(image or ""):
        base = base_lookup(candidate)
        if base.exists and base.layers:
            rest = uncached_layers(facts.layers, base.layers)
            if len(rest) < len(facts.layers):
                return PullEstimate(sum(s for _, s in rest),
                                    f"registry manifests: {len(rest)} of {len(facts.layers)} layers above {candidate} "
                                    f"(its layers are cached on Vast hosts, vast-ai/base-image README)")
    return PullEstimate(total, "registry manifest, all layers (no vastai/base-image tag shares its first layers, "
                               "so none is counted as cached)")
