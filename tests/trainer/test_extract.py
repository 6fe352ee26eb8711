"""`extract` end to end on real encoded videos (thumbnail backbone; one VGG19 test, slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.trainer import videos as tv
from trainer.backbone import ThumbnailBackbone
from trainer.backbone_settings import feature_settings
from trainer.cache import FeatureCache
from trainer.cli import main
from trainer.decode_pool import Crashed, DecoderPool
from trainer.errors import UsageError
from trainer.extract import lock_cache
from trainer.frames import sample_frames

REPO = Path(__file__).resolve().parents[2]
FRAMES, SIZE = 8, 16


def write_config(path: Path, **data) -> Path:
    # extract_batch_size 12 with 8 frames: batches straddle videos, which must not mix them up.
    cfg = {"data": {"backbone": "thumbnail", "weights": "none", "image_size": SIZE, "frames": FRAMES,
                    "extract_batch_size": 12, "workers": 2, **data}}
    path.write_text(yaml.safe_dump(cfg))
    return path


def extract(capsys, dataset: Path, cache: Path, config: Path, *extra: str) -> tuple[int, str, str]:
    rc = main(["extract", "--dataset-path", str(dataset), "--cache-dir", str(cache), "--config", str(config), *extra])
    out, err = capsys.readouterr()
    return rc, out, err


def good_video(path: Path, seed: int, n: int = 24, fourcc: str = "mp4v") -> Path:
    return tv.write_opencv(path, tv.motion_frames(n, seed), fourcc)


def index_lines(cache: Path) -> list[dict]:
    return [json.loads(line) for line in (cache / "index.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture
def mixed_dataset(tmp_path):
    ds = tmp_path / "dataset"
    good_video(ds / "Fight/a.mp4", 1)
    good_video(ds / "Fight/cam2/b.avi", 2, fourcc="MJPG")
    good_video(ds / "Fight/c.AVI", 3, fourcc="XVID")
    good_video(ds / "Fight/d.mp4", 4)
    good_video(ds / "NoFight/e.mp4", 5)
    good_video(ds / "NoFight/f.avi", 6, fourcc="MJPG")
    good_video(ds / "NoFight/g.mp4", 7)
    good_video(ds / "NoFight/short.avi", 8, n=3, fourcc="MJPG")
    if tv.has_ffmpeg():
        tv.write_ffmpeg(ds / "NoFight/h.mkv", tv.motion_frames(24, 9), ["-c:v", "libx264"])
    tv.zero_byte(ds / "Fight/zero.mp4")
    tv.text_file(ds / "Fight/text.mp4")
    src = good_video(tmp_path / "full.mp4", 10)
    tv.truncated_copy(src, ds / "Fight/cut.mp4")
    avi = good_video(tmp_path / "src.avi", 11, fourcc="MJPG")
    tv.corrupt_avi_frames(avi, ds / "Fight/nodata.avi")
    return ds


BROKEN = {"Fight/zero.mp4": "empty file", "Fight/text.mp4": "not a video", "Fight/cut.mp4": "truncated MP4",
          "Fight/nodata.avi": "no decodable frame"}


def test_extract_codecs_broken_files_summary_and_second_run(tmp_path, capsys, mixed_dataset):
    cache_dir = tmp_path / "cache"
    config = write_config(tmp_path / "c.yaml")
    rc, out, err = extract(capsys, mixed_dataset, cache_dir, config, "--quiet")
    assert rc == 0, err
    n_good = 9 if tv.has_ffmpeg() else 8

    cache = FeatureCache(cache_dir)
    recs = cache.records()
    ok = {p: r for p, r in recs.items() if r["status"] == "ok"}
    failed = {p: r for p, r in recs.items() if r["status"] == "failed"}
    assert len(ok) == n_good
    assert set(failed) == set(BROKEN)
    for path, reason in BROKEN.items():
        assert reason in failed[path]["reason"]
        assert path in out  # the summary names every failure
    # Failed videos never become (zero) features; every ok record has its own file.
    assert len(list((cache_dir / "features").glob("*.npy"))) == n_good
    assert len({r["key"] for r in ok.values()}) == n_good

    # Each feature file holds exactly what sampling + the backbone give for THAT video,
    # although videos were decoded in parallel and batched across video boundaries.
    backbone = ThumbnailBackbone(SIZE)
    for rel, rec in ok.items():
        want = backbone.features(sample_frames(mixed_dataset / rel, FRAMES, SIZE).frames)
        got = cache.load_features(rec["key"])
        assert got.dtype == np.float16 and got.shape == (FRAMES, SIZE * SIZE)
        np.testing.assert_allclose(got.astype(np.float32), want, atol=1e-3)
        assert rec["label"] == ("violent" if rel.startswith("Fight/") else "nonviolent")
    short = ok["NoFight/short.avi"]
    assert short["padded"] is True and short["frames_decoded"] == 3
    assert ok["NoFight/e.mp4"]["padded"] is False and ok["NoFight/e.mp4"]["frames_decoded"] == 24

    meta = cache.read_meta()
    assert meta["feature_shape"] == [FRAMES, SIZE * SIZE] and meta["dtype"] == "float16"
    assert meta["backbone"] == "thumbnail" and meta["fingerprint"]
    x, y, paths = cache.load_split("train")
    assert x.shape[1:] == (FRAMES, SIZE * SIZE) and len(y) == len(paths) > 0

    # Summary per split and class; the failures are all violent, which skews the balance.
    assert "train  violent" in out and "usable videos: %d" % n_good in out
    assert "class balance" in err
    assert "extract:" not in err  # --quiet: no progress bar

    assert main(["info", "--cache-dir", str(cache_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["videos"] == n_good and {f["path"] for f in info["failed"]} == set(BROKEN)
    assert sum(info["splits"][s]["violent"] for s in ("train", "val", "test")) == 4

    # Second run: nothing extracted, nothing appended, no file rewritten.
    lines_before = (cache_dir / "index.jsonl").read_text()
    mtimes = {p: p.stat().st_mtime_ns for p in (cache_dir / "features").iterdir()}
    rc, out, err = extract(capsys, mixed_dataset, cache_dir, config)
    assert rc == 0
    assert "nothing to extract" in out and "0 extracted" in out
    assert (cache_dir / "index.jsonl").read_text() == lines_before
    assert {p: p.stat().st_mtime_ns for p in (cache_dir / "features").iterdir()} == mtimes


def test_changed_settings_never_reuse_stale_features(tmp_path, capsys):
    ds = tmp_path / "ds"
    for i in range(3):
        good_video(ds / f"violent/v{i}.mp4", i)
        good_video(ds / f"nonviolent/n{i}.mp4", 10 + i)
    cache_dir = tmp_path / "cache"
    cache = FeatureCache(cache_dir)

    def run(**data):
        rc, out, err = extract(capsys, ds, cache_dir, write_config(tmp_path / "c.yaml", **data), "--quiet")
        assert rc == 0, err
        return out

    assert "6 extracted" in run()
    first = {r["path"]: cache.load_features(r["key"]) for r in cache.ok_records()}
    fp1 = cache.read_meta()["fingerprint"]

    out = run(frames=6)  # fewer frames: new features, never the 8-frame ones
    assert "6 extracted" in out and "settings changed" in out
    assert cache.read_meta()["feature_shape"] == [6, SIZE * SIZE]
    assert all(cache.load_features(r["key"]).shape == (6, SIZE * SIZE) for r in cache.ok_records())

    out = run(frames=6, image_size=8)
    assert "6 extracted" in out
    assert all(cache.load_features(r["key"]).shape == (6, 64) for r in cache.ok_records())

    out = run()  # back to the first settings: identical content + settings = reuse, no decoding
    assert "0 extracted" in out and "6 reused" in out
    assert cache.read_meta()["fingerprint"] == fp1
    for r in cache.ok_records():
        np.testing.assert_array_equal(cache.load_features(r["key"]), first[r["path"]])


def test_weights_and_every_feature_setting_change_the_fingerprint(tmp_path):
    base = {"backbone": "vgg19", "weights": "none", "image_size": 224, "frames": 20}
    a, b = tmp_path / "a.weights.h5", tmp_path / "b.weights.h5"
    a.write_bytes(b"weights A")
    b.write_bytes(b"weights B")
    copy_of_a = tmp_path / "moved" / "a.weights.h5"
    copy_of_a.parent.mkdir()
    copy_of_a.write_bytes(b"weights A")
    fps = {
        "none": feature_settings(base)["fingerprint"],
        "imagenet": feature_settings({**base, "weights": "imagenet"})["fingerprint"],
        "file a": feature_settings({**base, "weights": str(a)})["fingerprint"],
        "file b": feature_settings({**base, "weights": str(b)})["fingerprint"],
        "frames": feature_settings({**base, "frames": 16})["fingerprint"],
        "thumbnail": feature_settings({**base, "backbone": "thumbnail"})["fingerprint"],
        "thumbnail 32": feature_settings({**base, "backbone": "thumbnail", "image_size": 32})["fingerprint"],
    }
    assert len(set(fps.values())) == len(fps)
    # A weights file is identified by its content, not its name or place.
    assert feature_settings({**base, "weights": str(copy_of_a)})["fingerprint"] == fps["file a"]
    assert feature_settings(base)["fingerprint"] == fps["none"]  # and the same settings agree
    with pytest.raises(UsageError, match="image_size must be 224"):
        feature_settings({**base, "image_size": 112})
    with pytest.raises(UsageError, match="neither 'imagenet', 'none' nor an existing file"):
        feature_settings({**base, "weights": str(tmp_path / "missing.h5")})


def test_added_changed_and_renamed_videos(tmp_path, capsys):
    ds = tmp_path / "ds"
    for i in range(8):
        good_video(ds / f"violent/v{i}.mp4", i)
        good_video(ds / f"nonviolent/n{i}.mp4", 20 + i)
    cache_dir = tmp_path / "cache"
    config = write_config(tmp_path / "c.yaml")
    rc, out, _ = extract(capsys, ds, cache_dir, config, "--quiet")
    assert rc == 0 and "16 extracted" in out
    cache = FeatureCache(cache_dir)
    splits_before = cache.read_splits()
    assert set(splits_before.values()) == {"train", "val", "test"}

    for i in range(8, 11):
        good_video(ds / f"violent/v{i}.mp4", i)
    good_video(ds / "nonviolent/n0.mp4", 99)  # same name, new content
    os.rename(ds / "violent/v1.mp4", ds / "violent/renamed.mp4")  # same content, new name

    rc, out, err = extract(capsys, ds, cache_dir, config)  # with the progress bar this time
    assert rc == 0
    assert "4 extracted" in out and "1 reused" in out and "1 no longer in the dataset" in out
    assert "extract:" in err and "video/s" in err  # tqdm's bar: rate and ETA
    splits_after = cache.read_splits()
    assert all(splits_after[rel] == split for rel, split in splits_before.items())
    recs = cache.records()
    assert recs["nonviolent/n0.mp4"]["sha256"] != [r for r in cache.history()
                                                  if r["path"] == "nonviolent/n0.mp4"][0]["sha256"]
    assert len(cache.ok_records()) == 19  # 16 - 1 renamed away + 1 renamed in + 3 new


def test_resume_after_sigkill(tmp_path, capsys):
    """Kill extract with SIGKILL mid-run; the restart finishes, extracting no video twice."""
    ds = tmp_path / "ds"
    n_videos = 14
    for i in range(n_videos):  # big enough that decoding takes a noticeable time per video
        tv.write_opencv(ds / ("violent" if i % 2 else "nonviolent") / f"x{i:02d}.mp4",
                        tv.motion_frames(150, i, size=(320, 240)))
    cache_dir = tmp_path / "cache"
    config = write_config(tmp_path / "c.yaml", workers=1, extract_batch_size=8)
    cmd = [sys.executable, "-m", "trainer", "extract", "--dataset-path", str(ds), "--cache-dir", str(cache_dir),
           "--config", str(config), "--quiet"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    index = cache_dir / "index.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if index.is_file() and index.read_text().count('"ok"') >= 3:
            break
        time.sleep(0.01)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    done_before = [r for r in index_lines(cache_dir) if r["status"] == "ok"]
    assert 3 <= len(done_before) < n_videos, "the run finished before it could be killed"
    assert workers, "extract started no decoding worker"
    _wait_gone(workers)  # orphaned workers notice and exit on their own

    rc, out, err = extract(capsys, ds, cache_dir, config, "--quiet")
    assert rc == 0, err
    assert f"{len(done_before)} already in the cache" in out
    ok_lines = [r for r in index_lines(cache_dir) if r["status"] == "ok"]
    assert Counter(r["path"] for r in ok_lines) == Counter({r: 1 for r in {x["path"] for x in ok_lines}})
    assert len(ok_lines) == n_videos  # every video exactly once: none redone, none lost
    assert not list((cache_dir / "features").glob(".*.tmp"))


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _wait_gone(pids: list[int], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    alive = pids
    while time.monotonic() < deadline:
        alive = [p for p in alive if Path(f"/proc/{p}").exists() and "Z" not in _state(p)]
        if not alive:
            return
        time.sleep(0.1)
    pytest.fail(f"worker processes {alive} outlived the killed extract")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def test_exit_codes_and_one_line_errors(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml")
    rc, out, err = extract(capsys, tmp_path / "missing", tmp_path / "cache", config)
    assert rc == 2 and err.strip() == f"error: dataset path does not exist: {tmp_path / 'missing'}"

    ds = tmp_path / "allbad"
    tv.zero_byte(ds / "violent/a.mp4")
    tv.text_file(ds / "nonviolent/b.mp4")
    rc, out, err = extract(capsys, ds, tmp_path / "cache", config, "--quiet")
    assert rc == 2 and "nothing could be extracted: all 2 videos failed" in err
    assert len(err.strip().splitlines()) == 1

    good_video(ds / "robbery/c.mp4", 1)
    rc, out, err = extract(capsys, ds, tmp_path / "cache", config, "--quiet")
    assert rc == 2 and "robbery" in err and len(err.strip().splitlines()) == 1

    rc, out, err = extract(capsys, ds, tmp_path / "cache", write_config(tmp_path / "v.yaml", backbone="vgg19"))
    assert rc == 2 and "image_size must be 224" in err


def test_one_extract_per_cache(tmp_path, capsys):
    ds = tmp_path / "ds"
    good_video(ds / "violent/a.mp4", 1)
    good_video(ds / "nonviolent/b.mp4", 2)
    holder = lock_cache(FeatureCache(tmp_path / "cache"))
    try:
        rc, _, err = extract(capsys, ds, tmp_path / "cache", write_config(tmp_path / "c.yaml"))
        assert rc == 2 and "another extract is already writing" in err
    finally:
        holder.close()
    rc, _, err = extract(capsys, ds, tmp_path / "cache", write_config(tmp_path / "c.yaml"), "--quiet")
    assert rc == 0, err


def test_a_crashing_decoder_costs_one_video():
    pool = DecoderPool(2)
    try:
        results = dict(pool.map_unordered(tv.crash_on, [(x,) for x in ("a", "boom", "b", "c", "d")]))
    finally:
        pool.close()
    assert isinstance(results[("boom",)], Crashed)
    assert {k[0]: v for k, v in results.items() if k != ("boom",)} == {"a": "A", "b": "B", "c": "C", "d": "D"}


@pytest.mark.slow
def test_vgg19_features_match_an_independent_computation_and_the_predict_path(tmp_path):
    """VGG19 fc2 with weights=none: the backbone's preprocessing against a computation by
    hand (RGB -> BGR, ImageNet means subtracted) on a constant colour image, then on two
    short videos: shape, finiteness, and the same features from a freshly loaded backbone
    (what predict does) as from extract."""
    import keras
    from keras.applications import vgg19

    from trainer.backbone_settings import INIT_SEED, feature_settings

    colour = (200, 100, 10)  # R, G, B: far from grey, so a channel swap error shows
    frames = np.empty((2, 224, 224, 3), np.uint8)
    frames[:] = colour
    settings = feature_settings({"backbone": "vgg19", "weights": "none", "image_size": 224, "frames": 4})
    got = load_backbone_for_test(settings).features(frames)
    keras.utils.set_random_seed(INIT_SEED)  # the same random network, built here
    full = vgg19.VGG19(include_top=True, weights=None)
    fc2 = keras.Model(full.input, full.get_layer("fc2").output)
    imagenet_bgr_mean = np.array([103.939, 116.779, 123.68], np.float32)

    def by_hand(bgr):
        x = np.broadcast_to(np.asarray(bgr, np.float32) - imagenet_bgr_mean, (1, 224, 224, 3)).copy()
        return np.asarray(fc2(x, training=False))[0]

    want = by_hand(colour[::-1])
    assert want.std() > 0
    np.testing.assert_allclose(got[0], want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    np.testing.assert_allclose(got[1], want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    # the comparison can fail: RGB order (no swap) gives clearly other features
    assert np.abs(by_hand(colour) - want).max() > 0.05 * np.abs(want).max()
    del full, fc2

    from trainer import config as config_mod
    from trainer.backbone import load_backbone
    from trainer.extract import extract as run_extract

    ds = tmp_path / "ds"
    good_video(ds / "violent/a.mp4", 1, n=10)
    good_video(ds / "nonviolent/b.avi", 2, n=10, fourcc="MJPG")
    cfg = config_mod.load(overrides={"data": {"weights": "none", "frames": 4, "extract_batch_size": 3,
                                              "workers": 1}})
    summary = run_extract(ds, tmp_path / "cache", cfg, progress=False)
    assert summary["videos"] == 2 and not summary["failed"]
    cache = FeatureCache(tmp_path / "cache")
    meta = cache.read_meta()
    assert meta["backbone"] == "vgg19" and meta["feature_shape"] == [4, 4096] and meta["feature_dim"] == 4096

    backbone = load_backbone(meta, batch_size=5)  # a second, independent instance
    for rec in cache.ok_records():
        got = cache.load_features(rec["key"]).astype(np.float32)
        assert np.isfinite(got).all() and got.std() > 0
        frames = sample_frames(ds / rec["path"], 4, 224).frames
        np.testing.assert_allclose(got, backbone.features(frames), rtol=2e-2, atol=2e-3)


def load_backbone_for_test(settings):
    from trainer.backbone import load_backbone

    return load_backbone(settings, batch_size=2)


def test_a_torn_index_line_does_not_swallow_the_next_record(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.append([{"path": "a.mp4", "status": "ok", "fingerprint": "f", "key": "k1"}])
    with open(cache.index_path, "a") as fh:  # what a SIGKILL in the middle of a write leaves
        fh.write('{"path": "b.mp4", "sta')
    cache.append([{"path": "c.mp4", "status": "failed", "fingerprint": "f", "key": "k3", "reason": "r"}])
    assert [r["path"] for r in cache.history()] == ["a.mp4", "c.mp4"]


# --- feeding the backbone: full passes across videos, every device, stage figures (issue 12) ---

def test_passes_are_full_across_videos_and_the_summary_names_the_bottleneck(tmp_path, capsys):
    ds = tmp_path / "ds"
    for i in range(9):  # 9 videos x 8 frames = 72 frames = 6 full passes of 12; no video fits a pass evenly
        good_video(ds / ("violent" if i % 2 else "nonviolent") / f"v{i}.mp4", i)
    rc, out, err = extract(capsys, ds, tmp_path / "cache", write_config(tmp_path / "c.yaml"), "--quiet")
    assert rc == 0, err
    assert "backbone: 72 frames in 6 passes (6 full of 12); useful work 100%" in out
    assert "passes 100.0% full on average" in out
    line = next(x for x in out.splitlines() if x.startswith("stages, busy share"))
    for stage in ("decode", "copy", "forward", "store"):
        assert f"{stage} " in line
    assert any(b in line for b in ("decode-bound", "backbone-bound", "copy-bound", "store-bound",
                                   "no stage was busy half the time"))

    # 7 videos = 56 frames: 4 full passes and a last one of 8, computed at its own size
    ds2 = tmp_path / "ds2"
    for i in range(7):
        good_video(ds2 / ("violent" if i % 2 else "nonviolent") / f"v{i}.mp4", 20 + i)
    rc, out, err = extract(capsys, ds2, tmp_path / "cache2", write_config(tmp_path / "c.yaml"), "--quiet")
    assert rc == 0, err
    assert "backbone: 56 frames in 5 passes (4 full of 12, the last of 8); useful work 100%" in out
    cache = FeatureCache(tmp_path / "cache2")
    backbone = ThumbnailBackbone(SIZE)
    for rec in cache.ok_records():  # frames that straddle passes come back to their own video
        want = backbone.features(sample_frames(ds2 / rec["path"], FRAMES, SIZE).frames)
        np.testing.assert_allclose(cache.load_features(rec["key"]).astype(np.float32), want, atol=1e-3)


def test_useful_work_on_the_seeds_shape_of_dataset():
    """20 frames per video, passes of 64 (the defaults), any number of videos: the Feeder never
    pads, and all passes but the last are full, so with more than a few passes they are >= 95 % full."""
    from trainer.feeder import Feeder

    class Echo:  # a backbone stand-in that returns each frame's first pixel as its "feature"
        def to_device(self, x):
            return x

        def features(self, x):
            return x[:, 0, 0, :1].astype(np.float32)

    for videos in (4, 33, 200):
        feeder = Feeder(lambda device: Echo(), ["a", "b"], 64)
        got = {}
        try:
            for v in range(videos):
                frames = np.full((20, 2, 2, 3), v % 251, np.uint8)
                got.update(feeder.put(v, frames))
            got.update(feeder.finish())
        finally:
            feeder.close()
        st = feeder.stats
        assert sorted(got) == list(range(videos))
        assert all((got[v] == v % 251).all() and got[v].shape == (20, 1) for v in got)
        assert st.frames == 20 * videos and st.passes == -(-20 * videos // 64)
        assert st.full_passes == 20 * videos // 64
        if st.passes > 20:
            assert st.frames / (st.passes * 64) >= 0.95
        assert sum(st.per_device.values()) == st.passes


def test_the_bottleneck_is_the_busiest_stage(capsys):
    from trainer.feeder import Stats, pipeline_stats, print_pipeline

    def stats(forward: float) -> Stats:
        return Stats(frames=640, passes=10, full_passes=10, batch=64, per_device={"/GPU:0": 5, "/GPU:1": 5},
                     copy_s={"/GPU:0": 0.5, "/GPU:1": 0.5}, forward_s={"/GPU:0": forward, "/GPU:1": forward})

    gpu_bound = pipeline_stats(stats(forward=9.0), wall=10.0, workers=16, decode_s=80.0, store_s=1.0)
    assert gpu_bound["busy"] == {"decode": 0.5, "copy": 0.05, "forward": 0.9, "store": 0.1}
    assert gpu_bound["bottleneck"] == "forward" and gpu_bound["fill"] == 1.0
    decode_bound = pipeline_stats(stats(forward=3.0), wall=10.0, workers=16, decode_s=150.0, store_s=1.0)
    assert decode_bound["bottleneck"] == "decode"
    print_pipeline(decode_bound)
    out = capsys.readouterr().out
    assert "decode 94%, copy 5%, forward 30%, store 10%; decode-bound" in out and "GPU:0 5, GPU:1 5" in out


def test_gpus_must_not_be_negative(tmp_path, capsys):
    rc = main(["extract", "--dataset-path", str(tmp_path), "--cache-dir", str(tmp_path / "c"), "--gpus", "-1"])
    err = capsys.readouterr().err
    assert rc == 2 and "argument --gpus: must be >= 0" in err  # refused by the parser, before anything loads


MULTI_DEVICE = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from pathlib import Path
from trainer import config
from trainer.extract import extract
cfg = config.load(overrides={"data": json.loads(sys.argv[2])})
for cache, gpus in (("c2", 0), ("c1", 1)):
    s = extract(Path(sys.argv[1]), Path(sys.argv[3]) / cache, cfg, progress=False, log=lambda _: None, gpus=gpus)
    print(json.dumps(s["run"]["pipeline"]))
"""


@pytest.mark.slow
def test_every_device_extracts_and_gpus_limits_it(tmp_path):
    """Two logical CPU devices stand in for two GPUs: both take passes, and the features are
    those one backbone gives (both devices hold the same seeded weights)."""
    from trainer.backbone import load_backbone

    ds = tmp_path / "ds"
    for i in range(4):
        good_video(ds / ("violent" if i % 2 else "nonviolent") / f"v{i}.mp4", i, n=12)
    data = {"backbone": "convnext_tiny", "weights": "none", "image_size": 32, "frames": 3,
            "extract_batch_size": 2, "workers": 1}
    proc = subprocess.run([sys.executable, "-c", MULTI_DEVICE, str(ds), json.dumps(data), str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    both, one = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert both["passes"] == 6 and len(both["devices"]) == 2  # 4 videos x 3 frames in passes of 2
    assert all(n >= 1 for n in both["devices"].values()) and sum(both["devices"].values()) == 6
    assert len(one["devices"]) == 1 and sum(one["devices"].values()) == 6

    cache = FeatureCache(tmp_path / "c2")
    backbone = load_backbone(cache.read_meta(), batch_size=4)
    for rec in cache.ok_records():
        want = backbone.features(sample_frames(ds / rec["path"], 3, 32).frames)
        np.testing.assert_allclose(cache.load_features(rec["key"]).astype(np.float32), want, rtol=2e-2, atol=2e-3)
    one_cache = FeatureCache(tmp_path / "c1")
    assert {r["path"]: r["key"] for r in one_cache.ok_records()} == {r["path"]: r["key"] for r in cache.ok_records()}


def test_identical_videos_land_in_one_split_and_are_reported(tmp_path, capsys):
    import shutil

    ds = tmp_path / "ds"
    for i in range(6):
        good_video(ds / f"violent/v{i}.mp4", 20 + i)
        good_video(ds / f"nonviolent/n{i}.mp4", 40 + i)
    for i in range(6):  # the same clips again under other names, as in merged datasets
        shutil.copy(ds / f"violent/v{i}.mp4", ds / f"violent/copy_of_v{i}.mp4")
    rc, out, _ = extract(capsys, ds, tmp_path / "cache", write_config(tmp_path / "c.yaml"), "--quiet")
    assert rc == 0
    splits = json.loads((tmp_path / "cache" / "splits.json").read_text())
    for i in range(6):
        assert splits[f"violent/v{i}.mp4"] == splits[f"violent/copy_of_v{i}.mp4"]
    assert "duplicates: 6 video(s) appear more than once (12 files with identical content)" in out
    assert "violent/copy_of_v0.mp4 = violent/v0.mp4" in out
    assert main(["info", "--cache-dir", str(tmp_path / "cache"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert len(info["duplicates"]) == 6
    assert all(len(d["splits"]) == 1 for d in info["duplicates"])
    assert {"paths": ["violent/copy_of_v3.mp4", "violent/v3.mp4"], "splits": [splits["violent/v3.mp4"]]} in info["duplicates"]
