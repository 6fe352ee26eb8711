"""The on-disk feature cache: one float16 .npy per video plus an append-only index.

Layout of a cache directory:

    meta.json       settings of the current feature set (backbone, weights, frames,
                    image size, feature shape, dtype, fingerprint)
    features/<key>.npy   float16 array [frames, feature_dim], one per video
    index.jsonl     append-only log, one JSON object per processed video:
                    {"path", "label", "split", "status": "ok"|"failed", "fingerprint",
                     "key", "reason", "padded", "frames_decoded", ...}
    splits.json     the stable train/val/test assignment of every video ever seen

A feature key hashes the video's content together with the settings fingerprint, so
changed settings can never pick up stale features. Every write is atomic (temporary
file, fsync, rename) and the index is appended and fsync'd after the features are in
place, so a SIGKILL loses at most the videos in flight. The latest line for a path wins.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from trainer.labels import CLASSES, SPLITS  # noqa: F401  (re-exported: most modules import them from here)

FORMAT_VERSION = 1


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def sha256_file(path: str | Path) -> str:
    """A file's SHA-256 (video content for cache keys, weights files for the fingerprint)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def settings_fingerprint(settings: dict) -> str:
    """Hash of every setting that changes the features (frames, backbone, weights id, image size)."""
    blob = json.dumps(settings, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def feature_key(content_sha256: str, fingerprint: str) -> str:
    return hashlib.sha256(f"{content_sha256}:{fingerprint}".encode()).hexdigest()[:32]


class FeatureCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.features_dir = self.root / "features"
        self.meta_path = self.root / "meta.json"
        self.index_path = self.root / "index.jsonl"
        self.splits_path = self.root / "splits.json"

    # --- settings -------------------------------------------------------------------
    def read_meta(self) -> dict | None:
        if not self.meta_path.is_file():
            return None
        return json.loads(self.meta_path.read_text())

    def write_meta(self, meta: dict) -> None:
        atomic_write_json(self.meta_path, {"format": FORMAT_VERSION, **meta})

    # --- features -------------------------------------------------------------------
    def feature_path(self, key: str) -> Path:
        return self.features_dir / f"{key}.npy"

    def has(self, key: str) -> bool:
        return self.feature_path(key).is_file()

    def save_features(self, key: str, features: np.ndarray) -> None:
        arr = np.ascontiguousarray(features, dtype=np.float16)
        if not np.all(np.isfinite(arr)):
            raise ValueError("features contain NaN or inf (float16 overflow?)")
        import io

        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        atomic_write_bytes(self.feature_path(key), buf.getvalue())

    def load_features(self, key: str) -> np.ndarray:
        return np.load(self.feature_path(key), allow_pickle=False)

    # --- index ----------------------------------------------------------------------
    def append(self, records: Iterable[dict]) -> None:
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        if not lines:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.index_path, "a+b") as fh:
            # A kill mid-write can leave a torn last line; start on a fresh line so the
            # new records do not get glued to it and lost with it.
            if fh.tell() > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    lines = "\n" + lines
            fh.write(lines.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())

    def history(self) -> list[dict]:
        """Every readable index record, oldest first (any settings fingerprint)."""
        out: list[dict] = []
        if not self.index_path.is_file():
            return out
        with open(self.index_path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line torn by a kill mid-write; the video is redone
        return out

    def _latest(self) -> dict[str, dict]:
        return {rec["path"]: rec for rec in self.history() if "path" in rec}

    def records(self, fingerprint: str | None = None) -> dict[str, dict]:
        """Latest record per video path for the current (or given) settings fingerprint.

        An "ok" record whose feature file is missing is dropped, so it is extracted again.
        """
        if fingerprint is None:
            meta = self.read_meta()
            if meta is None:
                return {}
            fingerprint = meta["fingerprint"]
        out = {}
        for path, rec in self._latest().items():
            if rec.get("fingerprint") != fingerprint:
                continue
            if rec.get("status") == "ok" and not self.has(rec["key"]):
                continue
            out[path] = rec
        return out

    def ok_records(self, split: str | None = None) -> list[dict]:
        recs = [r for r in self.records().values() if r.get("status") == "ok"]
        if split is not None:
            recs = [r for r in recs if r.get("split") == split]
        return sorted(recs, key=lambda r: r["path"])

    def failures(self) -> list[dict]:
        return sorted(
            ({"path": r["path"], "reason": r.get("reason", "unknown")}
             for r in self.records().values() if r.get("status") == "failed"),
            key=lambda r: r["path"],
        )

    # --- splits ---------------------------------------------------------------------
    def read_splits(self) -> dict[str, str]:
        if not self.splits_path.is_file():
            return {}
        return json.loads(self.splits_path.read_text())

    def write_splits(self, splits: dict[str, str]) -> None:
        atomic_write_json(self.splits_path, splits)

    # --- what training reads --------------------------------------------------------
    def load_split(self, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """All cached videos of one split: features float16 [N, frames, dim], labels int [N], paths."""
        meta = self.read_meta()
        if meta is None:
            raise FileNotFoundError(f"no feature cache at {self.root} (run `python -m trainer extract` first)")
        recs = self.ok_records(split)
        shape = tuple(meta["feature_shape"])
        x = np.empty((len(recs), *shape), dtype=np.float16)
        for i, rec in enumerate(recs):
            x[i] = self.load_features(rec["key"])
        y = np.array([CLASSES.index(r["label"]) for r in recs], dtype=np.int64)
        return x, y, [r["path"] for r in recs]
