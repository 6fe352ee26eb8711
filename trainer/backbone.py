"""Building and running the per-frame feature extractors ("backbones") that extract and predict use.

Every backbone takes uint8 RGB frames (0-255) of its input size and gives one feature
vector per frame. For the Keras networks the uint8 -> float cast and the network's own
preprocessing are part of the model graph, so the host only moves bytes:

| backbone | input | preprocessing in the graph (on 0-255 RGB) | features |
|---|---|---|---|
| `vgg19` (the seed's) | 224 (fixed: fc1/fc2 are dense) | RGB->BGR, minus the ImageNet mean in 0-255 ("caffe") | fc2, 4096 |
| `efficientnetv2b0` | 224 | x/255, then (x - ImageNet mean) / std (Keras's own layers) | global average pool, 1280 |
| `efficientnetv2s` | 384 | x/128 - 1 (Keras's own Rescaling layer) | global average pool, 1280 |
| `convnext_tiny` | 224 | (x - 255*mean) / (255*std) (Keras's own Normalization) | global average pool, 768 |
| `thumbnail` | 16 | grey (BT.601 luma) / 255, no network, no TensorFlow | size*size |

Keras's EfficientNetV2 and ConvNeXt carry their preprocessing inside the model and
expect 0-255 pixels (their `preprocess_input` is a no-op); tests/trainer/test_backbones.py
checks each graph's preprocessed input against a hand computation on a constant image.

Which backbones exist, and the settings that identify their features (weights,
precision, image size, fingerprint), are in trainer/backbone_settings.py; this module
turns those settings into a ready network: `load_backbone(settings)` gives an object with
`.feature_dim` and `.features(frames)`, used by `extract` and by `predict`;
`from_model_info(info)` is the backbone a trained model's model_info.json records.
Keras builds each network in the policy `backbone_settings.backbone_policy` picks for the
recorded precision on this device.

Compilation: the backbone runs the plain TensorFlow graph, never XLA (`xla_decision`):
Keras's `jit_compile="auto"` would compile an uncompiled model with XLA on any GPU, which
needs ptxas and libdevice from the CUDA toolkit in the image and compiles once per input
shape, and nobody has measured it faster than cuDNN's convolutions for these networks.
On a GPU, passes run at a fixed set of sizes (`pass_size`): a short last pass is padded up
to the next power of two, so a run autotunes a handful of shapes, not one per leftover
count, and a pass of 64 frames costs there about what one of 20 does. On a CPU every frame
costs its share, so passes run at their own size (Keras's predict function relaxes its
shapes after one retrace).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from trainer.backbone_settings import BACKBONES, INIT_SEED, SPECS, Spec, backbone_policy, recorded_settings
from trainer.errors import UsageError

VGG19_MEAN_BGR = (103.939, 116.779, 123.68)  # keras.applications.imagenet_utils, "caffe" mode
# Keras model building uses global state (the random seed, the dtype policy, layer name
# counters): one backbone is built at a time, so that every device thread of extract gets
# the same weights as predict does.
_BUILD_LOCK = threading.Lock()


def xla_decision(on_gpu: bool) -> tuple[bool, str]:
    """(jit_compile for the backbone, why), for the extract log: always off, and why."""
    if not on_gpu:
        return False, "off: no GPU (the backbone runs TensorFlow's CPU kernels)"
    toolchain = xla_toolchain()
    missing = [name for name, path in toolchain.items() if path is None]
    has = ("this image has no " + " and no ".join(missing) + " for XLA to compile with" if missing
           else "ptxas and libdevice are in the image")
    return False, ("off: the backbone runs cuDNN's convolutions in the plain TensorFlow graph; XLA was not "
                   f"measured faster for it and would compile once per pass size ({has})")


def xla_toolchain() -> dict[str, str | None]:
    """Where the CUDA compiler pieces XLA needs on a GPU are (None: absent)."""
    import glob
    import shutil

    roots = [os.environ.get("CUDA_DIR", ""), os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"]
    try:  # the pip wheels TensorFlow's [and-cuda] extra installs
        import nvidia.cuda_nvcc as nvcc  # type: ignore

        roots += list(nvcc.__path__)
    except ImportError:
        pass
    ptxas = shutil.which("ptxas")
    libdevice = None
    for root in filter(None, roots):
        ptxas = ptxas or next(iter(glob.glob(os.path.join(root, "bin", "ptxas"))), None)
        libdevice = libdevice or next(iter(glob.glob(os.path.join(root, "nvvm", "libdevice", "libdevice*.bc"))), None)
    return {"ptxas": ptxas, "libdevice": libdevice}


def pass_size(n: int, batch_size: int) -> int:
    """The size a pass of n frames runs at: batch_size, or the next power of two below it."""
    if n >= batch_size:
        return batch_size
    return min(batch_size, 1 << max(0, n - 1).bit_length())


def load_backbone(settings: dict, cache_dir: str | Path | None = None, batch_size: int = 64,
                  device: str | None = None):
    """A ready backbone for `settings` (from feature_settings, or a cache's meta.json).

    `device`: a TensorFlow device name to hold it and run it (default: TensorFlow's choice).
    """
    if settings["backbone"] not in SPECS:
        raise UsageError(f"unknown backbone {settings['backbone']!r} (known: {', '.join(BACKBONES)})")
    if SPECS[settings["backbone"]].app is None:
        return ThumbnailBackbone(settings["image_size"])
    return KerasBackbone(settings, cache_dir, batch_size, device)


def from_model_info(info: dict, settings: dict | None = None, batch_size: int = 64):
    """The backbone a trained model expects (its `.settings` say which), ready for `features()`.

    `settings`: the result of recorded_settings(info, weights) when the weights are overridden.
    ImageNet weights are looked for in the training cache's weights/ folder when it exists here.
    """
    settings = settings or recorded_settings(info)
    cache_dir = info.get("cache_dir")
    backbone = load_backbone(settings, cache_dir if cache_dir and Path(cache_dir).is_dir() else None, batch_size)
    backbone.settings = settings
    return backbone

# --- the backbones ----------------------------------------------------------------------

class ThumbnailBackbone:
    name = "thumbnail"

    def __init__(self, image_size: int):
        self.image_size = image_size
        self.feature_dim = image_size * image_size
        self.computed = 0  # frames computed (never padded: it runs on the host)

    def features(self, frames: np.ndarray) -> np.ndarray:
        """uint8 RGB [N, size, size, 3] -> float32 [N, size*size] grey levels in [0, 1]."""
        frames = _check_frames(frames, self.image_size)
        # ITU-R BT.601 luma, the weights cv2.COLOR_RGB2GRAY uses, done on the whole batch.
        grey = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        self.computed += len(frames)
        return (grey / 255.0).reshape(len(frames), -1)

    def to_device(self, frames: np.ndarray) -> np.ndarray:
        return frames  # it computes on the host


class KerasBackbone:
    """A keras.applications network as a frozen feature extractor with a uint8 input.

    model: uint8 [N, size, size, 3] -> cast to float -> (VGG19 only: "caffe" preprocessing;
    the others carry their own) -> network -> features [N, feature_dim].
    """

    def __init__(self, settings: dict, cache_dir: str | Path | None = None, batch_size: int = 64,
                 device: str | None = None):
        with _BUILD_LOCK:
            self._build(settings, cache_dir, batch_size, device)

    def _build(self, settings: dict, cache_dir, batch_size: int, device: str | None) -> None:
        import contextlib

        import keras
        import tensorflow as tf

        spec = SPECS[settings["backbone"]]
        self.name = spec.name
        self.image_size = settings["image_size"]
        self.feature_dim = settings["feature_dim"]
        self.batch_size = max(1, int(batch_size))
        self.device = device
        from trainer.runtime import enable_memory_growth, gpu_capability

        enable_memory_growth()  # before anything starts the GPUs (predict builds here first)
        self._scope = (lambda: tf.device(device)) if device else contextlib.nullcontext
        self.on_gpu = "GPU" in device.upper() if device else bool(tf.config.list_physical_devices("GPU"))
        self.jit_compile, self.xla_reason = xla_decision(self.on_gpu)
        self.computed = 0  # frames run through the network, padding included
        self.pad_passes = self.on_gpu  # see the module docstring: padding pays on a GPU only
        weights = settings["weights"]
        previous = keras.mixed_precision.global_policy()
        self.policy = backbone_policy(settings.get("precision"), self.on_gpu,
                                      gpu_capability(0) if self.on_gpu else None)
        # only for building this model (bfloat16: AMX tiles on recent Xeons, float16: tensor cores)
        keras.mixed_precision.set_global_policy(self.policy)
        try:
            with self._scope():
                if weights == "none":
                    keras.utils.set_random_seed(INIT_SEED)  # same random weights in every process
                net = _build_network(spec, self.image_size)
                if weights == "imagenet":
                    net.load_weights(imagenet_weights_path(cache_dir, spec.name))
                elif weights != "none":
                    try:
                        net.load_weights(weights)
                    except Exception as exc:  # Keras raises many types here; the user needs one line
                        raise UsageError(f"weights: cannot load {weights} into {spec.app}: "
                                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
                if spec.name == "vgg19":
                    net = keras.Model(net.input, net.get_layer("fc2").output, name="vgg19_fc2")
                frames = keras.Input((self.image_size, self.image_size, 3), dtype="uint8", name="frames")
                x = keras.ops.cast(frames, "float32")
                if spec.name == "vgg19":
                    x = _caffe_preprocess(x)
                self.model = keras.Model(frames, net(x), name=f"{spec.name}_features")
                # Decided here, not left to jit_compile="auto" (XLA on any GPU: see xla_decision).
                self.model.jit_compile = self.jit_compile
                # The network's input after its own preprocessing, for tests that check it.
                inner = keras.Model(net.input, net.get_layer(spec.first_layer).input)
                self.preprocessor = keras.Model(frames, inner(x), name=f"{spec.name}_preprocessing")
        finally:
            keras.mixed_precision.set_global_policy(previous)

    def to_device(self, frames: np.ndarray):
        """The uint8 frames as a tensor on this backbone's device (the host-to-device copy)."""
        import tensorflow as tf

        frames = _check_frames(frames, self.image_size)
        with self._scope():
            return tf.identity(tf.convert_to_tensor(frames))

    def features(self, frames) -> np.ndarray:
        """uint8 RGB [N, size, size, 3] (array or device tensor) -> float32 [N, feature_dim].

        In passes of batch_size frames; on a GPU a smaller last pass is padded with black
        frames up to `pass_size` (a power of two), so the network only ever sees a few shapes
        (one graph, one cuDNN autotuning per shape). The padding's features are dropped; each
        frame's features depend on that frame alone (inference: no batch statistics).
        """
        import tensorflow as tf

        if isinstance(frames, np.ndarray):
            frames = _check_frames(frames, self.image_size)
        out = []
        with self._scope():
            for start in range(0, len(frames), self.batch_size):
                chunk = frames[start:start + self.batch_size]
                n = len(chunk)
                size = pass_size(n, self.batch_size) if self.pad_passes else n
                if size > n:
                    chunk = tf.pad(chunk, [[0, size - n], [0, 0], [0, 0], [0, 0]])
                self.computed += size
                out.append(np.asarray(self.model.predict_on_batch(chunk), dtype=np.float32)[:n])
        return np.concatenate(out) if out else np.zeros((0, self.feature_dim), np.float32)

    def preprocessed(self, frames: np.ndarray) -> np.ndarray:
        """What the first learned layer sees for these uint8 frames (float32)."""
        frames = _check_frames(frames, self.image_size)
        return np.asarray(self.preprocessor.predict_on_batch(frames), dtype=np.float32)


def _build_network(spec: Spec, size: int):
    from keras import applications

    build = getattr(applications, spec.app)
    if spec.name == "vgg19":
        return build(include_top=True, weights=None)  # fc1/fc2 are part of the "top"
    # include_preprocessing (the default) keeps Keras's own input scaling in the graph.
    return build(include_top=False, weights=None, input_shape=(size, size, 3), pooling="avg")


def _caffe_preprocess(x):
    """keras.applications.vgg19.preprocess_input in the graph: RGB -> BGR, minus the mean."""
    import keras

    return keras.ops.flip(x, axis=-1) - keras.ops.convert_to_tensor(np.array(VGG19_MEAN_BGR, np.float32))


def imagenet_weights_path(cache_dir: str | Path | None, backbone: str = "vgg19") -> str:
    """Keras's ImageNet weights for `backbone`, downloaded once into <cache_dir>/weights/."""
    import keras

    file_name, url, file_hash = SPECS[backbone].imagenet
    # An image built with BAKE_WEIGHTS=1 carries them under $KERAS_HOME: no download at all.
    baked = Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser() / "weights" / file_name
    if baked.is_file():
        return str(baked)
    kwargs = {"cache_dir": str(Path(cache_dir).resolve())} if cache_dir else {}
    try:
        return keras.utils.get_file(file_name, url, file_hash=file_hash, cache_subdir="weights", **kwargs)
    except Exception as exc:  # no internet, proxy, disk full: say what to do instead
        raise UsageError(f"cannot download the {backbone} ImageNet weights ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); "
                         f"put {file_name} in {Path(cache_dir or '~/.keras') / 'weights'} "
                         f"or pass --weights PATH") from None


def _check_frames(frames: np.ndarray, size: int) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[1:] != (size, size, 3) or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames [N, {size}, {size}, 3], got {frames.dtype} {frames.shape}")
    return frames
