"""`python -m trainer scan`, the one list of video extensions, and label conflicts (issue 22: items 4, 9 and
the dataset scan), on real videos encoded by OpenCV and by the ffmpeg CLI (MPEG transport streams)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.trainer import videos as tv
from trainer.cache import FeatureCache
from trainer.cli import main
from trainer.dataset import discover
from trainer.dataset import VIDEO_EXTENSIONS

REPO = Path(__file__).resolve().parents[2]
needs_ffmpeg = pytest.mark.skipif(not tv.has_ffmpeg(), reason="the ffmpeg CLI makes the transport streams")


def thumb_config(path: Path, **data) -> Path:
    path.write_text(yaml.safe_dump({"data": {"backbone": "thumbnail", "weights": "none", "image_size": 8,
                                             "frames": 6, "workers": 1, **data}}))
    return path


def ts_video(path: Path, seed: int, n: int = 24, size: tuple[int, int] = (160, 96), container: str = "mpegts",
             codec: list[str] | None = None) -> Path:
    """A real MPEG transport stream (what CCTV recorders write): H.264 in mpegts, made by ffmpeg."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mp4 = tv.write_opencv(path.with_name(path.name + ".src.mp4"), tv.motion_frames(n, seed, size))
    tv.ffmpeg("-i", str(mp4), *(codec or ["-c:v", "libx264", "-pix_fmt", "yuv420p"]), "-f", container, str(path))
    mp4.unlink()
    return path


def scan_json(capsys, dataset: Path, *extra: str) -> tuple[int, dict, str]:
    rc = main(["scan", str(dataset), "--json", *extra])
    out, err = capsys.readouterr()
    return rc, json.loads(out), err


# --- one list of video extensions ---------------------------------------------------------

def test_cctv_transport_streams_are_in_the_one_list():
    assert {".ts", ".m2ts", ".mts"} <= set(VIDEO_EXTENSIONS)


@needs_ffmpeg
def test_a_ts_clip_is_extracted_like_an_mp4(tmp_path, capsys):
    ds = tmp_path / "dataset"
    tv.write_opencv(ds / "violent/a.mp4", tv.motion_frames(24, 1))
    ts_video(ds / "violent/cam1.ts", 2)
    ts_video(ds / "nonviolent/cam2.m2ts", 3)
    ts_video(ds / "nonviolent/cam3.MTS", 4)
    assert main(["extract", "--dataset-path", str(ds), "--cache-dir", str(tmp_path / "cache"), "--config",
                 str(thumb_config(tmp_path / "c.yaml")), "--quiet"]) == 0
    capsys.readouterr()
    ok = {r["path"]: r for r in FeatureCache(tmp_path / "cache").ok_records()}
    assert set(ok) == {"violent/a.mp4", "violent/cam1.ts", "nonviolent/cam2.m2ts", "nonviolent/cam3.MTS"}
    # sampled like the .mp4: all 24 frames decoded, the same 6 segment centres
    assert ok["violent/cam1.ts"]["frames_decoded"] == ok["violent/a.mp4"]["frames_decoded"] == 24
    assert ok["violent/cam1.ts"]["indices"] == ok["violent/a.mp4"]["indices"]


@needs_ffmpeg
def test_more_extensions_come_from_the_config(tmp_path, capsys):
    ds = tmp_path / "dataset"
    tv.write_opencv(ds / "violent/a.mp4", tv.motion_frames(24, 1))
    dav = ts_video(ds / "nonviolent/export.ts", 2).rename(ds / "nonviolent/export.dav")  # a .dav converted, renamed
    tv.write_opencv(ds / "nonviolent/b.mp4", tv.motion_frames(24, 3))
    rc, r, _ = scan_json(capsys, ds)
    assert rc == 0 and r["videos"] == 2
    assert r["ignored"] == {".dav": {"files": 1, "examples": ["nonviolent/export.dav"]}}
    rc, r, _ = scan_json(capsys, ds, "--config", str(thumb_config(tmp_path / "c.yaml", video_extensions=["dav"])))
    assert rc == 0 and r["videos"] == 3 and r["ignored"] == {} and ".dav" in r["video_extensions"]
    assert [v.rel for v in discover(ds, {}, (".dav",))] == [dav.relative_to(ds).as_posix()]
    with pytest.raises(Exception, match="data.video_extensions"):
        from trainer import config
        config.load(thumb_config(tmp_path / "bad.yaml", video_extensions=["d a v"]))


# --- the scan ------------------------------------------------------------------------------

@needs_ffmpeg
def test_scan_reports_per_split_and_class_with_durations_resolutions_codecs_and_problem_files(tmp_path, capsys):
    ds = tmp_path / "rwf"
    tv.write_opencv(ds / "train/Fight/a.mp4", tv.motion_frames(50, 1), fps=25)  # 2 s, mp4v 160x96
    ts_video(ds / "train/NonFight/cam.ts", 2, n=25, size=(320, 240))  # 1 s at 25 fps, H.264 320x240
    tv.write_opencv(ds / "val/Fight/b.avi", tv.motion_frames(30, 3), "MJPG", fps=10)  # 3 s
    tv.write_opencv(ds / "val/NonFight/c.mp4", tv.motion_frames(25, 4))
    (ds / "val/NonFight/notes.txt").write_text("camera 4 was moved on day 2\n")
    (ds / "train/Fight/thumbs.db").write_bytes(b"\0" * 10)
    tv.truncated_copy(tv.write_opencv(tmp_path / "full.mp4", tv.motion_frames(40, 5)), ds / "train/Fight/cut.mp4")
    tv.zero_byte(ds / "val/Fight/zero.mp4")
    rc, r, err = scan_json(capsys, ds)
    assert rc == 0, err
    assert r["layout"] == "split folders" and r["videos"] == 6 and r["probe"] == "opencv"
    assert r["splits"]["train"]["violent"]["videos"] == 2 and r["splits"]["val"]["nonviolent"]["videos"] == 1
    assert r["splits"]["train"]["violent"]["duration_s"] == pytest.approx(2.0, abs=0.05)
    assert r["splits"]["val"]["violent"]["duration_s"] == pytest.approx(3.0, abs=0.05)
    assert r["duration_s"] == pytest.approx(2 + 1 + 3 + 1, abs=0.1)
    assert r["resolutions"] == {"160x96": 3, "320x240": 1}
    assert r["codecs"] == {"mpeg4": 2, "h264": 1, "mjpeg": 1}  # OpenCV's mp4v is FFmpeg's MPEG-4 part 2
    assert r["decode"]["pixel_frames"] == 50 * 160 * 96 + 25 * 320 * 240 + 30 * 160 * 96 + 25 * 160 * 96
    assert r["ignored"] == {".db": {"files": 1, "examples": ["train/Fight/thumbs.db"]},
                            ".txt": {"files": 1, "examples": ["val/NonFight/notes.txt"]}}
    reasons = {u["path"]: u["reason"] for u in r["unreadable"]}
    assert set(reasons) == {"train/Fight/cut.mp4", "val/Fight/zero.mp4"}
    assert "truncated" in reasons["train/Fight/cut.mp4"] and "empty" in reasons["val/Fight/zero.mp4"]
    assert r["problems"] == [] and r["label_conflicts"] == [] and r["long_clips"] == []
    # the text form says the same in a table and a few lines
    assert main(["scan", str(ds)]) == 0
    text = capsys.readouterr().out
    assert "train  violent" in text and "320x240" in text and ".txt 1" in text and "unreadable: 2" in text


def test_scan_reads_the_headers_and_decodes_nothing(tmp_path, capsys, monkeypatch):
    import cv2

    ds = tmp_path / "ds"
    tv.write_opencv(ds / "violent/a.mp4", tv.motion_frames(24, 1))
    tv.write_opencv(ds / "nonviolent/b.mp4", tv.motion_frames(48, 2))

    real = cv2.VideoCapture
    decoded = []

    class NoDecoding:  # a real capture that records any request for a frame (a wrapper: OpenCV's
        def __init__(self, *args):  # own classes do not survive being subclassed across threads)
            self.cap = real(*args)

        def __getattr__(self, name):
            if name in ("grab", "read", "retrieve"):
                decoded.append(name)
            return getattr(self.cap, name)

    monkeypatch.setattr(cv2, "VideoCapture", NoDecoding)
    rc, r, _ = scan_json(capsys, ds)
    assert rc == 0 and r["decode"]["frames"] == 72 and r["duration_s"] == pytest.approx(72 / 25, abs=0.01)
    assert decoded == []


def test_scan_flags_clips_too_long_for_the_sampled_frames(tmp_path, capsys):
    ds = tmp_path / "ds"
    tv.write_opencv(ds / "violent/long.avi", tv.motion_frames(30, 1, (32, 32)), "MJPG", fps=1)  # 30 s
    tv.write_opencv(ds / "nonviolent/short.avi", tv.motion_frames(30, 2, (32, 32)), "MJPG", fps=25)
    rc, r, _ = scan_json(capsys, ds)
    assert rc == 0 and r["frames_per_video"] == 20
    assert r["long_clips"] == [{"path": "violent/long.avi", "duration_s": 30.0, "seconds_between_frames": 1.5}]
    main(["scan", str(ds)])
    assert "long clips: 1" in capsys.readouterr().out
    # with 40 frames per video, 30 s is sampled every 0.75 s: not sparse
    rc, r, _ = scan_json(capsys, ds, "--config", str(thumb_config(tmp_path / "c.yaml", frames=40)))
    assert r["long_clips"] == []


def test_duplicates_within_a_class_and_label_conflicts_across_classes(tmp_path, capsys):
    ds = tmp_path / "ds"
    a = tv.write_opencv(ds / "Fight/a.mp4", tv.motion_frames(24, 1))
    shutil.copy(a, ds / "Fight/a (copy).mp4")
    b = tv.write_opencv(ds / "NonFight/b.mp4", tv.motion_frames(24, 2))
    (ds / "Fight/sub").mkdir()
    shutil.copy(b, ds / "Fight/sub/b_also.mp4")  # the same clip filed under the other class
    tv.write_opencv(ds / "NonFight/c.mp4", tv.motion_frames(24, 3))
    rc, r, err = scan_json(capsys, ds)
    assert rc == 2
    assert r["duplicates"] == [{"label": "violent", "paths": ["Fight/a (copy).mp4", "Fight/a.mp4"]}]
    assert [c["paths"] for c in r["label_conflicts"]] == [{"nonviolent": ["NonFight/b.mp4"],
                                                           "violent": ["Fight/sub/b_also.mp4"]}]
    assert "Fight/sub/b_also.mp4 (violent)" in err and "NonFight/b.mp4 (nonviolent)" in err
    assert err.count("\n") == 1 and "allow" in err
    rc, r, _ = scan_json(capsys, ds, "--allow-label-conflicts")
    assert rc == 0 and r["problems"] == []


def test_extract_refuses_a_label_conflict_naming_both_paths_unless_allowed(tmp_path, capsys):
    ds = tmp_path / "ds"
    v = tv.write_opencv(ds / "violence/clip.mp4", tv.motion_frames(24, 1))
    tv.write_opencv(ds / "non_violence/other.mp4", tv.motion_frames(24, 2))
    shutil.copy(v, ds / "non_violence/clip_dup.mp4")
    cfg = thumb_config(tmp_path / "c.yaml")
    args = ["extract", "--dataset-path", str(ds), "--cache-dir", str(tmp_path / "cache"), "--config", str(cfg),
            "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "violence/clip.mp4 (violent)" in err and "non_violence/clip_dup.mp4 (nonviolent)" in err
    assert not FeatureCache(tmp_path / "cache").ok_records()  # refused before any video was extracted
    assert main(args + ["--allow-label-conflicts"]) == 0
    capsys.readouterr()
    labels = {r["path"]: r["label"] for r in FeatureCache(tmp_path / "cache").ok_records()}
    assert labels["violence/clip.mp4"] == "violent" and labels["non_violence/clip_dup.mp4"] == "nonviolent"
    allowed = thumb_config(tmp_path / "allow.yaml", allow_label_conflicts=True)
    assert main(args[:-2] + [str(allowed), "--quiet"]) == 0


def test_scan_problems_that_extract_would_refuse(tmp_path, capsys):
    ds = tmp_path / "ds"
    tv.write_opencv(ds / "violent/a.mp4", tv.motion_frames(24, 1))
    assert main(["scan", str(ds)]) == 2
    assert "no nonviolent videos" in capsys.readouterr().err
    tv.text_file(ds / "nonviolent/b.mp4")
    assert main(["scan", str(ds)]) == 2
    assert "none of the 1 nonviolent videos can be read (e.g. nonviolent/b.mp4: not a video" in capsys.readouterr().err
    assert main(["scan", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_scan_needs_neither_tensorflow_nor_numpy_and_works_without_opencv(tmp_path):
    ds = tmp_path / "ds"
    tv.write_opencv(ds / "violent/a.mp4", tv.motion_frames(24, 1))
    tv.write_opencv(ds / "nonviolent/b.mp4", tv.motion_frames(30, 2))
    # a laptop with only the deploy extra: no NumPy, no OpenCV (their imports fail)
    code = ("import sys; sys.modules.update(numpy=None, cv2=None); from trainer.cli import main; "
            "rc = main(['scan', sys.argv[1], '--json']); "
            "assert 'tensorflow' not in sys.modules; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, str(ds)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["videos"] == 2 and report["probe"].startswith("none") and report["duration_s"] == 0
