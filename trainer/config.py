"""Training configuration: plain nested values, a YAML file on top, CLI flags on top of that.

DEFAULTS is the schema: a key that is not here is unknown, and a value must have the
type of its default (an int is accepted where a float is expected). `configs/train.yaml`
repeats these defaults so users can read and copy them; a test keeps the two equal.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import yaml

from trainer.errors import UsageError

DEFAULTS: dict[str, Any] = {
    "data": {
        "frames": 20,  # frames sampled evenly over each whole video
        # vgg19 (the seed's: fc2, 4096) | efficientnetv2b0 (1280) | efficientnetv2s (1280, 384 px)
        # | convnext_tiny (768) | thumbnail (tiny grey thumbnails, for CPU demos); see trainer/backbone_settings.py
        "backbone": "vgg19",
        "weights": "imagenet",  # imagenet | none | path to a .weights.h5 / .keras file
        "image_size": 0,  # backbone input side in pixels; 0 = the backbone's own (vgg19: 224, fixed)
        # auto: mixed_float16 on a GPU, float32 on a CPU | bfloat16: mixed_bfloat16 (several times
        # faster on CPUs with AMX, e.g. Xeon Sapphire Rapids; other features, so its own cache key)
        "precision": "auto",
        "extract_batch_size": 64,  # frames per forward pass of the backbone
        "workers": 0,  # video-decoding processes; 0 = one per CPU core
        "split": {"train": 0.70, "val": 0.15, "test": 0.15, "seed": 42},
        # added to the built-in list (trainer/video_formats.py: .mp4 .avi .mkv .mov .webm .mpg
        # .mpeg .m4v .wmv .flv .3gp .ts .m2ts .mts), e.g. [".dav"] where FFmpeg reads them
        "video_extensions": [],
        # true: keep identical videos found under both classes, each with its folder's label
        # (by default extract and scan refuse them, naming both paths: one of the labels is wrong)
        "allow_label_conflicts": False,
        "class_names": {
            "violent": ["violence", "violent", "fight", "fights"],
            "nonviolent": [
                "nonviolence", "non-violence", "non_violence", "non-violent", "nonviolent",
                "nofight", "no_fight", "nonfight", "normal",
            ],
        },
    },
    "model": {
        "lstm_units": 128,
        "lstm_layers": 3,
        "dropout": 0.5,
        "dense_units": [256, 128, 64],
    },
    "train": {
        "epochs": 100,
        "batch_size": 64,  # GLOBAL batch, split across GPUs by MirroredStrategy
        "learning_rate": 1.0e-3,
        "min_learning_rate": 1.0e-7,
        "warmup_epochs": 5,
        "clipnorm": 1.0,  # global-norm gradient clipping
        "focal_loss": True,
        # per-class weight: violent x 2*alpha, nonviolent x 2*(1 - alpha); 0.5 = both x1
        # (the seed's 0.25 was, in Keras's categorical focal loss, a constant x0.25 on
        # every class: no class effect at all; trainer/losses.py)
        "focal_alpha": 0.5,
        "focal_gamma": 2.0,
        "label_smoothing": 0.1,
        "class_weights": True,
        "mixed_precision": True,
        "xla": True,
        # auto: time real training steps on 1 GPU and on all visible GPUs at the start of the
        # run and keep the faster (trainer/device_choice.py; no GPU: the CPU); N: N GPUs, 0 = all
        "gpus": "auto",
        # train steps per call into the compiled graph (fewer Python round trips); the
        # trainer uses the largest divisor of the steps per epoch up to this value
        "steps_per_execution": 16,
        "seed": 42,
    },
    "callbacks": {
        # best_model.keras = the epoch of the lowest val_loss: the epoch early stopping
        # counts from (the seed's val_accuracy ties on small validation sets, keeping the
        # first, least confident epoch, and ignores confidence altogether)
        "checkpoint_monitor": "val_loss",
        # per-epoch checkpoints kept, newest first (best_model.keras is kept apart); 0 = all.
        # The seed's model is 63 MB a checkpoint: 100 epochs would be 6.3 GB (docs/trainer.md, Training)
        "keep_last_checkpoints": 3,
        # restore_best_weights must stay false: the model kept is best_model.keras
        "early_stopping": {"monitor": "val_loss", "patience": 15, "restore_best_weights": False},
        "reduce_lr": {"monitor": "val_loss", "factor": 0.5, "patience": 7, "min_lr": 1.0e-7},
        "tensorboard": True,
    },
}


def _merge(base: dict, override: dict, prefix: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            close = difflib.get_close_matches(str(key), [str(k) for k in base], n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise UsageError(f"config: unknown key '{dotted}'{hint}")
        default = base[key]
        if isinstance(default, dict) and key != "class_names":
            if not isinstance(value, dict):
                raise UsageError(f"config: '{dotted}' must be a mapping, got {type(value).__name__}")
            out[key] = _merge(default, value, dotted + ".")
        else:
            out[key] = _check_type(dotted, default, value)
    return out


def _check_type(dotted: str, default: Any, value: Any) -> Any:
    if dotted == "train.gpus":  # the one setting that is a word or a number
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            return value
        raise UsageError(f"config: 'train.gpus' must be auto or a number of GPUs (0 = every visible GPU), "
                         f"got {value!r}")
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    elif isinstance(default, dict):  # class_names: {class: [folder names]}
        ok = isinstance(value, dict) and all(isinstance(v, list) for v in value.values())
    else:
        ok = True
    if not ok:
        raise UsageError(
            f"config: '{dotted}' must be {type(default).__name__}, got {type(value).__name__} ({value!r})"
        )
    return value


def load(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """DEFAULTS, then the YAML file at `path`, then `overrides` (same nesting)."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        cfg = _merge(cfg, read_file(path))
    if overrides:
        cfg = _merge(cfg, overrides)
    _check_backbone(cfg["data"]["backbone"])
    _validate(cfg)
    return cfg


def read_file(path: str | Path) -> dict:
    """The mapping a YAML config file holds, as written (not merged with the defaults)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config: file not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"config: {path}{yaml_error(exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"config: cannot read {path} ({getattr(exc, 'strerror', None) or exc})") from None
    if not isinstance(loaded, dict):
        raise UsageError(f"config: {path} must hold a mapping at the top level")
    return loaded


def yaml_error(exc: Exception) -> str:
    """' line L, column C: problem (context)' for a PyYAML error, one line (where the parser stopped)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and cmark is not None:
        problem += f" ({context} at line {cmark.line + 1}, column {cmark.column + 1})"
    return f"{where}: not valid YAML: {problem}"


def explicit_data(path: str | Path | None) -> dict:
    """The `data` settings a config file sets itself (validated), {} without a file.

    `train` compares only these with the cache it trains on: a file that says nothing
    about the features trains on whatever the cache holds, one that says something
    different is refused (trainer/settings_check.py).
    """
    if path is None:
        return {}
    raw = read_file(path).get("data") or {}
    if not isinstance(raw, dict):
        raise UsageError(f"config: 'data' must be a mapping, got {type(raw).__name__}")
    merged = _merge(DEFAULTS["data"], raw, "data.")
    return {key: merged[key] for key in raw}


def _check_backbone(name: str) -> None:
    """data.backbone names a backbone trainer/backbone_settings.py knows (checked here so a typo fails at once)."""
    try:
        from trainer.backbone_settings import BACKBONES
    except ImportError:  # no NumPy: `scan` on a laptop with only the deploy extra; the trainer that runs checks it
        return

    if name not in BACKBONES:
        close = difflib.get_close_matches(name, BACKBONES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UsageError(f"config: 'data.backbone' must be one of {', '.join(BACKBONES)}, got {name!r}{hint}")


def _validate(cfg: dict) -> None:
    """Values of the right type that still make no sense."""
    from trainer.video_formats import check_extension

    for ext in cfg["data"]["video_extensions"]:
        problem = check_extension(ext)
        if problem:
            raise UsageError(f"config: 'data.video_extensions': {problem}")
    if cfg["train"]["steps_per_execution"] < 1:
        raise UsageError(f"config: 'train.steps_per_execution' must be >= 1, got {cfg['train']['steps_per_execution']}")
    alpha = cfg["train"]["focal_alpha"]
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"config: 'train.focal_alpha' must be between 0 and 1 (the violent class's share of "
                         f"the weight; 0.5 weighs both classes equally), got {alpha}")
    if cfg["callbacks"]["early_stopping"]["restore_best_weights"]:
        raise UsageError("config: 'callbacks.early_stopping.restore_best_weights: true' would restore weights that "
                         "nothing uses: evaluate and predict load best_model.keras (chosen by "
                         "callbacks.checkpoint_monitor); set it to false")


def set_dotted(overrides: dict, dotted: str, value: Any) -> None:
    """Record a CLI override such as ('train.epochs', 5); None means 'flag not given'."""
    if value is None:
        return
    node = overrides
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
