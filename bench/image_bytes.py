"""Bytes a rented host must pull, and a user must push, for each way of getting the trainer there.

Three ways, measured on images built here (docker/image_build.py):

  full     today's image (docker/Dockerfile): every layer is ours, a host pulls all of it
           and the user pushes all of it. The baseline.
  thin     docker/thin.Dockerfile on Vast's TensorFlow image: a host that has the vendor's
           layers cached pulls only ours; a registry that has the base (Docker Hub) receives
           only ours.
  overlay  remote.python: overlay on the vendor image itself: no image of ours at all; the
           host downloads only the wheels pip adds over /venv/main's TensorFlow.

A layer's pull size is its gzip'd tar (what `docker push` uploads and a registry serves),
measured by compressing `docker save`'s layer tars at gzip's default level. The overlay's
pip bytes are the wheels pip would add over the base's packages, downloaded (from PyPI,
so this bench needs the index) inside the base image with the same constraints the
overlay uses. Where Docker Hub cannot be reached, the vendor image is the local stand-in
(docker/vast-tf-standin.Dockerfile): TensorFlow-CPU, so its size is not the vendor's, but
ours on top of it are the layers that matter.

    .venv/bin/python bench/image_bytes.py [--full violence-trainer:cpu] [--thin violence-trainer:thin]
                                          [--base IMAGE] [--no-overlay]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "docker"))
import image_build  # noqa: E402


class _Counter(io.RawIOBase):
    def __init__(self):
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.n += len(b)
        return len(b)


CACHE = REPO / ".bench" / "layer_sizes.json"  # diff_id -> gzip'd bytes: a layer's content never changes


def layer_sizes(image: str) -> dict[str, int]:
    """diff_id -> gzip'd size of each layer of `image` (docker save, one pass, nothing stored)."""
    known = json.loads(CACHE.read_text()) if CACHE.is_file() else {}
    ids = diff_ids(image)
    if all(d in known for d in ids):
        return {d: known[d] for d in ids}
    print(f"compressing the layers of {image} (docker save | gzip -6) ...", file=sys.stderr)
    proc = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
    sizes: dict[str, int] = {}
    manifest = None
    by_path: dict[str, int] = {}
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for member in tar:
            if member.name == "manifest.json":
                manifest = json.load(tar.extractfile(member))
            elif member.isfile() and member.name.endswith("layer.tar"):
                counter = _Counter()
                with gzip.GzipFile(fileobj=counter, mode="wb", compresslevel=6) as gz:
                    src = tar.extractfile(member)
                    while chunk := src.read(1 << 20):
                        gz.write(chunk)
                by_path[member.name] = counter.n
    if proc.wait() != 0 or manifest is None:
        raise SystemExit(f"docker save {image} failed")
    for diff_id, path in zip(ids, manifest[0]["Layers"]):
        sizes[diff_id] = by_path.get(path, 0)
    CACHE.parent.mkdir(exist_ok=True)
    tmp = CACHE.with_suffix(".tmp")
    tmp.write_text(json.dumps({**known, **sizes}, indent=1))
    tmp.replace(CACHE)
    return sizes


def diff_ids(image: str) -> list[str]:
    return json.loads(subprocess.run(["docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}", image],
                                     capture_output=True, text=True, check=True).stdout)


def overlay_pip_bytes(base: str) -> tuple[int, list[str]]:
    """Bytes of the wheels pip adds over `base`'s /venv/main, under the overlay's constraints."""
    script = (
        "set -e; cd /tmp; /venv/main/bin/python /src/docker/requirements_from_pyproject.py /src/pyproject.toml "
        "train > req.txt; /venv/main/bin/python /src/docker/base_constraints.py > c.txt; "
        "/venv/main/bin/python -m pip install --quiet --dry-run --report r.json -c c.txt -r req.txt; "
        "/venv/main/bin/python -c \"import json; print(' '.join(i['metadata']['name'] + '==' + i['metadata']['version'] "
        "for i in json.load(open('r.json'))['install']))\" > want.txt; "
        "mkdir d; /venv/main/bin/python -m pip download --quiet --no-deps -d d $(cat want.txt); "
        "echo \"$(du -sb d | cut -f1) $(cat want.txt)\""
    )
    # pip in the container trusts what this machine trusts (a TLS-intercepting proxy's CA)
    ca = next((p for p in image_build.HOST_CA_BUNDLES if Path(p).is_file()), None)
    trust = ["-v", f"{ca}:/etc/ssl/host-ca.pem:ro", "-e", "PIP_CERT=/etc/ssl/host-ca.pem"] if ca else []
    out = subprocess.run(["docker", "run", "--rm", "--network", "host", "-v", f"{REPO}:/src:ro", *trust, base,
                          "sh", "-c", script], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"overlay measurement failed: {out.stderr.strip()[-500:]}")
    total, *names = out.stdout.strip().splitlines()[-1].split()
    return int(total), names


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", default=image_build.DEFAULT_TAGS["cpu"], help="today's image (default: %(default)s)")
    ap.add_argument("--thin", default=image_build.DEFAULT_TAGS["thin"], help="the thin image (default: %(default)s)")
    ap.add_argument("--base", help="the vendor TensorFlow image the thin one was built on "
                                   "(default: its org.opencontainers.image.base.name label)")
    ap.add_argument("--no-overlay", action="store_true", help="skip the overlay's pip download (needs PyPI)")
    args = ap.parse_args()
    started = time.monotonic()
    base = args.base or json.loads(subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", args.thin],
        capture_output=True, text=True, check=True).stdout)["org.opencontainers.image.base.name"]

    full = layer_sizes(args.full)
    thin = layer_sizes(args.thin)
    base_layers = set(diff_ids(base))
    full_bytes = sum(full.values())
    thin_own = sum(n for d, n in thin.items() if d not in base_layers)
    base_bytes = sum(n for d, n in thin.items() if d in base_layers)
    rows = [("full", args.full, full_bytes, full_bytes, "every layer")]
    rows.append(("thin", f"{args.thin} on {base}", thin_own, thin_own,
                 f"{len([d for d in thin if d not in base_layers])} own layers; the base's {human(base_bytes)} cached"))
    if not args.no_overlay:
        pip_bytes, names = overlay_pip_bytes(base)
        rows.append(("overlay", f"{base} + pip", pip_bytes, 0, "wheels: " + ", ".join(names)))

    print(f"{'way':8} {'host pulls':>11} {'user pushes':>12} {'vs full':>8}  image / what")
    for way, what, pull, push, note in rows:
        print(f"{way:8} {human(pull):>11} {human(push):>12} {pull / full_bytes:8.3f}  {what}  ({note})")
    print(f"baseline: full = {human(full_bytes)} pulled and pushed ({len(full)} layers, gzip -6); "
          f"measured in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
