"""Which backbones exist and the settings that identify their features (no TensorFlow at import).

`feature_settings(cfg["data"])` validates the data section and lists everything that
changes the features; its fingerprint is part of every cache key, so changing any of them
(the backbone included) re-extracts. `recorded_settings(info)` are the settings a trained
model's model_info.json records (written by `model_info_entry`). Building and running a
backbone from these settings is trainer/backbone.py's job.

`data.image_size: 0` means the backbone's own input size; the convolutional backbones
accept other sizes (32..1024), VGG19 only 224.

Weights: `imagenet` (Keras's own files, downloaded once into <cache_dir>/weights/, so a
cache volume keeps them), `none` (random init from a fixed seed: the same settings always
give the same features, in extract and in predict), or a path to a weights file for the
network as built here (identified by its SHA-256, so moving the file does not invalidate
a cache but changing it does).

Precision (`data.precision`): `auto` computes the networks in float16 (mixed_float16) on a
GPU and in float32 on a CPU; `bfloat16` in mixed_bfloat16 (several times faster on CPUs
with AMX; on a GPU only from compute capability 8.0, where it has bfloat16 tensor cores).
The precision the features are really computed in is a feature setting: float16 and
bfloat16 features have their own cache keys (float32 keeps the key caches had before the
precision was recorded). predict builds the backbone in the recorded precision where the
device has it (float16 falls back to float32 on a CPU, where it is only emulated).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from trainer.cache import settings_fingerprint, sha256_file
from trainer.errors import UsageError

_KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class Spec:
    name: str
    size: int  # native input side in pixels
    fixed_size: bool  # a dense layer fixes the input size (VGG19's fc1)
    feature_dim: int | None  # None: depends on the size (thumbnail)
    app: str | None  # the keras.applications constructor
    first_layer: str | None  # the first learned layer: its input is the preprocessed image
    # Keras's ImageNet file for the network as built here: (file name, URL, hash that
    # keras.utils.get_file verifies). The same files and checksums keras.applications uses.
    imagenet: tuple[str, str, str] | None


SPECS = {s.name: s for s in (
    Spec("vgg19", 224, True, 4096, "VGG19", "block1_conv1",
         ("vgg19_weights_tf_dim_ordering_tf_kernels.h5",
          _KERAS_WEIGHTS + "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels.h5",
          "cbe5617147190e668d6c5d5026f83318")),
    Spec("efficientnetv2b0", 224, False, 1280, "EfficientNetV2B0", "stem_conv",
         ("efficientnetv2-b0_notop.h5", _KERAS_WEIGHTS + "efficientnet_v2/efficientnetv2-b0_notop.h5",
          "893217f2bb855e2983157299931e43ff")),
    Spec("efficientnetv2s", 384, False, 1280, "EfficientNetV2S", "stem_conv",
         ("efficientnetv2-s_notop.h5", _KERAS_WEIGHTS + "efficientnet_v2/efficientnetv2-s_notop.h5",
          "af0682fb74e8c54910f2d4393339c070")),
    Spec("convnext_tiny", 224, False, 768, "ConvNeXtTiny", "convnext_tiny_stem",
         ("convnext_tiny_notop.h5", _KERAS_WEIGHTS + "convnext/convnext_tiny_notop.h5",
          "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1")),
    Spec("thumbnail", 16, False, None, None, None, None),
)}
BACKBONES = tuple(SPECS)
VGG19_SIZE = SPECS["vgg19"].size
VGG19_DIM = SPECS["vgg19"].feature_dim
VGG19_WEIGHTS_FILE = SPECS["vgg19"].imagenet[0]
INIT_SEED = 1234  # random-init ("none") weights are drawn from this seed
# Version of the frame-sampling rule (trainer/frames.py); bump it when the rule changes
# so that caches built with the old rule are not reused.
SAMPLER = "segment-centres-v1"
FINGERPRINT_KEYS = ("backbone", "weights_id", "image_size", "frames", "sampler")
PRECISIONS = ("auto", "bfloat16")  # what data.precision accepts
BFLOAT16_MIN_CAPABILITY = (8, 0)  # Ampere: the first GPUs with bfloat16 tensor cores


def feature_settings(data: dict) -> dict:
    """The feature-defining settings from the `data` section of a config, validated.

    The result is what extract stores in meta.json and what load_backbone takes.
    """
    backbone = data["backbone"]
    size = data.get("image_size", 0)
    frames = data["frames"]
    weights = str(data["weights"])
    precision = data.get("precision", "auto")
    if precision not in PRECISIONS:
        raise UsageError(f"data.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if backbone not in SPECS:
        raise UsageError(f"data.backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")
    spec = SPECS[backbone]
    if frames < 1:
        raise UsageError(f"data.frames must be at least 1, got {frames}")
    size = size or spec.size  # 0: the backbone's own input size
    if spec.fixed_size and size != spec.size:
        raise UsageError(f"data.image_size must be {spec.size} for the {backbone} backbone "
                         f"(its fully connected fc1/fc2 layers fix the input size), got {size}")
    low = 4 if spec.app is None else 32  # Keras's convolutional backbones need at least 32 px
    if not low <= size <= 1024:
        raise UsageError(f"data.image_size must be between {low} and 1024 for {backbone} "
                         f"(0 = its own {spec.size}), got {size}")

    if spec.app is None:
        weights, weights_id = "none", "none"  # no learned weights at all
    elif weights.lower() == "imagenet":
        weights, weights_id = "imagenet", "imagenet"
    elif weights.lower() == "none":
        weights, weights_id = "none", f"random-init-seed-{INIT_SEED}"
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UsageError(f"weights: {weights} is neither 'imagenet', 'none' nor an existing file")
        weights, weights_id = str(path.resolve()), "sha256:" + sha256_file(path)

    settings = {
        "backbone": backbone,
        "weights": weights,
        "weights_id": weights_id,
        "image_size": size,
        "frames": frames,
        "feature_dim": spec.feature_dim or size * size,
        "sampler": SAMPLER,
    }
    if spec.app is not None:  # the thumbnail has no network: nothing to compute in another precision
        settings["precision"] = effective_precision(precision)
    settings["fingerprint"] = fingerprint(settings)
    return settings


def effective_precision(precision: str) -> str:
    """What `data.precision` means on this machine: float16 | float32 | bfloat16.

    auto: float16 on a GPU (tensor cores), float32 on a CPU (float16 is emulated there).
    bfloat16 on a GPU needs compute capability 8.0 (refused before, with one line).
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if precision == "bfloat16":
        for i, gpu in enumerate(gpus):
            details = tf.config.experimental.get_device_details(gpu)
            cap = details.get("compute_capability")
            if cap is not None and tuple(cap) < BFLOAT16_MIN_CAPABILITY:
                raise UsageError(f"data.precision bfloat16 needs a GPU of compute capability 8.0 or newer; GPU {i} "
                                 f"({details.get('device_name', 'unknown')}) is {cap[0]}.{cap[1]}: use "
                                 "data.precision auto (float16 on this GPU)")
        return "bfloat16"
    return "float16" if gpus else "float32"


def fingerprint(settings: dict) -> str:
    # float32 (and caches from before the precision was recorded) keep the old key
    precision = settings.get("precision", "float32")
    keys = FINGERPRINT_KEYS + (("precision",) if precision != "float32" else ())
    return settings_fingerprint({k: settings[k] for k in keys})


def backbone_policy(precision: str | None, on_gpu: bool, capability: tuple[int, int] | None = None) -> str:
    """The Keras dtype policy that computes features of `precision` on this device.

    None: a cache from before the precision was recorded (it was float16 on GPUs). Where
    the device lacks the recorded precision (float16 on a CPU, bfloat16 on a GPU before
    compute capability 8.0) the backbone computes in float32, the closest it has.
    """
    if precision == "bfloat16":
        old_gpu = on_gpu and capability is not None and tuple(capability) < BFLOAT16_MIN_CAPABILITY
        return "float32" if old_gpu else "mixed_bfloat16"
    if precision in ("float16", None):
        return "mixed_float16" if on_gpu else "float32"
    return "float32"


# --- the settings recorded with a trained model ----------------------------------------

def model_info_entry(meta: dict) -> dict:
    """What train writes under "backbone" in model_info.json: the cache's feature settings."""
    return {k: meta[k] for k in ("backbone", "weights", "weights_id", "image_size", "frames",
                                 "feature_dim", "sampler", "precision", "fingerprint") if k in meta}


def recorded_settings(info: dict, weights_override: str | None = None) -> dict:
    """The feature settings a model was trained on (model_info.json), optionally with other weights.

    Older model_info.json files have only "cache_meta"; it holds the same settings.
    """
    meta = dict(info.get("backbone") or info["cache_meta"])
    if weights_override is None:
        return meta
    settings = feature_settings({"backbone": meta["backbone"], "image_size": meta["image_size"],
                                 "frames": meta["frames"], "weights": weights_override})
    # the features' recorded precision, not this machine's
    settings.pop("precision", None)
    if "precision" in meta:
        settings["precision"] = meta["precision"]
    settings["fingerprint"] = fingerprint(settings)
    if settings.get("weights_id") != meta.get("weights_id"):
        print(f"warning: --weights {weights_override} differs from the weights the training features were "
              f"made with ({meta.get('weights_id', meta.get('weights'))}); predictions may be meaningless",
              file=sys.stderr)
    return settings
