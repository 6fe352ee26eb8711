"""The accuracy the trainer compiles: Keras's categorical accuracy over labelled rows only.

Validation on several replicas pads its last batch with rows whose one-hot label is all
zeros (trainer/data.py). Keras passes no sample weight to compiled `metrics` (only to
`weighted_metrics`, which would also weigh the training accuracy by the class weights), so
the padding is recognised by its empty label. Every row that carries a label counts exactly
as in Keras's own metric, so training (which is never padded) reports the same accuracy.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="trainer")
class LabelledAccuracy(keras.metrics.CategoricalAccuracy):
    def __init__(self, name: str = "accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        labelled = keras.ops.cast(keras.ops.sum(keras.ops.cast(y_true, "float32"), axis=-1) > 0, "float32")
        if sample_weight is not None:
            labelled = labelled * keras.ops.reshape(keras.ops.cast(sample_weight, "float32"), keras.ops.shape(labelled))
        return super().update_state(y_true, y_pred, sample_weight=labelled)
