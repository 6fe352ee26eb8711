"""The seed's classifier: 3 x BiLSTM -> attention pooling over time -> dense head -> softmax.

Input: the cached per-frame features [frames, feature_dim] (20 x 4096 for VGG19 fc2),
fed as float16; Keras's autocasting turns them into the layers' compute dtype
(float32, or float16 under mixed precision) at the first LSTM, so the float16 cache
never has to be widened in host memory.

On several replicas (MirroredStrategy) two Keras defaults would let the replicas drift
apart, so the model uses:
- `BatchNormalization(synchronized=True)`: Keras 3 keeps a copy of the moving statistics
  per replica (aggregation "none") and updates each from its own share of the batch, so
  replica 1 validated with other statistics than replica 0, whose copy is what gets saved.
  Synchronized, the batch moments are all-reduced over the global batch
  (keras/src/backend/tensorflow/nn.py, `_compute_moments_sync`): every replica computes
  and stores the same statistics, those of the global batch, as on one device.
- `ReplicaDropout`: Keras's Dropout draws its mask from one seed-generator state that is
  mirrored, so every replica dropped the same units; here the replica id is folded into
  the seed (on one device nothing changes).

The LSTMs keep Keras's defaults (tanh / sigmoid, no recurrent dropout, unroll=False,
use_bias=True, no masking): exactly the arguments for which Keras's TensorFlow backend
runs the fused cuDNN kernel on a GPU (`keras.src.backend.tensorflow.rnn.cudnn_ok`).
The per-layer dropout is a separate Dropout layer, as in the seed, so it never makes
an LSTM ineligible.
"""

from __future__ import annotations

import keras

from trainer.cache import CLASSES


@keras.saving.register_keras_serializable(package="trainer")
class AttentionPooling(keras.layers.Layer):
    """Softmax attention over time: score_t = w.h_t + b, output = sum_t softmax(score)_t h_t.

    A Dense(1) scorer (units*2 + 1 weights), the usual "learns which frames matter"
    pooling. The softmax runs in float32 so that mixed precision cannot overflow it.
    """

    def build(self, input_shape):
        dim = input_shape[-1]
        self.score_kernel = self.add_weight(name="score_kernel", shape=(dim, 1), initializer="glorot_uniform")
        self.score_bias = self.add_weight(name="score_bias", shape=(1,), initializer="zeros")

    def call(self, inputs):
        scores = keras.ops.matmul(inputs, self.score_kernel) + self.score_bias  # [B, T, 1]
        weights = keras.ops.softmax(keras.ops.cast(scores, "float32"), axis=1)
        weights = keras.ops.cast(weights, inputs.dtype)
        return keras.ops.sum(inputs * weights, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


@keras.saving.register_keras_serializable(package="trainer")
class ReplicaDropout(keras.layers.Dropout):
    """Keras's Dropout with its own mask on every replica of a distribution strategy.

    The state of the seed generator still advances once per call and is the same on every
    replica (so resume_state.json restores it as before); each replica folds its id into
    the seed it draws from (TensorFlow's stateless_fold_in).
    """

    def call(self, inputs, training=False):
        if not (training and self.rate > 0) or keras.backend.backend() != "tensorflow":
            return super().call(inputs, training=training)
        import tensorflow as tf

        ctx = tf.distribute.get_replica_context()
        if ctx is None or ctx.num_replicas_in_sync == 1:
            return super().call(inputs, training=training)
        seed = tf.cast(self.seed_generator.next(), tf.int64)
        seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(ctx.replica_id_in_sync_group, tf.int64))
        return tf.nn.experimental.stateless_dropout(inputs, rate=self.rate, seed=seed)


def synchronize_batch_norm(model: keras.Model) -> int:
    """Batch norm over the global batch in a model saved before it was (a resumed run).
    Read when the train step is traced, so setting it after loading is enough."""
    n = 0
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized:
            layer.synchronized = True
            n += 1
    return n


def build_model(frames: int, feature_dim: int, model_cfg: dict) -> keras.Model:
    units = model_cfg["lstm_units"]
    dropout = model_cfg["dropout"]
    dense = list(model_cfg["dense_units"])

    inputs = keras.Input(shape=(frames, feature_dim), dtype="float16", name="features")
    h = inputs
    for i in range(model_cfg["lstm_layers"]):
        h = keras.layers.Bidirectional(keras.layers.LSTM(units, return_sequences=True), name=f"bilstm_{i + 1}")(h)
        h = keras.layers.BatchNormalization(synchronized=True, name=f"bilstm_{i + 1}_bn")(h)
        h = ReplicaDropout(dropout, name=f"bilstm_{i + 1}_dropout")(h)
    h = AttentionPooling(name="attention")(h)
    for i, width in enumerate(dense):
        h = keras.layers.Dense(width, activation="relu", name=f"dense_{i + 1}")(h)
        # The seed's head: BatchNorm after every dense layer but the last one.
        if i < len(dense) - 1:
            h = keras.layers.BatchNormalization(synchronized=True, name=f"dense_{i + 1}_bn")(h)
        h = ReplicaDropout(dropout, name=f"dense_{i + 1}_dropout")(h)
    # float32 output: the softmax and the loss stay stable under mixed_float16.
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax", dtype="float32", name="probabilities")(h)
    return keras.Model(inputs, outputs, name="bilstm_attention")


def lstm_layers(model: keras.Model) -> list[keras.layers.LSTM]:
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Bidirectional):
            out += [layer.forward_layer, layer.backward_layer]
    return out


def cudnn_eligible(lstm: keras.layers.LSTM) -> bool:
    """Keras's own test of the LSTM arguments for the cuDNN kernel (GPU presence aside)."""
    from keras.src.backend.tensorflow.rnn import _do_lstm_arguments_support_cudnn

    cell = lstm.cell
    return (
        _do_lstm_arguments_support_cudnn(
            activation=cell.activation,
            recurrent_activation=cell.recurrent_activation,
            unroll=lstm.unroll,
            use_bias=cell.use_bias,
        )
        and not cell.recurrent_dropout
        and lstm.use_cudnn in ("auto", True)
    )


def parameter_count(model: keras.Model) -> int:
    return int(model.count_params())
