"""Where training runs, and which speed-ups are really in effect there.

The seed switched on MirroredStrategy, mixed precision and XLA together and reported
all three as "enabled". Under Keras 3 that is not what happens:

- XLA: `jit_compile=True` under a MirroredStrategy with more than one replica fails
  on the first step (XLA cannot reach the variables of the other replicas), and on a
  GPU Keras turns jit off by itself for cuDNN LSTMs (`LSTM.supports_jit = False`,
  cuDNN kernels are not XLA-compatible). So jit is asked for only on a single device
  whose LSTMs cannot use cuDNN; everywhere else the log says why it is off.
- Mixed precision pays on GPUs with tensor cores (compute capability >= 7.0); on a
  CPU float16 math is emulated and slower, so the policy is only set on such GPUs.
  The trainer wraps the optimizer in its own loss-scale optimizer (trainer/optimizer.py:
  one skip decision for all replicas, and skipped steps still count as steps).
- Memory growth: TensorFlow starts its context with ONE memory-growth setting for all
  visible GPUs and refuses mixed ones ("Memory growth cannot differ between GPU devices",
  tensorflow/python/eager/context.py, `_compute_gpu_options`), so it is set on every
  visible GPU, whichever of them train, extract or predict (`enable_memory_growth`).
- How many GPUs: `train.gpus: auto` (trainer/device_choice.py) times real training steps
  on one GPU and on all of them and keeps the faster; a number forces that many.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from trainer.errors import UsageError


@dataclasses.dataclass
class Runtime:
    strategy: tf.distribute.Strategy
    devices: list[str]
    mixed_precision: bool
    mixed_precision_reason: str
    jit_requested: bool
    notes: list[str] = dataclasses.field(default_factory=list)
    devices_reason: str = ""
    choice: object = None  # trainer.device_choice.Choice when train.gpus auto measured

    @property
    def policy(self) -> str:
        return policy_name(self.mixed_precision)

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    @property
    def on_gpu(self) -> bool:
        return any(is_gpu(d) for d in self.devices)


def is_gpu(device: str) -> bool:
    return "GPU" in device.upper()


def enable_memory_growth() -> list[str]:
    """Memory growth on EVERY visible GPU, before TensorFlow initialises them.

    Growth (allocate as needed) instead of TensorFlow's default of taking all of each GPU's
    memory at start: a second process (TensorBoard, predict, an extract) can share the
    card. Called by train, extract and predict before anything touches a GPU; once the
    context exists the setting can no longer change (RuntimeError), and then it was set
    for all GPUs by whoever started it. Returns the GPUs it was set on.
    """
    done = []
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # the context already runs: too late, nothing to change now
            continue
        done.append(gpu.name)
    return done


def gpu_capability(index: int = 0) -> tuple[int, int] | None:
    gpus = tf.config.list_physical_devices("GPU")
    if index >= len(gpus):
        return None
    details = tf.config.experimental.get_device_details(gpus[index])
    return details.get("compute_capability")


def gpu_name(index: int = 0) -> str:
    gpus = tf.config.list_physical_devices("GPU")
    if index >= len(gpus):
        return "no GPU"
    return tf.config.experimental.get_device_details(gpus[index]).get("device_name", f"GPU {index}")


def decide_precision(asked: bool, on_gpu: bool) -> tuple[bool, str]:
    """(mixed_float16?, the reason for the log)."""
    if not asked:
        return False, "off (not asked for)"
    if not on_gpu:
        return False, "off: no GPU (float16 is emulated on CPUs and only slows training down)"
    cap = gpu_capability(0)
    if cap is not None and tuple(cap) < (7, 0):
        return False, f"off: GPU compute capability {cap[0]}.{cap[1]} has no tensor cores"
    return True, ("on: mixed_float16, float32 variables and output, dynamic loss scaling "
                  "(one skip decision for all replicas)")


def policy_name(mixed: bool) -> str:
    return "mixed_float16" if mixed else "float32"


def visible_gpus() -> list[str]:
    """The GPUs training may use, as device names."""
    return [f"/gpu:{i}" for i in range(len(tf.config.list_physical_devices("GPU")))]


def strategy_for(devices: list[str]) -> tf.distribute.Strategy:
    if len(devices) > 1:
        return tf.distribute.MirroredStrategy(devices)
    if devices and is_gpu(devices[0]):
        return tf.distribute.OneDeviceStrategy(devices[0])
    return tf.distribute.get_strategy()  # the default: plain single-device execution


def setup(gpus_wanted: int | str, mixed_precision: bool, strategy: tf.distribute.Strategy | None = None,
          choose=None) -> Runtime:
    """Pick devices and the strategy; set the dtype policy. Call before building the model.

    `gpus_wanted`: a number (0 = every visible GPU) or "auto". `choose(candidates)` decides
    "auto" between device lists (trainer/device_choice.py); the dtype policy is set before it
    runs, so what it times is what trains. `strategy` may be given (tests pass a
    MirroredStrategy over logical CPU devices).
    """
    import keras

    enable_memory_growth()
    visible = visible_gpus()
    if strategy is not None:
        devices = list(getattr(strategy.extended, "worker_devices", ["/cpu:0"]))
        reason = "the strategy the caller passed"
    elif gpus_wanted == "auto":
        devices, reason = visible, ""  # decided below, once the policy is set
    else:
        if not isinstance(gpus_wanted, int) or gpus_wanted < 0:
            raise UsageError(f"--gpus must be >= 0 or train.gpus auto, got {gpus_wanted!r}")
        if gpus_wanted > len(visible):
            raise UsageError(f"--gpus {gpus_wanted} asked for, but {len(visible)} GPU(s) are visible")
        devices = visible[: gpus_wanted or len(visible)]
        reason = devices_reason(gpus_wanted, len(visible))

    on_gpu = any(is_gpu(d) for d in devices)
    mp, why = decide_precision(mixed_precision, on_gpu)
    keras.mixed_precision.set_global_policy(policy_name(mp))

    choice = None
    if strategy is None and gpus_wanted == "auto":
        if len(visible) < 2:
            devices, reason = visible, devices_reason("auto", len(visible))
        elif choose is None:  # a caller without a model to time (bench scripts): all of them
            devices, reason = visible, f"train.gpus auto, not measured here: all {len(visible)} visible GPUs"
        else:
            choice = choose(visible)
            devices, reason = choice.devices, choice.reason
            keras.mixed_precision.set_global_policy(policy_name(mp))  # the timing runs cleared Keras's state
    if strategy is None:
        strategy = strategy_for(devices)
        devices = devices or ["/cpu:0"]
    return Runtime(strategy, devices, mp, why, jit_requested=False, devices_reason=reason, choice=choice)


def devices_reason(gpus_wanted: int | str, visible: int) -> str:
    """Why training runs where it does, for the log."""
    if visible == 0:
        return "no GPU visible, so the CPU trains" + (" (train.gpus auto: nothing to measure)"
                                                       if gpus_wanted == "auto" else "")
    if gpus_wanted == "auto":
        return "train.gpus auto: the one visible GPU (nothing to measure)"
    if gpus_wanted:
        return f"train.gpus/--gpus {gpus_wanted} of the {visible} visible GPU(s)"
    if visible == 1:
        return "train.gpus 0: the one visible GPU"
    return (f"train.gpus 0: every one of the {visible} visible GPUs; `train.gpus: auto` times 1 against "
            f"{visible} at the start of a run and keeps the faster")


def decide_jit(runtime: Runtime, xla_asked: bool, model) -> tuple[bool, str]:
    """jit_compile value for model.compile, and the reason to log."""
    from trainer.model import cudnn_eligible, lstm_layers

    if not xla_asked:
        return False, "off (not asked for)"
    if runtime.replicas > 1:
        return False, (
            f"off: Keras's jit_compile fails under a MirroredStrategy with {runtime.replicas} replicas "
            "(XLA cannot access the other replicas' variables); the replicas run the plain TF graph"
        )
    if runtime.on_gpu and all(cudnn_eligible(l) for l in lstm_layers(model)):
        return False, (
            "off: the LSTMs run the fused cuDNN kernel, which XLA cannot compile "
            "(Keras sets supports_jit=False for them); cuDNN is the faster of the two"
        )
    if not runtime.on_gpu:
        return False, "off: no GPU (XLA on CPU does not speed up this recurrent model)"
    return True, "on: jit_compile=True (single device, generic LSTM kernel)"


def describe(runtime: Runtime) -> str:
    kind = type(runtime.strategy).__name__
    return f"{kind} over {runtime.replicas} replica(s): {', '.join(runtime.devices)}"
