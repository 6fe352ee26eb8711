"""What an extract run must do: each video's content hash and cache key, and which need decoding.

identify_videos hashes the videos (a (size, mtime_ns) stat cache in hashes.json spares
re-reading unchanged files); plan_work sorts them into already done, settled without
decoding (same content and settings under another name, unreadable files) and to decode;
removed_records drops the videos that left the dataset from the index.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from trainer.cache import FeatureCache, atomic_write_json, feature_key
from trainer.dataset import Video
from trainer.decode_pool import worker_count


def hash_file(path: str) -> str | OSError:
    """The file's SHA-256, or the OSError that stopped reading it (returned: it is data here)."""
    from trainer.cache import sha256_file

    try:
        return sha256_file(path)
    except OSError as exc:
        return exc


class StatCache:
    """(size, mtime_ns) -> content SHA-256 per video, so re-runs do not re-read every file."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.entries: dict[str, list] = json.loads(path.read_text()) if path.is_file() else {}
        except (json.JSONDecodeError, OSError):
            self.entries = {}  # a damaged cache of hashes only costs re-hashing

    def get(self, rel: str, st: os.stat_result) -> str | None:
        e = self.entries.get(rel)
        return e[2] if e and e[0] == st.st_size and e[1] == st.st_mtime_ns else None

    def put(self, rel: str, st: os.stat_result, sha: str) -> None:
        self.entries[rel] = [st.st_size, st.st_mtime_ns, sha]

    def save(self) -> None:
        # Entries of videos that left the dataset are kept (a few bytes each): if they come
        # back, or a run sees only part of the dataset, nothing is hashed again.
        atomic_write_json(self.path, self.entries)


def identify_videos(videos: list[Video], cache: FeatureCache, data: dict,
              progress: bool) -> tuple[dict[str, str], dict[str, str]]:
    """(rel -> content SHA-256, rel -> reason for files that cannot be read).

    Only files whose size or mtime changed since the last run are read (in parallel).
    An unreadable file gets a stand-in "SHA" from its size and mtime, so that it is
    recorded as failed once and not again until it changes.
    """
    from tqdm import tqdm

    stats = StatCache(cache.root / "hashes.json")
    shas: dict[str, str] = {}
    unreadable: dict[str, str] = {}
    to_hash = []
    for v in videos:
        try:
            st = v.path.stat()
        except OSError as exc:
            shas[v.rel], unreadable[v.rel] = "unreadable:gone", f"cannot read file: {exc.strerror}"
            continue
        sha = stats.get(v.rel, st)
        if sha:
            shas[v.rel] = sha
        else:
            to_hash.append((v, st))
    if to_hash:
        # Threads, not processes: hashlib releases the GIL on large reads, so threads hash
        # in parallel without the start-up cost of spawning interpreters.
        bar = tqdm(total=len(to_hash), desc="hashing", unit="video", disable=not progress, leave=False)
        pool = ThreadPoolExecutor(max_workers=min(worker_count(data), len(to_hash)))
        try:
            for (v, st), sha in zip(to_hash, pool.map(lambda item: hash_file(str(item[0].path)), to_hash)):
                if isinstance(sha, OSError):
                    shas[v.rel] = f"unreadable:{st.st_size}:{st.st_mtime_ns}"
                    unreadable[v.rel] = f"cannot read file: {sha.strerror}"
                else:
                    shas[v.rel] = sha
                    stats.put(v.rel, st, sha)
                bar.update()
        finally:
            bar.close()
            pool.shutdown(wait=False, cancel_futures=True)
            stats.save()  # also after Ctrl-C: what was hashed need not be hashed again
    return shas, unreadable


def plan_work(videos, shas, unreadable, splits, cache: FeatureCache, fp: str):
    """(videos to decode, records to append now (reused features, unreadable files), count already done)."""
    done = cache.records(fp)
    by_key: dict[str, dict] = {}
    for rec in cache.history():
        if rec.get("status") == "ok" and rec.get("fingerprint") == fp:
            by_key[rec["key"]] = rec
    work, settled, skipped = [], [], 0
    for v in videos:
        key = feature_key(shas[v.rel], fp)
        rec = done.get(v.rel)
        if rec and rec.get("key") == key and rec.get("label") == v.label and rec.get("split") == splits[v.rel]:
            skipped += 1
            continue
        if v.rel in unreadable:
            settled.append(index_record(v, splits, shas, fp, "failed", {"reason": unreadable[v.rel]}))
            continue
        old = by_key.get(key)
        if old and cache.has(key):
            # Same content and settings under another name, or label/split changed: no decoding.
            settled.append(index_record(v, splits, shas, fp, "ok", {k: old.get(k) for k in
                                                              ("padded", "frames_decoded", "frames_reported", "indices")}))
            continue
        work.append(v)
    return work, settled, skipped


def removed_records(videos: list[Video], cache: FeatureCache, fp: str) -> list[dict]:
    """'removed' records for videos the index has but the dataset no longer holds.

    Training reads the index, so a video deleted from the dataset must leave it too. Its
    features stay on disk: if the file comes back, it is recognised by content and reused.
    """
    present = {v.rel for v in videos}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return [{"path": path, "status": "removed", "fingerprint": fp, "key": rec.get("key"), "time": now}
            for path, rec in sorted(cache.records(fp).items())
            if path not in present and rec.get("status") != "removed"]


def index_record(v: Video, splits, shas, fp: str, status: str, extra: dict) -> dict:
    return {"path": v.rel, "label": v.label, "split": splits[v.rel], "status": status,
            "fingerprint": fp, "key": feature_key(shas[v.rel], fp), "sha256": shas[v.rel],
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
