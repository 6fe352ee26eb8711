"""The report of an extract run: counts per split and class, class-balance warnings, the printed summary."""

from __future__ import annotations

import sys
from pathlib import Path

from trainer.cache import CLASSES, SPLITS, FeatureCache
from trainer.dataset import Video
from trainer.sampling_log import sampling_line

BALANCE_WARN_POINTS = 5.0


def summarize(videos: list[Video], splits: dict[str, str], cache: FeatureCache, fp: str) -> dict:
    """Per split and class: videos found, extracted and failed; the failures; class-balance warnings."""
    recs = cache.records(fp)
    table = {s: {c: {"extracted": 0, "failed": 0, "found": 0} for c in CLASSES} for s in SPLITS}
    failed, padded = [], 0
    for v in videos:
        cell = table[splits[v.rel]][v.label]
        cell["found"] += 1
        rec = recs.get(v.rel)
        if rec and rec["status"] == "ok":
            cell["extracted"] += 1
            padded += bool(rec.get("padded"))
        elif rec and rec["status"] == "failed":
            cell["failed"] += 1
            failed.append({"path": v.rel, "reason": rec.get("reason")})
    warnings = []
    for scope, cells in [("all splits", _sum_cells(table))] + [(s, table[s]) for s in SPLITS]:
        found = {c: cells[c]["found"] for c in CLASSES}
        ok = {c: cells[c]["extracted"] for c in CLASSES}
        if sum(ok.values()) and sum(found.values()) and sum(ok.values()) < sum(found.values()):
            before = 100.0 * found["violent"] / sum(found.values())
            after = 100.0 * ok["violent"] / sum(ok.values())
            if abs(after - before) > BALANCE_WARN_POINTS:
                warnings.append(f"failures shift the class balance of {scope}: violent {before:.1f}% of the "
                                f"videos found, {after:.1f}% of those extracted")
    usable = sum(c["extracted"] for s in table.values() for c in s.values())
    return {"table": table, "videos": usable, "failed": failed, "padded": padded, "warnings": warnings}


def _sum_cells(table: dict) -> dict:
    return {c: {k: sum(table[s][c][k] for s in SPLITS) for k in ("extracted", "failed", "found")}
            for c in CLASSES}


def print_summary(summary: dict, cache_dir: Path, out=None) -> None:
    out = out or sys.stdout
    run = summary["run"]
    print(f"this run: {run['extracted']} extracted, {run['failed']} failed, "
          f"{run['skipped']} already in the cache"
          + (f", {run['reused']} reused from identical content" if run["reused"] else "")
          + (f", {run['removed']} no longer in the dataset (dropped from the index)" if run["removed"] else ""),
          file=out)
    if run["extracted"] == run["failed"] == run["reused"] == run["removed"] == 0:
        print("nothing to extract: the cache is up to date with the dataset", file=out)
    print(f"{'split':<6} {'class':<11} {'extracted':>9} {'failed':>7}", file=out)
    for s in SPLITS:
        for c in CLASSES:
            cell = summary["table"][s][c]
            print(f"{s:<6} {c:<11} {cell['extracted']:>9} {cell['failed']:>7}", file=out)
    total_failed = len(summary["failed"])
    print(f"usable videos: {summary['videos']}, failed: {total_failed}, padded (short videos): "
          f"{summary['padded']}; cache: {cache_dir}", file=out)
    for f in summary["failed"][:10]:
        print(f"  failed: {f['path']}: {f['reason']}", file=out)
    if total_failed > 10:
        print(f"  ... and {total_failed - 10} more (python -m trainer info --cache-dir {cache_dir})", file=out)
    dups = summary.get("duplicates") or []
    if dups:
        print(f"duplicates: {len(dups)} video(s) appear more than once ({sum(len(d['paths']) for d in dups)} files "
              "with identical content); every copy is in its first copy's split", file=out)
        for d in dups[:10]:
            print(f"  {d['split']}: {' = '.join(d['paths'])}", file=out)
        if len(dups) > 10:
            print(f"  ... and {len(dups) - 10} more (python -m trainer info --cache-dir {cache_dir})", file=out)
    for w in summary["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    if run.get("sampling"):
        print(sampling_line(run["sampling"]), file=out)
    if run.get("pipeline"):
        from trainer.feeder import print_pipeline

        print_pipeline(run["pipeline"], out)
