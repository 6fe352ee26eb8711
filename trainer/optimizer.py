"""Adam whose global-norm clipping sees the gradient of the whole global batch, and loss
scaling whose skip decision is the same on every replica.

Keras 3 clips inside `BaseOptimizer.apply`, before the TensorFlow backend all-reduces
the gradients across replicas (`TFOptimizer._backend_update_step` sums them). Under a
MirroredStrategy each replica's gradient is clipped to `global_clipnorm` and then the
clipped gradients are summed, so with R replicas the update may be R times the limit
(measured: 0.001 -> 0.002 on two replicas). Here clipping is moved after the sum: each
replica holds the same all-reduced gradient, clips it by its global norm, and updates
its copy of the variables identically. On one device nothing changes.

Keras has no switch for this; the override is the smallest one that keeps Keras's own
update code (`_all_reduce_sum_gradients`, `_distributed_tf_update_step`).
"""

from __future__ import annotations

import keras
from keras.src.optimizers.base_optimizer import clip_by_global_norm


class AggregatedClipping:
    """Mixin for a Keras optimizer: global_clipnorm applied to the cross-replica sum."""

    def _clip_gradients(self, grads):
        if self.global_clipnorm and keras.backend.backend() == "tensorflow":
            return grads  # deferred to _backend_update_step, after the all-reduce
        return super()._clip_gradients(grads)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if not (self.global_clipnorm and keras.backend.backend() == "tensorflow"):
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        import tensorflow as tf

        variables = [v.value if isinstance(v, keras.Variable) else v for v in trainable_variables]
        pairs = self._all_reduce_sum_gradients(list(zip(grads, variables)))
        summed = [g for g, _ in pairs]
        present = [g for g in summed if g is not None]
        clipped = iter(clip_by_global_norm(present, self.global_clipnorm))
        summed = [None if g is None else next(clipped) for g in summed]
        tf.__internal__.distribute.interim.maybe_merge_call(
            self._distributed_tf_update_step, self._distribution_strategy,
            list(zip(summed, [v for _, v in pairs])), learning_rate)


@keras.saving.register_keras_serializable(package="trainer")
class ClippedAdam(AggregatedClipping, keras.optimizers.Adam):
    pass


@keras.saving.register_keras_serializable(package="trainer")
class ClippedSGD(AggregatedClipping, keras.optimizers.SGD):
    """Used by the tests: with SGD the update norm is lr x the clipped gradient norm."""


@keras.saving.register_keras_serializable(package="trainer")
class ReplicaSafeLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Keras's dynamic loss scaling with one skip decision for all replicas, and skipped
    steps that still count as steps.

    Two changes to Keras 3's LossScaleOptimizer (keras/src/optimizers/loss_scale_optimizer.py):

    - Under a MirroredStrategy Keras checks each replica's OWN gradients for inf/NaN,
      before they are summed, and uses replica 0's answer ("Each replica computed the same
      `finite` value, since `grads` is all-reduced" - they are not, at that point). When
      only replica 1 overflows, the step is applied, its inf enters the all-reduced sum
      and the global-norm clip turns it into NaN in every weight. Here the replicas' answers
      are reduced across all replicas first: one overflow anywhere skips the step everywhere
      (as tf.keras 2 did, which checked the already aggregated gradients).
    - A skipped step did not advance `iterations`, so the learning-rate schedule (warmup,
      cosine), which reads it, fell behind the real step count by every skip, and resumed
      runs logged fewer optimizer steps than they trained. tf.keras 2 incremented it on a
      skip ("Normally self._optimizer.iterations is incremented in apply_gradients(). Since
      that is not called in this branch, we increment it here instead."); so does this.
      Adam's bias correction reads the same counter: after k skips at the start its first
      real step is corrected as step k+1, a smaller first step during warmup, where the
      rate is near zero anyway.
    """

    def _tf_apply(self, grads, trainable_variables=None):
        import tensorflow as tf

        if tf.distribute.in_cross_replica_context():
            raise ValueError("apply() must be called in a replica context.")
        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            # pure replica context (XLA on GPUs): check_finite all-reduces below
            self._common_apply(grads, trainable_variables=trainable_variables)
            return

        def cross_replica(distribution, grads, trainable_variables):
            bad = distribution.extended.call_for_each_replica(self._count_non_finite, args=(grads,))
            finite = tf.equal(distribution.reduce(tf.distribute.ReduceOp.SUM, bad, axis=None), 0.0)

            def apply_fn():
                distribution.extended.call_for_each_replica(
                    self._stateful_handle_finite_grads, args=(grads, trainable_variables))

            # a cond in the cross-replica context, as Keras's own: its apply branch merge_calls
            keras.ops.cond(finite, apply_fn, self._stateful_handle_non_finite_grads)

        tf.distribute.get_replica_context().merge_call(cross_replica, args=(grads, trainable_variables))

    def _count_non_finite(self, grads):
        import tensorflow as tf

        return tf.cast(tf.logical_not(super().check_finite(grads)), tf.float32)

    def check_finite(self, grads):
        finite = super().check_finite(grads)
        if keras.backend.backend() != "tensorflow":
            return finite
        import tensorflow as tf

        ctx = tf.distribute.get_replica_context()
        if ctx is None or ctx.num_replicas_in_sync == 1:
            return finite
        bad = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.logical_not(finite), tf.float32))
        return tf.equal(bad, 0.0)

    def _stateful_handle_non_finite_grads(self):
        super()._stateful_handle_non_finite_grads()
        self.inner_optimizer.iterations.assign_add(1)


def build_optimizer(learning_rate, clipnorm: float, mixed_float16: bool):
    """The trainer's optimizer: Adam clipped after the all-reduce, and under mixed_float16
    wrapped in the replica-safe loss scaling (Keras then does not wrap it in its own)."""
    inner = ClippedAdam(learning_rate=learning_rate, global_clipnorm=clipnorm)
    return ReplicaSafeLossScaleOptimizer(inner, name="loss_scale_optimizer") if mixed_float16 else inner


def upgrade_loss_scaling(optimizer) -> bool:
    """A checkpoint written before the trainer had its own loss scaling holds Keras's class:
    give it the replica-safe methods (no state differs). True when it changed."""
    if type(optimizer) is keras.optimizers.LossScaleOptimizer:
        optimizer.__class__ = ReplicaSafeLossScaleOptimizer
        return True
    return False
