"""The loss: confidence is not capped, alpha weighs classes, and trained probabilities mean something."""

import json

import keras
import numpy as np
import pytest

from trainer.losses import TrueClassFocalCrossentropy

P = np.linspace(0.51, 0.999, 200)


def loss_curve(loss, label: int) -> np.ndarray:
    """Loss of one sample of class `label` as the model's p(true class) moves over P."""
    y = np.eye(2, dtype=np.float32)[[label] * len(P)]
    p_true = P.astype(np.float32)
    y_pred = np.where(y == 1, p_true[:, None], 1 - p_true[:, None]).astype(np.float32)
    return np.asarray(loss(y, y_pred))


def test_the_loss_falls_all_the_way_to_full_confidence():
    ours = loss_curve(TrueClassFocalCrossentropy(alpha=0.5, gamma=2.0, label_smoothing=0.1, reduction="none"), 1)
    assert np.all(np.diff(ours) < 0), "the loss must keep falling as p(true) rises"
    # Keras's own focal loss with the same smoothing: the minimum sits near 0.75 (why ours exists)
    theirs = loss_curve(keras.losses.CategoricalFocalCrossentropy(alpha=0.25, gamma=2.0, label_smoothing=0.1,
                                                                  reduction="none"), 1)
    assert P[np.argmin(theirs)] == pytest.approx(0.75, abs=0.02)


def test_alpha_is_a_per_class_weight_and_the_formula_is_the_papers():
    y = np.array([[0, 1], [1, 0]], np.float32)  # a violent and a non-violent sample
    p = np.array([[0.2, 0.8], [0.8, 0.2]], np.float32)  # both at p_t = 0.8
    for alpha in (0.5, 0.75):
        got = np.asarray(TrueClassFocalCrossentropy(alpha=alpha, gamma=2.0, label_smoothing=0.1, reduction="none")(y, p))
        ce = -(0.95 * np.log(0.8) + 0.05 * np.log(0.2))  # smoothed targets 0.95 / 0.05
        expected = np.array([2 * alpha, 2 * (1 - alpha)]) * (1 - 0.8) ** 2 * ce
        np.testing.assert_allclose(got, expected, rtol=1e-5)
    # gamma 0, no smoothing, alpha 0.5: exactly Keras's plain cross-entropy
    plain = TrueClassFocalCrossentropy(alpha=0.5, gamma=0.0, label_smoothing=0.0, reduction="none")(y, p)
    np.testing.assert_allclose(plain, keras.losses.CategoricalCrossentropy(reduction="none")(y, p), rtol=1e-5)
    with pytest.raises(ValueError):
        TrueClassFocalCrossentropy(alpha=1.5)


def test_the_loss_round_trips_through_a_keras_file(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", TrueClassFocalCrossentropy(alpha=0.7, gamma=1.5, label_smoothing=0.05))
    model.save(tmp_path / "m.keras")
    loss = keras.models.load_model(tmp_path / "m.keras").loss
    assert isinstance(loss, TrueClassFocalCrossentropy)
    assert (loss.alpha, loss.gamma, loss.label_smoothing) == (0.7, 1.5, 0.05)


def _median_p_true_after_training(loss) -> float:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    x = rng.normal(size=(2000, 2)).astype(np.float32) * 0.5 + np.where(y[:, None] == 1, 2.0, -2.0)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.Adam(0.01), loss)
    model.fit(x[:1500], np.eye(2)[y[:1500]], batch_size=64, epochs=20, verbose=0)
    p = model.predict(x[1500:], verbose=0)
    p_true = p[np.arange(500), y[1500:]]
    correct = p_true > 0.5
    assert correct.mean() > 0.99  # separable
    return float(np.median(p_true[correct]))


def test_separable_data_gives_confident_probabilities():
    ours = _median_p_true_after_training(TrueClassFocalCrossentropy(alpha=0.5, gamma=2.0, label_smoothing=0.1))
    assert ours >= 0.9
    theirs = _median_p_true_after_training(
        keras.losses.CategoricalFocalCrossentropy(alpha=0.25, gamma=2.0, label_smoothing=0.1))
    assert theirs < 0.8  # the cap this loss replaces


@pytest.mark.slow
def test_train_on_separable_features_is_confident_and_calibrated(tmp_path):
    """The real training path (3 x BiLSTM, focal loss, smoothing, class weights) on separable cached features."""
    from tests.trainer.tiny_cache import make_cache, tiny_config
    from trainer.train import train

    cache = make_cache(tmp_path / "cache", {"train": 512, "val": 64, "test": 128})
    cfg = tiny_config(epochs=25, batch_size=32)
    cfg["model"]["lstm_layers"] = 1
    assert train(cfg, cache, tmp_path / "run") == 0
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["accuracy"] >= 0.95
    assert m["median_true_class_probability_correct"] >= 0.9
    assert m["expected_calibration_error"] <= 0.10
