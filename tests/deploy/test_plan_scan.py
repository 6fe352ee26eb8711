"""The job model reads the dataset through the trainer's scan (issue 22): one list of video extensions
(the trainer's), and decoding estimated from each video's frames x pixels, not a 640x360 clip's figure."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.plan import inputs, job_model
from tests.deploy.test_plan import spec_offer
from tests.trainer import videos as tv

# few cores, a strong GPU: extraction is decode-bound, so the estimate shows what decoding costs
OFFER = spec_offer(cpu_cores_effective=4, total_flops=200.0)


def dataset(root: Path, size: tuple[int, int], frames: int = 30, per_class: int = 3) -> Path:
    for cls in ("violent", "nonviolent"):
        for i in range(per_class):
            tv.write_opencv(root / cls / f"{cls}{i}.avi", tv.motion_frames(frames, i + (cls == "violent") * 10, size),
                            "MJPG", fps=30)
    return root


def job_for(ds: Path) -> job_model.Job:
    return inputs.job_from_config({"dataset": {"path": str(ds)}, "vast": {"image_gb": 1}, "train": {}},
                                       lookups=False)


@pytest.mark.skipif(not tv.has_ffmpeg(), reason="the ffmpeg CLI writes the transport streams")
def test_cctv_transport_streams_count_as_videos_in_the_estimate(tmp_path):
    ds = tmp_path / "ds"
    for cls, ext in (("violent", ".mts"), ("nonviolent", ".m2ts")):
        src = tv.write_opencv(tmp_path / f"{cls}.mp4", tv.motion_frames(12, 1 if cls == "violent" else 2))
        (ds / cls).mkdir(parents=True)
        tv.ffmpeg("-i", str(src), "-c:v", "libx264", "-f", "mpegts", str(ds / cls / f"cam{ext}"))
    (ds / "violent" / "notes.txt").write_text("not a video")
    job = job_for(ds)
    assert job.videos == 2, job.sources
    assert "2 videos under dataset.path" in job.sources["videos"]


def test_hd_videos_make_a_longer_extraction_estimate_than_the_same_count_at_640x360(tmp_path):
    sd = job_for(dataset(tmp_path / "sd", (640, 360)))
    hd = job_for(dataset(tmp_path / "hd", (1280, 720)))
    assert sd.videos == hd.videos == 6
    assert hd.decode_pixel_frames == 4 * sd.decode_pixel_frames == 4 * 6 * 30 * 640 * 360
    assert "mostly 1280x720" in hd.sources["videos"]
    extract = {name: job_model.phase_seconds(OFFER, job)["extract"] - job_model.EXTRACT_STARTUP_S
               for name, job in (("sd", sd), ("hd", hd))}
    assert extract["hd"] == pytest.approx(4 * extract["sd"])
    # the 640x360 5-s clip (30 fps) the per-video figure was measured on costs what that figure says
    clip = job_model.Job(videos=1, decode_pixel_frames=150 * 640 * 360)
    per_video = job_model.Job(videos=1)
    assert job_model.phase_seconds(OFFER, clip)["extract"] == pytest.approx(
        job_model.phase_seconds(OFFER, per_video)["extract"], rel=0.01)
