"""How the backbone runs: never XLA by Keras's own choice, a fixed set of pass sizes, and
memory growth on every GPU before predict or evaluate start TensorFlow on them."""

import numpy as np
import pytest

from tests.trainer.gpu_standin import RecordedGPUs
from trainer.backbone import KerasBackbone
from trainer.backbone_settings import feature_settings

SETTINGS = {"backbone": "efficientnetv2b0", "weights": "none", "frames": 4, "image_size": 32}


def test_the_backbone_is_not_compiled_with_xla_on_a_gpu(monkeypatch):
    # Keras resolves jit_compile="auto" of a model nobody compiled to True as soon as a GPU
    # is listed (keras/src/trainers/trainer.py, _resolve_auto_jit_compile): on a GPU the
    # backbone compiled with XLA by itself, which needs ptxas/libdevice in the image.
    RecordedGPUs(monkeypatch, count=1)
    backbone = KerasBackbone(feature_settings(SETTINGS), batch_size=4)
    assert backbone.on_gpu
    assert backbone.model.jit_compile is False
    assert backbone.xla_reason.startswith("off: the backbone runs cuDNN's convolutions")


def test_xla_reason_names_the_toolchain(monkeypatch):
    from trainer import backbone as backbone_mod
    from trainer.backbone import xla_decision

    monkeypatch.setattr(backbone_mod, "xla_toolchain", lambda: {"ptxas": None, "libdevice": "/x/libdevice.10.bc"})
    jit, why = xla_decision(on_gpu=True)
    assert jit is False and "this image has no ptxas for XLA to compile with" in why
    monkeypatch.setattr(backbone_mod, "xla_toolchain", lambda: {"ptxas": "/x/ptxas", "libdevice": "/x/l.bc"})
    assert "ptxas and libdevice are in the image" in xla_decision(on_gpu=True)[1]
    assert xla_decision(on_gpu=False) == (False, "off: no GPU (the backbone runs TensorFlow's CPU kernels)")


def test_pass_sizes_are_powers_of_two_up_to_the_batch():
    from trainer.backbone import pass_size

    assert [pass_size(n, 64) for n in (1, 2, 3, 5, 20, 33, 63, 64, 200)] == [1, 2, 4, 8, 32, 64, 64, 64, 64]
    assert [pass_size(n, 12) for n in (1, 5, 9, 11, 12)] == [1, 8, 12, 12, 12]


def test_short_passes_run_at_a_few_fixed_sizes_with_the_same_features():
    backbone = KerasBackbone(feature_settings(SETTINGS), batch_size=8)
    assert backbone.pad_passes is False  # no GPU here: see the next test
    backbone.pad_passes = True  # as on a GPU, where a pass of 8 costs about what one of 5 does
    seen = []
    real = backbone.model.predict_on_batch

    def spy(x):
        seen.append(int(x.shape[0]))
        return real(x)

    backbone.model.predict_on_batch = spy
    frames = np.random.default_rng(0).integers(0, 256, (13, 32, 32, 3), dtype=np.uint8)
    for n in range(1, 9):
        got = backbone.features(frames[:n])
        # every frame's features as computed alone: the padding changes nothing
        alone = np.concatenate([np.asarray(real(frames[i:i + 1]), np.float32) for i in range(n)])
        np.testing.assert_allclose(got, alone, rtol=1e-4, atol=1e-4)
    backbone.features(frames)  # 13 = a full pass of 8 and a last one of 5, run at 8
    assert set(seen) <= {1, 2, 4, 8}, seen  # not one shape (one trace, one autotuning) per leftover count
    assert seen[-2:] == [8, 8]
    assert backbone.computed == 1 + 2 + 4 + 4 + 8 + 8 + 8 + 8 + 16


def test_on_a_cpu_passes_run_at_their_own_size():
    """On a CPU every padded frame is paid for in full (a predict of one 20-frame video
    padded to 32 would do 1.6x the work): passes run at their own size there."""
    backbone = KerasBackbone(feature_settings(SETTINGS), batch_size=8)
    seen = []
    real = backbone.model.predict_on_batch
    backbone.model.predict_on_batch = lambda x: (seen.append(int(x.shape[0])), real(x))[1]
    frames = np.random.default_rng(0).integers(0, 256, (13, 32, 32, 3), dtype=np.uint8)
    assert backbone.features(frames[:5]).shape[0] == 5
    backbone.features(frames)
    assert seen == [5, 8, 5]
    assert backbone.computed == 5 + 13


def test_loading_a_model_sets_memory_growth_on_every_gpu_first(monkeypatch, tmp_path):
    """predict, evaluate and export start TensorFlow by loading the model, before any backbone."""
    import keras

    from trainer.evaluate import load_model

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.save(tmp_path / "m.keras")
    gpus = RecordedGPUs(monkeypatch, count=2)
    load_model(tmp_path / "m.keras")
    assert gpus.memory_growth == {"/physical_device:GPU:0": True, "/physical_device:GPU:1": True}


@pytest.fixture
def two_videos(tmp_path):
    from tests.trainer import videos as tv

    for i, cls in enumerate(("Fight", "NoFight")):
        tv.write_opencv(tmp_path / "ds" / cls / f"v{i}.mp4", tv.motion_frames(12, i), "mp4v")
    return tmp_path / "ds"


def test_extract_says_whether_the_backbone_compiles_with_xla_and_why(two_videos, tmp_path, capsys):
    import yaml

    from trainer.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": {**SETTINGS, "extract_batch_size": 8, "workers": 1}}))
    rc = main(["extract", "--dataset-path", str(two_videos), "--cache-dir", str(tmp_path / "cache"),
               "--config", str(cfg), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "backbone efficientnetv2b0 in float32 on CPU:0; XLA: off: no GPU" in out
    # 2 videos x 4 frames = one pass of 8: no padding; the line says so
    assert "useful work 100% (no padded frame computed)" in out
