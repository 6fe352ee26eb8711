"""`python -m trainer info --cache-dir DIR [--json]`: what a feature cache holds.

Reads only meta.json, index.jsonl and file sizes (no TensorFlow, no video decoding), so
it is instant even on a laptop looking at a cache fetched from a GPU machine.
"""

from __future__ import annotations

import json
from pathlib import Path

from trainer.cache import CLASSES, SPLITS, FeatureCache
from trainer.errors import UsageError


def cache_info(cache_dir: str | Path) -> dict:
    cache = FeatureCache(cache_dir)
    if not cache.root.is_dir():
        raise UsageError(f"cache dir does not exist: {cache.root}")
    if not cache.meta_path.is_file():
        raise UsageError(f"{cache.root} is not a feature cache (no meta.json; run `python -m trainer extract`)")
    from trainer.settings_check import cache_meta

    meta = cache_meta(cache.root)  # a corrupt or foreign meta.json: one line, not a traceback
    ok = cache.ok_records()
    splits = {s: {c: 0 for c in CLASSES} for s in SPLITS}
    padded = 0
    feature_bytes = 0
    for rec in ok:
        splits[rec["split"]][rec["label"]] += 1
        padded += bool(rec.get("padded"))
        feature_bytes += cache.feature_path(rec["key"]).stat().st_size
    disk_bytes = sum(p.stat().st_size for p in cache.root.rglob("*") if p.is_file())
    by_content: dict[str, list[dict]] = {}
    for rec in ok:
        if rec.get("sha256"):
            by_content.setdefault(rec["sha256"], []).append(rec)
    duplicates = sorted(({"paths": sorted(r["path"] for r in recs), "splits": sorted({r["split"] for r in recs})}
                         for recs in by_content.values() if len(recs) > 1), key=lambda d: d["paths"])
    return {
        "cache_dir": str(cache.root),
        "videos": len(ok),
        "failed": cache.failures(),
        "padded": padded,
        "duplicates": duplicates,  # identical content under several paths (each copy in one split)
        "splits": splits,
        "feature_shape": meta["feature_shape"],
        "dtype": meta["dtype"],
        "backbone": meta["backbone"],
        "weights": meta.get("weights_id", meta.get("weights")),
        "image_size": meta["image_size"],
        "frames": meta["frames"],
        "fingerprint": meta["fingerprint"],
        "feature_bytes": feature_bytes,  # the current settings' features
        "disk_bytes": disk_bytes,  # everything, including features of earlier settings
    }


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def run(args) -> int:
    info = cache_info(args.cache_dir)
    if args.json:
        print(json.dumps(info, sort_keys=True))
        return 0
    print(f"cache {info['cache_dir']}: {info['backbone']} features ({info['weights']}), "
          f"{info['frames']} frames of {info['image_size']}x{info['image_size']}, "
          f"shape {info['feature_shape']} {info['dtype']} per video")
    print(f"{'split':<6} " + " ".join(f"{c:>11}" for c in CLASSES) + f" {'total':>7}")
    for s in SPLITS:
        counts = info["splits"][s]
        print(f"{s:<6} " + " ".join(f"{counts[c]:>11}" for c in CLASSES) + f" {sum(counts.values()):>7}")
    print(f"usable videos: {info['videos']} ({info['padded']} padded: fewer frames than sampled), "
          f"failed: {len(info['failed'])}")
    for f in info["failed"]:
        print(f"  failed: {f['path']}: {f['reason']}")
    if info["duplicates"]:
        print(f"duplicates: {len(info['duplicates'])} video(s) with identical content under several paths")
        for d in info["duplicates"]:
            print(f"  {'/'.join(d['splits'])}: {' = '.join(d['paths'])}")
    print(f"size on disk: {_size(info['feature_bytes'])} of features for these settings, "
          f"{_size(info['disk_bytes'])} in all")
    return 0
