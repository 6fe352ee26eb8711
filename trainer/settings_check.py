"""Do the config, the cache and the model agree on the features? Read-only checks, no TensorFlow.

- `train` compares the feature settings its config file states (`data.backbone`, `weights`,
  `image_size`, `frames`, `precision`) with those the cache was extracted with (meta.json):
  a difference is refused, naming each setting, unless `--use-cache-settings` (which says
  loudly that the config's values are not the ones trained on). A config file that states
  none of them trains on whatever the cache holds.
- `evaluate` compares the settings recorded with the model (model_info.json, written by
  train) with the cache's: the same feature shape is not the same features.
- Both read meta.json / model_info.json here, so that a corrupt or incomplete file is one
  line and exit 2 instead of a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

from trainer.errors import UsageError

FEATURE_KEYS = ("backbone", "weights", "image_size", "frames", "precision")
# (data.precision in a config, the precision a cache's meta.json records) that are the same choice
AGREEING_PRECISIONS = {("auto", None), ("auto", "float32"), ("auto", "float16"), ("bfloat16", "bfloat16")}
# what predict and evaluate need from a model's recorded backbone (trainer.backbone_settings.recorded_settings)
RECORDED_KEYS = ("backbone", "weights", "image_size", "frames", "feature_dim")


def read_json(path: Path, what: str, fix: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"{path} is missing: {fix}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path} is not readable as {what} ({exc}): {fix}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not {what} (a JSON {type(data).__name__}, not an object): {fix}")
    return data


def cache_meta(cache_dir: str | Path) -> dict:
    """The cache's meta.json, or a one-line UsageError when there is no (usable) cache."""
    path = Path(cache_dir) / "meta.json"
    if not path.is_file():
        raise UsageError(f"no feature cache at {cache_dir} (no meta.json; run `python -m trainer extract` first)")
    meta = read_json(path, "a cache's meta.json", "extract again into a new --cache-dir")
    missing = [k for k in ("backbone", "frames", "feature_shape", "fingerprint") if k not in meta]
    if missing:
        raise UsageError(f"{path} lacks {', '.join(missing)}: not written by `trainer extract`; extract again")
    return meta


def model_info(model_path: str | Path, required: bool = True) -> dict | None:
    """model_info.json next to the model, checked for what predict/evaluate read; None if absent and not required."""
    path = Path(model_path).parent / "model_info.json"
    if not path.is_file():
        if required:
            raise UsageError(f"{path} is missing: predict needs the feature settings the model was trained "
                             "with (train writes this file next to best_model.keras)")
        return None
    fix = "copy it again from the training run's folder (train writes it next to best_model.keras)"
    info = read_json(path, "model_info.json", fix)
    recorded = info.get("backbone") or info.get("cache_meta")
    if not isinstance(recorded, dict):
        raise UsageError(f"{path} has no recorded feature settings ('backbone' or 'cache_meta'): {fix}")
    missing = [k for k in RECORDED_KEYS if k not in recorded]
    if missing:
        raise UsageError(f"{path} is incomplete: its feature settings lack {', '.join(missing)}; {fix}")
    return info


def _native_size(backbone: str) -> int | None:
    from trainer.backbone_settings import SPECS

    spec = SPECS.get(backbone)
    return spec.size if spec else None


def _no_network(backbone: str) -> bool:
    from trainer.backbone_settings import SPECS

    return backbone not in SPECS or SPECS[backbone].app is None


def _weights_id(weights: str, backbone: str) -> tuple[str, str]:
    """(how to compare, value): the id meta.json records, or the resolved path when the file is not here."""
    from trainer.backbone_settings import INIT_SEED, SPECS
    from trainer.cache import sha256_file

    spec = SPECS.get(backbone)
    w = str(weights)
    if spec is not None and spec.app is None:
        return "weights_id", "none"  # thumbnail: no learned weights at all
    if w.lower() == "imagenet":
        return "weights_id", "imagenet"
    if w.lower() == "none":
        return "weights_id", f"random-init-seed-{INIT_SEED}"
    path = Path(w).expanduser()
    if path.is_file():
        return "weights_id", "sha256:" + sha256_file(path)
    return "weights", str(path.resolve())


def config_vs_cache(explicit: dict, meta: dict) -> list[str]:
    """'data.KEY: config X, cache Y' for each feature setting the config states differently."""
    out = []
    backbone = explicit.get("backbone", meta.get("backbone"))
    for key in FEATURE_KEYS:
        if key not in explicit:
            continue
        want, have = explicit[key], meta.get(key)
        if key == "image_size":
            want = want or _native_size(backbone) or want
        elif key == "precision":
            if _no_network(backbone):
                continue  # no network: precision changes nothing
            # The config states a choice (auto | bfloat16), the cache what was computed: auto is
            # float32 on a CPU and float16 on a GPU (older caches recorded nothing).
            have = meta.get("precision")
            if (want, have) in AGREEING_PRECISIONS:
                continue
        elif key == "weights":
            if _no_network(backbone):
                continue  # thumbnail: no weights at all
            how, want_id = _weights_id(want, backbone)
            have_id = meta.get(how) or _weights_id(meta.get("weights", ""), backbone)[1]  # older metas: no id
            if want_id != have_id:
                out.append(f"data.weights: config {want}, cache {meta.get('weights_id', meta.get('weights'))}")
            continue
        if want != have:
            out.append(f"data.{key}: config {want}, cache {have}")
    return out


def check_train_cache(config_path: str | None, cache_dir, meta: dict, use_cache_settings: bool, log) -> list[str]:
    """Refuse (or, with use_cache_settings, loudly accept) a cache the config's data section disagrees with."""
    from trainer import config as config_mod

    diffs = config_vs_cache(config_mod.explicit_data(config_path), meta)
    if not diffs:
        return []
    if not use_cache_settings:
        raise UsageError(f"the cache in {cache_dir} was extracted with other feature settings than {config_path} "
                         f"states ({'; '.join(diffs)}): extract again with this config into a new --cache-dir, or "
                         f"pass --use-cache-settings to train on the cache's features")
    log("WARNING: --use-cache-settings: training on the cache's features, NOT the config's: " + "; ".join(diffs)
        + " (model_info.json records the cache's settings, which predict uses)")
    return diffs


def model_vs_cache(info: dict, meta: dict) -> list[str]:
    """'KEY: model X, cache Y' for each feature setting recorded with the model that the cache does not share.

    The fingerprint is a hash of these same settings, so when every one of them agrees the
    features are the same, whatever an older record's fingerprint says.
    """
    recorded = info.get("backbone") or info.get("cache_meta") or {}
    if recorded.get("fingerprint") == meta.get("fingerprint"):
        return []
    out = []
    for key in ("backbone", "weights_id", "image_size", "frames", "sampler", "precision"):
        a, b = recorded.get(key), meta.get(key)
        if key == "precision":
            a, b = a or "auto", b or "auto"
        if a != b:
            out.append(f"{key}: model {a}, cache {b}")
    return out
