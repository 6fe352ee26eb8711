"""Make a wheel from a distribution installed here, so pip can install it with no index.

Hand-written because neither pip nor `wheel` exports an installed distribution, and tests
may not download one: the files the distribution's RECORD lists are zipped back with its
own METADATA and WHEEL (so the platform tags are the real ones).
"""

from __future__ import annotations

import importlib.metadata as md
import zipfile
from pathlib import Path


def wheel_from_installed(name: str, out_dir: Path) -> Path:
    dist = md.distribution(name)
    tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag:")]
    if not tags:
        raise RuntimeError(f"{name}: its WHEEL file names no tag")
    stem = dist.metadata["Name"].replace("-", "_")
    wheel = out_dir / f"{stem}-{dist.version}-{tags[0]}.whl"
    record, written = [], set()
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in dist.files or []:
            path = Path(dist.locate_file(rel))
            arc = rel.as_posix()
            if arc.startswith("..") or "__pycache__" in arc or arc.endswith("RECORD") or not path.is_file():
                continue
            zf.write(path, arc)
            record.append(f"{arc},,")
            written.add(arc)
        info = next(a.split("/", 1)[0] for a in written if a.split("/", 1)[0].endswith(".dist-info"))
        zf.writestr(f"{info}/RECORD", "\n".join(record + [f"{info}/RECORD,,"]) + "\n")
    return wheel
