"""`synth`: real decodable videos, half per class, deterministic, told apart only by motion."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from trainer.cli import main


def synth(capsys, out: Path, n: int, seed: int = 0, *extra: str) -> list[Path]:
    assert main(["synth", "--out", str(out), "--videos", str(n), "--seed", str(seed), "--quiet", *extra]) == 0
    capsys.readouterr()
    return sorted(out.rglob("*.mp4"))


def decode(path: Path) -> tuple[np.ndarray, int]:
    cap = cv2.VideoCapture(str(path))
    reported = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY))
    cap.release()
    return np.stack(frames), reported


def test_layout_counts_and_real_videos(tmp_path, capsys):
    paths = synth(capsys, tmp_path / "ds", 7, 3, "--frames", "30", "--size", "64")
    assert len(list((tmp_path / "ds/violent").glob("*.mp4"))) == 4
    assert len(list((tmp_path / "ds/nonviolent").glob("*.mp4"))) == 3
    for p in paths:
        frames, reported = decode(p)
        assert frames.shape == (30, 64, 64) and reported == 30


def test_deterministic_for_a_seed_and_extends_with_more_videos(tmp_path, capsys):
    a = synth(capsys, tmp_path / "a", 4, 5)
    b = synth(capsys, tmp_path / "b", 6, 5)
    c = synth(capsys, tmp_path / "c", 4, 6)
    rel = lambda ps, root: {p.relative_to(root).as_posix(): p.read_bytes() for p in ps}  # noqa: E731
    ra, rb, rc = rel(a, tmp_path / "a"), rel(b, tmp_path / "b"), rel(c, tmp_path / "c")
    assert all(rb[k] == v for k, v in ra.items())  # same seed: byte-identical, a prefix of the larger set
    assert all(rc[k] != v for k, v in ra.items())  # another seed: other videos


def test_classes_differ_by_motion_and_not_by_any_single_frame(tmp_path, capsys):
    paths = synth(capsys, tmp_path / "ds", 60, 11)
    still, motion, labels = [], [], []
    for p in paths:
        frames, _ = decode(p)
        small = np.stack([cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA) for f in frames]) / 255.0
        still.append(small[24].ravel())  # one frame
        motion.append([np.abs(np.diff(small[::2], axis=0)).mean()])  # change between frames
        labels.append(p.parent.name == "violent")
    still, motion, labels = np.array(still), np.array(motion), np.array(labels)

    # Frame-to-frame change alone separates the classes completely...
    assert motion[labels].min() > motion[~labels].max()
    # ...while a classifier that sees one frame does no better than chance (cross-validated).
    acc = cross_val_score(LogisticRegression(max_iter=2000), still, labels, cv=5).mean()
    assert acc < 0.7, f"a single frame gives the class away (accuracy {acc:.2f})"
    # Nor do simple per-frame statistics (brightness) differ much between the classes.
    bright = still.mean(axis=1)
    assert abs(bright[labels].mean() - bright[~labels].mean()) < 0.5 * bright.std()


@pytest.mark.parametrize("args,needle", [
    (["--videos", "1"], "at least 2"),
    (["--videos", "4", "--frames", "1"], "--frames"),
    (["--videos", "4", "--size", "8"], "--size"),
])
def test_bad_arguments(tmp_path, capsys, args, needle):
    assert main(["synth", "--out", str(tmp_path / "ds"), *args]) == 2
    assert needle in capsys.readouterr().err
