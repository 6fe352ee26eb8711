"""The training loss: focal cross-entropy whose focal factor comes from the true class only.

Why not Keras's `CategoricalFocalCrossentropy` with `label_smoothing`: Keras multiplies
every class's term by its own `(1 - p_c)^gamma`, the small smoothed target of the wrong
class included. With alpha 0.25, gamma 2 and smoothing 0.1 that loss is smallest at
p(true) = 0.75 and almost flat between 0.6 and 0.9, so a trained model's probabilities
stop meaning anything and val_loss barely sees confidence. Its `alpha` is also one
constant for every class (a x0.25 scale of the loss, not a class weight).

Here, as in the focal loss paper (Lin et al. 2017, eq. 5), the factor is taken from the
probability of the TRUE class, p_t, and label smoothing changes only the cross-entropy
targets:

    loss = alpha_t * (1 - p_t)^gamma * CE(smoothed targets, p)

For one sample this is zero only at p_t = 1 and grows monotonically as p_t falls, so
confidence is never capped; the smoothing term keeps a (fading) gradient that stops the
logits from running away. alpha is a per-class weight: the violent class is weighted
2*alpha, the non-violent class 2*(1 - alpha), so alpha 0.5 weighs both classes 1 (the
loss then has the scale of plain cross-entropy) and alpha 0.75 makes a violent sample
count three times a non-violent one.
"""

from __future__ import annotations

import keras
from keras import ops

from trainer.cache import CLASSES

VIOLENT = CLASSES.index("violent")


@keras.saving.register_keras_serializable(package="trainer")
class TrueClassFocalCrossentropy(keras.losses.Loss):
    def __init__(self, alpha: float = 0.5, gamma: float = 2.0, label_smoothing: float = 0.0,
                 name: str = "true_class_focal_crossentropy", reduction: str = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        self.label_smoothing = float(label_smoothing)

    def class_weights(self) -> list[float]:
        """Weight of each class index (CLASSES order)."""
        w = [2.0 * (1.0 - self.alpha)] * len(CLASSES)
        w[VIOLENT] = 2.0 * self.alpha
        return w

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        y_true = ops.cast(y_true, "float32")
        classes = y_true.shape[-1]
        eps = keras.config.epsilon()
        p = ops.clip(y_pred, eps, 1.0 - eps)
        p_t = ops.sum(y_true * p, axis=-1)  # from the hard labels: the true class's probability
        targets = y_true * (1.0 - self.label_smoothing) + self.label_smoothing / classes
        ce = -ops.sum(targets * ops.log(p), axis=-1)
        alpha_t = ops.sum(y_true * ops.convert_to_tensor(self.class_weights(), "float32"), axis=-1)
        return alpha_t * ops.power(1.0 - p_t, self.gamma) * ce

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "gamma": self.gamma,
                "label_smoothing": self.label_smoothing}


def build_loss(train_cfg: dict) -> keras.losses.Loss:
    if train_cfg["focal_loss"]:
        return TrueClassFocalCrossentropy(alpha=train_cfg["focal_alpha"], gamma=train_cfg["focal_gamma"],
                                          label_smoothing=train_cfg["label_smoothing"])
    return keras.losses.CategoricalCrossentropy(label_smoothing=train_cfg["label_smoothing"])


def describe(train_cfg: dict) -> str:
    if train_cfg["focal_loss"]:
        a = train_cfg["focal_alpha"]
        return (f"focal cross-entropy on the true class's p_t (gamma {train_cfg['focal_gamma']}, alpha {a}: "
                f"violent x{2 * a:g}, nonviolent x{2 * (1 - a):g}), label smoothing {train_cfg['label_smoothing']} "
                "on the cross-entropy targets")
    return f"cross-entropy, label smoothing {train_cfg['label_smoothing']}"
