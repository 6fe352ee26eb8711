"""MirroredStrategy over two logical CPU devices: the GLOBAL batch sets the step count.

Logical devices must be configured before TensorFlow initialises, so the training runs
in a fresh subprocess that prints its findings as JSON.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.trainer.tiny_cache import make_cache

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(r"""
    import json, sys
    from pathlib import Path
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from tests.trainer.tiny_cache import tiny_config
    from trainer import runtime, train as train_mod

    cache, out = sys.argv[1], Path(sys.argv[2])
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    captured = {}
    original_fit = keras.Model.fit
    def spy_fit(self, *a, **kw):
        captured["class_weight"] = kw.get("class_weight")
        captured["replicas"] = self.distribute_strategy.num_replicas_in_sync
        return original_fit(self, *a, **kw)
    keras.Model.fit = spy_fit
    cfg = tiny_config(epochs=2, batch_size=16, xla=True)
    rc = train_mod.train(cfg, cache, out, evaluate=False, strategy=strategy)
    keras.Model.fit = original_fit
    model = keras.models.load_model(out / "checkpoint_epoch_002.keras")
    rt = runtime.Runtime(strategy, ["/cpu:0", "/cpu:1"], False, "", False)
    # Why runtime.decide_jit refuses XLA here: Keras's jit_compile=True under a
    # MirroredStrategy fails on the first step.
    import numpy as np
    with strategy.scope():
        probe = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        probe.compile("adam", "mse", jit_compile=True)
    try:
        probe.fit(np.zeros((8, 4), "float32"), np.zeros((8, 2), "float32"), batch_size=4, verbose=0)
        jit_under_mirrored = "works"
    except Exception as exc:
        jit_under_mirrored = type(exc).__name__
    print("RESULT " + json.dumps({
        "rc": rc,
        "iterations": int(model.optimizer.iterations.numpy()),
        "class_weight": captured["class_weight"],
        "replicas": captured["replicas"],
        "jit": runtime.decide_jit(rt, True, model),
        "jit_under_mirrored": jit_under_mirrored,
    }))
""")


@pytest.mark.slow
def test_global_batch_on_two_replicas(tmp_path):
    # 40 training videos, 30 of them violent, global batch 16: ceil(40/16) = 3 steps per
    # epoch whatever the replica count (the seed's bug divided the batch: 5 steps).
    cache = make_cache(tmp_path / "cache", {"train": 40, "val": 8, "test": 4}, violent_fraction=0.75)
    out = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(cache), str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert result["rc"] == 0
    assert result["replicas"] == 2
    assert "3 steps per epoch" in proc.stdout
    assert "8 samples per replica per step); the strategy the caller passed" in proc.stdout
    assert "steps per execution: 1 (Keras's multi-step loop fails under a MirroredStrategy with 2 replicas)" in proc.stdout
    assert result["iterations"] == 2 * 3  # two epochs of 3 global steps
    # "balanced" weights of a 10/30 split, passed to fit under the strategy
    weights = {int(k): v for k, v in result["class_weight"].items()}  # JSON made the keys strings
    assert weights == {0: 2.0, 1: 2 / 3}
    assert "class weights (balanced): nonviolent 2.000 (10 videos), violent 0.667 (30 videos)" in proc.stdout
    # XLA was asked for (xla=True) but jit_compile fails under MirroredStrategy: off, and said so
    jit, reason = result["jit"]
    assert jit is False and "MirroredStrategy" in reason
    assert result["jit_under_mirrored"] != "works", "Keras now runs jit under MirroredStrategy: enable it"
    assert "XLA: off: Keras's jit_compile fails under a MirroredStrategy" in proc.stdout
    rows = (out / "training_history.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + 2 epochs


CLIP_SCRIPT = textwrap.dedent(r"""
    import json
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    from trainer.optimizer import ClippedAdam, ClippedSGD

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(8, 4)) * 10).astype("float32")  # large gradients: clipping is active
    y = rng.normal(size=(8, 2)).astype("float32")
    makers = {
        "keras_sgd": lambda: keras.optimizers.SGD(1.0, global_clipnorm=1e-3),
        "ours_sgd": lambda: ClippedSGD(1.0, global_clipnorm=1e-3),
        "ours_adam": lambda: ClippedAdam(1e-3, global_clipnorm=1e-3),
    }
    result = {}
    for name, make in makers.items():
        for devices in (["/cpu:0"], ["/cpu:0", "/cpu:1"]):
            with tf.distribute.MirroredStrategy(devices).scope():
                keras.utils.set_random_seed(1)
                model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
                model.compile(make(), "mse")
            before = model.get_weights()
            model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)  # one step, global batch 8
            delta = [a - b for a, b in zip(model.get_weights(), before)]
            result[f"{name}/{len(devices)}"] = float(np.sqrt(sum((d ** 2).sum() for d in delta)))
    print("RESULT " + json.dumps(result))
""")


@pytest.mark.slow
def test_clipping_acts_on_the_global_gradient_on_any_device_count(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", CLIP_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    norms = json.loads(proc.stdout.split("RESULT ", 1)[1])
    # SGD with lr 1: the update IS the clipped gradient, so its norm is the clip limit
    assert norms["ours_sgd/1"] == pytest.approx(1e-3, rel=1e-4)
    assert norms["ours_sgd/2"] == pytest.approx(1e-3, rel=1e-4)
    # Keras's own clipping clips each replica's half and sums: above the limit on two
    assert norms["keras_sgd/1"] == pytest.approx(1e-3, rel=1e-4) and norms["keras_sgd/2"] > 1.5e-3
    # the trainer's optimizer: the same update on one and on two replicas
    assert norms["ours_adam/2"] == pytest.approx(norms["ours_adam/1"], rel=1e-5)


def test_the_log_says_why_training_runs_where_it_does():
    from trainer.runtime import devices_reason

    assert devices_reason(0, 0) == "no GPU visible, so the CPU trains"
    assert devices_reason(0, 1) == "train.gpus 0: the one visible GPU"
    two = devices_reason(0, 2)
    assert two.startswith("train.gpus 0: every one of the 2 visible GPUs")
    assert "`train.gpus: auto` times 1 against 2" in two  # where the choice is measured instead
    assert devices_reason(1, 2) == "train.gpus/--gpus 1 of the 2 visible GPU(s)"
    assert devices_reason("auto", 0) == "no GPU visible, so the CPU trains (train.gpus auto: nothing to measure)"
    assert devices_reason("auto", 1) == "train.gpus auto: the one visible GPU (nothing to measure)"
