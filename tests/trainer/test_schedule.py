"""Warmup + cosine from Keras, and ReduceLROnPlateau acting on top of it."""

import keras
import numpy as np
import pytest

from trainer import schedule


def lr_at(s, step):
    return float(keras.ops.convert_to_numpy(s(step)))


def test_warmup_then_cosine_to_min_at_the_last_step():
    s = schedule.warmup_cosine(steps_per_epoch=10, epochs=100, warmup_epochs=5, peak_lr=1e-3, min_lr=1e-7)
    assert lr_at(s, 0) == 0.0
    assert lr_at(s, 25) == pytest.approx(0.5e-3)  # half-way through the linear warmup
    assert lr_at(s, 50) == pytest.approx(1e-3)  # peak at the end of epoch 5
    assert lr_at(s, 50 + 475) == pytest.approx((1e-3 + 1e-7) / 2, rel=1e-4)  # cosine half-way
    assert lr_at(s, 1000) == pytest.approx(1e-7, rel=1e-3)  # the last step of epoch 100
    assert lr_at(s, 5000) == pytest.approx(1e-7, rel=1e-3)  # and it stays there
    curve = [lr_at(s, k) for k in range(50, 1001, 50)]
    assert all(a > b for a, b in zip(curve, curve[1:]))


def _model_with(s):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=s, global_clipnorm=1.0), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def test_keras_own_plateau_callback_cannot_touch_a_schedule():
    """The seed's combination as written: why PlateauScaleCallback exists."""
    model = _model_with(keras.optimizers.schedules.CosineDecay(1e-3, 100))
    plain = keras.callbacks.ReduceLROnPlateau(patience=1)
    plain.set_model(model)
    plain.on_train_begin()
    plain.on_epoch_end(0, {"val_loss": 1.0})
    with pytest.raises(TypeError, match="not settable"):
        plain.on_epoch_end(1, {"val_loss": 1.0})


def test_plateau_halves_the_effective_rate_and_the_shape_continues():
    s = schedule.warmup_cosine(steps_per_epoch=10, epochs=20, warmup_epochs=2, peak_lr=1e-3, min_lr=1e-7)
    model = _model_with(s)
    cb = schedule.PlateauScaleCallback(peak_lr=1e-3, monitor="val_loss", factor=0.5, patience=2, min_lr=1e-7)
    cb.set_model(model)
    cb.on_train_begin()
    reference = schedule.warmup_cosine(10, 20, 2, 1e-3, 1e-7)
    logs = []
    for epoch, val_loss in enumerate([1.0, 0.9, 0.9, 0.9]):  # no improvement in epochs 3 and 4
        model.optimizer.iterations.assign((epoch + 1) * 10)
        log = {"val_loss": val_loss}
        cb.on_epoch_end(epoch, log)
        logs.append(log)
    assert float(s.scale.numpy()) == 0.5 and cb.reductions == 1
    # the learning_rate logged is the rate the epoch's last step used (step 19 of epoch 2),
    # not Keras's optimizer.learning_rate (step 20's, after the cut)
    assert logs[1]["learning_rate"] == pytest.approx(lr_at(reference, 19))
    assert logs[3]["learning_rate"] == pytest.approx(lr_at(reference, 39))  # the cut came after epoch 4
    # from now on: exactly half the warmup/cosine curve, at every later step
    for step in (40, 41, 100, 150, 199):
        model.optimizer.iterations.assign(step)
        effective = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        assert effective == pytest.approx(max(0.5 * lr_at(reference, step), 1e-7), rel=1e-5)
    assert lr_at(s, 100) > lr_at(s, 150) > lr_at(s, 199)  # still decaying


def test_after_plateau_cuts_the_tail_stays_at_min_lr():
    """Halved twice, the end of the cosine would sit at min_lr / 4 without the floor."""
    s = schedule.warmup_cosine(10, 20, 2, 1e-3, 1e-7)
    s.scale.assign(0.25)
    tail = [lr_at(s, k) for k in range(20, 400)]
    assert min(tail) == pytest.approx(1e-7, rel=1e-5)
    assert lr_at(s, 199) == pytest.approx(1e-7, rel=1e-5)  # 0.25 * cosine would be ~4e-8
    assert lr_at(s, 100) == pytest.approx(0.25 * lr_at(s.base, 100), rel=1e-5)  # above the floor: scaled
    assert lr_at(s, 0) == 0.0  # the warmup ramp still starts at zero


def test_plateau_scale_reaches_its_floor_and_stops():
    s = schedule.warmup_cosine(10, 20, 2, 1e-3, 1e-7)
    model = _model_with(s)
    cb = schedule.PlateauScaleCallback(peak_lr=1e-3, factor=0.1, patience=1, min_lr=1e-5)
    cb.set_model(model)
    cb.on_train_begin()
    for epoch in range(8):
        cb.on_epoch_end(epoch, {"val_loss": 1.0})
    assert float(s.scale.numpy()) == pytest.approx(1e-2)  # min_lr / peak_lr
    assert cb.reductions == 2


def test_scale_is_saved_with_the_model(tmp_path):
    s = schedule.warmup_cosine(10, 20, 2, 1e-3, 1e-7)
    model = _model_with(s)
    s.scale.assign(0.25)
    model.optimizer.iterations.assign(57)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    again = schedule.find_scaled_schedule(loaded.optimizer)
    assert float(again.scale.numpy()) == 0.25
    assert int(loaded.optimizer.iterations.numpy()) == 57
    np.testing.assert_allclose(float(loaded.optimizer.learning_rate), 0.25 * lr_at(s.base, 57), rtol=1e-6)
    assert again.floor == 1e-7


def test_logged_rate_is_the_one_the_epoch_used_in_csv_and_tensorboard(tmp_path):
    """Epoch 1 of a warmup from 0: Keras would log the rate of step 10 (the peak of a
    one-epoch warmup); the epoch's steps 0..9 used at most the rate of step 9."""
    from trainer.callbacks import EpochRateTensorBoard

    s = schedule.warmup_cosine(steps_per_epoch=10, epochs=20, warmup_epochs=1, peak_lr=1e-3, min_lr=1e-7)
    model = _model_with(s)
    cb = schedule.PlateauScaleCallback(peak_lr=1e-3, patience=5)
    cb.set_model(model)
    cb.on_train_begin()
    model.optimizer.iterations.assign(10)
    logs = {"val_loss": 1.0}
    cb.on_epoch_end(0, logs)
    assert logs["learning_rate"] == pytest.approx(0.9e-3)  # step 9 of a 10-step ramp to 1e-3
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(1e-3)
    tb = EpochRateTensorBoard(log_dir=str(tmp_path))
    tb.set_model(model)
    assert tb._collect_learning_rate(dict(logs))["learning_rate"] == pytest.approx(0.9e-3)
