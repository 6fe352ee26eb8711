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
  Keras wraps the optimizer in a LossScaleOptimizer at compile time (dynamic scaling).
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

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    @property
    def on_gpu(self) -> bool:
        return any("GPU" in d.upper() for d in self.devices)


def gpu_capability(index: int = 0) -> tuple[int, int] | None:
    gpus = tf.config.list_physical_devices("GPU")
    if index >= len(gpus):
        return None
    details = tf.config.experimental.get_device_details(gpus[index])
    return details.get("compute_capability")


def setup(gpus_wanted: int, mixed_precision: bool, strategy: tf.distribute.Strategy | None = None) -> Runtime:
    """Pick devices and the strategy; set the dtype policy. Call before building the model.

    `strategy` may be given (tests pass a MirroredStrategy over logical CPU devices).
    """
    import keras

    physical = tf.config.list_physical_devices("GPU")
    if strategy is None:
        if gpus_wanted < 0:
            raise UsageError(f"--gpus must be >= 0, got {gpus_wanted}")
        if gpus_wanted > len(physical):
            raise UsageError(f"--gpus {gpus_wanted} asked for, but {len(physical)} GPU(s) are visible")
        use = physical[: gpus_wanted or len(physical)]
        for gpu in use:
            try:  # share the card politely (TensorBoard, a second process); must precede init
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:
                pass
        devices = [f"/gpu:{i}" for i in range(len(use))]
        reason = devices_reason(gpus_wanted, len(physical))
        if len(devices) > 1:
            strategy = tf.distribute.MirroredStrategy(devices)
        elif devices:
            strategy = tf.distribute.OneDeviceStrategy(devices[0])
        else:
            devices = ["/cpu:0"]
            strategy = tf.distribute.get_strategy()  # the default: plain single-device execution
    else:
        devices = list(getattr(strategy.extended, "worker_devices", ["/cpu:0"]))
        reason = "the strategy the caller passed"

    on_gpu = any("GPU" in d.upper() for d in devices)
    if not mixed_precision:
        mp, why = False, "off (not asked for)"
    elif not on_gpu:
        mp, why = False, "off: no GPU (float16 is emulated on CPUs and only slows training down)"
    else:
        cap = gpu_capability(0)
        if cap is not None and cap < (7, 0):
            mp, why = False, f"off: GPU compute capability {cap[0]}.{cap[1]} has no tensor cores"
        else:
            mp, why = True, "on: mixed_float16, float32 variables and output, dynamic loss scaling (LossScaleOptimizer)"
    keras.mixed_precision.set_global_policy("mixed_float16" if mp else "float32")
    return Runtime(strategy, devices, mp, why, jit_requested=False, devices_reason=reason)


def devices_reason(gpus_wanted: int, visible: int) -> str:
    """Why training runs where it does, for the log: the choice is the user's to change, and
    whether N GPUs beat one for this small recurrent model is measured, not assumed
    (`bench/train_throughput.py --mode gpus` times both on the machine at hand)."""
    if visible == 0:
        return "no GPU visible, so the CPU trains"
    if gpus_wanted:
        return f"train.gpus/--gpus {gpus_wanted} of the {visible} visible GPU(s)"
    if visible == 1:
        return "train.gpus 0: the one visible GPU"
    return (f"train.gpus 0: every one of the {visible} visible GPUs; `--gpus 1` trains on one "
            f"(`python bench/train_throughput.py --mode gpus` times 1 against {visible} on this machine)")


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
