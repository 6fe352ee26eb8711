"""Download and unpack a dataset archive ON THE HOST (sent there by deploy/sync.py).

Standard library only: it runs under whatever python3 the host has, before any
virtualenv exists, with deploy/host/shipped/safe_tree.py sent ahead of it (sync.host_program). The URL
and the HTTP headers (a bearer token, never Kaggle's key: deploy/dataset/source.py and kaggle.py
resolve a signed link on the user's machine) arrive as one JSON line on stdin, never on a command line
(visible in `ps`) or in a file; nothing here prints them.

Resuming is safe: the first response's ETag (or Last-Modified) is kept beside the partial
file, and a resumed request carries it in If-Range, so a file that changed on the server
comes back whole (200) instead of being spliced onto the old bytes; Range and If-Range
follow redirects (credentials do not). A 416 is "complete" only when the size is known to
match. An archive that fails to unpack is deleted, so the next sync downloads it again.

Unpacking refuses every archive member that is not a regular file or a folder (symlinks,
hard links, devices, FIFOs) and every name that leaves the folder, with one line, on every
Python (Debian 12's 3.11.2 has no tarfile.data_filter): files are written by us through
safe_tree (each folder a real folder, O_NOFOLLOW), never by tarfile/zipfile's extractall.
The archive replaces <dest> only once fully unpacked, and a marker records the source so
that a second sync does not download again.

    python3 download_dataset.py --dest DIR --work DIR  < {"url": ..., "headers": {...}, "id": ...}
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import stat
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile

from deploy.host.shipped.safe_tree import Tree, Unsafe, parts

MARKER = ".deploy-source.json"


# -- on both sides ---------------------------------------------------------------------
def redact(url: str) -> str:
    """The URL without credentials or query string (signed URLs carry secrets there)."""
    p = urllib.parse.urlsplit(url)
    host = p.hostname or ""
    if p.port:
        host += f":{p.port}"
    return urllib.parse.urlunsplit((p.scheme, host, p.path, "", ""))


# -- on the host: downloading --------------------------------------------------------
def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def part_path(work: str, source_id: str) -> str:
    return os.path.join(work, "archive." + hashlib.sha256(source_id.encode()).hexdigest()[:16] + ".part")


def _discard(part: str) -> None:
    for path in (part, part + ".json"):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _read_meta(part: str) -> dict:
    try:
        with open(part + ".json") as fh:
            meta = json.load(fh)
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_meta(part: str, meta: dict) -> None:
    tmp = part + ".json.tmp"
    with open(tmp, "w") as fh:
        json.dump(meta, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, part + ".json")


def _validator(meta: dict) -> str | None:
    """What If-Range may carry: a strong ETag, else Last-Modified (RFC 9110 13.1.5)."""
    etag = meta.get("etag")
    if isinstance(etag, str) and etag and not etag.startswith("W/"):
        return etag
    lm = meta.get("last_modified")
    return lm if isinstance(lm, str) and lm else None


_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """'bytes 100-199/1000' -> (100, 1000); 'bytes */1000' -> (None, 1000)."""
    m = _CONTENT_RANGE.fullmatch((value or "").strip())
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) else None
    total = int(m.group(3)) if m.group(3) != "*" else None
    return start, total


def _download(url: str, headers: dict, part: str, retried: bool = False) -> None:
    meta = _read_meta(part)
    have = os.path.getsize(part) if os.path.exists(part) else 0
    validator = _validator(meta)
    if have and not validator:
        _say("the partial download cannot be checked against the server's file (no ETag or Last-Modified): "
             "starting again")
        _discard(part)
        have, meta = 0, {}
    req = urllib.request.Request(url)
    for k, v in headers.items():
        req.add_unredirected_header(k, v)  # never forwarded to a redirect target (e.g. a storage bucket)
    if have:  # add_header: kept on a redirect (urllib copies these), unlike the credentials above
        req.add_header("Range", f"bytes={have}-")
        req.add_header("If-Range", validator)

    def again(why: str) -> None:
        if retried:
            raise SystemExit(f"download failed: {why} ({redact(url)}), twice: run sync again later")
        _say(f"{why}: downloading it again from the start")
        _discard(part)
        _download(url, headers, part, retried=True)

    try:
        resp = urllib.request.urlopen(req, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            _, total = _content_range(exc.headers.get("Content-Range"))
            if meta.get("total") == have and total in (None, have):
                return  # the partial file is the whole file, and the server agrees on its size
            return again("the partial download does not match the file on the server")
        hint = " (check the credentials)" if exc.code in (401, 403) else ""
        raise SystemExit(f"download failed: HTTP {exc.code} {exc.reason} from {redact(url)}{hint}")
    except (urllib.error.URLError, OSError) as exc:
        raise SystemExit(f"download failed: {getattr(exc, 'reason', exc)} ({redact(url)})")
    with resp:
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if have and resp.status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != have or (meta.get("total") and total != meta["total"]):
                resp.close()
                return again("the server resumed at another place than the partial download ends")
            _say(f"resuming the download at {have / 1e6:.1f} MB")
        else:
            if have:
                _say("the file on the server changed since the partial download (or the server cannot resume): "
                     "starting again")
            have, total = 0, length
            _write_meta(part, {"etag": resp.headers.get("ETag"), "last_modified": resp.headers.get("Last-Modified"),
                               "total": total})
        done, last = have, 0.0
        t0 = time.monotonic()
        with open(part, "ab" if have else "wb") as fh:
            try:
                while chunk := resp.read(1 << 20):
                    fh.write(chunk)
                    done += len(chunk)
                    if time.monotonic() - last > 2:
                        last = time.monotonic()
                        rate = (done - have) / max(last - t0, 1e-6) / 1e6
                        pct = f" ({100 * done / total:.0f}%)" if total else ""
                        _say(f"downloaded {done / 1e6:.1f} MB{pct}, {rate:.1f} MB/s")
            except (OSError, http.client.HTTPException) as exc:
                raise SystemExit(f"download interrupted ({type(exc).__name__}): run sync again to resume it")
    size = os.path.getsize(part)
    if total and size < total:
        raise SystemExit("download interrupted: run sync again to resume it")
    if total and size > total:
        return again(f"the download is longer ({size} bytes) than the server said ({total})")
    _say(f"downloaded {size / 1e6:.1f} MB")


# -- on the host: unpacking ----------------------------------------------------------
class Refused(Exception):
    """An archive member we will not unpack; str() is the one line to show."""


def _name(raw: str) -> list[str] | None:
    """An archive member's name as path parts; None for the archive's own root ('./')."""
    name = raw
    while name.startswith("./"):
        name = name[2:]
    if name.strip("/") in ("", "."):
        return None
    try:
        return parts(name)
    except Unsafe as exc:
        raise Refused(f"member {raw!r} would be written outside the dataset folder ({exc})") from None


def _write(tree: Tree, name: list[str], data, mode: int, mtime: float | None) -> None:
    fd = tree.create("/".join(name), 0o755 if mode & 0o111 else 0o644)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(data, out, 1 << 20)
        if mtime is not None:
            os.utime(out.fileno(), (mtime, mtime))


_TAR_KIND = {tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link", tarfile.CHRTYPE: "a device",
             tarfile.BLKTYPE: "a device", tarfile.FIFOTYPE: "a FIFO"}


def _unpack_tar(archive: str, tree: Tree) -> None:
    with tarfile.open(archive) as tf:
        for m in tf:  # one pass, each member checked before anything of it is written
            name = _name(m.name)
            if not (m.isreg() or m.isdir()):
                raise Refused(f"member {m.name!r} is {_TAR_KIND.get(m.type, 'not a regular file or folder')} "
                              f"(only regular files and folders are unpacked)")
            if name is None:
                continue
            if m.isdir():
                tree.makedirs("/".join(name))
            else:
                _write(tree, name, tf.extractfile(m), m.mode, m.mtime)


def _unpack_zip(archive: str, tree: Tree) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = _name(info.filename)
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if info.create_system == 3 and kind and kind not in (stat.S_IFREG, stat.S_IFDIR):  # 3: Unix
                what = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file or folder"
                raise Refused(f"member {info.filename!r} is {what} (only regular files and folders are unpacked)")
            if name is None:
                continue
            if info.is_dir():
                tree.makedirs("/".join(name))
            else:
                mtime = time.mktime(info.date_time + (0, 0, -1))
                with zf.open(info) as data:
                    _write(tree, name, data, mode, mtime)


def unpack(archive: str, into: str) -> None:
    """Unpack a zip or tar (any compression tarfile reads) into the folder `into`, safely."""
    with Tree(into, create=True) as tree:
        try:
            if zipfile.is_zipfile(archive):
                _unpack_zip(archive, tree)
            elif tarfile.is_tarfile(archive):
                _unpack_tar(archive, tree)
            else:
                raise Refused("the downloaded file is neither a zip nor a tar archive: check dataset.url")
        except Refused:
            raise
        except Unsafe as exc:
            raise Refused(f"a member could not be written inside the dataset folder ({exc})") from None
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, RuntimeError, ValueError,
                OverflowError) as exc:
            raise Refused(f"the archive is damaged or cannot be read ({type(exc).__name__}: {exc})") from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dest", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args(argv)
    spec = json.loads(sys.stdin.readline())
    url, headers = spec["url"], spec.get("headers") or {}
    # the marker holds a hash of the dataset's identity only (a signed URL's query may be secret)
    url_id = hashlib.sha256((spec.get("id") or url).encode()).hexdigest()
    marker = os.path.join(args.dest, MARKER)
    try:
        with open(marker) as fh:
            if json.load(fh).get("url_sha256") == url_id:
                _say(f"dataset already downloaded from {redact(url)}: nothing to do")
                return 0
    except (OSError, ValueError, AttributeError):
        pass
    os.makedirs(args.work, exist_ok=True)
    part = part_path(args.work, spec.get("id") or url)
    _download(url, headers, part)
    unpacked = os.path.join(args.work, "unpacked")
    shutil.rmtree(unpacked, ignore_errors=True)
    _say("unpacking")
    try:
        unpack(part, unpacked)
    except Refused as exc:
        shutil.rmtree(unpacked, ignore_errors=True)
        _discard(part)  # or every later sync would fail on the same bytes
        raise SystemExit(f"refusing the archive: {exc}; it was deleted, the next sync downloads it again") from None
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
