"""Per-frame feature extractors ("backbones") and the settings that identify their features.

- `vgg19`: keras.applications.VGG19 with its classifier top, cut at `fc2` (4096 values
  per frame), fed RGB 0-255 frames through `vgg19.preprocess_input` (RGB->BGR, ImageNet
  mean subtracted). The fully connected top fixes the input at 224x224.
  Weights: `imagenet` (downloaded once into <cache_dir>/weights/, so a cache volume keeps
  it), `none` (random init from a fixed seed: the same settings always give the same
  features, in extract and in predict), or a path to a weights file (identified by its
  SHA-256, so moving the file does not invalidate a cache but changing it does).
- `thumbnail`: the frame in grey, image_size x image_size, scaled to [0, 1] and flattened
  (image_size^2 values). No network and no TensorFlow: for CPU demos and tests.

`feature_settings(cfg["data"])` lists everything that changes the features; its
fingerprint is part of every cache key, so changing any of them re-extracts.
`load_backbone(settings)` gives an object with `.feature_dim` and `.features(frames)`,
used by `extract` and by `predict` on single files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from trainer.cache import settings_fingerprint, sha256_file
from trainer.errors import UsageError

BACKBONES = ("vgg19", "thumbnail")
VGG19_SIZE = 224
VGG19_DIM = 4096
# Keras's own ImageNet weights for VGG19 with the top (the same URL and checksum that
# keras.applications uses; get_file verifies the download against it).
VGG19_WEIGHTS_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/"
                     "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels.h5")
VGG19_WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels.h5"
VGG19_WEIGHTS_MD5 = "cbe5617147190e668d6c5d5026f83318"
INIT_SEED = 1234  # random-init ("none") weights are drawn from this seed
# Version of the frame-sampling rule (trainer/frames.py); bump it when the rule changes
# so that caches built with the old rule are not reused.
SAMPLER = "segment-centres-v1"
FINGERPRINT_KEYS = ("backbone", "weights_id", "image_size", "frames", "sampler")


def feature_settings(data: dict) -> dict:
    """The feature-defining settings from the `data` section of a config, validated.

    The result is what extract stores in meta.json and what load_backbone takes.
    """
    backbone = data["backbone"]
    size = data["image_size"]
    frames = data["frames"]
    weights = str(data["weights"])
    if backbone not in BACKBONES:
        raise UsageError(f"data.backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")
    if frames < 1:
        raise UsageError(f"data.frames must be at least 1, got {frames}")
    if backbone == "vgg19" and size != VGG19_SIZE:
        raise UsageError(f"data.image_size must be {VGG19_SIZE} for the vgg19 backbone "
                         f"(its fully connected fc1/fc2 layers fix the input size), got {size}")
    if not 4 <= size <= 1024:
        raise UsageError(f"data.image_size must be between 4 and 1024, got {size}")

    if backbone == "thumbnail":
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
        "feature_dim": VGG19_DIM if backbone == "vgg19" else size * size,
        "sampler": SAMPLER,
    }
    settings["fingerprint"] = fingerprint(settings)
    return settings


def fingerprint(settings: dict) -> str:
    return settings_fingerprint({k: settings[k] for k in FINGERPRINT_KEYS})


def load_backbone(settings: dict, cache_dir: str | Path | None = None, batch_size: int = 64):
    """A ready backbone for `settings` (from feature_settings, or a cache's meta.json)."""
    if settings["backbone"] == "thumbnail":
        return ThumbnailBackbone(settings["image_size"])
    return VGG19Backbone(settings, cache_dir, batch_size)


class ThumbnailBackbone:
    name = "thumbnail"

    def __init__(self, image_size: int):
        self.image_size = image_size
        self.feature_dim = image_size * image_size

    def features(self, frames: np.ndarray) -> np.ndarray:
        """uint8 RGB [N, size, size, 3] -> float32 [N, size*size] grey levels in [0, 1]."""
        frames = _check_frames(frames, self.image_size)
        # ITU-R BT.601 luma, the weights cv2.COLOR_RGB2GRAY uses, done on the whole batch.
        grey = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return (grey / 255.0).reshape(len(frames), -1)


class VGG19Backbone:
    name = "vgg19"

    def __init__(self, settings: dict, cache_dir: str | Path | None = None, batch_size: int = 64):
        import keras
        import tensorflow as tf
        from keras.applications import vgg19

        self.image_size = VGG19_SIZE
        self.feature_dim = VGG19_DIM
        self.batch_size = max(1, int(batch_size))
        self._preprocess = vgg19.preprocess_input
        self.on_gpu = bool(tf.config.list_physical_devices("GPU"))
        weights = settings["weights"]
        previous = keras.mixed_precision.global_policy()
        if self.on_gpu:  # float16 matmuls on tensor cores; only for building this model
            keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            if weights == "none":
                keras.utils.set_random_seed(INIT_SEED)  # same random weights in every process
            full = vgg19.VGG19(include_top=True, weights=None)
            if weights == "imagenet":
                full.load_weights(imagenet_weights_path(cache_dir))
            elif weights != "none":
                try:
                    full.load_weights(weights)
                except Exception as exc:  # Keras raises many types here; the user needs one line
                    raise UsageError(f"weights: cannot load {weights} into VGG19: "
                                     f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
            self.model = keras.Model(full.input, full.get_layer("fc2").output, name="vgg19_fc2")
        finally:
            keras.mixed_precision.set_global_policy(previous)

    def features(self, frames: np.ndarray) -> np.ndarray:
        """uint8 RGB [N, 224, 224, 3] -> float32 [N, 4096], in batches of batch_size frames."""
        frames = _check_frames(frames, self.image_size)
        out = []
        for start in range(0, len(frames), self.batch_size):
            chunk = frames[start:start + self.batch_size]
            n = len(chunk)
            if n < self.batch_size:  # pad the last chunk: one traced shape, no retracing
                pad = np.zeros((self.batch_size - n, *chunk.shape[1:]), chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            x = self._preprocess(chunk.astype(np.float32))
            out.append(np.asarray(self.model.predict_on_batch(x), dtype=np.float32)[:n])
        return np.concatenate(out) if out else np.zeros((0, self.feature_dim), np.float32)


def imagenet_weights_path(cache_dir: str | Path | None) -> str:
    """Keras's VGG19 ImageNet weights, downloaded once into <cache_dir>/weights/."""
    import keras

    # An image built with BAKE_WEIGHTS=1 carries them under $KERAS_HOME: no download at all.
    baked = Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser() / "weights" / VGG19_WEIGHTS_FILE
    if baked.is_file():
        return str(baked)
    kwargs = {"cache_dir": str(Path(cache_dir).resolve())} if cache_dir else {}
    try:
        return keras.utils.get_file(VGG19_WEIGHTS_FILE, VGG19_WEIGHTS_URL, file_hash=VGG19_WEIGHTS_MD5,
                                    cache_subdir="weights", **kwargs)
    except Exception as exc:  # no internet, proxy, disk full: say what to do instead
        raise UsageError(f"cannot download the VGG19 ImageNet weights ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); "
                         f"put {VGG19_WEIGHTS_FILE} in {Path(cache_dir or '~/.keras') / 'weights'} "
                         f"or pass --weights PATH") from None


def _check_frames(frames: np.ndarray, size: int) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[1:] != (size, size, 3) or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames [N, {size}, {size}, 3], got {frames.dtype} {frames.shape}")
    return frames

