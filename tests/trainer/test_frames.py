"""Frame sampling on real encoded videos: exact indices, wrong counts, padding, broken files."""

from __future__ import annotations

import numpy as np
import pytest

from tests.trainer import seek_videos as sv
from tests.trainer import videos as tv
from trainer.frames import VideoError, sample_frames, sample_indices

N = 20
SIZE = 64


def read_indices(sampled) -> list[int]:
    return [tv.read_index(f) for f in sampled.frames]


# --- the formula --------------------------------------------------------------------

@pytest.mark.parametrize("total", [20, 21, 37, 48, 100, 299, 300, 1000])
def test_indices_are_segment_centres(total):
    idx = sample_indices(total, N)
    assert idx == [int((i + 0.5) * total / N) for i in range(N)]
    assert len(idx) == N and idx == sorted(idx) and len(set(idx)) == N
    assert 0 <= idx[0] and idx[-1] <= total - 1
    gaps = np.diff(idx)
    assert gaps.max() - gaps.min() <= 1  # evenly spaced, to the frame
    # Symmetric: as far from the start as from the end (within a frame).
    assert abs(idx[0] - (total - 1 - idx[-1])) <= 1


def test_short_video_indices_repeat_every_frame_evenly():
    assert sample_indices(5, 20) == [f for f in range(5) for _ in range(4)]
    counts = np.bincount(sample_indices(7, 20))
    assert len(counts) == 7 and counts.max() - counts.min() <= 1


# --- exact frames from real codecs ------------------------------------------------------

@pytest.mark.parametrize("fourcc,ext", tv.OPENCV_FORMATS)
def test_exact_frames_opencv_codecs(tmp_path, fourcc, ext):
    total = 61
    path = tv.write_opencv(tmp_path / f"v{ext}", tv.indexed_frames(total), fourcc)
    s = sample_frames(path, N, SIZE)
    assert s.frames.shape == (N, SIZE, SIZE, 3) and s.frames.dtype == np.uint8
    assert s.indices == sample_indices(total, N)
    assert read_indices(s) == s.indices  # the pixels say these really are those frames
    assert (s.total_frames, s.reported_frames, s.padded, s.passes) == (total, total, False, 1)


@pytest.mark.skipif(not tv.has_ffmpeg(), reason="ffmpeg CLI not installed (CI installs it)")
@pytest.mark.parametrize("codec_args,ext", tv.FFMPEG_FORMATS, ids=[e for _, e in tv.FFMPEG_FORMATS])
def test_exact_frames_ffmpeg_containers(tmp_path, codec_args, ext):
    total = 45
    path = tv.write_ffmpeg(tmp_path / f"v{ext}", tv.indexed_frames(total), codec_args)
    s = sample_frames(path, N, SIZE)
    assert s.indices == sample_indices(total, N)
    assert read_indices(s) == s.indices
    assert s.total_frames == total and not s.padded


def test_frames_are_rgb(tmp_path):
    bgr = np.zeros((48, 64, 3), np.uint8)
    bgr[..., 2] = 255  # pure red in OpenCV's BGR order
    path = tv.write_opencv(tmp_path / "red.avi", [bgr] * 5, "MJPG")
    s = sample_frames(path, 3, 16)
    r, g, b = s.frames[..., 0].mean(), s.frames[..., 1].mean(), s.frames[..., 2].mean()
    assert r > 200 and g < 40 and b < 40


def test_short_video_is_padded_by_repeating_frames(tmp_path):
    path = tv.write_opencv(tmp_path / "short.avi", tv.indexed_frames(7), "MJPG")
    s = sample_frames(path, N, SIZE)
    assert s.padded and s.total_frames == 7
    assert read_indices(s) == sample_indices(7, N)
    assert set(read_indices(s)) == set(range(7))  # nothing invented, nothing dropped


# --- containers that report a wrong frame count -----------------------------------------

@pytest.mark.parametrize("claimed", [10, 0])
def test_under_reported_count_is_corrected(tmp_path, claimed):
    total = 50
    src = tv.write_opencv(tmp_path / "src.avi", tv.indexed_frames(total), "MJPG")
    path = tv.avi_with_frame_count(src, tmp_path / "wrong.avi", claimed)
    assert tv.reported_frames(path) == claimed  # the premise: OpenCV believes the header
    s = sample_frames(path, N, SIZE)
    assert s.reported_frames == claimed and s.total_frames == total
    assert s.indices == sample_indices(total, N)
    assert read_indices(s) == s.indices
    assert s.passes == 2  # the rare case that needs a second pass


@pytest.mark.skipif(not tv.has_ffmpeg(), reason="ffmpeg CLI not installed (CI installs it)")
def test_over_reported_count_of_variable_frame_rate_video(tmp_path):
    total = 48
    path = tv.write_vfr_mkv(tmp_path / "vfr.mkv", tv.indexed_frames(total))
    reported = tv.reported_frames(path)
    assert reported > total * 1.5  # the premise: the container's estimate is far off
    s = sample_frames(path, N, SIZE)
    assert s.total_frames == total and s.reported_frames == reported
    # Sampled at equal points in time (issue 22, item 11), no longer by index: the second
    # half of this clip lasts 4x as long as the first and gets 4x the samples.
    assert read_indices(s) == s.indices
    sv.assert_evenly_spaced_in_time(s.indices, sv.decoded_times(path))
    assert sum(j < total // 2 for j in s.indices) == 4


# --- broken input: a dedicated error with a reason ------------------------------------

def test_zero_byte_file(tmp_path):
    with pytest.raises(VideoError, match="empty file"):
        sample_frames(tv.zero_byte(tmp_path / "empty.mp4"), N, SIZE)


def test_text_file_with_video_extension(tmp_path):
    with pytest.raises(VideoError, match="not a video file"):
        sample_frames(tv.text_file(tmp_path / "notes.mp4"), N, SIZE)


@pytest.mark.parametrize("fourcc,ext,reason", [("mp4v", ".mp4", "truncated MP4"), ("MJPG", ".avi", "truncated AVI")])
def test_truncated_file(tmp_path, fourcc, ext, reason):
    src = tv.write_opencv(tmp_path / f"full{ext}", tv.motion_frames(40, 1), fourcc)
    cut = tv.truncated_copy(src, tmp_path / f"cut{ext}", 0.6)
    with pytest.raises(VideoError, match=reason):
        sample_frames(cut, N, SIZE)


@pytest.mark.skipif(not tv.has_ffmpeg(), reason="ffmpeg CLI not installed (CI installs it)")
def test_truncated_matroska(tmp_path):
    src = tv.write_ffmpeg(tmp_path / "full.mkv", tv.motion_frames(40, 2), ["-c:v", "mpeg4"])
    with pytest.raises(VideoError, match="truncated Matroska"):
        sample_frames(tv.truncated_copy(src, tmp_path / "cut.mkv", 0.5), N, SIZE)


def test_container_without_decodable_frame(tmp_path):
    src = tv.write_opencv(tmp_path / "src.avi", tv.motion_frames(30, 3), "MJPG")
    path = tv.corrupt_avi_frames(src, tmp_path / "nodata.avi")
    assert tv.reported_frames(path) == 30  # the container itself is fine
    with pytest.raises(VideoError, match="no decodable frame"):
        sample_frames(path, N, SIZE)


def test_corrupt_data_mid_video_is_not_passed_off_as_a_short_video(tmp_path):
    src = tv.write_opencv(tmp_path / "src.avi", tv.motion_frames(60, 4), "MJPG")
    path = tv.corrupt_avi_frames(src, tmp_path / "mid.avi", every=1, start=10)
    with pytest.raises(VideoError, match="decoding stopped at frame 10 of 60"):
        sample_frames(path, N, SIZE)


@pytest.mark.skipif(not tv.has_ffmpeg(), reason="ffmpeg CLI not installed (CI installs it)")
def test_container_without_video_stream(tmp_path):
    path = tmp_path / "audio.mkv"
    tv.ffmpeg("-f", "lavfi", "-i", "anullsrc=r=8000", "-t", "1", str(path))
    with pytest.raises(VideoError, match="cannot open as video"):
        sample_frames(path, N, SIZE)


def test_missing_file(tmp_path):
    with pytest.raises(VideoError, match="not found"):
        sample_frames(tmp_path / "nope.mp4", N, SIZE)
