"""Download and unpack a dataset archive ON THE HOST (sent there by deploy/sync.py).

Standard library only: it runs under whatever python3 the host has, before any
virtualenv exists. The URL and the HTTP headers (credentials) arrive as one JSON line
on stdin, never on a command line (visible in `ps`) or in a file; nothing here prints
them. The download resumes (HTTP Range) after an interruption; the archive replaces
<dest> only once fully unpacked, and a marker records the source so that a second
sync does not download again.

    python3 download_dataset.py --dest DIR --work DIR  < {"url": ..., "headers": {...}}
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile

KAGGLE_API = "https://www.kaggle.com/api/v1"
MARKER = ".deploy-source.json"


# -- on the user's machine: where from, with which credentials ----------------------
def source(url: str | None, kaggle: str | None, token_env: str | None, env) -> tuple[str, dict]:
    """(url, headers) for dataset.url / dataset.kaggle, credentials taken from `env`."""
    from deploy.errors import UsageError  # only on the user's machine

    headers: dict[str, str] = {}
    if kaggle:
        user, key = env.get("KAGGLE_USERNAME"), env.get("KAGGLE_KEY")
        if not (user and key):
            cfg = os.path.join(env.get("KAGGLE_CONFIG_DIR") or os.path.expanduser("~/.kaggle"), "kaggle.json")
            try:
                with open(cfg) as fh:
                    creds = json.load(fh)
                user, key = creds["username"], creds["key"]
            except (OSError, ValueError, KeyError):
                raise UsageError("Kaggle credentials missing: set KAGGLE_USERNAME and KAGGLE_KEY, or create "
                                 "~/.kaggle/kaggle.json (kaggle.com > Settings > API > Create New Token)") from None
        token = base64.b64encode(f"{user}:{key}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
        base = env.get("DEPLOY_KAGGLE_API", KAGGLE_API).rstrip("/")  # a mirror, or a local fake in tests
        url = f"{base}/datasets/download/{kaggle}"
    elif token_env:
        if not env.get(token_env):
            raise UsageError(f"dataset.token_env names {token_env}, which is not set in this shell: export it first")
        headers["Authorization"] = f"Bearer {env[token_env]}"
    return url, headers


def redact(url: str) -> str:
    """The URL without credentials or query string (signed URLs carry secrets there)."""
    p = urllib.parse.urlsplit(url)
    host = p.hostname or ""
    if p.port:
        host += f":{p.port}"
    return urllib.parse.urlunsplit((p.scheme, host, p.path, "", ""))


# -- on the host --------------------------------------------------------------------
def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _download(url: str, headers: dict, part: str) -> None:
    have = os.path.getsize(part) if os.path.exists(part) else 0
    req = urllib.request.Request(url)
    for k, v in headers.items():
        req.add_unredirected_header(k, v)  # never forwarded to a redirect target (e.g. a storage bucket)
    if have:
        req.add_unredirected_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the partial file is already complete
            return
        hint = " (check the credentials)" if exc.code in (401, 403) else ""
        raise SystemExit(f"download failed: HTTP {exc.code} {exc.reason} from {redact(url)}{hint}")
    except (urllib.error.URLError, OSError) as exc:
        raise SystemExit(f"download failed: {getattr(exc, 'reason', exc)} ({redact(url)})")
    with resp:
        if have and resp.status != 206:
            have = 0  # the server ignored Range: start over
        total = resp.headers.get("Content-Length")
        total = int(total) + have if total else None
        done, last = have, 0.0
        t0 = time.monotonic()
        with open(part, "ab" if have else "wb") as fh:
            while chunk := resp.read(1 << 20):
                fh.write(chunk)
                done += len(chunk)
                if time.monotonic() - last > 2:
                    last = time.monotonic()
                    rate = (done - have) / max(last - t0, 1e-6) / 1e6
                    pct = f" ({100 * done / total:.0f}%)" if total else ""
                    _say(f"downloaded {done / 1e6:.1f} MB{pct}, {rate:.1f} MB/s")
    if total and os.path.getsize(part) < total:
        raise SystemExit("download interrupted: run sync again to resume it")
    _say(f"downloaded {os.path.getsize(part) / 1e6:.1f} MB")


def _safe_members(names, root: str) -> None:
    root = os.path.realpath(root)
    for name in names:
        target = os.path.realpath(os.path.join(root, name))
        if target != root and not target.startswith(root + os.sep):
            raise SystemExit(f"refusing the archive: member {name!r} would be written outside the dataset folder")


def _unpack(archive: str, into: str) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            _safe_members(zf.namelist(), into)
            zf.extractall(into)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            _safe_members(tf.getnames(), into)
            if hasattr(tarfile, "data_filter"):
                tf.extractall(into, filter="data")
            else:
                tf.extractall(into)
    else:
        raise SystemExit("the downloaded file is neither a zip nor a tar archive: check dataset.url")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dest", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args(argv)
    spec = json.loads(sys.stdin.readline())
    url, headers = spec["url"], spec.get("headers", {})
    # the marker holds a hash of the URL only (a signed URL's query may be secret)
    url_id = hashlib.sha256(url.encode()).hexdigest()
    marker = os.path.join(args.dest, MARKER)
    try:
        with open(marker) as fh:
            if json.load(fh).get("url_sha256") == url_id:
                _say(f"dataset already downloaded from {redact(url)}: nothing to do")
                return 0
    except (OSError, ValueError):
        pass
    os.makedirs(args.work, exist_ok=True)
    part = os.path.join(args.work, "archive." + url_id[:16] + ".part")
    _download(url, headers, part)
    unpacked = os.path.join(args.work, "unpacked")
    shutil.rmtree(unpacked, ignore_errors=True)
    os.makedirs(unpacked)
    _say("unpacking")
    _unpack(part, unpacked)
    entries = [e for e in os.listdir(unpacked) if not e.startswith(".") and e != "__MACOSX"]
    root = os.path.join(unpacked, entries[0]) if len(entries) == 1 and os.path.isdir(
        os.path.join(unpacked, entries[0])) else unpacked  # an archive of one top folder: its content
    with open(os.path.join(root, MARKER), "w") as fh:
        json.dump({"url_sha256": url_id, "source": redact(url), "bytes": os.path.getsize(part)}, fh)
    old = args.dest.rstrip("/") + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(args.dest):
        os.rename(args.dest, old)
    os.rename(root, args.dest)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(args.work, ignore_errors=True)
    n = sum(len(files) for _, _, files in os.walk(args.dest)) - 1
    _say(f"dataset ready: {n} files in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
