"""`python -m trainer extract`: sample frames from every video and cache backbone features.

The path of one run, top to bottom:

1. settings  -> fingerprint (trainer.backbone.feature_settings); meta.json records them
2. discover  -> videos with class and split (trainer.dataset); splits.json keeps the split
3. identify  -> SHA-256 of each video's content (a (size, mtime_ns) stat cache in
                hashes.json spares re-reading unchanged files); key = content + settings
4. skip      -> videos whose key is already in the index (ok or failed): nothing to do
5. decode    -> worker processes sample frames (trainer.frames), one video each
6. features  -> frames of consecutive videos packed into full backbone passes, run on
                every device by one thread each (trainer.feeder), uint8 to the device
7. store     -> features/<key>.npy (atomic), then one index line per video (fsync'd),
                as soon as a video's last frame is through
8. summary   -> per split and class; warns when failures skew the class balance; frames,
                passes, useful work, and each stage's busy share (the bottleneck)

Workers are started with 'spawn' (never fork a process that may hold TensorFlow),
ignore Ctrl-C (the main process stops them), and exit on their own when the main
process is killed. At most a few videos are ever in flight, so a SIGKILL loses only them.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable, Iterable, Iterator

from trainer import config as config_mod
from trainer.backbone import feature_settings, load_backbone
from trainer.cache import CLASSES, SPLITS, FeatureCache, atomic_write_json, feature_key
from trainer.dataset import Video, assign_splits, conflict_error, discover, duplicate_groups, label_conflicts
from trainer.errors import UsageError
from trainer.sampling_log import count_sampling, sampling_line
from trainer.paths import folder_to_write
from trainer.video_formats import video_extensions

BALANCE_WARN_POINTS = 5.0


# --- worker side (runs in the spawned processes; must not import TensorFlow) ---------

def _init_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C
    from trainer.frames import cv2  # through trainer.frames: it quiets OpenCV's logging first

    cv2.setNumThreads(1)  # parallelism comes from the processes; threads would oversubscribe
    parent = os.getppid()

    # A SIGKILLed main process cannot stop its pool; without this the workers would wait
    # on their task queue forever. Polling the parent id works on every POSIX system.
    def watch_parent() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()


def hash_file(path: str) -> str | OSError:
    """The file's SHA-256, or the OSError that stopped reading it (returned: it is data here)."""
    from trainer.cache import sha256_file

    try:
        return sha256_file(path)
    except OSError as exc:
        return exc


def decode_video(path: str, n_frames: int, size: int) -> dict:
    """Frames of one video, or the reason it has none (never raises for a bad video)."""
    from trainer.frames import VideoError, sample_frames

    t0 = time.perf_counter()
    try:
        s = sample_frames(path, n_frames, size, threads=1)
    except VideoError as exc:
        return {"ok": False, "reason": str(exc)}
    except Exception as exc:  # a decoder bug must cost one video, not the run
        return {"ok": False, "reason": f"unexpected {type(exc).__name__}: {exc}"}
    return {"ok": True, "frames": s.frames, "indices": s.indices, "frames_decoded": s.total_frames,
            "frames_reported": s.reported_frames, "padded": s.padded, "passes": s.passes,
            "sampling": s.method, "frames_read": s.frames_read,
            "seconds": time.perf_counter() - t0}


# --- process pool -------------------------------------------------------------------

class DecoderPool:
    """Runs one function per item in spawned processes with a bounded number in flight.

    Bounded because decoded frames wait in memory until the backbone takes them: with
    VGG19 on a CPU, decoding is far ahead and an unbounded queue would hold every video.
    A worker that dies (a decoder segfault, the OOM killer) breaks a ProcessPoolExecutor
    for every task in flight; those are retried one at a time in a fresh pool, so only
    the video that really kills its worker is reported, as `crashed`.
    """

    def __init__(self, workers: int):
        self.workers = max(1, workers)
        self._ctx = multiprocessing.get_context("spawn")
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self, workers: int | None = None) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=workers or self.workers, mp_context=self._ctx,
                                   initializer=_init_worker)

    def map_unordered(self, fn: Callable, items: Iterable, window: int | None = None) -> Iterator[tuple]:
        """Yield (item, result) as results arrive; result is a `Crashed` for a killer item."""
        window = window or 2 * self.workers
        items = iter(items)
        self._pool = self._pool or self._executor()
        in_flight: dict = {}
        exhausted = False
        while True:
            while not exhausted and len(in_flight) < window:
                try:
                    item = next(items)
                except StopIteration:
                    exhausted = True
                    break
                in_flight[self._pool.submit(fn, *item)] = item
            if not in_flight:
                return
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            broken = []
            for fut in done:
                item = in_flight.pop(fut)
                try:
                    yield item, fut.result()
                except BrokenProcessPool:
                    broken.append(item)
            if broken:
                broken += list(in_flight.values())  # every other task died with the pool
                in_flight.clear()
                self._pool.shutdown(wait=False, cancel_futures=True)
                for item in broken:
                    yield item, self._run_alone(fn, item)
                self._pool = self._executor()

    def _run_alone(self, fn: Callable, item: tuple):
        with self._executor(1) as solo:
            try:
                return solo.submit(fn, *item).result()
            except BrokenProcessPool:
                return Crashed()

    def close(self, cancel: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=not cancel, cancel_futures=cancel)
            self._pool = None


class Crashed:
    reason = "the video decoder crashed on this file (worker process died)"


# --- main side --------------------------------------------------------------------

def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours a container's CPU limit
    except AttributeError:
        return os.cpu_count() or 1


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


def lock_cache(cache: FeatureCache):
    """One extract per cache at a time; the OS drops the lock when the holder dies (even SIGKILL)."""
    cache.root.mkdir(parents=True, exist_ok=True)
    fh = open(cache.root / ".extract.lock", "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise UsageError(f"another extract is already writing to {cache.root}; wait for it or use another --cache-dir") from None
    return fh


def extract(dataset: Path, cache_dir: Path, cfg: dict, progress: bool = True,
            log: Callable[[str], None] = print, gpus: int = 0) -> dict:
    """Bring the cache up to date with the dataset; returns the summary (see summarize).

    gpus: how many of the visible GPUs extract (0 = all).
    """
    data = cfg["data"]
    if not dataset.exists():
        raise UsageError(f"dataset path does not exist: {dataset}")
    settings = feature_settings(data)
    fp = settings["fingerprint"]
    videos = discover(dataset, data["class_names"], video_extensions(data["video_extensions"]))

    cache = FeatureCache(folder_to_write(cache_dir, "--cache-dir"))
    lock = lock_cache(cache)
    try:
        # Temporary files of a run killed mid-write (atomic writes never leave a partial
        # .npy, but the .tmp stays); safe to delete: the lock says nobody is writing.
        for tmp in cache.features_dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        _write_meta(cache, settings, log)
        # content first: copies of one video must share a split (dataset.assign_splits)
        shas, unreadable = _identify(videos, cache, data, progress)
        conflicts = label_conflicts(videos, shas)
        if conflicts and not data["allow_label_conflicts"]:
            raise conflict_error(conflicts, "set data.allow_label_conflicts: true (or pass --allow-label-conflicts)")
        recorded = cache.read_splits()
        splits = assign_splits(videos, recorded, data["split"], data["split"]["seed"], content=shas)
        cache.write_splits({**recorded, **splits})  # keep videos that are gone: they may come back
        work, settled, skipped = _plan(videos, shas, unreadable, splits, cache, fp)
        gone = _gone(videos, cache, fp)
        if settled or gone:
            cache.append(settled + gone)
        reused = sum(r["status"] == "ok" for r in settled)
        run = {"extracted": 0, "failed": len(settled) - reused, "skipped": skipped, "reused": reused,
               "removed": len(gone)}
        if work:
            from trainer.feeder import describe_backbone_run, extraction_devices

            log(describe_backbone_run(settings, extraction_devices(settings, gpus)))  # precision, devices, XLA
            _extract_videos(work, shas, splits, cache, settings, data, progress, run, gpus)
        summary = summarize(videos, splits, cache, fp)
        summary["duplicates"] = [{"split": splits[g[0]], "paths": g} for g in duplicate_groups(videos, shas)]
        summary["run"] = run
        return summary
    finally:
        lock.close()


def _write_meta(cache: FeatureCache, settings: dict, log: Callable[[str], None]) -> None:
    old = cache.read_meta()
    if old and old.get("fingerprint") != settings["fingerprint"]:
        changed = [k for k in ("backbone", "weights_id", "image_size", "frames", "sampler", "precision")
                   if old.get(k) != settings.get(k)]
        log("settings changed (" + ", ".join(f"{k} {old.get(k)} -> {settings.get(k)}" for k in changed)
            + "): extracting new features; features of the old settings stay in the cache")
    meta = {**settings, "feature_shape": [settings["frames"], settings["feature_dim"]], "dtype": "float16",
            "classes": list(CLASSES)}
    if old is None or {k: v for k, v in old.items() if k != "format"} != meta:
        cache.write_meta(meta)


def _identify(videos: list[Video], cache: FeatureCache, data: dict,
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
        pool = ThreadPoolExecutor(max_workers=min(_workers(data), len(to_hash)))
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


def _plan(videos, shas, unreadable, splits, cache: FeatureCache, fp: str):
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
            settled.append(_record(v, splits, shas, fp, "failed", {"reason": unreadable[v.rel]}))
            continue
        old = by_key.get(key)
        if old and cache.has(key):
            # Same content and settings under another name, or label/split changed: no decoding.
            settled.append(_record(v, splits, shas, fp, "ok", {k: old.get(k) for k in
                                                              ("padded", "frames_decoded", "frames_reported", "indices")}))
            continue
        work.append(v)
    return work, settled, skipped


def _gone(videos: list[Video], cache: FeatureCache, fp: str) -> list[dict]:
    """'removed' records for videos the index has but the dataset no longer holds.

    Training reads the index, so a video deleted from the dataset must leave it too. Its
    features stay on disk: if the file comes back, it is recognised by content and reused.
    """
    present = {v.rel for v in videos}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return [{"path": path, "status": "removed", "fingerprint": fp, "key": rec.get("key"), "time": now}
            for path, rec in sorted(cache.records(fp).items())
            if path not in present and rec.get("status") != "removed"]


def _record(v: Video, splits, shas, fp: str, status: str, extra: dict) -> dict:
    return {"path": v.rel, "label": v.label, "split": splits[v.rel], "status": status,
            "fingerprint": fp, "key": feature_key(shas[v.rel], fp), "sha256": shas[v.rel],
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}


def _workers(data: dict) -> int:
    n = data["workers"]
    if n < 0:
        raise UsageError(f"data.workers must be >= 0 (0 = one per CPU core), got {n}")
    return n or default_workers()


def _extract_videos(work: list[Video], shas, splits, cache: FeatureCache, settings: dict, data: dict,
                    progress: bool, run: dict, gpus: int = 0) -> None:
    """Decode `work` in worker processes, features on every device (trainer.feeder), store each video."""
    from tqdm import tqdm

    from trainer.feeder import Feeder, extraction_devices, pipeline_stats

    fp = settings["fingerprint"]
    n_frames, size = settings["frames"], settings["image_size"]
    workers = min(_workers(data), len(work))
    pool = DecoderPool(workers)
    batch = data["extract_batch_size"]
    devices = extraction_devices(settings, gpus)
    # Enough decoded videos queued to fill a couple of backbone passes per device, and no more.
    window = 2 * workers + len(devices) * -(-batch // n_frames) + 1
    bar = tqdm(total=len(work), desc="extract", unit="video", disable=not progress, dynamic_ncols=True)
    decode_s = store_s = 0.0
    started = time.perf_counter()
    # The backbones are built in the device threads while the workers decode (TensorFlow takes seconds).
    feeder = Feeder(lambda device: load_backbone(settings, cache_dir=cache.root, batch_size=batch, device=device),
                    devices, batch)

    def store(finished) -> None:
        nonlocal store_s
        for (v, r), f in finished:
            t0 = time.perf_counter()
            try:
                cache.save_features(feature_key(shas[v.rel], fp), f)
            except ValueError as exc:  # NaN/inf: never store features a model would learn garbage from
                cache.append([_record(v, splits, shas, fp, "failed", {"reason": f"bad features: {exc}"})])
                run["failed"] += 1
            else:  # the index line after the feature file exists: a record always has its features
                cache.append([_record(v, splits, shas, fp, "ok", {
                    "padded": r["padded"], "frames_decoded": r["frames_decoded"],
                    "frames_reported": r["frames_reported"], "indices": r["indices"], "reason": None,
                    "sampling": r["sampling"], "frames_read": r["frames_read"]})])
                run["extracted"] += 1
            store_s += time.perf_counter() - t0
            bar.update()

    interrupted = False
    try:
        jobs = ((v, n_frames, size) for v in work)
        for (v, *_), result in pool.map_unordered(_decode_item, jobs, window=window):
            if isinstance(result, Crashed) or not result["ok"]:
                reason = result.reason if isinstance(result, Crashed) else result["reason"]
                cache.append([_record(v, splits, shas, fp, "failed", {"reason": reason})])
                run["failed"] += 1
                bar.update()
                bar.set_postfix(failed=run["failed"], refresh=False)
                continue
            decode_s += result.get("seconds", 0.0)
            count_sampling(run, result)
            frames = result.pop("frames")  # only the features are kept once computed
            store(feeder.put((v, result), frames))
        store(feeder.finish())
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        feeder.close()
        bar.close()
        pool.close(cancel=interrupted)
        run["pipeline"] = pipeline_stats(feeder.stats, time.perf_counter() - started, workers, decode_s, store_s)


def _decode_item(v: Video, n_frames: int, size: int) -> dict:
    return decode_video(str(v.path), n_frames, size)


# --- summary ------------------------------------------------------------------------

def summarize(videos: list[Video], splits: dict[str, str], cache: FeatureCache, fp: str) -> dict:
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



def run(args) -> int:
    overrides: dict = {}
    config_mod.set_dotted(overrides, "data.weights", args.weights)
    config_mod.set_dotted(overrides, "data.workers", args.workers)
    if getattr(args, "allow_label_conflicts", False):
        config_mod.set_dotted(overrides, "data.allow_label_conflicts", True)
    cfg = config_mod.load(args.config, overrides)
    dataset, cache_dir = Path(args.dataset_path), Path(args.cache_dir)
    gpus = getattr(args, "gpus", None) or 0
    if gpus < 0:
        raise UsageError(f"--gpus must be >= 0 (0 = every visible GPU), got {gpus}")
    summary = extract(dataset, cache_dir, cfg, progress=not args.quiet, gpus=gpus)
    print_summary(summary, cache_dir)
    if summary["videos"] == 0:
        n = len(summary["failed"])
        first = summary["failed"][0] if n else None
        raise UsageError(f"nothing could be extracted: all {n} videos failed"
                         + (f" (e.g. {first['path']}: {first['reason']})" if first else ""))
    return 0
