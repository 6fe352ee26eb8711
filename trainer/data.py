"""Cache -> tf.data: the whole split in host memory once, batches gathered by index.

Why indices and not `from_tensor_slices(features)`: the full VGG19 training split is
10,778 x 20 x 4096 float16 = 1.8 GB. `from_tensor_slices` copies it into the dataset
graph as one constant, a second copy of the data that MirroredStrategy must also
serialise when it rebatches the dataset (graph protos stop at 2 GB). Shuffling a range
of indices costs 8 bytes per sample, so the shuffle buffer can always be the whole
data set (a true uniform reshuffle every epoch, unlike the seed's 10,000-sample buffer
on 10,778 samples), and the float16 rows are gathered per batch with NumPy and stay
float16 until the model casts them.

Batches that split evenly over replicas (MirroredStrategy cuts each global batch into
one contiguous share per replica):
- training batches are all exactly `batch_size` rows, a static shape: the last batch of
  an epoch is completed with the first clips of the same epoch's order (what torch's
  DistributedSampler does). A short last batch split itself (with 2 replicas and
  n % batch == 1, one replica got no sample and its batch-norm moments were NaN), and a
  batch size hidden from TensorFlow (flat_map) left the split to chance;
- validation pads only its last batch, to a multiple of the replica count, with rows of
  zeros: no label (trainer/metrics.py leaves them out of the accuracy) and weight 0 in the
  loss, while the real rows weigh (n + pad) / n, so that Keras's per-row loss mean (padding
  counted in the denominator) is exactly the mean over the n clips: no clip dropped, none
  counted twice. Keras also averages the FIRST batch across replicas to build the model
  (`_maybe_symbolic_build`), which fails outright on unequal shares.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from trainer.cache import CLASSES, FeatureCache
from trainer.errors import UsageError


def load_split(cache_dir, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    cache = FeatureCache(cache_dir)
    if cache.read_meta() is None:
        raise UsageError(f"no feature cache at {cache_dir} (run `python -m trainer extract` first)")
    x, y, paths = cache.load_split(split)
    return x, y, paths


def one_hot(y: np.ndarray) -> np.ndarray:
    # Categorical (not sparse) labels: label smoothing and the focal loss both need them.
    return np.eye(len(CLASSES), dtype=np.float32)[y]


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0) -> tf.data.Dataset:
    """Batches of (float16 features, one-hot float32 labels); `batch_size` is the GLOBAL batch."""
    n = len(x)
    if n == 0:
        raise UsageError("a split of the cache is empty; extract more videos or change data.split")
    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    return _gathered(ds.batch(batch_size), x, y)


def make_train_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, first_epoch: int,
                       epochs: int) -> tf.data.Dataset:
    """The batches of epochs first_epoch..epochs-1, back to back, for fit(steps_per_epoch=...).

    Each epoch's order is a pure function of (seed, epoch): a stateless shuffle of the
    indices. A run resumed at epoch k therefore sees exactly the batches an uninterrupted
    run would have seen from epoch k on (a `shuffle(reshuffle_each_iteration=True)`
    dataset would start its sequence of orders again after every restart). Every batch
    holds exactly `batch_size` rows (module docstring).
    """
    n = len(x)
    if n == 0:
        raise UsageError("a split of the cache is empty; extract more videos or change data.split")
    indices = tf.range(n, dtype=tf.int64)
    rows = steps_per_epoch(n, batch_size) * batch_size  # the epoch's rows, the last batch completed
    repeats = -(-rows // n)

    def one_epoch(epoch):
        key = tf.stack([tf.constant(seed, tf.int64), epoch])
        order = tf.random.experimental.stateless_shuffle(indices, seed=key)
        return tf.data.Dataset.from_tensor_slices(tf.tile(order, [repeats])[:rows])

    batches = tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch).batch(batch_size, drop_remainder=True)
    return _gathered(batches, x, y, batch_size)


def make_eval_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, replicas: int) -> tf.data.Dataset:
    """Validation batches in order: (features, labels), or with `replicas` > 1 and a last
    batch that does not split evenly, (features, labels, weights) with that batch padded."""
    n = len(x)
    if n == 0:
        raise UsageError("a split of the cache is empty; extract more videos or change data.split")
    pad = (-(n % batch_size)) % replicas if n % batch_size else 0
    if not pad:
        return make_dataset(x, y, batch_size, shuffle=False)
    # index n is the padding row: zero features, no label, weight 0; the real rows weigh (n + pad) / n
    xp = np.concatenate([x, np.zeros((1, *x.shape[1:]), x.dtype)])
    labels = np.concatenate([one_hot(y), np.zeros((1, len(CLASSES)), np.float32)])
    weights = np.full(n + 1, (n + pad) / n, np.float32)
    weights[n] = 0.0
    order = np.concatenate([np.arange(n), np.full(pad, n)])
    batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
    return _gathered(batches, xp, labels=labels, weights=weights, sort=False)


def _gathered(batches: tf.data.Dataset, x: np.ndarray, y: np.ndarray | None = None, batch_size: int | None = None,
              weights: np.ndarray | None = None, sort: bool = True, labels: np.ndarray | None = None
              ) -> tf.data.Dataset:
    labels = one_hot(y) if labels is None else labels
    frames, dim = x.shape[1:]

    def gather(idx):
        if sort:  # sorted rows read faster; order inside a batch does not matter
            idx = np.sort(idx)
        if weights is None:
            return x[idx], labels[idx]
        return x[idx], labels[idx], weights[idx]

    def gather_tf(idx):
        types = [tf.float16, tf.float32] + ([tf.float32] if weights is not None else [])
        out = tf.numpy_function(gather, [idx], types, stateful=False)
        out[0].set_shape([batch_size, frames, dim])
        out[1].set_shape([batch_size, len(CLASSES)])
        if weights is not None:
            out[2].set_shape([batch_size])
        return tuple(out)

    ds = batches.map(gather_tf, num_parallel_calls=tf.data.AUTOTUNE)  # deterministic order (the default)
    options = tf.data.Options()
    # The data live in this process; there is nothing to shard across workers.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def balanced_class_weights(y: np.ndarray) -> dict[int, float]:
    """scikit-learn's "balanced" weights, n / (classes * count), for the classes present."""
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(y)
    weights = compute_class_weight("balanced", classes=present, y=y)
    return {int(c): float(w) for c, w in zip(present, weights)}
