"""`python -m trainer extract`: sample frames from every video and cache backbone features.

The path of one run, top to bottom (this module runs it; the steps' modules in brackets):

1. settings  -> fingerprint (trainer.backbone_settings.feature_settings); meta.json records them
2. discover  -> videos with class and split (trainer.dataset); splits.json keeps the split
3. identify  -> SHA-256 of each video's content (a (size, mtime_ns) stat cache in
                hashes.json spares re-reading unchanged files); key = content + settings
                (trainer.extract_plan)
4. skip      -> videos whose key is already in the index (ok or failed): nothing to do
                (trainer.extract_plan)
5. decode    -> worker processes sample frames (trainer.frames), one video each
                (trainer.decode_pool)
6. features  -> frames of consecutive videos packed into full backbone passes, run on
                every device by one thread each (trainer.feeder), uint8 to the device
7. store     -> features/<key>.npy (atomic), then one index line per video (fsync'd),
                as soon as a video's last frame is through
8. summary   -> per split and class; warns when failures skew the class balance; frames,
                passes, useful work, and each stage's busy share (the bottleneck)
                (trainer.extract_summary)

At most a few videos are ever in flight, so a SIGKILL loses only them.
"""

from __future__ import annotations

import fcntl
import time
from pathlib import Path
from typing import Callable

from trainer import config as config_mod
from trainer.backbone import load_backbone
from trainer.backbone_settings import feature_settings
from trainer.cache import CLASSES, FeatureCache, feature_key
from trainer.dataset import Video, assign_splits, conflict_error, discover, duplicate_groups, label_conflicts
from trainer.decode_pool import Crashed, DecoderPool, decode_video, worker_count
from trainer.errors import UsageError
from trainer.extract_plan import identify_videos, index_record, plan_work, removed_records
from trainer.extract_summary import print_summary, summarize
from trainer.sampling_log import count_sampling
from trainer.paths import folder_to_write
from trainer.video_formats import video_extensions


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
        shas, unreadable = identify_videos(videos, cache, data, progress)
        conflicts = label_conflicts(videos, shas)
        if conflicts and not data["allow_label_conflicts"]:
            raise conflict_error(conflicts, "set data.allow_label_conflicts: true (or pass --allow-label-conflicts)")
        recorded = cache.read_splits()
        splits = assign_splits(videos, recorded, data["split"], data["split"]["seed"], content=shas)
        cache.write_splits({**recorded, **splits})  # keep videos that are gone: they may come back
        work, settled, skipped = plan_work(videos, shas, unreadable, splits, cache, fp)
        gone = removed_records(videos, cache, fp)
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


def _extract_videos(work: list[Video], shas, splits, cache: FeatureCache, settings: dict, data: dict,
                    progress: bool, run: dict, gpus: int = 0) -> None:
    """Decode `work` in worker processes, features on every device (trainer.feeder), store each video."""
    from tqdm import tqdm

    from trainer.feeder import Feeder, extraction_devices, pipeline_stats

    fp = settings["fingerprint"]
    n_frames, size = settings["frames"], settings["image_size"]
    workers = min(worker_count(data), len(work))
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
                cache.append([index_record(v, splits, shas, fp, "failed", {"reason": f"bad features: {exc}"})])
                run["failed"] += 1
            else:  # the index line after the feature file exists: a record always has its features
                cache.append([index_record(v, splits, shas, fp, "ok", {
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
                cache.append([index_record(v, splits, shas, fp, "failed", {"reason": reason})])
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
