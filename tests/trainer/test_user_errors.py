"""A user's mistake is one line on stderr and exit 2, never a traceback, and when it needs no
TensorFlow to see, it is seen before TensorFlow loads (issue 22, items 5 and 7).

Every case runs the real entry point (`python -m trainer ...` or `trainer.cli.main` in a fresh
interpreter), so what is asserted is what a user sees.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.trainer import videos as tv
from tests.trainer.tiny_cache import make_cache
from trainer.cache import CLASSES, FeatureCache, atomic_write_json

REPO = Path(__file__).resolve().parents[2]
TINY = {"lstm_units": 8, "lstm_layers": 1, "dropout": 0.1, "dense_units": [8, 8, 8]}

# A fresh interpreter runs one command and reports whether TensorFlow was imported and how long it took.
PROBE = ("import sys, time, json; t = time.perf_counter(); from trainer.cli import main; rc = main(sys.argv[1:]); "
         "print(json.dumps({'rc': rc, 'tf': 'tensorflow' in sys.modules, 's': time.perf_counter() - t}))")


def trainer(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, r.stderr
    return errors[0]


def probe(*args: str) -> dict:
    r = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.stdout.strip(), r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["stderr"] = r.stderr
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved model with its model_info.json, as train leaves them (thumbnail features 6 x 8)."""
    from trainer.model import build_model

    root = tmp_path_factory.mktemp("model")
    cache = make_cache(root / "cache", {"train": 4, "val": 4, "test": 4})
    run = root / "run"
    run.mkdir()
    build_model(6, 8, TINY).save(run / "best_model.keras")
    meta = FeatureCache(cache).read_meta()
    atomic_write_json(run / "model_info.json", {"cache_meta": meta, "backbone": meta, "classes": list(CLASSES)})
    return run


# --- item 5: tracebacks for users' mistakes --------------------------------------------------

def test_extract_into_a_cache_dir_that_is_a_file(tmp_path):
    ds = tmp_path / "ds"
    tv.write_opencv(ds / "violent/a.mp4", tv.motion_frames(12, 1))
    tv.write_opencv(ds / "nonviolent/b.mp4", tv.motion_frames(12, 2))
    (tmp_path / "cache.txt").write_text("not a folder")
    line = one_line_error(trainer("extract", "--dataset-path", ds, "--cache-dir", tmp_path / "cache.txt",
                                  "--config", REPO / "configs/demo.yaml", "--quiet"))
    assert "--cache-dir" in line and "is a file, not a folder" in line


def test_train_into_an_output_dir_that_is_a_file(tmp_path):
    cache = make_cache(tmp_path / "cache", {"train": 4, "val": 4})
    (tmp_path / "out").write_text("a file")
    line = one_line_error(trainer("train", "--cache-dir", cache, "--output-dir", tmp_path / "out", "--epochs", "1"))
    assert "--output-dir" in line and "is a file, not a folder" in line


def test_predict_on_a_folder(model_dir, tmp_path):
    (tmp_path / "clips").mkdir()
    line = one_line_error(trainer("predict", tmp_path / "clips", "--model", model_dir / "best_model.keras"))
    assert "is a folder" in line and "*.mp4" in line


@pytest.mark.parametrize("content,needle", [
    ("{\"cache_meta\": {\"backbone\": \"thumb", "not readable as model_info.json"),  # cut off mid-copy
    ("[1, 2, 3]", "not model_info.json"),
    ("{\"classes\": [\"nonviolent\", \"violent\"]}", "no recorded feature settings"),
    ("{\"backbone\": {\"backbone\": \"thumbnail\", \"frames\": 6}}", "incomplete"),
])
def test_predict_with_a_corrupt_or_incomplete_model_info(model_dir, tmp_path, content, needle):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best_model.keras").write_bytes((model_dir / "best_model.keras").read_bytes())
    (run / "model_info.json").write_text(content)
    clip = tv.write_opencv(tmp_path / "clip.mp4", tv.motion_frames(12, 1))
    line = one_line_error(trainer("predict", clip, "--model", run / "best_model.keras"))
    assert needle in line and "model_info.json" in line


def test_a_garbage_keras_file_is_not_reported_as_file_not_found(model_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best_model.keras").write_bytes(b"<html>502 Bad Gateway</html>" * 10)  # a download gone wrong
    (run / "model_info.json").write_text((model_dir / "model_info.json").read_text())
    cache = make_cache(tmp_path / "cache", {"train": 2, "val": 2, "test": 2})
    for cmd in (["evaluate", "--cache-dir", cache], ["predict", tv.write_opencv(tmp_path / "c.mp4",
                                                                                tv.motion_frames(12, 1))]):
        line = one_line_error(trainer(*cmd, "--model", run / "best_model.keras"))
        assert "not a Keras model file" in line and "not found" not in line.lower(), line


@pytest.mark.parametrize("command", ["info", "train", "evaluate"])
def test_a_corrupt_cache_meta_json_is_one_line(command, model_dir, tmp_path):
    cache = make_cache(tmp_path / "cache", {"train": 2, "val": 2, "test": 2})
    (cache / "meta.json").write_text('{"backbone": "thumbnail", "frames": ')  # cut off by a full disk
    args = {"info": ["--cache-dir", cache],
            "train": ["--cache-dir", cache, "--output-dir", tmp_path / "o"],
            "evaluate": ["--cache-dir", cache, "--model", model_dir / "best_model.keras"]}[command]
    line = one_line_error(trainer(command, *args))
    assert "meta.json is not readable" in line


def test_yaml_errors_say_line_and_column(tmp_path):
    bad = tmp_path / "train.yaml"
    bad.write_text("data:\n  frames: 20\n  backbone: {vgg19\ntrain:\n  epochs: 3\n")
    cache = make_cache(tmp_path / "cache", {"train": 2, "val": 2})
    line = one_line_error(trainer("train", "--cache-dir", cache, "--output-dir", tmp_path / "o", "--config", bad))
    assert f"{bad} line 4, column 6: not valid YAML" in line, line
    assert "flow mapping at line 3, column 13" in line


# --- item 7: what needs no TensorFlow fails before it loads ------------------------------------

@pytest.mark.parametrize("case", ["missing video", "folder input", "empty cache", "cache without val",
                                  "train --gpus -1", "extract --gpus -1", "evaluate on an empty cache"])
def test_instant_failures_never_load_tensorflow(case, model_dir, tmp_path):
    model = model_dir / "best_model.keras"
    (tmp_path / "empty").mkdir()
    (tmp_path / "folder").mkdir()
    no_val = make_cache(tmp_path / "noval", {"train": 4})
    ds = tmp_path / "ds"
    tv.write_opencv(ds / "violent/a.mp4", tv.motion_frames(12, 1))
    args = {
        "missing video": ["predict", tmp_path / "missing.mp4", "--model", model],
        "folder input": ["predict", tmp_path / "folder", "--model", model],
        "empty cache": ["train", "--cache-dir", tmp_path / "empty", "--output-dir", tmp_path / "o"],
        "cache without val": ["train", "--cache-dir", no_val, "--output-dir", tmp_path / "o"],
        "train --gpus -1": ["train", "--cache-dir", no_val, "--output-dir", tmp_path / "o", "--gpus", "-1"],
        "extract --gpus -1": ["extract", "--dataset-path", ds, "--cache-dir", tmp_path / "c", "--gpus", "-1"],
        "evaluate on an empty cache": ["evaluate", "--cache-dir", tmp_path / "empty", "--model", model],
    }[case]
    started = time.perf_counter()
    got = probe(*args)
    wall = time.perf_counter() - started
    assert got["rc"] == 2, got["stderr"]
    assert not got["tf"], f"{case}: TensorFlow was imported before the mistake was reported"
    assert "Traceback" not in got["stderr"] and got["stderr"].count("error: ") == 1
    # TensorFlow alone takes 5-7 s to import here; these answer in a fraction of a second
    # (interpreter start and NumPy included), with room for a loaded machine
    assert got["s"] < 2.0 and wall < 6.0, (case, got["s"], wall)
