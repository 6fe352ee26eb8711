"""The config schema: train.yaml mirrors DEFAULTS; bad keys and types are one-line usage errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trainer import config
from trainer.cli import main
from trainer.errors import UsageError

REPO = Path(__file__).resolve().parents[2]


def test_train_yaml_equals_defaults():
    assert yaml.safe_load((REPO / "configs/train.yaml").read_text()) == config.DEFAULTS
    assert config.load(REPO / "configs/train.yaml") == config.DEFAULTS


def test_seed_values_are_the_defaults():
    d = config.DEFAULTS
    assert (d["data"]["frames"], d["data"]["backbone"], d["data"]["image_size"]) == (20, "vgg19", 0)
    from trainer.backbone_settings import feature_settings

    assert feature_settings(d["data"])["image_size"] == 224  # 0 = the backbone's own: VGG19's 224
    assert (d["train"]["batch_size"], d["train"]["epochs"], d["train"]["learning_rate"]) == (64, 100, 1e-3)
    # focal_alpha: the seed's 0.25 was a constant x0.25 in Keras's categorical focal loss
    # (no class effect); 0.5 is the same "no class re-weighting" in trainer/losses.py's
    # per-class meaning, without shrinking the loss 4x
    assert (d["train"]["focal_alpha"], d["train"]["focal_gamma"], d["train"]["label_smoothing"]) == (0.5, 2.0, 0.1)
    assert d["callbacks"]["early_stopping"]["patience"] == 15 and d["callbacks"]["reduce_lr"]["patience"] == 7


def test_demo_yaml_loads_and_differs_only_where_it_says():
    demo = config.load(REPO / "configs/demo.yaml")
    assert demo["data"]["backbone"] == "thumbnail" and demo["data"]["frames"] == config.DEFAULTS["data"]["frames"]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,needle", [
    ("data:\n  frame: 16\n", "unknown key 'data.frame' (did you mean 'data.frames'?)"),
    ("trian:\n  epochs: 3\n", "unknown key 'trian'"),
    ("data:\n  frames: twenty\n", "'data.frames' must be int, got str"),
    ("train:\n  mixed_precision: 1\n", "'train.mixed_precision' must be bool"),
    ("data:\n  split: 0.7\n", "'data.split' must be a mapping"),
    ("train:\n  epochs: 2.5\n", "'train.epochs' must be int, got float"),
    ("data: [1, 2\n", "not valid YAML"),
    ("train:\n  focal_alpha: 1.5\n", "'train.focal_alpha' must be between 0 and 1"),
    ("callbacks:\n  early_stopping: {restore_best_weights: true}\n", "restore weights that nothing uses"),
    ("train:\n  gpus: two\n", "'train.gpus' must be auto or a number of GPUs (0 = every visible GPU), got 'two'"),
    ("train:\n  gpus: -1\n", "'train.gpus' must be auto or a number of GPUs"),
])
def test_bad_config_is_one_line_usage_error(tmp_path, text, needle):
    with pytest.raises(UsageError) as exc:
        config.load(write(tmp_path, text))
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_gpus_is_auto_by_default_or_a_count(tmp_path):
    assert config.DEFAULTS["train"]["gpus"] == "auto"
    assert config.load(write(tmp_path, "train:\n  gpus: 2\n"))["train"]["gpus"] == 2
    assert config.load(None, {"train": {"gpus": 0}})["train"]["gpus"] == 0  # --gpus 0: every visible GPU


def test_int_accepted_for_float_and_overrides_apply_last(tmp_path):
    cfg = config.load(write(tmp_path, "train:\n  learning_rate: 1\n  epochs: 7\n"), {"train": {"epochs": 3}})
    assert cfg["train"]["learning_rate"] == 1.0 and isinstance(cfg["train"]["learning_rate"], float)
    assert cfg["train"]["epochs"] == 3


def test_cli_exit_code_2_with_one_line_on_stderr(tmp_path, capsys):
    bad = write(tmp_path, "data:\n  frame: 16\n")
    (tmp_path / "ds").mkdir()
    rc = main(["extract", "--dataset-path", str(tmp_path / "ds"), "--cache-dir", str(tmp_path / "c"),
               "--config", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "data.frame" in err
    # Through the real entry point too, without a traceback.
    r = subprocess.run([sys.executable, "-m", "trainer", "extract", "--dataset-path", str(tmp_path / "ds"),
                        "--cache-dir", str(tmp_path / "c"), "--config", str(bad)],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "error: config: unknown key 'data.frame' (did you mean 'data.frames'?)"
