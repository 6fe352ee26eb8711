"""`trainer train` end to end on a tiny cache, plus the pieces it is built from."""

import csv
import json

import keras
import numpy as np
import pytest

from tests.trainer.tiny_cache import make_cache, tiny_config
from trainer import data, runtime
from trainer.cli import main

TINY_YAML = """
model: {lstm_units: 8, dense_units: [16, 8, 8], dropout: 0.1}
train: {batch_size: 16, warmup_epochs: 1, learning_rate: 3.0e-3}
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("cache"), {"train": 48, "val": 16, "test": 16})


@pytest.fixture
def tiny_yaml(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_YAML)
    return path


@pytest.mark.slow
def test_train_writes_every_seed_output(cache, tiny_yaml, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--cache-dir", str(cache), "--output-dir", str(out), "--config", str(tiny_yaml),
               "--epochs", "3", "--mixed-precision", "--xla", "--use-focal-loss", "--use-class-weights"])
    printed = capsys.readouterr().out
    assert rc == 0
    for name in ("best_model.keras", "checkpoint_epoch_001.keras", "checkpoint_epoch_003.keras",
                 "model_info.json", "metrics.json", "train.log", "resume_state.json"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").rglob("events.out.tfevents*"))
    # the best model is the improving epoch's checkpoint itself (a hard link: written once)
    best_inode = (out / "best_model.keras").stat().st_ino
    assert best_inode in {p.stat().st_ino for p in out.glob("checkpoint_epoch_*.keras")}
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == [
        "accuracy.png", "confusion_matrix.png", "learning_rate.png", "loss.png"]
    with open(out / "training_history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(rows[0])
    # asked-for speed-ups that do not apply on a CPU are reported as off, with the reason
    assert "mixed precision: off: no GPU" in printed
    assert "XLA: off: no GPU" in printed
    assert "loss: focal cross-entropy on the true class's p_t (gamma 2.0, alpha 0.5" in printed
    assert "3 steps per epoch" in printed and "LSTMs cuDNN-eligible: yes" in printed
    assert "steps per execution: 3 (the largest divisor of 3 steps per epoch up to train.steps_per_execution 16)" in printed
    log = (out / "train.log").read_text()
    assert "epoch   3/3" in log and "samples/s" in log and "ETA" in log and "test accuracy:" in log
    info = json.loads((out / "model_info.json").read_text())
    assert info["cache_meta"]["feature_shape"] == [6, 8] and info["classes"] == ["nonviolent", "violent"]
    metrics = json.loads((out / "metrics.json").read_text())
    # the accuracy reported is the best model's on the test split, recomputed here independently
    best = keras.models.load_model(out / "best_model.keras")
    x, y, _ = data.load_split(cache, "test")
    predicted = np.argmax(np.asarray(best(x, training=False)), axis=1)
    assert metrics["samples"] == 16 and metrics["accuracy"] == pytest.approx(float((predicted == y).mean()))
    assert metrics["model"].endswith("best_model.keras") and "expected_calibration_error" in metrics

    # the same folder again without --resume: refused, nothing overwritten
    before = (out / "training_history.csv").read_bytes()
    assert main(["train", "--cache-dir", str(cache), "--output-dir", str(out), "--config", str(tiny_yaml)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert (out / "training_history.csv").read_bytes() == before
    # --resume with another epoch count: refused (the schedule is laid out for 3)
    assert main(["train", "--cache-dir", str(cache), "--output-dir", str(out), "--config", str(tiny_yaml),
                 "--epochs", "5", "--resume"]) == 2
    assert "resume with --epochs 3" in capsys.readouterr().err
    # --resume with another batch size, feature settings or training set: refused, one line
    def refused(*args, cache_dir=cache):
        rc = main(["train", "--cache-dir", str(cache_dir), "--output-dir", str(out), "--config", str(tiny_yaml),
                   "--epochs", "3", "--resume", "--no-evaluate", *args])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1, err
        return err
    assert "train.batch_size is 4 but the run" in refused("--batch-size", "4")
    assert "train.focal_loss is False" in refused("--no-use-focal-loss")
    other_settings = make_cache(tmp_path / "other_settings", {"train": 48, "val": 16, "test": 16}, backbone="other")
    assert "cache fingerprint (feature settings)" in refused(cache_dir=other_settings)
    other_videos = make_cache(tmp_path / "other_videos", {"train": 48, "val": 16, "test": 16}, seed=1)
    assert "training set is 48 videos, sha256" in refused(cache_dir=other_videos)
    more_videos = make_cache(tmp_path / "more_videos", {"train": 80, "val": 16, "test": 16})
    assert "steps per epoch is 5 but" in refused(cache_dir=more_videos)
    # --resume of a finished run: nothing to train, exit 0
    assert main(["train", "--cache-dir", str(cache), "--output-dir", str(out), "--config", str(tiny_yaml),
                 "--epochs", "3", "--resume", "--no-evaluate"]) == 0
    assert "already finished" in capsys.readouterr().out


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["train", "--cache-dir", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["train", "--cache-dir", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "o")]) == 2
    assert "no feature cache" in capsys.readouterr().err
    assert main(["train", "--cache-dir", str(tmp_path), "--output-dir", str(tmp_path / "o"), "--epochs", "0"]) == 2


def test_class_weights_are_passed_to_fit_and_change_the_loss(tmp_path, monkeypatch):
    from trainer.train import train

    cache = make_cache(tmp_path / "c", {"train": 40, "val": 8, "test": 4}, violent_fraction=0.75)
    seen = []
    original = keras.Model.fit

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("class_weight"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", spy)
    losses = {}
    for on in (True, False):
        out = tmp_path / f"run_{on}"
        cfg = tiny_config(epochs=1, class_weights=on)
        cfg["model"]["lstm_layers"] = 1  # the weighting is what is under test: keep tracing short
        assert train(cfg, cache, out, evaluate=False) == 0
        with open(out / "training_history.csv", newline="") as fh:
            losses[on] = float(next(csv.DictReader(fh))["loss"])
    assert seen == [{0: 2.0, 1: pytest.approx(2 / 3)}, None]
    # same seed, same data, same initial weights: only the weighting differs
    assert losses[True] != pytest.approx(losses[False], rel=1e-3)


def test_mixed_precision_with_focal_loss_trains_with_loss_scaling():
    """mixed_float16 + the focal loss + global clipnorm: finite loss, Keras's LossScaleOptimizer."""
    from trainer import schedule
    from trainer.model import build_model

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(6, 8, {"lstm_units": 8, "lstm_layers": 1, "dropout": 0.1, "dense_units": [8, 8, 8]})
        model.compile(optimizer=keras.optimizers.Adam(schedule.warmup_cosine(2, 2, 1, 1e-3, 1e-7), global_clipnorm=1.0),
                      loss=keras.losses.CategoricalFocalCrossentropy(alpha=0.25, gamma=2.0, label_smoothing=0.1),
                      metrics=["accuracy"])
        rng = np.random.default_rng(0)
        x = rng.normal(size=(32, 6, 8)).astype(np.float16)
        y = rng.integers(0, 2, 32)
        hist = model.fit(data.make_dataset(x, y, 16, shuffle=True), epochs=2, verbose=0,
                         class_weight={0: 1.0, 1: 2.0})
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.output.dtype == "float32"
    assert all(np.isfinite(hist.history["loss"]))
    # the plateau scale is still found through the loss-scale wrapper
    assert schedule.find_scaled_schedule(model.optimizer) is not None


def test_dataset_reshuffles_every_epoch_and_keeps_float16():
    x = np.arange(50 * 2 * 3, dtype=np.float16).reshape(50, 2, 3)
    y = np.arange(50) % 2
    ds = data.make_dataset(x, y, batch_size=16, shuffle=True, seed=1)
    epochs = []
    for _ in range(2):
        firsts = []
        for xb, yb in ds:
            assert xb.dtype == "float16" and yb.shape[1] == 2
            firsts += [int(v) // 6 for v in np.asarray(xb)[:, 0, 0]]
        epochs.append(firsts)
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(50))  # each sample once per epoch
    assert epochs[0] != epochs[1]  # a new order every epoch
    assert data.steps_per_epoch(10778, 64) == 169


def test_runtime_says_what_is_really_in_effect():
    rt = runtime.setup(gpus_wanted=0, mixed_precision=True)
    assert not rt.mixed_precision and "no GPU" in rt.mixed_precision_reason
    assert keras.mixed_precision.global_policy().name == "float32"
    with pytest.raises(Exception, match="--gpus 2 asked for"):
        runtime.setup(gpus_wanted=2, mixed_precision=False)
    from trainer.model import build_model

    model = build_model(6, 8, {"lstm_units": 8, "lstm_layers": 1, "dropout": 0.1, "dense_units": [8]})
    gpu = runtime.Runtime(rt.strategy, ["/gpu:0"], True, "", False)
    jit, why = runtime.decide_jit(gpu, True, model)
    assert jit is False and "cuDNN" in why  # Keras would silently drop it for cuDNN LSTMs
    assert runtime.decide_jit(gpu, False, model) == (False, "off (not asked for)")


def test_steps_per_execution_divides_the_epoch():
    from trainer.train import execution_steps

    assert execution_steps(169, 16) == 13  # the seed's 10,778 / 64
    assert execution_steps(100, 16) == 10
    assert execution_steps(64, 16) == 16
    assert execution_steps(3, 16) == 3
    assert execution_steps(17, 16) == 1  # a prime step count: one step per call
    assert execution_steps(169, 1) == 1


def test_training_batches_are_full_and_static_so_no_replica_gets_an_empty_one():
    """33 clips at a global batch of 16: the last batch held 1 clip, so with 2 replicas one
    replica got none (NaN batch-norm statistics); a batch size the dataset hides (flat_map)
    lets TensorFlow split it however it comes. Every batch is now 16 rows, the last one
    completed with the epoch's first clips (as torch's DistributedSampler pads)."""
    n, batch = 33, 16
    x = np.arange(n, dtype=np.float16).reshape(n, 1, 1)
    y = np.arange(n) % 2
    ds = data.make_train_dataset(x, y, batch, seed=3, first_epoch=0, epochs=2)
    assert ds.element_spec[0].shape[0] == batch  # static: TF splits it 8 + 8 on two replicas
    rows = [np.asarray(xb)[:, 0, 0].astype(int).tolist() for xb, _ in ds]
    assert [len(r) for r in rows] == [batch] * 6  # ceil(33 / 16) = 3 steps per epoch, all full
    for epoch in (rows[:3], rows[3:]):
        seen = sum(epoch, [])
        assert sorted(set(seen)) == list(range(n))  # every clip, every epoch
        assert len(seen) - n == 15  # the 15 extra rows repeat clips of the same epoch
    assert sum(rows[:3], []) != sum(rows[3:], [])  # a new order every epoch


def test_validation_batches_split_evenly_and_the_metrics_stay_exact():
    """17 validation clips at batch 8 on 2 replicas: the last batch of 1 is padded to 2 with a
    zero-weight row without a label; the real rows weigh (17 + 1) / 17, which is what makes
    Keras's loss mean over rows (padding included) the mean over the 17 clips."""
    n = 17
    x = np.arange(n, dtype=np.float16).reshape(n, 1, 1)
    y = np.arange(n) % 2
    ds = data.make_eval_dataset(x, y, 8, replicas=2)
    sizes, total, count, ids = [], 0.0, 0, []
    for xb, yb, wb in ds:
        xb, yb, wb = np.asarray(xb)[:, 0, 0], np.asarray(yb), np.asarray(wb)
        assert (yb[wb == 0] == 0).all() and (yb[wb > 0].sum(axis=1) == 1).all()  # padding has no label
        sizes.append(len(xb))
        loss = xb.astype(np.float64) ** 2  # any per-clip value
        total += float((loss * wb).sum())  # what Keras's loss tracker sums: weighted values ...
        count += len(xb)  # ... over the rows of the batch
        ids += xb[wb > 0].astype(int).tolist()
    assert sizes == [8, 8, 2] and all(s % 2 == 0 for s in sizes)
    assert sorted(ids) == list(range(n))  # no clip lost, none twice
    assert total / count == pytest.approx((np.arange(n, dtype=np.float64) ** 2).mean(), rel=1e-6)
    # one device: nothing to pad, no weights at all (the dataset is what it was)
    assert len(data.make_eval_dataset(x, y, 8, replicas=1).element_spec) == 2


def test_accuracy_leaves_out_the_rows_without_a_label():
    from trainer.metrics import LabelledAccuracy

    y_true = np.array([[0, 1], [1, 0], [0, 1], [0, 0]], np.float32)  # the last row pads a batch
    y_pred = np.array([[0.2, 0.8], [0.3, 0.7], [0.9, 0.1], [0.6, 0.4]], np.float32)
    ours, keras_own = LabelledAccuracy(), keras.metrics.CategoricalAccuracy()
    ours.update_state(y_true, y_pred)
    keras_own.update_state(y_true[:3], y_pred[:3])
    assert float(ours.result()) == float(keras_own.result()) == pytest.approx(1 / 3)
    assert ours.name == "accuracy"  # history columns stay accuracy / val_accuracy
