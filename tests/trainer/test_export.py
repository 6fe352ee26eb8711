"""`export`: a TensorFlow SavedModel that gives the Keras model's probabilities, with model_info.json."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.trainer.test_timeline import untrained_model
from trainer.backbone import ThumbnailBackbone
from trainer.cli import main
from trainer.frames import sample_frames
from trainer.synth import long_video


@pytest.fixture(scope="module")
def model_and_features(tmp_path_factory):
    """A model as train saves it, and real features: frames of an encoded video through its backbone."""
    root = tmp_path_factory.mktemp("export")
    model_path = untrained_model(root / "run", frames=6, size=8)
    features = []
    for seed in range(3):
        video = root / f"v{seed}.mp4"
        long_video(video, 2, [(0.5, 1.5)], seed=seed, size=32)
        frames = sample_frames(video, 6, 8).frames
        features.append(ThumbnailBackbone(8).features(frames).astype(np.float16))
    return model_path, np.stack(features)


def test_the_saved_model_gives_the_keras_probabilities(model_and_features, tmp_path, capsys):
    model_path, x = model_and_features
    out = tmp_path / "exported"
    assert main(["export", "--model", str(model_path), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert (out / "model_info.json").read_bytes() == (model_path.parent / "model_info.json").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask  # an ordinary folder, not mkdtemp's private one

    served = tf.saved_model.load(str(out))  # TensorFlow alone: no Keras, no custom layer needed
    got = served.serve(tf.constant(x)).numpy()
    expected = np.asarray(keras.models.load_model(model_path)(x, training=False))
    assert got.shape == (3, 2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)  # class probabilities
    info = json.loads((out / "model_info.json").read_text())
    assert list(x.shape[1:]) == info["cache_meta"]["feature_shape"]


def test_export_refuses_to_overwrite_and_reports_bad_input(model_and_features, tmp_path, capsys):
    model_path, _ = model_and_features
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    assert main(["export", "--model", str(model_path), "--out", str(taken)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    assert main(["export", "--model", str(tmp_path / "nope.keras"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    keras.models.load_model(model_path).save(lonely / "m.keras")
    assert main(["export", "--model", str(lonely / "m.keras"), "--out", str(tmp_path / "o")]) == 2
    assert "model_info.json is missing" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
