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


def run_script(script: str, *args, timeout: int = 300) -> subprocess.CompletedProcess:
    """`script` in a fresh interpreter (logical devices must precede TensorFlow's start); exit 0 asserted."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def result_of(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.split("RESULT ", 1)[1])

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
    proc = run_script(SCRIPT, cache, out)
    result = result_of(proc)
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
    norms = result_of(run_script(CLIP_SCRIPT))
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


# ---- mixed precision on two replicas: one skip decision, synchronized statistics ------------------

REPLICA_SCRIPT = textwrap.dedent(r"""
    import json
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    from trainer import optimizer as opt_mod
    from trainer.model import build_model

    # the policy runtime.setup sets on a GPU with tensor cores: the only thing a GPU changes here
    keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    # the unchanged trainer compiled ClippedAdam and let Keras wrap it in its LossScaleOptimizer
    make = getattr(opt_mod, "build_optimizer",
                   lambda lr, clipnorm, mixed: opt_mod.ClippedAdam(lr, global_clipnorm=clipnorm))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype("float32")
    # Rows 4..7 form replica 1's half of the global batch of 8. x 3000 keeps the float16
    # forward pass finite but overflows the loss-scaled (x 2**15) float16 kernel gradient.
    x[4:] *= 3000
    y = np.eye(2, dtype="float32")[rng.integers(0, 2, 8)]
    clean = rng.normal(size=(8, 4)).astype("float32")

    def small(optimizer):
        with strategy.scope():
            keras.utils.set_random_seed(1)
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
                                      keras.layers.Dense(2, activation="softmax", dtype="float32")])
            model.compile(optimizer(), "categorical_crossentropy")
        return model

    def state(model, before):
        weights = model.get_weights()
        return {"finite": all(np.isfinite(w).all() for w in weights),
                "unchanged": all(np.array_equal(a, b) for a, b in zip(weights, before)),
                "scale": float(model.optimizer.dynamic_scale.numpy()),
                "iterations": int(model.optimizer.iterations.numpy()),
                "replicas_equal": all(np.array_equal(*[np.asarray(t) for t in
                                      strategy.experimental_local_results(w.value)]) for w in model.weights)}

    result = {}
    for where, batch in (("replica 1", x), ("replica 0", np.concatenate([x[4:], x[:4]]))):
        for name, optimizer in (("trainer", lambda: make(1e-3, 1.0, True)),
                                ("keras", lambda: opt_mod.ClippedAdam(1e-3, global_clipnorm=1.0))):
            model = small(optimizer)
            before = model.get_weights()
            model.fit(batch, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
            result[f"{name}, overflow on {where}"] = state(model, before)
            if name == "trainer":
                model.fit(clean, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
                result[f"trainer, then a clean batch ({where})"] = state(model, before)

    # batch norm and dropout of the trainer's model on two replicas
    with strategy.scope():
        keras.utils.set_random_seed(2)
        model = build_model(6, 8, {"lstm_units": 4, "lstm_layers": 1, "dropout": 0.5, "dense_units": [8, 8]})
        model.compile(make(1e-3, 1.0, True), "categorical_crossentropy")
    xs = rng.normal(size=(16, 6, 8)).astype("float16")
    xs[8:] += 3.0  # replica 1's half has other statistics than replica 0's
    ys = np.eye(2, dtype="float32")[rng.integers(0, 2, 16)]
    model.fit(xs, ys, batch_size=16, epochs=2, verbose=0, shuffle=False)
    bn = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            for v in (layer.moving_mean, layer.moving_variance):
                a, b = [np.asarray(t) for t in strategy.experimental_local_results(v.value)]
                bn[v.path] = float(np.abs(a - b).max())
    dropout = model.get_layer("bilstm_1_dropout")

    @tf.function
    def masks():
        return strategy.run(lambda: dropout(tf.ones((4, 6, 8), "float16"), training=True))

    m0, m1 = [np.asarray(t) for t in strategy.experimental_local_results(masks())]
    result["bn_max_replica_difference"] = bn
    result["dropout_masks_equal"] = bool(np.array_equal(m0, m1))
    result["dropout_rate_seen"] = float((m0 == 0).mean())
    print("RESULT " + json.dumps(result))
""")


def test_mixed_float16_on_two_replicas_one_skip_decision_and_equal_replicas():
    """Items 2, 4 and 7 of issue 21 on the smallest models that show them."""
    r = result_of(run_script(REPLICA_SCRIPT))
    for where in ("replica 0", "replica 1"):
        # an overflow on either replica skips the step on both: weights untouched, scale halved;
        # the skipped step still counts, so the learning-rate schedule does not fall behind
        assert r[f"trainer, overflow on {where}"] == {"finite": True, "unchanged": True, "scale": 2.0 ** 14,
                                                      "iterations": 1, "replicas_equal": True}, where
        after = r[f"trainer, then a clean batch ({where})"]
        assert after["finite"] and not after["unchanged"] and after["iterations"] == 2 and after["replicas_equal"]
    # Keras's own LossScaleOptimizer trusts replica 0's answer (keras/src/optimizers/
    # loss_scale_optimizer.py, merge_call branch): replica 1's inf enters the sum, the clip
    # makes it NaN. When this fails, Keras has fixed it and the trainer's class can go.
    assert r["keras, overflow on replica 1"]["finite"] is False
    assert r["keras, overflow on replica 0"]["iterations"] == 0  # and a skipped step is no step
    # batch-norm statistics are computed over the global batch: both replicas hold the same
    assert r["bn_max_replica_difference"] and max(r["bn_max_replica_difference"].values()) == 0.0
    # each replica draws its own dropout mask
    assert r["dropout_masks_equal"] is False and 0.3 < r["dropout_rate_seen"] < 0.7


DONE_SCRIPT = textwrap.dedent(r"""
    import json, sys
    from pathlib import Path
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    from tests.trainer.tiny_cache import tiny_config
    from trainer import data, runtime, train as train_mod

    # What a GPU with tensor cores decides, recorded: the devices count as GPUs, so runtime.setup
    # sets mixed_float16 exactly as it does on one (the only thing a GPU changes on this path).
    runtime.is_gpu = lambda device: True
    runtime.gpu_capability = lambda index=0: (8, 9)
    cache, out = sys.argv[1], Path(sys.argv[2])
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    captured = {}
    original_fit = keras.Model.fit
    def spy_fit(self, *a, **kw):
        captured["model"] = self
        return original_fit(self, *a, **kw)
    keras.Model.fit = spy_fit
    rc = train_mod.train(tiny_config(epochs=2, batch_size=16, mixed_precision=True), cache, out, evaluate=False,
                         strategy=strategy)
    keras.Model.fit = original_fit
    live = captured["model"]
    bn = [float(np.abs(np.subtract(*[np.asarray(t) for t in strategy.experimental_local_results(v.value)])).max())
          for layer in live.layers if isinstance(layer, keras.layers.BatchNormalization)
          for v in (layer.moving_mean, layer.moving_variance)]
    model = keras.models.load_model(out / "checkpoint_epoch_002.keras")
    x_val, y_val, _ = data.load_split(cache, "val")
    # the same checkpoint on ONE device, every validation clip in one batch
    one_device = model.evaluate(x_val, data.one_hot(y_val), batch_size=len(x_val), verbose=0, return_dict=True)
    print("RESULT " + json.dumps({
        "rc": rc, "policy": model.dtype_policy.name, "optimizer": type(model.optimizer).__name__,
        "finite": all(bool(np.isfinite(np.asarray(w)).all()) for w in model.weights),
        "scale": float(model.optimizer.dynamic_scale.numpy()), "iterations": int(model.optimizer.iterations.numpy()),
        "bn_replica_difference": max(bn), "one_device": one_device,
    }))
""")


@pytest.mark.slow
def test_two_replicas_under_mixed_float16_with_an_overflow_on_one_and_a_last_batch_of_one(tmp_path):
    """Issue 21's definition of done, on the real training path."""
    import csv

    import numpy as np

    from trainer.cache import FeatureCache

    # 33 training clips at a global batch of 16: the last batch holds one clip. 9 validation
    # clips: one batch that does not split evenly over two replicas.
    cache_dir = make_cache(tmp_path / "cache", {"train": 33, "val": 9, "test": 4})
    cache = FeatureCache(cache_dir)
    # The two clips with the highest index, x 3000: the float16 forward pass stays finite, but
    # their loss-scaled (x 2**15) gradients overflow float16. The trainer gathers each batch in
    # index order and MirroredStrategy gives replica 1 the second half, so they overflow on
    # replica 1 only (replica 0 has its 8 lowest indices).
    for rec in cache.ok_records("train")[-2:]:
        cache.save_features(rec["key"], cache.load_features(rec["key"]).astype(np.float32) * 3000)
    out = tmp_path / "run"
    proc = run_script(DONE_SCRIPT, cache_dir, out, timeout=600)
    r = result_of(proc)
    assert "mixed precision: on: mixed_float16" in proc.stdout
    assert r["rc"] == 0 and r["policy"] == "mixed_float16" and r["optimizer"] == "ReplicaSafeLossScaleOptimizer"
    assert r["finite"], "NaN/inf in the weights"
    assert r["scale"] < 2.0 ** 15  # steps overflowed and were skipped ...
    assert r["iterations"] == 2 * 3  # ... and still counted: the schedule is where the step count says
    assert r["bn_replica_difference"] == 0.0  # both replicas hold the same batch-norm statistics
    with open(out / "training_history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r_["epoch"] for r_ in rows] == ["0", "1"]
    for row in rows:
        assert np.isfinite(float(row["loss"])) and np.isfinite(float(row["val_loss"])), row
    # validation on two replicas (a padded last batch) = the same checkpoint on one device:
    # no clip lost or counted twice, the padding weighs nothing
    assert float(rows[-1]["val_loss"]) == pytest.approx(r["one_device"]["loss"], rel=1e-4)
    assert float(rows[-1]["val_accuracy"]) == pytest.approx(r["one_device"]["accuracy"], abs=1e-6)


AUTO_SCRIPT = textwrap.dedent(r"""
    import json, sys
    from pathlib import Path
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from trainer import device_choice, runtime
    from trainer.cli import main

    # the device list a 2-GPU machine gives, recorded: here two logical CPU devices
    runtime.visible_gpus = lambda: ["/cpu:0", "/cpu:1"]
    device_choice.MAX_SECONDS = 3.0  # the test's budget; the trainer's is MAX_SECONDS per device count
    cache, out, config, *resume = sys.argv[1:]
    # train.gpus is not set: auto is the default
    print("RC", main(["train", "--cache-dir", cache, "--output-dir", out, "--config", config, "--epochs", "2",
                      "--no-evaluate", *resume]))
""")

TINY_YAML = """
model: {lstm_units: 8, dense_units: [16, 8, 8], dropout: 0.1}
train: {batch_size: 16, warmup_epochs: 1, mixed_precision: false, xla: false, learning_rate: 3.0e-3}
callbacks: {tensorboard: false}
"""


@pytest.mark.slow
def test_gpus_auto_times_one_device_against_two_and_keeps_the_faster(tmp_path):
    import re

    cache = make_cache(tmp_path / "cache", {"train": 64, "val": 16, "test": 4})
    out = tmp_path / "run"
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML)

    def run(*resume):
        proc = run_script(AUTO_SCRIPT, cache, out, config, *resume, timeout=600)
        assert "RC 0" in proc.stdout, proc.stdout[-2000:]
        return proc.stdout

    log = run()
    line = next(x for x in log.splitlines() if x.startswith("devices:"))
    m = re.search(r"train\.gpus auto: (\d) devices? \(measured in (\d+) s of real training steps: "
                  r"1 device ([\d,]+) samples/s \((\d+) steps\), 2 devices ([\d,]+) samples/s \((\d+) steps\); "
                  r"the faster, [\d.]+x\)", line)
    assert m, line  # both times printed
    chosen = int(m[1])
    one, two = float(m[3].replace(",", "")), float(m[5].replace(",", ""))
    assert chosen == (2 if two > one else 1)  # the faster of the two
    assert ("MirroredStrategy over 2 replica(s)" in line) == (chosen == 2)
    info = json.loads((out / "model_info.json").read_text())
    devices = info["run"]["devices"]
    # bounded: at most 200 timed steps or the time budget (3 s here) per device count
    assert int(m[4]) <= 200 and int(m[6]) <= 200
    assert all(0 < s <= 3.0 + 1.0 for s in devices["timed_seconds"].values()), devices
    assert devices["setting"] == "auto" and devices["chosen"] == chosen
    assert set(devices["samples_per_s"]) == {"1", "2"} and devices["reason"] in line
    assert line in (out / "train.log").read_text()

    # a resumed run (here of the finished run: it stops at once) reuses the recorded choice,
    # nothing is timed again
    log = run("--resume")
    line = next(x for x in log.splitlines() if x.startswith("devices:"))
    assert f"train.gpus auto: {chosen} device" in line and "measured when the run started" in line
    assert "measured in" not in log
