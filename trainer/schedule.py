"""Learning rate: Keras's warmup + cosine schedule, times a scale that ReduceLROnPlateau halves.

Keras refuses to set `optimizer.learning_rate` when the optimizer was built on a
LearningRateSchedule, so the seed's ReduceLROnPlateau + warmup/cosine combination
cannot work as written. Here the optimizer's rate is `cosine(step) * scale`: the
schedule keeps its shape, and `PlateauScaleCallback` multiplies `scale` by the
plateau factor. The scale is part of the schedule's config, so it is saved with
every checkpoint and a resumed run continues at the reduced rate.

After warmup the rate never goes below `floor` (the configured minimum learning rate):
without it, a plateau cut late in training would push the tail of the cosine below the
minimum both the schedule and ReduceLROnPlateau promise.
"""

from __future__ import annotations

import math

import keras


@keras.saving.register_keras_serializable(package="trainer")
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`base(step) * scale`, with `scale` a non-trainable variable a callback can lower."""

    def __init__(self, base: keras.optimizers.schedules.LearningRateSchedule, scale: float = 1.0,
                 floor: float = 0.0):
        self.base = base
        self.floor = float(floor)
        # A plain variable (not a layer weight): the optimizer reads it inside the
        # compiled train step, so a change made by a callback between epochs is seen
        # by the very next step without retracing.
        self.scale = keras.Variable(float(scale), trainable=False, dtype="float32", name="lr_scale")

    def __call__(self, step):
        lr = self.base(step) * keras.ops.cast(self.scale, "float32")
        if not self.floor:
            return lr
        # The warmup ramp starts at 0 on purpose; the floor applies once it is over.
        warmup_steps = getattr(self.base, "warmup_steps", 0)
        past_warmup = keras.ops.cast(step, "float32") >= float(warmup_steps)
        return keras.ops.where(past_warmup, keras.ops.maximum(lr, self.floor), lr)

    def get_config(self):
        return {
            "base": keras.saving.serialize_keras_object(self.base),
            "scale": float(keras.ops.convert_to_numpy(self.scale)),
            "floor": self.floor,
        }

    @classmethod
    def from_config(cls, config):
        base = keras.saving.deserialize_keras_object(config["base"])
        return cls(base, scale=config["scale"], floor=config.get("floor", 0.0))


def warmup_cosine(
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: int,
    peak_lr: float,
    min_lr: float,
) -> ScaledSchedule:
    """Linear warmup 0 -> peak over `warmup_epochs`, then cosine to `min_lr` at the last step."""
    total = steps_per_epoch * epochs
    warmup = min(steps_per_epoch * warmup_epochs, max(total - 1, 0))
    base = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(total - warmup, 1),
        alpha=min_lr / peak_lr,  # fraction of warmup_target reached at the end of the decay
        warmup_target=peak_lr,
        warmup_steps=warmup,
    )
    return ScaledSchedule(base, floor=min_lr)


def find_scaled_schedule(optimizer) -> ScaledSchedule | None:
    """The ScaledSchedule driving `optimizer` (also through a LossScaleOptimizer), or None."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    lr = getattr(inner, "_learning_rate", None)
    return lr if isinstance(lr, ScaledSchedule) else None


class PlateauScaleCallback(keras.callbacks.ReduceLROnPlateau):
    """Keras's ReduceLROnPlateau, acting on the schedule's scale instead of a fixed rate.

    Everything else (monitor, patience, cooldown, min_delta, the `learning_rate` log
    entry) is Keras's own. `min_lr` bounds the scale at `min_lr / peak_lr`, so a
    plateau can lower the peak of the remaining curve to at most `min_lr`.
    """

    def __init__(self, peak_lr: float, **kwargs):
        super().__init__(**kwargs)
        self.peak_lr = peak_lr
        self.reductions = 0

    def on_epoch_end(self, epoch, logs=None):
        # Keras logs optimizer.learning_rate, i.e. the rate of the NEXT step after the
        # cut: plots would be shifted by one epoch (epoch 1 of a warmup from 0 would show
        # the rate of epoch 2). Log the rate the epoch's last step really used instead.
        logs = logs if logs is not None else {}
        used = rate_of_last_step(self.model.optimizer)
        super().on_epoch_end(epoch, logs)
        logs["learning_rate"] = used

    def _reduce_optimizer_lr(self, optimizer, epoch, name=""):
        schedule = find_scaled_schedule(optimizer)
        if schedule is None:  # a fixed rate: Keras's own behaviour applies
            return super()._reduce_optimizer_lr(optimizer, epoch, name)
        old = float(keras.ops.convert_to_numpy(schedule.scale))
        floor = self.min_lr / self.peak_lr if self.peak_lr > 0 else 0.0
        if old <= floor * (1 + 1e-6):
            return False
        new = max(old * self.factor, floor)
        schedule.scale.assign(new)
        self.reductions += 1
        print(
            f"epoch {epoch + 1}: {self.monitor} has not improved for {self.patience} epochs; "
            f"learning-rate scale {old:g} -> {new:g}",
            flush=True,
        )
        return True


def rate_of_last_step(optimizer) -> float:
    """The learning rate the optimizer applied at its latest step (step iterations - 1)."""
    schedule = find_scaled_schedule(optimizer)
    if schedule is None:
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    step = max(int(keras.ops.convert_to_numpy(optimizer.iterations)) - 1, 0)
    return float(keras.ops.convert_to_numpy(schedule(step)))


def describe(schedule: ScaledSchedule, steps_per_epoch: int, epochs: int) -> str:
    """One line for the log: the shape of the curve at a few epochs."""
    marks = sorted({0, 1, schedule.base.warmup_steps, steps_per_epoch * epochs // 2, steps_per_epoch * epochs})
    parts = []
    for step in marks:
        lr = float(keras.ops.convert_to_numpy(schedule(step)))
        parts.append(f"step {step}: {lr:.2e}")
    ep = math.ceil(schedule.base.warmup_steps / max(steps_per_epoch, 1))
    return f"warmup {ep} epoch(s) then cosine; " + ", ".join(parts)
