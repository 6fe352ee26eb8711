"""What train and evaluate accept (issue 22, items 2, 3 and 8): the cache's feature settings against the
config's, a model's recorded settings against the cache's, RWF-2000's train/ + val/ layout ending with
metrics.json and plots, and how many checkpoints a run keeps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.trainer import videos as tv
from tests.trainer.tiny_cache import make_cache
from trainer import config
from trainer.cache import CLASSES, FeatureCache, atomic_write_json
from trainer.cli import main

TINY = {"model": {"lstm_units": 8, "lstm_layers": 1, "dense_units": [8, 8, 8], "dropout": 0.1},
        "train": {"batch_size": 8, "warmup_epochs": 1, "learning_rate": 3.0e-3, "mixed_precision": False,
                  "xla": False},
        "callbacks": {"tensorboard": False}}


def write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def with_settings(cache: Path, **settings) -> Path:
    """Rewrite a test cache's meta.json as if it had been extracted with other feature settings."""
    fc = FeatureCache(cache)
    meta = {k: v for k, v in fc.read_meta().items() if k != "format"}
    fc.write_meta({**meta, **settings})
    return cache


# --- item 2: the cache's feature settings against the config's ------------------------------

def test_train_refuses_a_cache_extracted_with_other_settings_naming_each(tmp_path, capsys):
    cache = with_settings(make_cache(tmp_path / "cache", {"train": 8, "val": 4}),
                          backbone="efficientnetv2b0", weights="none", weights_id="random-init-seed-1234",
                          image_size=96)
    cfg = write(tmp_path / "c.yaml", {**TINY, "data": {"backbone": "efficientnetv2b0", "image_size": 224,
                                                       "frames": 6, "weights": "imagenet"}})
    rc = main(["train", "--cache-dir", str(cache), "--output-dir", str(tmp_path / "run"), "--config", str(cfg)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert "data.image_size: config 224, cache 96" in err and "data.weights: config imagenet" in err
    assert "data.frames" not in err and "--use-cache-settings" in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_use_cache_settings_trains_and_says_so_loudly(tmp_path, capsys):
    cache = with_settings(make_cache(tmp_path / "cache", {"train": 8, "val": 4}), image_size=12)
    cfg = write(tmp_path / "c.yaml", {**TINY, "data": {"backbone": "thumbnail", "image_size": 16}})
    out = tmp_path / "run"
    rc = main(["train", "--cache-dir", str(cache), "--output-dir", str(out), "--config", str(cfg), "--epochs", "1",
               "--use-cache-settings", "--no-evaluate"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "WARNING: --use-cache-settings" in err and "data.image_size: config 16, cache 12" in err
    assert "WARNING: --use-cache-settings" in (out / "train.log").read_text()
    assert json.loads((out / "model_info.json").read_text())["cache_meta"]["image_size"] == 12


def test_a_config_that_states_no_feature_settings_trains_on_the_cache(tmp_path, capsys):
    cache = with_settings(make_cache(tmp_path / "cache", {"train": 8, "val": 4}), image_size=12)
    cfg = write(tmp_path / "c.yaml", TINY)
    assert config.explicit_data(cfg) == {}
    rc = main(["train", "--cache-dir", str(cache), "--output-dir", str(tmp_path / "run"), "--config", str(cfg),
               "--dry-run"])
    assert rc == 0 and "nothing trained" in capsys.readouterr().out


def test_evaluate_refuses_a_model_whose_recorded_settings_differ_from_the_caches(tmp_path, capsys):
    from trainer.model import build_model

    trained_on = make_cache(tmp_path / "a", {"train": 4, "val": 4, "test": 4})
    other = with_settings(make_cache(tmp_path / "b", {"train": 4, "val": 4, "test": 4}), image_size=32,
                          fingerprint="0123456789abcdef")  # the same 6 x 8 features, other pixels behind them
    run = tmp_path / "run"
    run.mkdir()
    build_model(6, 8, TINY["model"]).save(run / "best_model.keras")
    meta = FeatureCache(trained_on).read_meta()
    atomic_write_json(run / "model_info.json", {"cache_meta": meta, "backbone": meta, "classes": list(CLASSES)})
    rc = main(["evaluate", "--cache-dir", str(other), "--model", str(run / "best_model.keras")])
    err = capsys.readouterr().err
    assert rc == 2 and "image_size: model 16, cache 32" in err and err.count("\n") == 1, err
    assert not (run / "metrics.json").exists()
    assert main(["evaluate", "--cache-dir", str(trained_on), "--model", str(run / "best_model.keras")]) == 0
    assert json.loads((run / "metrics.json").read_text())["split"] == "test"


# --- items 3 and 8: RWF-2000's layout, plots, checkpoints kept ----------------------------------

def test_keep_last_checkpoints_defaults_to_three():
    assert config.DEFAULTS["callbacks"]["keep_last_checkpoints"] == 3


@pytest.mark.slow
def test_rwf2000_layout_ends_with_val_metrics_plots_and_three_checkpoints(tmp_path, capsys):
    # RWF-2000 ships train/{Fight,NonFight} and val/{Fight,NonFight}, no test split
    src = tmp_path / "synth"
    assert main(["synth", "--out", str(src), "--videos", "16", "--frames", "24", "--size", "32", "--quiet"]) == 0
    ds = tmp_path / "RWF-2000"
    for cls, folder in (("violent", "Fight"), ("nonviolent", "NonFight")):
        for i, video in enumerate(sorted((src / cls).iterdir())):
            dest = ds / ("val" if i % 4 == 0 else "train") / folder / video.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(video), dest)
    cfg = write(tmp_path / "c.yaml", {**TINY, "data": {"backbone": "thumbnail", "weights": "none", "image_size": 8,
                                                       "frames": 6, "workers": 1}})
    cache = tmp_path / "cache"
    assert main(["extract", "--dataset-path", str(ds), "--cache-dir", str(cache), "--config", str(cfg),
                 "--quiet"]) == 0
    assert not FeatureCache(cache).ok_records("test") and FeatureCache(cache).ok_records("val")
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", "--cache-dir", str(cache), "--output-dir", str(out), "--config", str(cfg),
                 "--epochs", "5"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["samples"] == len(FeatureCache(cache).ok_records("val"))
    assert "evaluating on the validation split" in printed and "val accuracy:" in printed
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == [
        "accuracy.png", "confusion_matrix.png", "learning_rate.png", "loss.png"]
    # keep_last_checkpoints 3 by default: the newest three epochs, and best_model.keras besides
    assert sorted(p.name for p in out.glob("checkpoint_epoch_*.keras")) == [
        "checkpoint_epoch_003.keras", "checkpoint_epoch_004.keras", "checkpoint_epoch_005.keras"]
    assert (out / "best_model.keras").is_file()

    # --no-evaluate: no metrics, but the loss and accuracy curves all the same
    out2 = tmp_path / "run2"
    assert main(["train", "--cache-dir", str(cache), "--output-dir", str(out2), "--config", str(cfg),
                 "--epochs", "1", "--no-evaluate"]) == 0
    assert not (out2 / "metrics.json").exists()
    assert {"loss.png", "accuracy.png"} <= {p.name for p in (out2 / "plots").glob("*.png")}
    for png in (out2 / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("cache_precision, refused", [
    ("float32", False),  # what auto computes on a CPU (the shipped configs/train.yaml states auto)
    ("float16", False),  # what auto computes on a GPU
    (None, False),       # a cache from before the precision was recorded
    ("bfloat16", True),  # never what auto computes: only data.precision bfloat16 makes it
])
def test_precision_auto_in_the_config_accepts_what_auto_computes_anywhere(cache_precision, refused):
    """The shipped configs/train.yaml says `precision: auto`, and a cache records what was really
    computed (float32 on a CPU, float16 on a GPU): the same config must train on its own extraction."""
    from trainer.settings_check import config_vs_cache

    meta = {"backbone": "vgg19", "image_size": 224, "frames": 20, "weights": "none"}
    if cache_precision:
        meta["precision"] = cache_precision
    diffs = config_vs_cache({"backbone": "vgg19", "precision": "auto"}, meta)
    assert bool(diffs) is refused, diffs
    if refused:
        assert diffs == ["data.precision: config auto, cache bfloat16"]
    bf = config_vs_cache({"backbone": "vgg19", "precision": "bfloat16"}, meta)
    assert bool(bf) is (cache_precision != "bfloat16"), bf
