"""What `train` checks before TensorFlow loads: the cache, the config against it, the output folder.

Each mistake is one line and exit 2 in well under a second (TensorFlow takes 5-7 s to
import). `train --dry-run` stops after these checks: `python -m deploy check` runs it on
the laptop with the run's own flags, so a typo in `train.args` is found before anything
is rented. There the cache may not exist yet (the host extracts it); the flags and the
config are checked all the same.
"""

from __future__ import annotations

import sys
from pathlib import Path

from trainer.errors import UsageError
from trainer.labels import CLASSES
from trainer.paths import existing_folder
from trainer.settings_check import cache_meta, check_train_cache


def check_inputs(args, cfg: dict) -> list[str]:
    """Raise UsageError for the first problem; returns warnings to print once train.log is open."""
    from trainer.backbone_settings import feature_settings

    dry_run = getattr(args, "dry_run", False)
    if dry_run:  # the data section as extract will read it on the host (e.g. an image_size VGG19 cannot take)
        data, weights = cfg["data"], str(cfg["data"]["weights"])
        if weights.lower() not in ("imagenet", "none") and not Path(weights).expanduser().is_file():
            data = {**data, "weights": "none"}  # a weights file on the host is checked there, by extract
        feature_settings(data)
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output-dir {out} is a file, not a folder: pass a folder (it is created if missing)")
    if dry_run and not Path(args.cache_dir).exists():
        return []  # deploy's check: the cache is made on the host
    cache_dir = existing_folder(args.cache_dir, "--cache-dir", "run `python -m trainer extract` first")
    meta = cache_meta(cache_dir)
    warnings: list[str] = []
    check_train_cache(args.config, cache_dir, meta, getattr(args, "use_cache_settings", False), warnings.append)
    _check_splits(cache_dir)
    return warnings


def _check_splits(cache_dir: Path) -> None:
    from trainer.cache import FeatureCache

    cache = FeatureCache(cache_dir)
    train, val = cache.ok_records("train"), cache.ok_records("val")
    if not train or not val:
        raise UsageError(f"the cache needs train and val videos; it has {len(train)} train, {len(val)} val "
                         f"(extract a dataset with videos of both splits, or change data.split)")
    if len({r["label"] for r in train}) < len(CLASSES):
        raise UsageError("the training split holds only one class; both violent and non-violent videos are needed")


def dry_run_report(args, cfg: dict) -> int:
    tc = cfg["train"]
    cache = (f"cache {args.cache_dir} matches the config" if Path(args.cache_dir).is_dir()
             else f"cache {args.cache_dir} not here (made where the run extracts)")
    print(f"train --dry-run: flags and config OK ({tc['epochs']} epochs, global batch {tc['batch_size']}, "
          f"backbone {cfg['data']['backbone']}); {cache}; nothing trained", file=sys.stdout)
    return 0
