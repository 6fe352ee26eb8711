"""`info` on a cache written through FeatureCache (no extraction needed, no TensorFlow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from trainer.cache import FeatureCache
from trainer.cli import main

REPO = Path(__file__).resolve().parents[2]


def make_cache(root: Path) -> FeatureCache:
    cache = FeatureCache(root)
    cache.write_meta({"fingerprint": "fp1", "backbone": "thumbnail", "weights": "none", "weights_id": "none",
                      "image_size": 4, "frames": 3, "feature_dim": 16, "feature_shape": [3, 16],
                      "dtype": "float16"})
    recs = []
    layout = [("train", "violent", 3), ("train", "nonviolent", 2), ("val", "violent", 1), ("test", "nonviolent", 1)]
    for split, label, n in layout:
        for i in range(n):
            key = f"{split}{label}{i}"
            cache.save_features(key, np.full((3, 16), i, np.float16))
            recs.append({"path": f"{label}/{split}{i}.mp4", "label": label, "split": split, "status": "ok",
                         "fingerprint": "fp1", "key": key, "padded": i == 0 and split == "val"})
    recs.append({"path": "violent/bad.mp4", "label": "violent", "split": "test", "status": "failed",
                 "fingerprint": "fp1", "key": "k", "reason": "empty file (0 bytes)"})
    # Superseded and foreign records must not count: an earlier failure later fixed, and
    # a record of other settings, and a video removed from the dataset.
    recs.insert(0, {"path": "violent/train0.mp4", "status": "failed", "fingerprint": "fp1", "reason": "old"})
    recs.append({"path": "violent/other.mp4", "label": "violent", "split": "train", "status": "ok",
                 "fingerprint": "fp0", "key": "train" + "violent" + "0"})
    recs.append({"path": "nonviolent/test0.mp4", "status": "removed", "fingerprint": "fp1"})
    cache.append(recs)
    return cache


def test_info_json(tmp_path, capsys):
    make_cache(tmp_path / "cache")
    assert main(["info", "--cache-dir", str(tmp_path / "cache"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["videos"] == 6
    assert info["failed"] == [{"path": "violent/bad.mp4", "reason": "empty file (0 bytes)"}]
    assert info["splits"] == {"train": {"violent": 3, "nonviolent": 2}, "val": {"violent": 1, "nonviolent": 0},
                              "test": {"violent": 0, "nonviolent": 0}}
    assert info["feature_shape"] == [3, 16] and info["dtype"] == "float16"
    assert info["padded"] == 1 and info["backbone"] == "thumbnail"
    npy = sorted((tmp_path / "cache/features").glob("*.npy"))
    assert info["feature_bytes"] == sum(p.stat().st_size for p in npy if not p.name.startswith("test"))
    assert info["disk_bytes"] > info["feature_bytes"]


def test_info_text(tmp_path, capsys):
    make_cache(tmp_path / "cache")
    assert main(["info", "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "usable videos: 6" in out and "failed: 1" in out
    assert "violent/bad.mp4: empty file (0 bytes)" in out
    assert "[3, 16] float16" in out and "size on disk" in out
    train = next(line for line in out.splitlines() if line.startswith("train"))
    assert train.split() == ["train", "2", "3", "5"]  # nonviolent, violent, total


def test_info_errors(tmp_path, capsys):
    assert main(["info", "--cache-dir", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["info", "--cache-dir", str(tmp_path / "empty"), "--json"]) == 2
    err = capsys.readouterr().err
    assert "not a feature cache" in err and len(err.strip().splitlines()) == 1


def test_info_imports_neither_tensorflow_nor_opencv(tmp_path):
    make_cache(tmp_path / "cache")
    code = ("import sys; from trainer.cli import main; rc = main(['info', '--cache-dir', sys.argv[1], '--json']); "
            "bad = [m for m in ('tensorflow', 'keras', 'cv2') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else rc)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cache")], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["videos"] == 6
