"""`predict --window`: long videos as a timeline, on real encoded videos.

Window sampling is checked frame by frame on videos whose frames carry their own index;
detection end to end with a model trained by `train` on synthetic demo data and a long
synthetic video with one violent section in the middle of calm footage.
"""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.trainer.videos import (avi_with_frame_count, indexed_frames, read_index, truncated_copy,
                                  write_opencv)
from trainer.backbone_settings import feature_settings
from trainer.cache import atomic_write_json
from trainer.cli import main
from trainer.frames import sample_indices
from trainer.model import build_model
from trainer.synth import long_video
from trainer.timeline import WindowSampler, choose_frame_rate, merge_segments, typical_clip

TINY = {"lstm_units": 8, "lstm_layers": 1, "dropout": 0.1, "dense_units": [8, 8]}


def windows_of(path, n, size, window_s, stride_s):
    sampler = WindowSampler(path, n, size, window_s, stride_s)
    out = [(w, [read_index(f) for f in frames]) for w, frames in sampler.windows()]
    return out, sampler.timeline


@pytest.fixture(scope="module")
def indexed_avi(tmp_path_factory):
    """250 frames (10 s at 25 fps) of MJPG whose frames spell their own index."""
    return write_opencv(tmp_path_factory.mktemp("idx") / "idx.avi", indexed_frames(250), "MJPG")


def test_each_window_is_sampled_like_a_clip_and_the_last_is_cut_and_marked(tmp_path):
    video = write_opencv(tmp_path / "v.avi", indexed_frames(100), "MJPG")  # 4 s
    got, tl = windows_of(video, 5, 32, 1.0, 0.48)  # 25-frame windows every 12 frames
    starts = [w.start_frame for w, _ in got]
    assert starts == list(range(0, 85, 12))  # 0..72 full, then 84 cut by the end at frame 100
    for w, decoded in got[:-1]:
        assert decoded == [w.start_frame + i for i in sample_indices(25, 5)]  # the clip rule inside the window
        assert (w.start_s, w.end_s) == pytest.approx((w.start_frame / 25, (w.start_frame + 25) / 25))
        assert not w.short and not w.padded
    last, decoded = got[-1]
    assert last.short and not last.padded and (last.start_frame, last.end_frame) == (84, 100)
    assert decoded == [84 + i for i in sample_indices(16, 5)]
    assert last.end_s == pytest.approx(4.0)
    assert (tl.frames_decoded, tl.fps, tl.duration_s, tl.error) == (100, 25.0, pytest.approx(4.0), None)


def test_a_video_shorter_than_the_frames_asked_is_one_padded_window(tmp_path):
    video = write_opencv(tmp_path / "v.avi", indexed_frames(3), "MJPG")
    got, _ = windows_of(video, 5, 32, 5.0, 2.5)
    assert len(got) == 1
    w, decoded = got[0]
    assert w.short and w.padded and decoded == sample_indices(3, 5) == [0, 0, 1, 2, 2]


def test_frames_held_stay_bounded_by_the_window(indexed_avi):
    got, tl = windows_of(indexed_avi, 5, 32, 2.0, 1.0)
    assert len(got) == 9 and all(d == w.frame_indices for w, d in got)
    # two overlapping windows of 5 wanted frames, plus the 50-frame tail buffer near the end
    assert tl.max_frames_held <= 2 * 5 + 50


def test_frame_count_and_duration_come_from_decoding_when_the_container_lies(tmp_path, indexed_avi):
    liar = avi_with_frame_count(indexed_avi, tmp_path / "liar.avi", 100)  # claims 4 s, holds 10 s
    got, tl = windows_of(liar, 5, 32, 2.0, 1.0)
    assert tl.frames_reported == 100 and tl.frames_decoded == 250
    assert tl.duration_s == pytest.approx(10.0) and tl.error is None
    assert got[-1][0].end_s == pytest.approx(10.0) and all(d == w.frame_indices for w, d in got)


def test_the_frame_rate_comes_from_decoded_timestamps_when_the_container_disagrees():
    at_25 = [40.0 * i for i in range(16)]
    assert choose_frame_rate(25.0, at_25) == (25.0, None)
    assert choose_frame_rate(25.4, at_25) == (25.4, None)  # within 5 %: the container's exact figure
    fps, note = choose_frame_rate(50.0, at_25)  # a container that doubles the rate
    assert fps == pytest.approx(25.0) and "container says 50" in note
    assert choose_frame_rate(0.0, at_25)[0] == pytest.approx(25.0)  # none given
    assert choose_frame_rate(90000.0, [0.0, 33.3667, 66.7334])[0] == pytest.approx(29.97, abs=0.01)  # a time base
    assert choose_frame_rate(30.0, [0.0]) == (30.0, None)  # one frame: nothing to compare with
    assert choose_frame_rate(0.0, [0.0])[0] == 25.0


def test_typical_clip_is_the_median_training_clip():
    records = [{"frames_decoded": n} for n in (48, 50, 150)]
    assert typical_clip(records) == {"clip_frames": 50}  # frames only: the cache records no frame rate
    assert typical_clip([{**r, "fps": 25.0} for r in records]) == {"clip_frames": 50, "clip_seconds": 2.0}
    assert typical_clip([]) == {}


def test_merge_segments():
    windows = [(0, 2, 0.1), (1, 3, 0.7), (2, 4, 0.9), (3, 5, 0.2), (6, 8, 0.5), (10, 12, 0.49)]
    assert merge_segments(windows, 0.5) == [
        {"start_s": 1, "end_s": 4, "peak_probability": 0.9, "windows": 2},
        {"start_s": 6, "end_s": 8, "peak_probability": 0.5, "windows": 1},  # at the threshold counts
    ]
    assert merge_segments(windows, 0.95) == []


# --- predict --window on the command line ---------------------------------------------

def untrained_model(root: Path, frames: int = 5, size: int = 8, clip_frames: int | None = None) -> Path:
    """A model with its model_info.json as train writes it (thumbnail features, random weights)."""
    settings = feature_settings({"backbone": "thumbnail", "weights": "none", "image_size": size, "frames": frames})
    meta = {**settings, "feature_shape": [frames, settings["feature_dim"]], "dtype": "float16"}
    root.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(1)
    build_model(frames, settings["feature_dim"], TINY).save(root / "best_model.keras")
    info = {"cache_meta": meta, "classes": ["nonviolent", "violent"], **({"clip_frames": clip_frames} if clip_frames else {})}
    atomic_write_json(root / "model_info.json", info)
    return root / "best_model.keras"


def predict_lines(capsys, *args) -> tuple[int, list[dict], str]:
    rc = main(["predict", *map(str, args), "--quiet"])
    cap = capsys.readouterr()
    return rc, [json.loads(line) for line in cap.out.splitlines()], cap.err


def test_a_truncated_long_file_reports_its_windows_and_where_decoding_stopped(tmp_path, capsys, indexed_avi):
    model = untrained_model(tmp_path / "run")
    cut = truncated_copy(indexed_avi, tmp_path / "cut.avi", 0.5)
    rc, lines, err = predict_lines(capsys, cut, tmp_path / "missing.mp4", "--model", model, "--window", "2",
                                   "--stride", "1")
    assert rc == 2
    assert "Traceback" not in err and "decoding stopped at frame" in err and "2 of 2 video(s)" in err
    windows = [line for line in lines if "start_s" in line]
    assert len(windows) == 3 and windows[-1]["end_s"] == pytest.approx(4.0)  # the windows before the cut
    summary = lines[3]
    assert summary["path"] == str(cut) and "decoding stopped at frame" in summary["error"]
    assert 4.0 <= summary["decoded_until_s"] < 5.2 and summary["windows"] == 3
    assert any("truncated AVI" in note for note in summary["notes"])
    assert lines[4] == {"path": str(tmp_path / "missing.mp4"), "error": "file not found"}


def test_default_window_is_the_training_clips_length(tmp_path, capsys, indexed_avi):
    model = untrained_model(tmp_path / "run", clip_frames=50)  # train recorded 50-frame clips
    rc, lines, err = predict_lines(capsys, indexed_avi, "--model", model, "--window", "--plot", tmp_path / "t.png")
    assert rc == 0, err
    summary = lines[-1]
    assert (summary["window_s"], summary["stride_s"], summary["windows"]) == (2.0, 1.0, 9)
    assert all(line["end_s"] - line["start_s"] == pytest.approx(2.0) for line in lines[:-1])
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and summary["plot"] == str(tmp_path / "t.png")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "t.png").stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".png"] == ["t.png"]  # no temporary file left
    assert main(["predict", str(indexed_avi), "--model", str(model), "--window", "x.mp4"]) == 2
    assert "--window must be a positive number" in capsys.readouterr().err


def traced_peak(capsys, *args) -> tuple[float, list[dict]]:
    tracemalloc.start()
    try:
        rc, lines, err = predict_lines(capsys, *args)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rc == 0, err
    return peak, lines


@pytest.mark.slow
def test_memory_stays_bounded_on_a_ten_minute_video(tmp_path, capsys):
    """600 s of 25 fps video take no more memory than 200 s: frames are held for the open
    windows only (and features for one model batch of windows), never for the video."""
    model = untrained_model(tmp_path / "run", frames=20, size=64)  # 12 KB per 64x64 frame: 180 MB for the video
    peaks, report = {}, []
    for seconds in (200, 600):
        video = tmp_path / f"{seconds}.mp4"
        long_video(video, seconds, [(seconds / 2, seconds / 2 + 20)], size=32)
        start = time.monotonic()
        peaks[seconds], lines = traced_peak(capsys, video, "--model", model, "--window", "5", "--stride", "2.5")
        took = time.monotonic() - start
        report.append(f"{seconds} s video: {took:.1f} s, peak traced memory {peaks[seconds] / 1e6:.1f} MB")
    print("; ".join(report))
    # 125-frame windows every 63 frames (2.52 s): 237 full ones, then one cut by the end
    assert lines[-1]["windows"] == 238 and lines[-1]["duration_s"] == pytest.approx(600.0)
    assert lines[-1]["stride_s"] == pytest.approx(2.52) and lines[-2].get("short")
    assert peaks[600] < 1.25 * peaks[200], peaks  # three times the video, about the same memory (linear: 3x)
    assert peaks[600] < 40e6, f"peak {peaks[600] / 1e6:.0f} MB of Python/numpy memory for a 180 MB video"


# --- detection, with a model trained on the demo data ------------------------------------

@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("timeline")
    cfg = root / "cfg.yaml"
    cfg.write_text(
        "data: {backbone: thumbnail, weights: none, image_size: 8, frames: 12, workers: 2}\n"
        "model: {lstm_units: 16, lstm_layers: 1, dense_units: [16, 8], dropout: 0.1}\n"
        # batch 4: ~500 steps, enough for BatchNorm's moving statistics (momentum 0.99) to settle;
        # with ~100 steps the model is right in training and near chance at inference
        "train: {epochs: 10, batch_size: 4, warmup_epochs: 1, learning_rate: 5.0e-3, xla: false,\n"
        "        focal_loss: false, label_smoothing: 0.0}\n"
        "callbacks: {early_stopping: {patience: 20}, reduce_lr: {patience: 10}, tensorboard: false,\n"
        "            keep_last_checkpoints: 1}\n")
    assert main(["synth", "--out", str(root / "ds"), "--videos", "300", "--frames", "48", "--size", "32",
                 "--quiet"]) == 0
    assert main(["extract", "--dataset-path", str(root / "ds"), "--cache-dir", str(root / "cache"),
                 "--config", str(cfg), "--quiet"]) == 0
    assert main(["train", "--cache-dir", str(root / "cache"), "--output-dir", str(root / "run"),
                 "--config", str(cfg), "--no-evaluate"]) == 0
    return root / "run" / "best_model.keras"


@pytest.mark.slow
def test_the_violent_section_of_a_long_video_is_found_and_nothing_in_the_calm(trained_model, tmp_path, capsys):
    capsys.readouterr()
    video = tmp_path / "long.mp4"
    sections = long_video(video, 60, [(24, 36)], seed=7, size=32)
    assert [(v, a, b) for v, a, b in sections] == [(False, 0, 24), (True, 24, 36), (False, 36, 60)]
    rc, lines, err = predict_lines(capsys, video, "--model", trained_model, "--window", "--plot", tmp_path / "t.png")
    assert rc == 0, err
    summary = lines[-1]
    assert summary["window_s"] == pytest.approx(1.92)  # the 48-frame training clips at 25 fps
    segments = summary["segments"]
    assert segments, f"no segment found; windows: {[round(w['violent_probability'], 2) for w in lines[:-1]]}"
    assert all(s["end_s"] > 24 and s["start_s"] < 36 for s in segments), segments  # none in the calm parts
    covered = sum(min(s["end_s"], 36) - max(s["start_s"], 24) for s in segments)
    assert covered >= 0.8 * 12, segments  # and most of the violent section is found
