"""Small feature caches written through trainer.cache.FeatureCache, for the trainer's tests.

The classes differ only in time order: a violent clip's first feature rises over the
frames, a non-violent one's falls; the per-clip mean is the same, so only a model that
reads the sequence can separate them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.cache import CLASSES, FeatureCache, settings_fingerprint


def make_cache(root: Path, n_per_split: dict | None = None, frames: int = 6, dim: int = 8, seed: int = 0,
               violent_fraction: float = 0.5, backbone: str = "thumbnail") -> Path:
    n_per_split = n_per_split or {"train": 48, "val": 16, "test": 16}
    rng = np.random.default_rng(seed)
    cache = FeatureCache(root)
    settings = {"backbone": backbone, "weights": "none", "image_size": 16, "frames": frames}
    fp = settings_fingerprint(settings)
    cache.write_meta({**settings, "feature_shape": [frames, dim], "feature_dim": dim,
                      "dtype": "float16", "fingerprint": fp})
    ramp = np.linspace(-1.0, 1.0, frames, dtype=np.float32)
    records = []
    for split, n in n_per_split.items():
        n_violent = int(round(n * violent_fraction))
        for i in range(n):
            label = 1 if i < n_violent else 0
            x = rng.normal(0, 0.3, size=(frames, dim)).astype(np.float32)
            x[:, 0] += ramp if label else -ramp
            key = f"{split}{i:05d}{seed:03d}"
            cache.save_features(key, x)
            records.append({"path": f"/videos/{CLASSES[label]}/{split}_{i}.mp4", "label": CLASSES[label],
                            "split": split, "status": "ok", "fingerprint": fp, "key": key})
    cache.append(records)
    return Path(root)


def tiny_config(**train) -> dict:
    from trainer import config

    cfg = config.load(None, {
        "model": {"lstm_units": 8, "dense_units": [16, 8, 8], "dropout": 0.1},
        "train": {"epochs": 3, "batch_size": 16, "warmup_epochs": 1, "mixed_precision": False,
                  "xla": False, "learning_rate": 3e-3, **train},
        "callbacks": {"tensorboard": False},
    })
    return cfg
