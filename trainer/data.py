"""Cache -> tf.data: the whole split in host memory once, batches gathered by index.

Why indices and not `from_tensor_slices(features)`: the full VGG19 training split is
10,778 x 20 x 4096 float16 = 1.8 GB. `from_tensor_slices` copies it into the dataset
graph as one constant, a second copy of the data that MirroredStrategy must also
serialise when it rebatches the dataset (graph protos stop at 2 GB). Shuffling a range
of indices costs 8 bytes per sample, so the shuffle buffer can always be the whole
data set (a true uniform reshuffle every epoch, unlike the seed's 10,000-sample buffer
on 10,778 samples), and the float16 rows are gathered per batch with NumPy and stay
float16 until the model casts them.
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
    dataset would start its sequence of orders again after every restart).
    """
    n = len(x)
    if n == 0:
        raise UsageError("a split of the cache is empty; extract more videos or change data.split")
    indices = tf.range(n, dtype=tf.int64)

    def one_epoch(epoch):
        key = tf.stack([tf.constant(seed, tf.int64), epoch])
        order = tf.random.experimental.stateless_shuffle(indices, seed=key)
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    batches = tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch)
    return _gathered(batches, x, y)


def _gathered(batches: tf.data.Dataset, x: np.ndarray, y: np.ndarray) -> tf.data.Dataset:
    labels = one_hot(y)
    frames, dim = x.shape[1:]

    def gather(idx):
        idx = np.sort(idx)  # sorted rows read faster; order inside a batch does not matter
        return x[idx], labels[idx]

    def gather_tf(idx):
        xb, yb = tf.numpy_function(gather, [idx], [tf.float16, tf.float32], stateful=False)
        xb.set_shape([None, frames, dim])
        yb.set_shape([None, len(CLASSES)])
        return xb, yb

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
