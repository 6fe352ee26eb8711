"""How many bytes each phase of a job moves, found before renting: the job model's inputs.

- the local dataset or feature cache: the files rsync would send (their sizes on disk here);
- a host-side download (dataset.url): the archive's HTTP Content-Length (a HEAD request);
  dataset.kaggle: the dataset's `totalBytes` from the Kaggle API's dataset view;
- the image: deploy/providers/vast/registry.py (its registry's manifest).

Every lookup is short (a few seconds' timeout) and optional: when one fails, the caller
falls back to a configured or documented figure and says so. Hand-written with urllib
because these are one HEAD and one JSON GET each.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path


TIMEOUT_S = 4.0


def folder_bytes(path: str | os.PathLike | None) -> int:
    """Bytes of the files under `path` (what rsync sends); 0 when it is not a folder. Which of them are
    videos is the trainer's call: `python -m trainer scan` (deploy/local/trainer_cli.py), one list of extensions."""
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
