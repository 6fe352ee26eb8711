"""Backbones beyond VGG19 (trainer/backbone.py): shapes, preprocessing, cache keys, train + predict.

All networks use weights=None (random init from a fixed seed): no download, same compute.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.trainer import videos as tv
from trainer import config as config_mod
from trainer.backbone import load_backbone
from trainer.backbone_settings import BACKBONES, SPECS, feature_settings
from trainer.cache import FeatureCache
from trainer.cli import main
from trainer.errors import UsageError

REPO = Path(__file__).resolve().parents[2]
KERAS_BACKBONES = [b for b in BACKBONES if SPECS[b].app]
# What the module docstring and the README promise: (input side, features per frame).
DOCUMENTED = {"vgg19": (224, 4096), "efficientnetv2b0": (224, 1280), "efficientnetv2s": (384, 1280),
              "convnext_tiny": (224, 768), "thumbnail": (16, 256)}
SLOW = {"vgg19", "efficientnetv2s"}  # 143 M parameters / a 384-px input: seconds per build on 2 cores


def _param(name):
    return pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name


def settings(name: str, **data) -> dict:
    return feature_settings({"backbone": name, "weights": "none", "image_size": 0, "frames": 2, **data})


_built: dict = {}


def built(name: str):
    """One instance per backbone for the whole module (building them is the slow part)."""
    if name not in _built:
        _built[name] = load_backbone(settings(name), batch_size=2)
    return _built[name]


def test_every_backbone_is_documented_and_listed_in_the_config():
    assert set(BACKBONES) == set(DOCUMENTED)
    for name, (size, dim) in DOCUMENTED.items():
        s = settings(name)
        assert (s["image_size"], s["feature_dim"]) == (size, dim), name
    with pytest.raises(UsageError, match="must be one of vgg19, efficientnetv2b0"):
        config_mod.load(overrides={"data": {"backbone": "efficientnet"}})


@pytest.mark.parametrize("name", [_param(b) for b in BACKBONES])
def test_builds_with_random_weights_and_gives_the_documented_feature_shape(name):
    size, dim = DOCUMENTED[name]
    backbone = built(name) if name in KERAS_BACKBONES else load_backbone(settings(name))
    assert (backbone.image_size, backbone.feature_dim) == (size, dim)
    frames = np.random.default_rng(0).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    feats = backbone.features(frames)  # 3 frames with batch_size 2: a full pass and one of 1 frame
    assert feats.shape == (3, dim) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and feats.std() > 0
    # frames are independent: a frame gets the same features in any pass
    np.testing.assert_allclose(feats[1:], backbone.features(frames[1:]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(feats, backbone.features(backbone.to_device(frames)), rtol=1e-4, atol=1e-6)
    # features survive the cache's float16 (EfficientNet's random-init features are small)
    half = feats.astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(half, feats, rtol=2e-3, atol=1e-6)


# ImageNet statistics as the papers and torchvision state them, written out independently
# of Keras's source: mean and std of RGB in [0, 1].
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
RGB = np.array([200, 100, 30])  # distinct channels, so a channel swap cannot pass


def expected_preprocessed(name: str) -> np.ndarray:
    x = RGB.astype(np.float64)
    if name == "vgg19":  # "caffe": BGR, minus the BGR ImageNet mean in 0-255
        return x[::-1] - np.array([103.939, 116.779, 123.68])
    if name == "efficientnetv2b0":  # B variants: scale to [0, 1], then standardise
        return (x / 255.0 - MEAN) / STD
    if name == "efficientnetv2s":  # the larger variants: scale to [-1, 1]
        return x / 128.0 - 1.0
    if name == "convnext_tiny":  # standardise in 0-255 units
        return (x - 255 * MEAN) / (255 * STD)
    raise AssertionError(name)


@pytest.mark.parametrize("name", [_param(b) for b in KERAS_BACKBONES])
def test_preprocessing_in_the_graph_matches_a_hand_computation_on_a_constant_image(name):
    backbone = built(name)
    size = backbone.image_size
    frames = np.broadcast_to(RGB.astype(np.uint8), (1, size, size, 3)).copy()
    got = backbone.preprocessed(frames)
    assert got.shape == (1, size, size, 3)
    np.testing.assert_allclose(got[0, 0, 0], expected_preprocessed(name), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got, np.broadcast_to(got[0, 0, 0], got.shape), atol=1e-5)  # constant stays constant


def test_image_size_rules():
    assert settings("efficientnetv2s", image_size=224)["image_size"] == 224  # convolutional: any size
    assert settings("convnext_tiny", image_size=64)["feature_dim"] == 768  # pooled: size-independent
    with pytest.raises(UsageError, match="image_size must be 224 for the vgg19"):
        settings("vgg19", image_size=256)
    with pytest.raises(UsageError, match="between 32 and 1024 for efficientnetv2b0"):
        settings("efficientnetv2b0", image_size=16)


def test_each_backbone_has_its_own_fingerprint():
    fps = {b: settings(b)["fingerprint"] for b in BACKBONES}
    assert len(set(fps.values())) == len(fps)


def test_efficient_yaml_is_the_seed_recipe_on_efficientnetv2b0():
    cfg = config_mod.load(REPO / "configs/efficient.yaml")
    assert cfg["data"]["backbone"] == "efficientnetv2b0"
    cfg["data"]["backbone"] = config_mod.DEFAULTS["data"]["backbone"]
    assert cfg == config_mod.DEFAULTS  # nothing else of the recipe changes
    s = feature_settings(config_mod.load(REPO / "configs/efficient.yaml")["data"])
    assert (s["image_size"], s["feature_dim"], s["weights"]) == (224, 1280, "imagenet")


# --- end to end on real encoded videos ------------------------------------------------------

def write_config(path: Path, backbone: str, **extra) -> Path:
    data = {"backbone": backbone, "weights": "none", "image_size": 32, "frames": 4, "workers": 1,
            "extract_batch_size": 8}
    cfg = {"data": data,
           "model": {"lstm_units": 8, "lstm_layers": 1, "dense_units": [8, 8, 8], "dropout": 0.1},
           "train": {"epochs": 2, "batch_size": 4, "warmup_epochs": 1, "mixed_precision": False, "xla": False},
           "callbacks": {"tensorboard": False}, **extra}
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("bb")
    assert main(["synth", "--out", str(root / "videos"), "--videos", "12", "--frames", "16", "--size", "48",
                 "--quiet"]) == 0
    return root


def test_a_cache_of_one_backbone_is_not_reused_by_another(videos, tmp_path, capsys):
    cache_dir = tmp_path / "cache"
    cache = FeatureCache(cache_dir)

    def extract(backbone: str) -> str:
        cfg = write_config(tmp_path / f"{backbone}.yaml", backbone)
        rc = main(["extract", "--dataset-path", str(videos / "videos"), "--cache-dir", str(cache_dir),
                   "--config", str(cfg), "--quiet"])
        out, err = capsys.readouterr()
        assert rc == 0, err
        return out

    assert "12 extracted" in extract("thumbnail")
    thumb = {r["path"]: r["key"] for r in cache.ok_records()}

    out = extract("convnext_tiny")
    assert "12 extracted" in out and "reused" not in out
    assert "settings changed (backbone thumbnail -> convnext_tiny" in out
    recs = cache.ok_records()
    assert len(recs) == 12 and not {r["key"] for r in recs} & set(thumb.values())
    assert all(cache.load_features(r["key"]).shape == (4, 768) for r in recs)

    assert main(["info", "--cache-dir", str(cache_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backbone"] == "convnext_tiny" and info["feature_shape"] == [4, 768]
    assert main(["info", "--cache-dir", str(cache_dir)]) == 0
    assert "convnext_tiny features" in capsys.readouterr().out

    out = extract("thumbnail")  # back: its own features again, by content, no decoding
    assert "0 extracted" in out and "12 reused" in out
    assert {r["path"]: r["key"] for r in cache.ok_records()} == thumb


@pytest.mark.slow
def test_train_and_predict_end_to_end_with_efficientnetv2b0(videos, tmp_path, capsys):
    cfg = write_config(tmp_path / "eff.yaml", "efficientnetv2b0")
    cache_dir, run = tmp_path / "cache", tmp_path / "run"
    assert main(["extract", "--dataset-path", str(videos / "videos"), "--cache-dir", str(cache_dir),
                 "--config", str(cfg), "--quiet"]) == 0
    assert main(["train", "--cache-dir", str(cache_dir), "--output-dir", str(run), "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "backbone efficientnetv2b0" in out and "4 frames x 1280 features" in out
    info = json.loads((run / "model_info.json").read_text())
    assert info["backbone"]["backbone"] == "efficientnetv2b0" and info["backbone"]["feature_dim"] == 1280

    cache = FeatureCache(cache_dir)
    rec = cache.ok_records("test")[0]
    video = str(videos / "videos" / rec["path"])
    assert main(["predict", video, "--model", str(run / "best_model.keras")]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["path"] == video and 0.0 <= line["violent_probability"] <= 1.0

    # predict built the recorded backbone: its probability is the model's on the cached features
    from trainer.evaluate import load_model

    model = load_model(run / "best_model.keras")
    expected = float(np.asarray(model(cache.load_features(rec["key"])[None], training=False))[0, 1])
    assert line["violent_probability"] == pytest.approx(expected, abs=2e-3)


def test_bfloat16_is_its_own_cache_key_and_close_to_float32():
    auto = settings("convnext_tiny")
    assert auto["precision"] == "float32"  # auto on a CPU (tests/trainer/test_devices.py: on a GPU)
    assert settings("convnext_tiny", precision="auto")["fingerprint"] == auto["fingerprint"]
    bf16 = settings("convnext_tiny", precision="bfloat16", image_size=32)
    assert bf16["fingerprint"] != settings("convnext_tiny", image_size=32)["fingerprint"]
    with pytest.raises(UsageError, match="data.precision must be one of auto, bfloat16"):
        settings("vgg19", precision="fp8")
    frames = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    got = load_backbone(bf16, batch_size=2).features(frames)
    want = load_backbone(settings("convnext_tiny", image_size=32), batch_size=2).features(frames)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99  # bfloat16 keeps ~3 significant digits
