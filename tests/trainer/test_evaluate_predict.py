"""`evaluate` (metrics.json, plots) and `predict` (one JSON line per real video file)."""

import json

import keras
import numpy as np
import pytest

from tests.trainer.tiny_cache import make_cache
from trainer import predict
from trainer.backbone import ThumbnailBackbone
from trainer.batching import BatchedClassifier
from trainer.cache import CLASSES, FeatureCache, atomic_write_json
from trainer.cli import main
from trainer.evaluate import compute_metrics
from trainer.model import build_model

TINY = {"lstm_units": 8, "lstm_layers": 1, "dropout": 0.1, "dense_units": [8, 8, 8]}


def test_metrics_on_known_predictions():
    y = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    p = np.array([0.1, 0.6, 0.2, 0.9, 0.8, 0.4, 0.7, 0.95])  # one false positive, one false negative
    m = compute_metrics(y, p)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["confusion_matrix"]["rows_true_cols_predicted"] == [[2, 1], [1, 4]]
    assert m["per_class"]["violent"]["precision"] == pytest.approx(4 / 5)
    assert m["per_class"]["violent"]["recall"] == pytest.approx(4 / 5)
    assert m["per_class"]["nonviolent"]["recall"] == pytest.approx(2 / 3)
    assert m["per_class"]["nonviolent"]["f1"] == pytest.approx(2 / 3)
    assert m["roc_auc"] == pytest.approx(14 / 15)  # 14 of the 15 (violent, nonviolent) pairs ranked right
    assert compute_metrics(np.array([1, 1]), np.array([0.2, 0.9]))["roc_auc"] is None  # one class: undefined


def test_evaluate_writes_metrics_and_plots(tmp_path, capsys):
    cache = make_cache(tmp_path / "cache", {"train": 4, "val": 4, "test": 12})
    run = tmp_path / "run"
    run.mkdir()
    model = build_model(6, 8, TINY)
    model.save(run / "best_model.keras")
    (run / "training_history.csv").write_text(
        "epoch,accuracy,learning_rate,loss,val_accuracy,val_loss\r\n"
        "0,0.5,0.001,0.7,0.5,0.69\r\n1,0.6,0.0005,0.6,0.55,0.65\r\n")
    assert main(["evaluate", "--cache-dir", str(cache), "--model", str(run / "best_model.keras")]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["samples"] == 12
    assert set(m["per_class"]) == set(CLASSES)
    assert sum(map(sum, m["confusion_matrix"]["rows_true_cols_predicted"])) == 12
    for name in ("loss", "accuracy", "learning_rate", "confusion_matrix"):
        png = run / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert "accuracy" in capsys.readouterr().out
    # a cache of another feature shape: a one-line usage error, not a traceback
    other = make_cache(tmp_path / "other", {"train": 2, "val": 2, "test": 2}, dim=5)
    assert main(["evaluate", "--cache-dir", str(other), "--model", str(run / "best_model.keras")]) == 2
    assert "expects" in capsys.readouterr().err
    assert main(["evaluate", "--cache-dir", str(cache), "--model", str(run / "nope.keras")]) == 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Real videos, a real thumbnail cache from `extract`, and a model saved as train saves it."""
    root = tmp_path_factory.mktemp("predict")
    assert main(["synth", "--out", str(root / "videos"), "--videos", "4", "--frames", "24", "--size", "32"]) == 0
    cfg = root / "cfg.yaml"
    cfg.write_text("data: {backbone: thumbnail, weights: none, image_size: 8, frames: 6, workers: 1}\n")
    assert main(["extract", "--dataset-path", str(root / "videos"), "--cache-dir", str(root / "cache"),
                 "--config", str(cfg), "--quiet"]) == 0
    cache = FeatureCache(root / "cache")
    meta = cache.read_meta()
    run = root / "run"
    run.mkdir()
    keras.utils.set_random_seed(3)
    model = build_model(*meta["feature_shape"], TINY)
    model.save(run / "best_model.keras")
    atomic_write_json(run / "model_info.json", {"cache_meta": meta, "cache_dir": str(root / "cache"),
                                                "classes": list(CLASSES)})
    # the index holds paths relative to the dataset folder
    features = {str(root / "videos" / rec["path"]): cache.load_features(rec["key"]) for rec in cache.ok_records()}
    assert len(features) == 4
    return run / "best_model.keras", model, features, root


def test_predict_uses_the_training_features_and_reports_bad_files(trained, capsys):
    model_path, model, features, root = trained
    videos = sorted(features)
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    args = ["predict", videos[0], str(corrupt), videos[1], str(root / "missing.mp4"), "--model", str(model_path)]
    assert main(args) == 2  # two files could not be read; the others were still classified
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.strip().splitlines()]
    assert [line["path"] for line in lines] == args[1:5]
    assert "error" in lines[1] and "error" in lines[3]
    assert "2 of 4 video(s) could not be read" in captured.err
    for line in (lines[0], lines[2]):
        # the same frames and backbone as the cache: the model sees exactly the cached features
        expected = float(np.asarray(model(features[line["path"]][None], training=False))[0, 1])
        assert line["violent_probability"] == pytest.approx(expected, abs=1e-5)
        assert line["label"] == ("violent" if expected >= 0.5 else "nonviolent")
    assert main(["predict", videos[0], "--model", str(model_path)]) == 0


def test_predict_needs_the_model_info(tmp_path, capsys):
    model = build_model(6, 8, TINY)
    model.save(tmp_path / "m.keras")
    assert main(["predict", "x.mp4", "--model", str(tmp_path / "m.keras")]) == 2
    assert "model_info.json is missing" in capsys.readouterr().err


class CountingBackbone:
    """The real thumbnail backbone, recording how many frames each pass gets."""

    def __init__(self, size: int, batch_size: int):
        self.inner, self.batch_size, self.passes = ThumbnailBackbone(size), batch_size, []

    def features(self, frames):
        self.passes.append(len(frames))
        return self.inner.features(frames)


def test_predict_fills_backbone_batches_with_the_frames_of_several_files(trained, capsys, monkeypatch):
    model_path, model, features, root = trained
    videos = sorted(features)
    spy = CountingBackbone(8, batch_size=8)
    monkeypatch.setattr(predict, "build_backbone", lambda info, settings: spy)
    files = [*videos, str(root / "missing.mp4"), videos[0]]  # 5 readable files of 6 frames = 30 frames
    assert main(["predict", *files, "--model", str(model_path)]) == 2
    assert spy.passes == [8, 8, 8, 6]  # frames carried across files: only the last pass is partial
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["path"] for line in lines] == files  # in the order given, the bad file in its place
    assert lines[4] == {"path": files[4], "error": "file not found"}
    for line in lines[:4] + lines[5:]:
        expected = float(np.asarray(model(features[line["path"]][None], training=False))[0, 1])
        assert line["violent_probability"] == pytest.approx(expected, abs=1e-5)


def test_frames_shared_by_overlapping_windows_go_through_the_backbone_once():
    spy = CountingBackbone(4, batch_size=4)
    model = build_model(3, 16, TINY)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (10, 4, 4, 3), dtype=np.uint8)
    got = []
    clf = BatchedClassifier(spy, model, lambda tag, p: got.append((tag, p)), batch_frames=4, model_batch=2)
    clf.add("w0", [0, 2, 4], frames[[0, 2, 4]])
    clf.add("w1", [2, 4, 6], frames[[2, 4, 6]])  # shares frames 2 and 4 with w0
    clf.add_marker("end")
    clf.add("w2", [6, 8, 9], frames[[6, 8, 9]])
    clf.flush()
    assert sum(spy.passes) == 6 and spy.passes == [4, 2]  # frames 0 2 4 6 8 9, each once
    assert [tag for tag, _ in got] == ["w0", "w1", "end", "w2"] and got[2][1] is None
    feats = ThumbnailBackbone(4).features(frames).astype(np.float16)
    for (tag, p), idx in zip([got[0], got[1], got[3]], ([0, 2, 4], [2, 4, 6], [6, 8, 9])):
        assert p == pytest.approx(float(np.asarray(model(feats[idx][None], training=False))[0, 1]), abs=1e-6)
